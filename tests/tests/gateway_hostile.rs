//! Hostile input against the real gateway and collector processes: bodies
//! built to exhaust the parser (deep OpenQASM nesting, million-qubit
//! registers with endless barriers, millions of JSON elements), bodies and
//! job ids over every size limit, thousands of idle connections, clients
//! that hang up mid-request.
//!
//! Throughout and after, a real amazon-braket-sdk job must still be relayed
//! and recorded with its agent, neither process may restart or die, every
//! hostile request gets a 4xx with a JSON reason (or is cut by a timeout),
//! the bad bodies are recorded (parse_error or the denial), and the
//! gateway's peak RSS stays under 128 MiB. Every problem is gathered and
//! reported at once at the end.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use vigil_e2e::gateway::{process_alive, raise_nofile, raw_request, secret_file, Outcome, Pair};
use vigil_e2e::quantum::{run_sdk, Upstream};
use vigil_e2e::{marker, Collector, Value};

const WAIT: Duration = Duration::from_secs(30);
const SV1: &str = "arn:aws:braket:::device/quantum-simulator/amazon/sv1";
const AWS_REAL: (&str, &str) = ("AKIAREALKEY000000009", "real-aws-secret-hostile");
const TOKEN: &str = "VIGILGWTOKENHOSTILE001";
const RSS_LIMIT_KIB: u64 = 128 * 1024;
const JSON: [(&str, &str); 1] = [("Content-Type", "application/json")];

fn job(v: &Value) -> &Value {
    &v["quantum_job"]
}

/// A Braket CreateQuantumTask body around an OpenQASM `source`.
fn task(source: &str, prefix: &str) -> Vec<u8> {
    let action = serde_json::json!({
        "braketSchemaHeader": {"name": "braket.ir.openqasm.program", "version": "1"},
        "source": source,
    });
    serde_json::json!({
        "action": action.to_string(),
        "deviceArn": SV1,
        "shots": 10,
        "outputS3Bucket": "amazon-braket-us-east-1-123456789012",
        "outputS3KeyPrefix": prefix,
    })
    .to_string()
    .into_bytes()
}

/// OpenQASM with `depth` nested `if` blocks.
fn deep_qasm(depth: usize) -> String {
    let mut s = String::from("OPENQASM 3; qubit[2] q; bit[2] c; ");
    for _ in 0..depth {
        s.push_str("if (c[0]) { ");
    }
    s.push_str("x q[0]; ");
    for _ in 0..depth {
        s.push_str("} ");
    }
    s
}

/// A million-qubit register and barriers on all of it until `bytes`.
fn wide_qasm(bytes: usize) -> String {
    let mut s = String::from("OPENQASM 3; qubit[1000000] q; ");
    while s.len() + 11 < bytes {
        s.push_str("barrier q; ");
    }
    s
}

/// `[0,0,0,...]` of `bytes` bytes.
fn huge_array(bytes: usize) -> Vec<u8> {
    let n = (bytes - 2) / 2;
    let mut v = Vec::with_capacity(bytes);
    v.push(b'[');
    for i in 0..n {
        if i > 0 {
            v.push(b',');
        }
        v.push(b'0');
    }
    v.push(b']');
    v
}

