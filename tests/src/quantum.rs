//! Helpers for the quantum job gateway's tests: the Python virtualenv with
//! the real SDKs (made by scripts/setup), a loopback stand-in for the
//! providers that logs what reaches it, and a small HTTP client.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The virtualenv's Python (`VIGIL_VENV`, default ~/.cache/vigil-py).
pub fn python() -> PathBuf {
    let venv = std::env::var_os("VIGIL_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/vigil-py")
        });
    let py = venv.join("bin/python");
    assert!(
        py.exists(),
        "{} not found: scripts/setup creates the virtualenv with qiskit-ibm-runtime and amazon-braket-sdk",
        py.display()
    );
    py
}

/// A file in tests/quantum/.
pub fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("quantum")
        .join(name)
}

/// `../shared` beside the checkout (VIGIL_SHARED overrides).
pub fn shared() -> PathBuf {
    let dir = std::env::var_os("VIGIL_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared"));
    assert!(
        dir.is_dir(),
        "shared data not found at {} (set VIGIL_SHARED)",
        dir.display()
    );
    dir
}

/// The fake provider (tests/quantum/fake_upstream.py) on a free port.
pub struct Upstream {
    child: Child,
    pub port: u16,
    log: PathBuf,
    /// CA certificate that signed the server's certificate (HTTPS only).
    pub ca: Option<PathBuf>,
    dir: tempfile::TempDir,
}

impl Upstream {
    pub fn start(tls: bool) -> Upstream {
        Self::start_with_env(tls, &[])
    }

    /// With environment for the stand-in, e.g. FAKE_AWS_KEY/FAKE_AWS_SECRET:
    /// the AWS keys it checks SigV4 signatures against.
    pub fn start_with_env(tls: bool, env: &[(&str, &str)]) -> Upstream {
        let dir = tempfile::tempdir().unwrap();
        let port_file = dir.path().join("port");
        let log = dir.path().join("requests.jsonl");
        let mut cmd = Command::new(python());
        cmd.arg(script("fake_upstream.py"))
            .arg(&port_file)
            .arg(&log)
            .envs(env.iter().copied());
        let ca = tls.then(|| {
            make_certificates(dir.path());
            cmd.arg(dir.path().join("cert.pem"))
                .arg(dir.path().join("key.pem"));
            dir.path().join("ca.pem")
        });
        let child = cmd
            .stdout(Stdio::null())
            .spawn()
            .expect("start fake_upstream.py");
        let start = Instant::now();
        let port = loop {
            if let Ok(p) = std::fs::read_to_string(&port_file) {
                break p.trim().parse().unwrap();
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "fake upstream did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        Upstream {
            child,
            port,
            log,
            ca,
            dir,
        }
    }

    pub fn url(&self) -> String {
        let scheme = if self.ca.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// Every request the upstream received: method, path, headers, json.
    pub fn requests(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A test CA and a certificate for 127.0.0.1 signed by it (openssl CLI).
fn make_certificates(dir: &Path) {
    let script = "set -e
        openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=vigil-test-ca 2>/dev/null
        openssl req -newkey rsa:2048 -nodes -keyout key.pem -out leaf.csr -subj /CN=127.0.0.1 2>/dev/null
        printf 'subjectAltName=IP:127.0.0.1\\nbasicConstraints=CA:FALSE\\n' > leaf.ext
        openssl x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out cert.pem -days 2 -extfile leaf.ext 2>/dev/null";
    let ok = Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .status()
        .expect("run openssl")
        .success();
    assert!(ok, "openssl could not make the test certificates");
}

/// An HTTP/1.1 response: status, headers (lower-case names), body.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpResponse {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One request on its own connection (`Connection: close`).
pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpResponse {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("bad response: {text}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let body = if headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"))
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    HttpResponse {
        status,
        headers,
        body,
    }
}

/// The body of a chunked HTTP/1.1 response, as far as it is well formed.
pub fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// Run a script of tests/quantum with the venv's Python; its JSON lines.
pub fn run_sdk(script_name: &str, args: &[&str], env: &[(&str, &str)]) -> (u32, Vec<Value>) {
    let out_dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(python())
        .arg(script(script_name))
        .args(args)
        .envs(env.iter().copied())
        .current_dir(out_dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the SDK script");
    let pid = child.id();
    let mut stdout = String::new();
    let mut stderr = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{script_name} failed:\n{stderr}");
    let lines = stdout
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (pid, lines)
}
