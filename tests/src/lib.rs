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
    /// The stdout reader: it reads to the end and returns the first line it
    /// could not take (not JSON, not UTF-8), which fails the test.
    reader: Option<std::thread::JoinHandle<()>>,
    reader_error: Arc<Mutex<Option<String>>>,
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
        let reader_error = Arc::new(Mutex::new(None));
        let stdout = child.stdout.take().unwrap();
        let reader = {
            let (events, raw, error) = (events.clone(), raw.clone(), reader_error.clone());
            std::thread::spawn(move || read_events(stdout, &events, &raw, &error))
        };
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
            reader: Some(reader),
            reader_error,
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
        self.check_reader();
        self.events.lock().unwrap().clone()
    }

    /// Fail the test if stdout held something that is not an event.
    fn check_reader(&self) {
        if let Some(e) = self.reader_error.lock().unwrap().as_ref() {
            panic!("{e}");
        }
    }

    /// Wait for the reader to take the last lines (stdout closes with the
    /// process), then check it took them all.
    fn join_reader(&mut self) {
        let Some(reader) = self.reader.take() else {
            return;
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !reader.is_finished() {
            assert!(
                Instant::now() < deadline,
                "the collector's stdout did not close within 30 s of its exit"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        if reader.join().is_err() {
            panic!("the stdout reader thread panicked");
        }
        self.check_reader();
    }

    /// Wait until an event satisfies `pred`; panics with context after `timeout`.
    pub fn wait_for(&self, what: &str, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            self.check_reader();
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
        self.join_reader();
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
        self.join_reader();
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

/// Read the collector's stdout to its end: each line an event (JSON). The
/// first line that is not is kept in `error` (reading goes on).
fn read_events(
    stdout: std::process::ChildStdout,
    events: &Mutex<Vec<Value>>,
    raw: &Mutex<String>,
    error: &Mutex<Option<String>>,
) {
    let fail = |message: String| {
        error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert(message);
    };
    for line in BufReader::new(stdout).lines() {
        let line = match line {
            Ok(line) => line,
            Err(e) => return fail(format!("cannot read the collector's stdout: {e}")),
        };
        let mut r = raw.lock().unwrap_or_else(|p| p.into_inner());
        r.push_str(&line);
        r.push('\n');
        drop(r);
        match serde_json::from_str::<Value>(&line) {
            Ok(v) => events.lock().unwrap_or_else(|p| p.into_inner()).push(v),
            Err(e) => fail(format!(
                "collector printed a line that is not JSON ({e}): {line}"
            )),
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_that_is_not_an_event_is_kept_as_the_error_and_reading_goes_on() {
        let mut child = Command::new("sh")
            .args(["-c", r#"printf '{"a":1}\nnot json\n{"b":2}\n'"#])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let (events, raw, error) = (Mutex::default(), Mutex::default(), Mutex::default());
        read_events(child.stdout.take().unwrap(), &events, &raw, &error);
        child.wait().unwrap();
        assert_eq!(events.lock().unwrap().len(), 2, "read to the end");
        let error = error.lock().unwrap().clone().expect("an error");
        assert!(
            error.contains("not JSON") && error.contains("not json"),
            "{error}"
        );
        assert_eq!(raw.lock().unwrap().lines().count(), 3);
    }
}
