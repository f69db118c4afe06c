//! Harness for the quantum job gateway's end-to-end tests: the real
//! `vigil-gateway` binary (its own process, optionally as an unprivileged
//! user through `setpriv`) wired to a real collector's `[link]` socket.
//!
//! `VIGIL_GATEWAY_BIN` overrides the binary's path (see [`workspace_bin`]).
//! Like the collector, the gateway never skips: a missing binary, a config
//! it refuses or a link that never comes up fail the test with its stderr.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::kafka::free_port;
use crate::{workspace_bin, Collector};

/// How long the gateway may take to bind and reach the collector.
const READY: Duration = Duration::from_secs(60);
/// Logged once the link to the collector is up.
pub const LINKED: &str = "connected to the collector";
/// Logged once the gateway is bound.
pub const LISTENING: &str = "quantum job gateway listening";

/// A running `vigil-gateway` whose stderr is gathered in the background.
pub struct Gateway {
    child: Child,
    stderr: Arc<Mutex<String>>,
    config_path: PathBuf,
    as_user: Option<String>,
    addr: String,
    marker: &'static str,
    dir: tempfile::TempDir,
}

/// A user's uid and primary gid, from the password database.
pub fn user_ids(user: &str) -> (u32, u32) {
    let name = std::ffi::CString::new(user).expect("user name");
    // SAFETY: getpwnam returns a pointer into static storage or null; we
    // read two integers from it at once, on this thread, before any other
    // passwd call.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    assert!(!pw.is_null(), "no user {user:?} on this host");
    // SAFETY: non-null pointer from getpwnam (see above).
    unsafe { ((*pw).pw_uid, (*pw).pw_gid) }
}

/// Let `user` reach files in `dir` (mode 755): setpriv'd gateways need to
/// traverse the test's temp directories.
pub fn open_dir(dir: &Path) {
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A secret file the gateway accepts (mode 600), owned by `owner` when the
/// gateway runs as that user; its directory is made traversable.
pub fn secret_file(dir: &Path, name: &str, content: &str, owner: Option<&str>) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    if let Some(user) = owner {
        let (uid, gid) = user_ids(user);
        std::os::unix::fs::chown(&path, Some(uid), Some(gid)).unwrap();
        open_dir(dir);
    }
    path
}

impl Gateway {
    /// Start with `config` (TOML; `[metrics] listen = ""` is added unless
    /// the config has a `[metrics]` table) and wait until it is connected
    /// to the collector. `as_user`: run it through `setpriv` as that user
    /// with no capabilities and no_new_privs, as its systemd unit does.
    pub fn start(config: &str, as_user: Option<&str>) -> Gateway {
        Self::start_waiting_for(config, as_user, LINKED)
    }

    /// [`Gateway::start`], waiting for `marker` in its log instead (e.g.
    /// [`LISTENING`] when the collector is expected to refuse it).
    pub fn start_waiting_for(config: &str, as_user: Option<&str>, marker: &'static str) -> Gateway {
        let dir = tempfile::tempdir().expect("tempdir");
        let metrics = if config.contains("[metrics]") {
            ""
        } else {
            "\n[metrics]\nlisten = \"\"\n"
        };
        let text = format!("{config}{metrics}");
        let parsed: toml::Table = toml::from_str(&text)
            .unwrap_or_else(|e| panic!("the test's gateway config is not TOML ({e}):\n{text}"));
        let addr = parsed
            .get("listen")
            .and_then(|v| v.as_str())
            .unwrap_or("127.0.0.1:8480")
            .to_string();
        let config_path = dir.path().join("gateway.toml");
        std::fs::write(&config_path, text).expect("write gateway config");
        std::fs::set_permissions(&config_path, std::fs::Permissions::from_mode(0o644)).unwrap();
        if as_user.is_some() {
            open_dir(dir.path());
        }
        let mut g = Gateway {
            child: Self::spawn(&config_path, as_user, dir.path()),
            stderr: Arc::new(Mutex::new(String::new())),
            config_path,
            as_user: as_user.map(str::to_string),
            addr,
            marker,
            dir,
        };
        g.gather_and_wait();
        g
    }