/// Problems found so far, reported together at the end.
#[derive(Default, Clone)]
struct Problems(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

impl Problems {
    /// Each distinct problem once (a step repeated 20 times reports once).
    fn add(&self, p: String) {
        let mut list = self.0.lock().unwrap();
        if !list.contains(&p) {
            eprintln!("PROBLEM: {p}");
            list.push(p);
        }
    }
    fn list(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

/// A hostile request's answer must be a 4xx with a JSON reason, or the
/// connection cut by a timeout.
fn check_refused(problems: &Problems, what: &str, outcome: &Outcome, started: Instant) {
    match outcome {
        Outcome::Answer { status, body, .. } => {
            if !(400..500).contains(status) {
                problems.add(format!(
                    "{what}: HTTP {status}, not a 4xx: {}",
                    outcome.describe()
                ));
            } else if serde_json::from_str::<Value>(body).is_err() {
                problems.add(format!(
                    "{what}: HTTP {status} without a JSON reason: {body:?}"
                ));
            }
        }
        Outcome::Cut(why) => {
            // a cut is acceptable only as a timeout (seconds later), not a crash
            let after = started.elapsed();
            if after < Duration::from_secs(1) {
                problems.add(format!(
                    "{what}: connection ended without an answer after {after:?} ({why})"
                ));
            } else {
                eprintln!("{what}: cut after {after:?} ({why})");
            }
        }
    }
}

/// Wait for the record of a refused body (`pred` on its `quantum_job`).
fn check_recorded(problems: &Problems, c: &Collector, what: &str, pred: impl Fn(&Value) -> bool) {
    let deadline = Instant::now() + WAIT;
    loop {
        let found = c.events().into_iter().find(|v| {
            v["kind"] == "quantum_job" && job(v)["decision"] != "allowed" && pred(job(v))
        });
        if let Some(ev) = found {
            let j = job(&ev);
            let reason = j["parse_error"].is_string() || j["policy_limit"].is_string();
            if !reason || j["decision"] != "denied" {
                problems.add(format!(
                    "{what}: recorded without a denial or parse_error: {j}"
                ));
            }
            eprintln!(
                "{what}: recorded {} / {} / {}",
                j["decision"], j["policy_limit"], j["parse_error"]
            );
            return;
        }
        if Instant::now() > deadline {
            let sizes: Vec<Value> = c
                .events()
                .iter()
                .filter(|v| v["kind"] == "quantum_job")
                .map(|v| job(v)["payload_bytes"].clone())
                .collect();
            problems.add(format!(
                "{what}: no denied quantum_job record for it (records' payload sizes: {sizes:?})"
            ));
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The real SDK flow: two tasks from `braket-agent`, both recorded with it.
fn sdk_job(problems: &Problems, pair: &Pair, tag: &str, when: &str) {
    let started = Instant::now();
    let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
        let (pid, sent) = run_sdk(
            "braket_client.py",
            &[&format!("{}/braket", pair.url()), tag],
            &[
                ("AWS_ACCESS_KEY_ID", TOKEN),
                ("AWS_SECRET_ACCESS_KEY", "placeholder-secret"),
            ],
        );
        assert_eq!(sent.len(), 2, "{sent:?}");
        for truth in &sent {
            let arn = truth["task_arn"].as_str().unwrap();
            let ev = pair
                .collector
                .wait_for(&format!("submit of {arn}"), WAIT, |v| {
                    v["kind"] == "quantum_job"
                        && job(v)["operation"] == "submit"
                        && job(v)["job_id"] == arn
                });
            assert_eq!(ev["agent_id"], "braket-agent", "{ev}");
            assert_eq!(ev["process"]["pid"], pid, "{ev}");
            assert_eq!(job(&ev)["decision"], "allowed", "{ev}");
        }
    }));
    match outcome {
        Ok(()) => eprintln!(
            "SDK job {when}: relayed and recorded in {:?}",
            started.elapsed()
        ),
        Err(e) => {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            problems.add(format!("SDK job {when} failed: {msg}"));
        }
    }
}

fn check_processes(
    problems: &Problems,
    pair: &mut Pair,
    collector_pid: u32,
    gateway_pid: u32,
    when: &str,
) {
    if pair.collector.pid() != collector_pid || !process_alive(collector_pid) {
        problems.add(format!(
            "{when}: the collector (pid {collector_pid}) is gone:\n{}",
            pair.collector.stderr()
        ));
    }
    if pair.gateway.pid() != gateway_pid || !pair.gateway.alive() {
        problems.add(format!(
            "{when}: the gateway (pid {gateway_pid}) is gone:\n{}",
            pair.gateway.stderr()
        ));
    }
    let rss = pair.gateway.peak_rss_kib();
    eprintln!("{when}: gateway VmHWM {rss} KiB");
    if rss >= RSS_LIMIT_KIB {
        problems.add(format!(
            "{when}: gateway peak RSS {rss} KiB, over {RSS_LIMIT_KIB} KiB"
        ));
    }
}

#[test]
fn hostile_input_never_takes_the_gateway_or_the_collector_down() {
    raise_nofile(16384);
    let upstream = Upstream::start_with_env(
        false,
        &[
            ("FAKE_AWS_KEY", AWS_REAL.0),
            ("FAKE_AWS_SECRET", AWS_REAL.1),
        ],
    );
    let cred = secret_file(
        upstream.dir(),
        "aws-credentials",
        &format!(
            "[default]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
            AWS_REAL.0, AWS_REAL.1
        ),
        None,
    );
    let token_file = secret_file(upstream.dir(), "braket-agent.token", TOKEN, None);
    let tag = marker("hostile");
    // /braket: the agent's SDK, its token, the brokered AWS keys. /hostile:
    // the same provider without a brokered credential, so this test process
    // (in no agent) reaches the parser and the limits.
    let mut pair = Pair::start(
        &format!(
            "host_id = \"e2e-hostile\"\n[[agents]]\nname = \"braket-agent\"\ncmdline = 'braket_client\\.py .*{tag}'\n"
        ),
        &format!(
            r#"on_parse_error = "deny"
[[routes]]
prefix = "/braket"
provider = "braket"
upstream = "{url}"
[routes.credential]
kind = "aws_sigv4"
file = "{cred}"
region = "us-east-1"
[[routes]]
prefix = "/hostile"
provider = "braket"
upstream = "{url}"
[tokens]
braket-agent = "{token}"
[policy]
max_qubits = 30
"#,
            url = upstream.url(),
            cred = cred.display(),
            token = token_file.display(),
        ),
        None,
    );
    let problems = Problems::default();
    let (collector_pid, gateway_pid) = (pair.collector.pid(), pair.gateway.pid());
    let addr = pair.addr().to_string();
    sdk_job(&problems, &pair, &tag, "before the hostile input");

    // 1. bodies built to exhaust the parser, two of each at once, while the SDK submits
    let max_body = 8 << 20;
    let bodies: Vec<(&str, Vec<u8>)> = vec![
        (
            "5000-deep OpenQASM if blocks",
            task(&deep_qasm(5000), "deep"),
        ),
        (
            "qubit[1000000] and barriers up to the body limit",
            task(&wide_qasm(max_body - 4096), "wide"),
        ),
        (
            "a JSON array of ~4 million elements",
            huge_array(max_body - 200_000),
        ),
        ("5000-deep JSON arrays", {
            let mut b = vec![b'['; 5000];
            b.extend(vec![b']'; 5000]);
            b
        }),
    ];
    for (what, body) in &bodies {
        eprintln!("{what}: {} bytes", body.len());
        assert!(body.len() <= max_body, "{what} is over max_body_bytes");
    }
    std::thread::scope(|s| {
        for (what, body) in &bodies {
            for copy in 0..2 {
                let (problems, addr) = (problems.clone(), addr.clone());
                s.spawn(move || {
                    let started = Instant::now();
                    let out = raw_request(
                        &addr,
                        "POST",
                        "/hostile/quantum-task",
                        &JSON,
                        body.clone(),
                        Duration::from_secs(60),
                    );
                    eprintln!(
                        "{what} #{copy}: {} in {:?}",
                        out.describe(),
                        started.elapsed()
                    );
                    check_refused(&problems, what, &out, started);
                });
            }
        }
        sdk_job(&problems, &pair, &tag, "while the parser is under attack");
    });
    for (what, body) in &bodies {
        let len = body.len() as u64;
        check_recorded(&problems, &pair.collector, what, |j| {
            j["payload_bytes"] == len
        });
    }
    check_processes(
        &problems,
        &mut pair,
        collector_pid,
        gateway_pid,
        "after the parser bodies",
    );

    // 2. a 32 MiB body: refused by size before it is read
    let started = Instant::now();
    let big = vec![b' '; 32 << 20];
    let out = raw_request(
        &addr,
        "POST",
        "/hostile/quantum-task",
        &JSON,
        big,
        Duration::from_secs(60),
    );
    eprintln!("32 MiB body: {} in {:?}", out.describe(), started.elapsed());
    check_refused(&problems, "32 MiB body", &out, started);
    if out.status() != Some(413) {
        problems.add(format!("32 MiB body: expected 413, got {}", out.describe()));
    }
    check_recorded(&problems, &pair.collector, "32 MiB body", |j| {
        j["policy_limit"] == "max_body_bytes"
    });

    // 3. status polls with huge job ids: 400 KB (over the header buffer),
    // 200 KB (over the path limit), many times over
    for (what, len, times) in [
        ("400 KB job id", 400 << 10, 20),
        ("200 KB job id", 200 << 10, 20),
    ] {
        let id = "a".repeat(len);
        for i in 0..times {
            let started = Instant::now();
            let out = raw_request(
                &addr,
                "GET",
                &format!("/hostile/quantum-task/{id}"),
                &[],
                Vec::new(),
                Duration::from_secs(30),
            );
            if i == 0 {
                eprintln!("{what}: {}", out.describe());
            }
            // hyper refuses a request line over its 64 KiB URI limit itself,
            // before the gateway routes it: a 4xx without a JSON body, which
            // the gateway records (policy_limit request_head)
            match &out {
                Outcome::Answer { status, .. } if (400..500).contains(status) => {}
                _ => check_refused(&problems, what, &out, started),
            }
        }
        check_recorded(&problems, &pair.collector, what, |j| {
            j["policy_limit"] == "request_head"
        });
    }
    check_processes(
        &problems,
        &mut pair,
        collector_pid,
        gateway_pid,
        "after the huge job ids",
    );

    // 4. a client that sends a submission and hangs up before the answer:
    // the job is relayed and recorded all the same
    let hangup = format!("hangup-{tag}");
    {
        let body = task(
            "OPENQASM 3; qubit[2] q; bit[2] c; h q[0]; cnot q[0], q[1]; c = measure q;",
            &hangup,
        );
        let mut s = TcpStream::connect(&addr).unwrap();
        let head = format!(
            "POST /hostile/quantum-task HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nX-Fake-Delay-Ms: 500\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(&body).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        s.shutdown(Shutdown::Both).unwrap();
    }
    let deadline = Instant::now() + WAIT;
    loop {
        let relayed = upstream
            .requests()
            .into_iter()
            .any(|r| r["json"]["outputS3KeyPrefix"] == hangup.as_str());
        let ev = pair.collector.events().into_iter().find(|v| {
            v["kind"] == "quantum_job"
                && job(v)["output_location"]
                    .as_str()
                    .is_some_and(|l| l.ends_with(&hangup))
        });
        if let Some(ev) = ev {
            let j = job(&ev);
            if !relayed {
                problems.add(format!("hung-up submission recorded but not relayed: {j}"));
            }
            if j["operation"] != "submit" || j["http_status"] != 201 {
                problems.add(format!("hung-up submission: recorded as {j}"));
            }
            if !j["job_id"]
                .as_str()
                .is_some_and(|id| id.starts_with("arn:aws:braket"))
            {
                problems.add(format!(
                    "hung-up submission: its record has no job id (the provider answered one): {j}"
                ));
            }
            break;
        }
        if Instant::now() > deadline {
            problems.add(format!(
                "hung-up submission: no record within {WAIT:?} (relayed upstream: {relayed})"
            ));
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }

    // 5. 2,000 idle connections held open; an agent's job must still go through
    let mut idle: Vec<TcpStream> = Vec::new();
    let mut connect_errors = 0;
    for _ in 0..2000 {
        match TcpStream::connect(&addr) {
            Ok(s) => idle.push(s),
            Err(_) => connect_errors += 1,
        }
    }
    let held_from = Instant::now();
    eprintln!(
        "idle: {} connected, {connect_errors} refused at connect",
        idle.len()
    );
    sdk_job(
        &problems,
        &pair,
        &tag,
        "while 2,000 idle connections are held",
    );
    // every idle connection is closed by the gateway (at accept over
    // max_connections, or by the header timeout), none held forever
    let mut closed = 0;
    let mut still_open = 0;
    for s in &mut idle {
        let left = Duration::from_secs(40).saturating_sub(held_from.elapsed());
        s.set_read_timeout(Some(left.max(Duration::from_millis(10))))
            .unwrap();
        let mut b = [0u8; 512];
        match s.read(&mut b) {
            Ok(_) => closed += 1,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                still_open += 1
            }
            Err(_) => closed += 1,
        }
    }
    eprintln!(
        "idle: closed {closed}, still open after 40 s {still_open}, all checked after {:?}",
        held_from.elapsed()
    );
    if still_open > 0 {
        problems.add(format!(
            "{still_open} idle connections still open 40 s later"
        ));
    }
    drop(idle);
    check_processes(
        &problems,
        &mut pair,
        collector_pid,
        gateway_pid,
        "after the idle connections",
    );

    // after it all: the SDK still works, nothing restarted, memory bounded
    sdk_job(&problems, &pair, &tag, "after the hostile input");
    check_processes(
        &problems,
        &mut pair,
        collector_pid,
        gateway_pid,
        "at the end",
    );
    let problems = problems.list();
    assert!(
        problems.is_empty(),
        "{} problems:\n{}\n--- gateway stderr (tail) ---\n{}",
        problems.len(),
        problems.join("\n"),
        tail(&pair.gateway.stderr(), 40)
    );
    pair.stop();
}

fn tail(s: &str, lines: usize) -> String {
    let all: Vec<&str> = s.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
