//! Harness for Vigil's end-to-end tests: runs the real `vigil-collector`
//! binary against the real kernel and collects the JSON events it prints.
//!
//! These tests need root (or CAP_BPF + CAP_PERFMON) and a kernel with BTF;
//! without them they fail with the collector's own error, never skip.
//! The binary comes from the shared target directory: `scripts/test` builds it
//! first; `VIGIL_COLLECTOR_BIN` overrides the path.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use serde_json::Value;

/// Path of a binary built in this workspace's target directory.
pub fn workspace_bin(name: &str) -> PathBuf {
    let var = format!(
        "VIGIL_{}_BIN",
        name.trim_start_matches("vigil-").to_uppercase()
    );
    if let Ok(p) = std::env::var(&var) {
        return PathBuf::from(p);
    }
    // test binaries live in <target>/<profile>/deps/
    let exe = std::env::current_exe().expect("current exe");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    let bin = profile_dir.join(name);
    assert!(
        bin.exists(),
        "{} not found: build it first (`cargo build -p vigil-collector`, done by scripts/test) or set {var}",
        bin.display()
    );
    bin
}

pub mod detector;
pub mod gateway;
pub mod kafka;
pub mod quantum;

/// How to start a collector beyond its config.
#[derive(Debug, Clone)]
pub struct StartOptions {
    /// `--output` value: `stdout`, `spool` or `stdout,spool`.
    pub output: &'static str,
    /// Reuse a data directory (the spool survives restarts); default: a fresh one.
    pub data_dir: Option<PathBuf>,
}

impl Default for StartOptions {
    fn default() -> Self {
        Self {
            output: "stdout",
            data_dir: None,
        }
    }
}

/// A running collector whose stdout events are gathered in the background.
pub struct Collector {
    child: Child,
    events: Arc<Mutex<Vec<Value>>>,
    raw: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    _dir: tempfile::TempDir,
}

impl Collector {
    /// Start with the given TOML config (data_dir is filled in) and wait until ready.
    pub fn start(config: &str) -> Collector {
        Self::start_with(config, StartOptions::default())
    }

    pub fn start_with(config: &str, options: StartOptions) -> Collector {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("collector.toml");
        // heartbeat every second: a failing test then shows whether the kernel dropped records
        let heartbeat = if config.contains("[heartbeat]") {
            ""
        } else {
            "[heartbeat]\ninterval_secs = 1\n"
        };
        // tests run several collectors at once: no fixed metrics port unless asked
        let metrics = if config.contains("[metrics]") {
            ""
        } else {
            "[metrics]\nlisten = \"\"\n"
        };
        let data_dir = options
            .data_dir
            .clone()
            .unwrap_or_else(|| dir.path().to_path_buf());
        let config = format!(
            "data_dir = \"{}\"\n{config}\n{heartbeat}{metrics}",
            data_dir.display()
        );
        std::fs::write(&path, config).expect("write config");
        let mut child = Command::new(workspace_bin("vigil-collector"))
            .arg("--config")
            .arg(&path)
            .arg("--output")
            .arg(options.output)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn vigil-collector");

        let events = Arc::new(Mutex::new(Vec::new()));
        let raw = Arc::new(Mutex::new(String::new()));
        let stdout = child.stdout.take().unwrap();
        {
            let (events, raw) = (events.clone(), raw.clone());
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| {
                        panic!("collector printed a line that is not JSON ({e}): {line}")
                    });
                    let mut r = raw.lock().unwrap_or_else(|p| p.into_inner());
                    r.push_str(&line);
                    r.push('\n');
                    drop(r);
                    events.lock().unwrap_or_else(|p| p.into_inner()).push(v);
                }
            });
        }
        let stderr = Arc::new(Mutex::new(String::new()));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        {
            let stderr_buf = stderr.clone();
            let mut pipe = child.stderr.take().unwrap();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                loop {
                    match pipe.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            let mut s = stderr_buf.lock().unwrap();
                            s.push_str(&String::from_utf8_lossy(&buf[..n]));
                            if s.contains("collector ready") {
                                let _ = ready_tx.send(());
                            }
                        }
                    }
                }
            });
        }
        let mut c = Collector {
            child,
            events,
            raw,
            stderr,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if ready_rx.recv_timeout(Duration::from_millis(100)).is_ok() {
                break;
            }
            if let Ok(Some(status)) = c.child.try_wait() {
                panic!(
                    "vigil-collector exited with {status} before it was ready (BPF needs root or CAP_BPF+CAP_PERFMON):\n{}",
                    c.stderr()
                );
            }
            assert!(
                Instant::now() < deadline,
                "vigil-collector not ready after 60 s:\n{}",
                c.stderr()
            );
        }
        c
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Everything printed on stdout so far, verbatim.
    pub fn raw_output(&self) -> String {
        self.raw.lock().unwrap().clone()
    }

    pub fn events(&self) -> Vec<Value> {
        self.events.lock().unwrap().clone()
    }

    /// Wait until an event satisfies `pred`; panics with context after `timeout`.
    pub fn wait_for(&self, what: &str, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(v) = self.events.lock().unwrap().iter().find(|v| pred(v)) {
                return v.clone();
            }
            let seen = self.events.lock().unwrap().len();
            assert!(
                Instant::now() < deadline,
                "no event for {what} within {timeout:?} ({seen} events seen; last counters: {}); stderr:\n{}",
                self.last_stats(),
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The collector's latest heartbeat counters, as JSON text.
    pub fn last_stats(&self) -> String {
        self.events
            .lock()
            .unwrap()
            .iter()
            .rev()
            .find(|e| e["kind"] == "collector" && !e["collector"].is_null())
            .map(|e| e["collector"].to_string())
            .unwrap_or_else(|| "none yet".into())
    }

    /// SIGKILL: no shutdown at all, as the OOM killer would.
    pub fn kill(mut self) -> Vec<Value> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::thread::sleep(Duration::from_millis(200));
        self.events()
    }

    /// SIGINT, wait for exit, return every event.
    pub fn stop(self) -> Vec<Value> {
        self.stop_with(libc::SIGINT)
    }

    /// SIGTERM (what systemd sends), wait for exit, return every event.
    pub fn terminate(self) -> Vec<Value> {
        self.stop_with(libc::SIGTERM)
    }

    fn stop_with(mut self, signal: i32) -> Vec<Value> {
        // SAFETY: kill(2) on our own child's pid has no memory-safety concerns.
        unsafe { libc::kill(self.child.id() as i32, signal) };
        let status = self.child.wait().expect("wait collector");
        assert!(
            status.success(),
            "collector exited with {status}:\n{}",
            self.stderr()
        );
        // give the reader thread a moment to take the last lines
        std::thread::sleep(Duration::from_millis(200));
        // shown by the test runner only when the test fails
        println!("--- collector stderr ---\n{}", self.stderr());
        self.events()
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Field access by dotted path: `get(ev, "process.exe")`.
pub fn get<'a>(v: &'a Value, path: &str) -> &'a Value {
    path.split('.').fold(v, |v, k| &v[k])
}

pub fn str_at<'a>(v: &'a Value, path: &str) -> &'a str {
    get(v, path).as_str().unwrap_or("")
}

pub fn u64_at(v: &Value, path: &str) -> Option<u64> {
    get(v, path).as_u64()
}

pub fn is(v: &Value, kind: &str, activity: &str) -> bool {
    v["kind"] == kind && v["activity_name"] == activity
}

/// A short random marker to tell this test's processes from everything else.
pub fn marker(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{prefix}{}x{nanos:x}", std::process::id())
}
