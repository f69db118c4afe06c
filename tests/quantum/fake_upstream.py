#!/usr/bin/env python3
"""A loopback stand-in for the quantum clouds, for the gateway's tests.

Serves just enough of IBM Cloud IAM and the Qiskit Runtime API, Amazon
Braket and IonQ for the official SDKs to submit jobs and poll them, and
appends one JSON line per request it receives (method, path, headers, body
size and JSON body) to the log file, so tests can check what reached the
provider. No request leaves the machine.

usage: fake_upstream.py PORT_FILE LOG_FILE [CERT KEY]
Listens on 127.0.0.1 on a free port (written to PORT_FILE); HTTPS with CERT and KEY.
"""
import base64
import json
import os
import ssl
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import qiskit_ibm_runtime

FAKES = os.path.join(os.path.dirname(qiskit_ibm_runtime.__file__), "fake_provider", "backends")
IBM_BACKENDS = {"ibm_fez": "fez", "ibm_brisbane": "brisbane"}

log_lock = threading.Lock()
jobs = {}  # id -> polls so far, so status moves Queued -> Running -> Completed


def jwt(claims):
    enc = lambda d: base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()
    return f"{enc({'alg': 'HS256', 'typ': 'JWT'})}.{enc(claims)}.c2ln"


def status_of(job_id, steps):
    n = jobs.get(job_id, 0)
    jobs[job_id] = n + 1
    return steps[min(n, len(steps) - 1)]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def sigv4(self, body):
        """Check an AWS Signature V4 with botocore against the keys the test
        says are the real ones (FAKE_AWS_KEY, FAKE_AWS_SECRET)."""
        key, secret = os.environ.get("FAKE_AWS_KEY"), os.environ.get("FAKE_AWS_SECRET")
        auth = self.headers.get("Authorization", "")
        if not key or not auth.startswith("AWS4-HMAC-SHA256 "):
            return None
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest
        from botocore.credentials import Credentials
        fields = dict(p.strip().split("=", 1) for p in auth[len("AWS4-HMAC-SHA256 "):].split(","))
        access_key, date, region, service, _ = fields["Credential"].split("/")
        signed = fields["SignedHeaders"].split(";")
        req = AWSRequest(method=self.command, url=f"http://{self.headers['host']}{self.path}",
                         headers={h: self.headers[h] for h in signed}, data=body)
        req.context["timestamp"] = self.headers["x-amz-date"]
        signer = SigV4Auth(Credentials(key, secret), service, region)
        expected = signer.signature(signer.string_to_sign(req, signer.canonical_request(req)), req)
        if access_key != key:
            return "other key"
        return "valid" if expected == fields["Signature"] else "invalid"

    def record(self, body):
        entry = {
            "method": self.command,
            "path": self.path,
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "body_bytes": len(body),
            "sigv4": self.sigv4(body),
        }
        try:
            entry["json"] = json.loads(body) if body else None
        except ValueError:
            entry["json"] = None
        with log_lock, open(sys.argv[2], "a") as f:
            f.write(json.dumps(entry) + "\n")

    def handle_any(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b""
        self.record(body)
        # a slow provider, when a test asks for one (the gateway relays the header)
        delay = self.headers.get("X-Fake-Delay-Ms")
        if delay:
            time.sleep(int(delay) / 1000)
        path = self.path.split("?")[0]
        m = self.command
        now = int(time.time())
        # IBM Cloud IAM: API key -> bearer token
        if m == "POST" and path == "/identity/token":
            return self.reply(200, {"access_token": jwt({"iat": now, "exp": now + 3600}),
                                    "refresh_token": "r", "token_type": "Bearer",
                                    "expires_in": 3600, "expiration": now + 3600})
        # Qiskit Runtime
        if path.endswith("/api/v1/backends") and m == "GET":
            return self.reply(200, {"devices": [{"name": b, "status": {"name": "online"}} for b in IBM_BACKENDS]})
        parts = path.split("/")
        if "/api/v1/backends/" in path and m == "GET":
            name, what = parts[-2], parts[-1]
            fake = IBM_BACKENDS.get(name)
            if fake is None:
                return self.reply(404, {"errors": [{"message": "backend not found"}]})
            if what == "configuration":
                with open(os.path.join(FAKES, fake, f"conf_{fake}.json")) as f:
                    conf = json.load(f)
                conf["backend_name"] = name
                return self.reply(200, conf)
            if what == "properties":
                with open(os.path.join(FAKES, fake, f"props_{fake}.json")) as f:
                    props = json.load(f)
                props["backend_name"] = name
                return self.reply(200, props)
            if what == "status":
                return self.reply(200, {"state": True, "status": "active", "message": "available",
                                        "length_queue": 0, "backend_version": "1.0", "name": name})
            return self.reply(404, {"errors": [{"message": "unknown backend resource"}]})
        if path.endswith("/api/v1/instances/usage"):
            return self.reply(200, {"usage_consumed_seconds": 0, "usage_limit_reached": False})
        if path.endswith("/api/v1/sessions") and m == "POST":
            return self.reply(200, {"id": "sess-" + uuid.uuid4().hex[:12]})
        if "/api/v1/sessions/" in path:
            return self.reply(200, {"id": parts[-1], "state": "open", "mode": "dedicated"})
        if path.endswith("/api/v1/jobs") and m == "POST":
            req = json.loads(body)
            job = "d" + uuid.uuid4().hex[:19]
            return self.reply(200, {"id": job, "backend": req.get("backend")})
        if "/api/v1/jobs/" in path and path.endswith("/cancel") and m == "POST":
            self.send_response(204)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if "/api/v1/jobs/" in path and m == "GET":
            job = parts[parts.index("jobs") + 1]
            st = status_of(job, ["Queued", "Running", "Completed"])
            return self.reply(200, {"id": job, "status": st, "state": {"status": st},
                                    "backend": "ibm_fez", "program": {"id": "sampler"},
                                    "usage": {"quantum_seconds": 3, "seconds": 3} if st == "Completed" else {}})
        # Amazon Braket
        if path == "/quantum-task" and m == "POST":
            arn = f"arn:aws:braket:us-east-1:123456789012:quantum-task/{uuid.uuid4()}"
            return self.reply(201, {"quantumTaskArn": arn})
        if path.startswith("/quantum-task/") and m == "GET":
            from urllib.parse import unquote
            arn = unquote(path[len("/quantum-task/"):])
            st = status_of(arn, ["QUEUED", "RUNNING", "COMPLETED"])
            return self.reply(200, {"quantumTaskArn": arn, "status": st, "shots": 100,
                                    "deviceArn": "arn:aws:braket:::device/quantum-simulator/amazon/sv1",
                                    "outputS3Bucket": "b", "outputS3Directory": "tasks/x",
                                    "createdAt": "2026-11-22T00:00:00Z"})
        if path.startswith("/quantum-task/") and path.endswith("/cancel") and m == "PUT":
            from urllib.parse import unquote
            arn = unquote(path[len("/quantum-task/"):-len("/cancel")])
            return self.reply(200, {"quantumTaskArn": arn, "cancellationStatus": "CANCELLING"})
        # Braket hybrid jobs (CreateJob, GetJob)
        if path == "/job" and m == "POST":
            name = (json.loads(body or b"{}") or {}).get("jobName", "job")
            return self.reply(201, {"jobArn": f"arn:aws:braket:us-east-1:123456789012:job/{name}"})
        if path.startswith("/job/") and m == "GET":
            from urllib.parse import unquote
            arn = unquote(path[len("/job/"):])
            return self.reply(200, {"jobArn": arn, "status": status_of(arn, ["QUEUED", "RUNNING", "COMPLETED"])})
        # IonQ
        if path.endswith("/jobs") and m == "POST":
            return self.reply(200, {"id": str(uuid.uuid4()), "status": "submitted"})
        if "/jobs/" in path and m == "GET":
            job = parts[-1]
            st = status_of(job, ["ready", "running", "completed"])
            return self.reply(200, {"id": job, "status": st, "execution_time": 1200 if st == "completed" else None})
        return self.reply(404, {"error": f"fake upstream: no route for {m} {path}"})

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = handle_any


def main():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    if len(sys.argv) > 4:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(sys.argv[3], sys.argv[4])
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
    with open(sys.argv[1] + ".tmp", "w") as f:
        f.write(str(server.server_address[1]))
    os.rename(sys.argv[1] + ".tmp", sys.argv[1])
    server.serve_forever()


if __name__ == "__main__":
    main()
