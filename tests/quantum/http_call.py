#!/usr/bin/env python3
"""One HTTP request from a process of its own, so a test can make a call
from inside (or outside) an agent's process tree: the agent is matched on
this process's command line, which carries TAG.

usage: http_call.py METHOD URL TAG BODY_FILE|- [HEADERS_FILE]
HEADERS_FILE holds one HEADER=VALUE per line: credentials stay off the
command line, which every collector on the host records. The path is sent
exactly as given. Prints one JSON line:
{"status": N, "body": "..."}.
"""
import http.client
import json
import sys
from urllib.parse import urlsplit

method, url, _tag, body_file = sys.argv[1:5]
headers = {}
if len(sys.argv) > 5:
    with open(sys.argv[5]) as f:
        headers = dict(line.rstrip("\n").split("=", 1) for line in f if "=" in line)
body = b""
if body_file != "-":
    with open(body_file, "rb") as f:
        body = f.read()
u = urlsplit(url)
conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
path = u.path + (f"?{u.query}" if u.query else "")
conn.putrequest(method, path, skip_accept_encoding=True)
for k, v in headers.items():
    conn.putheader(k, v)
conn.putheader("Content-Length", str(len(body)))
conn.endheaders(body)
resp = conn.getresponse()
print(json.dumps({"status": resp.status, "body": resp.read().decode("utf-8", "replace")}), flush=True)