    fn spawn(config: &Path, as_user: Option<&str>, dir: &Path) -> Child {
        let bin = workspace_bin("vigil-gateway");
        let mut cmd = match as_user {
            None => Command::new(&bin),
            Some(user) => {
                // the build directory is under root's home (mode 700): the
                // unprivileged user runs a copy
                let copy = dir.join("vigil-gateway");
                if !copy.exists() {
                    std::fs::copy(&bin, &copy)
                        .unwrap_or_else(|e| panic!("copy {} for {user}: {e}", bin.display()));
                    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755))
                        .unwrap();
                }
                let (uid, gid) = user_ids(user);
                let mut c = Command::new("setpriv");
                c.arg(format!("--reuid={uid}"))
                    .arg(format!("--regid={gid}"))
                    .args([
                        "--clear-groups",
                        "--inh-caps=-all",
                        "--bounding-set=-all",
                        "--no-new-privs",
                    ])
                    .arg(copy);
                c
            }
        };
        cmd.arg("--config")
            .arg(config)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn vigil-gateway (as {as_user:?}): {e}"))
    }

    /// Gather stderr in the background; wait for the collector link.
    fn gather_and_wait(&mut self) {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let stderr = self.stderr.clone();
        let marker = self.marker;
        let mut pipe = self.child.stderr.take().unwrap();
        // what this process printed starts after what earlier ones did
        let from = stderr.lock().unwrap().len();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            loop {
                match pipe.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let mut s = stderr.lock().unwrap();
                        s.push_str(&String::from_utf8_lossy(&buf[..n]));
                        // the link may come up before the listener is bound
                        if s[from..].contains(marker) && s[from..].contains(LISTENING) {
                            let _ = ready_tx.send(());
                        }
                    }
                }
            }
        });
        let deadline = Instant::now() + READY;
        loop {
            if ready_rx.recv_timeout(Duration::from_millis(100)).is_ok() {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                std::thread::sleep(Duration::from_millis(100));
                panic!(
                    "vigil-gateway exited with {status} before it logged {:?}:\n{}",
                    self.marker,
                    self.stderr()
                );
            }
            assert!(
                Instant::now() < deadline,
                "vigil-gateway did not log {:?} within {READY:?}:\n{}",
                self.marker,
                self.stderr()
            );
        }
    }

    /// `127.0.0.1:PORT` it listens on.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything it logged so far (every start of it, in order).
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// Its temp directory (config; the binary's copy when run as a user).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Whether the process is still running (not exited, not a zombie).
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Peak resident set (VmHWM) in KiB, from /proc/PID/status.
    pub fn peak_rss_kib(&self) -> u64 {
        proc_status_field(self.pid(), "VmHWM")
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| panic!("no VmHWM for the gateway (pid {})", self.pid()))
    }

    /// SIGTERM and wait; it must exit 0. Returns its stderr.
    pub fn stop(mut self) -> String {
        self.terminate();
        println!("--- gateway stderr ---\n{}", self.stderr());
        self.stderr()
    }

    fn terminate(&mut self) {
        // SAFETY: kill(2) on our own child's pid has no memory-safety concerns.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = self.child.wait().expect("wait gateway");
        assert!(
            status.success(),
            "gateway exited with {status}:\n{}",
            self.stderr()
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    /// SIGKILL, no shutdown. Returns its stderr.
    pub fn kill(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.stderr()
    }

    /// Stop (SIGTERM) and start again with the same config and user.
    pub fn restart(&mut self) {
        self.terminate();
        self.child = Self::spawn(&self.config_path, self.as_user.as_deref(), self.dir.path());
        self.gather_and_wait();
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One field of /proc/PID/status (`Uid`, `CapEff`, `VmHWM`...), trimmed.
pub fn proc_status_field(pid: u32, field: &str) -> Option<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k == field).then(|| v.trim().to_string())
    })
}

/// Whether `pid` is a live process (not gone, not a zombie).
pub fn process_alive(pid: u32) -> bool {
    proc_status_field(pid, "State").is_some_and(|s| !s.starts_with('Z') && !s.starts_with('X'))
}

/// A directory for the link socket that any user can reach.
pub fn socket_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    open_dir(dir.path());
    dir
}

/// A collector config with `[link]` at `socket` for `allowed_users`,
/// after `extra` (host_id, agents...).
pub fn collector_config(extra: &str, socket: &Path, allowed_users: &[&str]) -> String {
    let users: Vec<String> = allowed_users.iter().map(|u| format!("{u:?}")).collect();
    format!(
        "{extra}\n[link]\nsocket = \"{}\"\nallowed_users = [{}]\n",
        socket.display(),
        users.join(", ")
    )
}

/// `listen` and `collector_socket` for a gateway config, before `body`
/// (routes, policy, tokens...), on a free port.
pub fn gateway_config(body: &str, socket: &Path) -> String {
    format!(
        "listen = \"127.0.0.1:{}\"\ncollector_socket = \"{}\"\n{body}\n",
        free_port(),
        socket.display()
    )
}

/// A collector with `[link]` and a gateway wired to it.
pub struct Pair {
    pub gateway: Gateway,
    pub collector: Collector,
    pub socket: PathBuf,
    _socket_dir: tempfile::TempDir,
}

impl Pair {
    /// Start the collector (`collector_extra` + `[link]`, the gateway's
    /// user allowed) then the gateway (`gateway_body` + listen and socket).
    pub fn start(collector_extra: &str, gateway_body: &str, as_user: Option<&str>) -> Pair {
        let socket_dir = socket_dir();
        let socket = socket_dir.path().join("collector.sock");
        let user = as_user.unwrap_or("root");
        let collector = Collector::start(&collector_config(collector_extra, &socket, &[user]));
        let gateway = Gateway::start(&gateway_config(gateway_body, &socket), as_user);
        Pair {
            gateway,
            collector,
            socket,
            _socket_dir: socket_dir,
        }
    }

    pub fn addr(&self) -> &str {
        self.gateway.addr()
    }

    pub fn url(&self) -> String {
        self.gateway.url()
    }

    /// Stop the gateway first (it flushes its records), then the collector;
    /// the collector's events.
    pub fn stop(self) -> Vec<serde_json::Value> {
        self.gateway.stop();
        self.collector.stop()
    }
}

/// What became of a raw request: an HTTP answer, or the connection ended
/// without one (reset, closed, timed out).
#[derive(Debug)]
pub enum Outcome {
    Answer {
        status: u16,
        headers: Vec<(String, String)>,
        body: String,
    },
    Cut(String),
}

impl Outcome {
    pub fn status(&self) -> Option<u16> {
        match self {
            Outcome::Answer { status, .. } => Some(*status),
            Outcome::Cut(_) => None,
        }
    }

    /// The body as JSON, if it is JSON.
    pub fn json(&self) -> Option<serde_json::Value> {
        match self {
            Outcome::Answer { body, .. } => serde_json::from_str(body).ok(),
            Outcome::Cut(_) => None,
        }
    }

    /// A short description for failure messages (the body cut to 300 bytes).
    pub fn describe(&self) -> String {
        match self {
            Outcome::Answer { status, body, .. } => {
                let end = body.char_indices().nth(300).map_or(body.len(), |(i, _)| i);
                format!("HTTP {status}: {}", &body[..end])
            }
            Outcome::Cut(why) => format!("no answer: {why}"),
        }
    }
}

/// Send one request (`Connection: close`) that may be hostile: the body is
/// written from another thread while the answer is read, so a server that
/// answers early (413) and closes is seen answering, not as a write error.
/// `timeout` bounds the whole exchange.
pub fn raw_request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
    timeout: Duration,
) -> Outcome {
    let mut s = match TcpStream::connect(addr) {
        Ok(s) => s,
        Err(e) => return Outcome::Cut(format!("connect: {e}")),
    };
    s.set_read_timeout(Some(timeout)).unwrap();
    s.set_write_timeout(Some(timeout)).unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let mut w = s.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        w.write_all(head.as_bytes())?;
        w.write_all(&body)
    });
    let mut raw = Vec::new();
    let read = s.read_to_end(&mut raw);
    let _ = writer.join();
    if raw.is_empty() {
        return Outcome::Cut(match read {
            Ok(_) => "closed without an answer".into(),
            Err(e) => format!("read: {e}"),
        });
    }
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> Outcome {
    let text = String::from_utf8_lossy(raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let Some(status) = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
    else {
        return Outcome::Cut(format!("not an HTTP answer: {:.200}", text));
    };
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    let body = if chunked {
        crate::quantum::dechunk(body)
    } else {
        body.to_string()
    };
    Outcome::Answer {
        status,
        headers,
        body,
    }
}

/// Raise this process's open-file limit (children inherit it): tests that
/// hold thousands of connections need more than the usual 1024.
pub fn raise_nofile(want: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit write/read one rlimit struct we own.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        if lim.rlim_cur < want {
            lim.rlim_cur = want;
            lim.rlim_max = lim.rlim_max.max(want);
            assert_eq!(
                libc::setrlimit(libc::RLIMIT_NOFILE, &lim),
                0,
                "cannot raise RLIMIT_NOFILE to {want}: {}",
                std::io::Error::last_os_error()
            );
        }
    }
}
