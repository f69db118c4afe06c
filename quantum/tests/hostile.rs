//! Hostile submission bodies, each up to the gateway's 8 MiB: every one must
//! come back (no stack overflow, no minute-long scan, no memory blow-up) with
//! an error naming the limit it ran into. Timings are not asserted here;
//! `measure_worst_cases` (ignored, run in release) prints them, and
//! FUZZING.md records them.

use std::time::{Duration, Instant};

use vigil_quantum::{qasm, ParseError, ParseLimits, Provider};
use vigil_schema::QuantumJob;

const BODY: usize = 8 << 20;

/// A Braket task whose OpenQASM `source` is `qasm` (escaped into the action
/// string, itself a JSON string in the body).
fn braket_body(qasm: &str) -> Vec<u8> {
    let action = serde_json::json!({
        "braketSchemaHeader": {"name": "braket.ir.openqasm.program", "version": "1"},
        "source": qasm,
    })
    .to_string();
    serde_json::json!({
        "deviceArn": "arn:aws:braket:::device/quantum-simulator/amazon/sv1",
        "shots": 100,
        "action": action,
    })
    .to_string()
    .into_bytes()
}

/// `unit` repeated to fill about `bytes` after `head`.
fn fill(head: &str, unit: &str, bytes: usize) -> String {
    let mut s = String::with_capacity(bytes + unit.len());
    s.push_str(head);
    while s.len() + unit.len() <= bytes {
        s.push_str(unit);
    }
    s
}

fn submit(p: &Provider, body: &[u8]) -> Result<QuantumJob, ParseError> {
    let mut job = QuantumJob::default();
    p.parse_submit(body, &mut job).map(|_| job)
}

/// Runs `f` on a thread with a small stack: a scanner that recursed per
/// nested block would overflow it (an abort, not a panic).
fn on_small_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::Builder::new()
        .stack_size(1 << 20)
        .spawn(f)
        .unwrap()
        .join()
        .unwrap()
}

fn assert_limit(r: Result<impl std::fmt::Debug, ParseError>, limit: &str, says: &str) {
    let e = r.expect_err("a hostile body must be refused");
    assert_eq!(e.limit, Some(limit), "{e}");
    assert!(e.to_string().contains(says), "{e}");
}

#[test]
fn deeply_nested_blocks_are_refused_not_recursed() {
    let head = "OPENQASM 3; qubit q; bit c;\n";
    for (unit, sizes) in [
        ("if (c) {\n", &[60_000, BODY][..]),
        ("while (c) {\n", &[60_000, BODY]),
        ("for int i in [0:1] {\n", &[60_000, BODY]),
        ("box {\n", &[60_000, BODY]),
        ("{\n", &[60_000, BODY]),
        // bodies without braces nest as deep (at 8 MiB, that is more
        // than max_tokens: they are read before the scan)
        ("if (c)\n", &[60_000, 1 << 20]),
        ("if (c) x q; else box\n", &[60_000, 1 << 20]),
    ] {
        // ~60 KB as found, then larger
        for &bytes in sizes {
            let body = braket_body(&fill(head, unit, bytes));
            let r = on_small_stack(move || submit(&Provider::Braket, &body));
            assert_limit(r, "max_depth", "blocks nested deeper than 64");
        }
    }
    let e = qasm::analyze(&fill(head, "if (c) {\n", 10_000)).unwrap_err();
    // the line where the 65th level opens
    assert_eq!(e.to_string(), "qasm: line 66: blocks nested deeper than 64");
    // 64 levels are fine, and a long else-if chain is not deep at all
    let ok = format!("{head}{} x q; {}", "if (c) {".repeat(64), "}".repeat(64));
    assert_eq!(qasm::analyze(&ok).unwrap().instructions, 1);
    let chain = format!("{head}if (c) x q;{}", " else if (c) x q;".repeat(5000));
    assert_eq!(qasm::analyze(&chain).unwrap().instructions, 5001);
}

#[test]
fn wide_barriers_run_out_of_work() {
    let src = fill("qreg q[400000];\n", "barrier q;\n", BODY);
    let r = submit(&Provider::Braket, &braket_body(&src));
    assert_limit(r, "max_work", "more than 8000000 units of work");
    // broadcast gates over the same register likewise
    let src = fill("qreg q[400000];\n", "x q;\n", 1 << 20);
    assert_limit(qasm::analyze(&src), "max_work", "units of work");
    // one barrier of a million wires touches too many distinct wires
    let src = "qreg q[1000000]; barrier q;";
    assert_limit(qasm::analyze(src), "max_work", "distinct qubits and bits");
    // a register of four billion: refused before a step is taken
    assert_limit(
        qasm::analyze("qreg q[4000000000]; barrier q;"),
        "max_work",
        "units of work",
    );
}

#[test]
fn condition_fan_out_is_charged() {
    // every operation under `if (c == 5)` waits for all of c's bits
    // (1 MiB: a full body of these is more than max_tokens, read first)
    let src = fill(
        "OPENQASM 2.0; qreg q[1]; creg c[65536];\n",
        "if (c == 5) x q[0];\n",
        1 << 20,
    );
    assert_limit(qasm::analyze(&src), "max_work", "units of work");
    // nested conditions and repeated mentions do not multiply the bits
    let src = format!(
        "OPENQASM 3; qubit q; bit[1000] c;\n{} x q; {}",
        "if (c == 1 && c == 2 && c[3]) {".repeat(60),
        "}".repeat(60)
    );
    let s = qasm::analyze(&src).unwrap();
    assert_eq!((s.instructions, s.depth), (1, 1));
}

#[test]
fn huge_json_arrays_are_refused_before_parsing() {
    for unit in ["0,", "[],", "{},", "\"\",", "{\"a\":0},"] {
        let body = format!("{{\"params\": [{}0]}}", fill("", unit, BODY - 20));
        for p in [Provider::IbmRuntime, Provider::Braket, Provider::Ionq] {
            assert_limit(
                submit(&p, body.as_bytes()),
                "max_json_elements",
                "more than 500000 JSON elements",
            );
        }
    }
    let deep = format!("{{\"a\": {}{}}}", "[".repeat(100_000), "]".repeat(100_000));
    assert_limit(
        submit(&Provider::IbmRuntime, deep.as_bytes()),
        "max_depth",
        "byte 69: JSON nested deeper than 64",
    );
    // the Braket action is JSON in a string: scanned as well
    let action = format!("{}{}", "[".repeat(1000), "]".repeat(1000));
    let body = serde_json::json!({"deviceArn": "d", "shots": 1, "action": action}).to_string();
    assert_limit(
        submit(&Provider::Braket, body.as_bytes()),
        "max_depth",
        "braket: action: byte 64: JSON nested deeper than 64",
    );
}

#[test]
fn responses_are_bounded_too() {
    let huge = format!(
        "{{\"id\": \"j\", \"status\": \"done\", \"x\": [{}0]}}",
        "0,".repeat(1_000_000)
    );
    for p in [Provider::IbmRuntime, Provider::Ionq] {
        assert_eq!(p.submitted_job_id(huge.as_bytes()), None);
        let mut job = QuantumJob::default();
        p.status(huge.as_bytes(), &mut job);
        assert_eq!(job, QuantumJob::default());
    }
    let deep = format!("{{\"id\": {}1{}}}", "[".repeat(200), "]".repeat(200));
    assert_eq!(Provider::Ionq.submitted_job_id(deep.as_bytes()), None);
}

#[test]
fn token_floods_are_refused() {
    let src = fill("OPENQASM 3; qubit q;", ";", BODY);
    let body = serde_json::json!({"target": "simulator", "shots": 1,
        "input": {"format": "openqasm", "data": src}})
    .to_string();
    assert_limit(
        submit(&Provider::Ionq, body.as_bytes()),
        "max_tokens",
        "more than 4000000 tokens",
    );
}

#[test]
fn program_sets_share_one_budget() {
    // each program alone is within every limit; together they are not
    let program = fill("qreg q[1000]; creg c[1000];\n", "x q;\n", 20_000);
    let programs: Vec<_> = (0..200)
        .map(|_| serde_json::json!({"source": program}))
        .collect();
    let action = serde_json::json!({
        "braketSchemaHeader": {"name": "braket.ir.openqasm.program_set"},
        "programs": programs,
    })
    .to_string();
    let body = serde_json::json!({"deviceArn": "d", "shots": 1, "action": action}).to_string();
    assert_limit(
        submit(&Provider::Braket, body.as_bytes()),
        "max_work",
        "action.programs[",
    );
}

#[test]
fn a_passed_deadline_stops_the_parse() {
    let src = fill("qreg q[64];\n", "x q;\n", 256 << 10);
    let limits = ParseLimits {
        deadline: Some(Instant::now()),
        ..ParseLimits::default()
    };
    let mut job = QuantumJob::default();
    let r = Provider::Braket.parse_submit_with(&braket_body(&src), &mut job, &limits);
    assert_limit(r, "deadline", "parse deadline passed");
    // the same body is fine without one
    assert!(submit(&Provider::Braket, &braket_body(&src)).is_ok());
}

#[test]
fn limits_can_be_tightened() {
    let limits = ParseLimits {
        max_depth: 2,
        ..ParseLimits::default()
    };
    let r = qasm::analyze_with(
        "qubit q; bit c; if (c) { if (c) { if (c) { x q; } } }",
        &limits,
    );
    assert_limit(r, "max_depth", "line 1: blocks nested deeper than 2");
    let mut job = QuantumJob::default();
    let r = Provider::Ionq.parse_submit_with(b"{\"a\": [[[1]]]}", &mut job, &limits);
    assert_limit(r, "max_depth", "ionq: byte 7: JSON nested deeper than 2");
}

/// Worst cases for the report: `cargo test -p vigil-quantum --release
/// --test hostile -- --ignored --nocapture measure` (one at a time, so
/// the peak RSS of each is its own).
#[test]
#[ignore]
fn measure_worst_cases() {
    let which = std::env::var("HOSTILE").unwrap_or_default();
    let cases: Vec<(&str, Provider, Vec<u8>)> = vec![
        (
            "nested-if",
            Provider::Braket,
            braket_body(&fill("qubit q; bit c;", "if (c) {", BODY)),
        ),
        (
            "barrier",
            Provider::Braket,
            braket_body(&fill("qreg q[1000000];\n", "barrier q;\n", BODY)),
        ),
        (
            "barrier-under-budget",
            Provider::Braket,
            braket_body(&fill("qreg q[450000];\n", "barrier q;\n", BODY)),
        ),
        (
            "broadcast-x-under-budget",
            Provider::Braket,
            braket_body(&fill("qreg q[450000];\n", "x q;\n", BODY)),
        ),
        (
            "cx-distinct-wires",
            Provider::Braket,
            braket_body(&{
                let mut s = String::from("qreg q[500000];\n");
                let mut i = 0;
                while s.len() < BODY - 40 {
                    s.push_str(&format!("cx q[{}],q[{}];\n", i % 499_999, i % 499_999 + 1));
                    i += 1;
                }
                s
            }),
        ),
        (
            "condition",
            Provider::Braket,
            braket_body(&fill(
                "qreg q[1]; creg c[65536];\n",
                "if (c == 5) x q[0];\n",
                BODY,
            )),
        ),
        (
            "tokens",
            Provider::Braket,
            braket_body(&fill("qubit q;", ";", BODY)),
        ),
        (
            "tokens-under-budget",
            Provider::Braket,
            braket_body(&fill("qubit q;", ";", 3_900_000)),
        ),
        (
            "json-array",
            Provider::IbmRuntime,
            format!("{{\"a\": [{}0]}}", fill("", "0,", BODY - 10)).into_bytes(),
        ),
        (
            "json-array-under-budget",
            Provider::IbmRuntime,
            format!("{{\"a\": [{}0]}}", fill("", "0,", 990_000)).into_bytes(),
        ),
        (
            "json-objects-under-budget",
            Provider::IbmRuntime,
            format!("{{\"a\": [{}0]}}", fill("", "{\"a\":0},", 440_000)).into_bytes(),
        ),
        (
            "json-strings-under-budget",
            Provider::IbmRuntime,
            format!(
                "{{\"a\": [{}0]}}",
                fill("", "\"abcdefghijklmnopq\",", BODY - 10)
            )
            .into_bytes(),
        ),
    ];
    for (name, p, body) in cases {
        if !which.is_empty() && which != name {
            continue;
        }
        let start = Instant::now();
        let cpu = cpu_time();
        let r = submit(&p, &body);
        let (wall, cpu) = (start.elapsed(), cpu_time() - cpu);
        println!(
            "{name}: {} bytes, wall {wall:?}, cpu {cpu:?}, peak rss {} MiB: {}",
            body.len(),
            peak_rss_mib(),
            match r {
                Ok(_) => "parsed".to_string(),
                Err(e) => format!("{:?}: {e}", e.limit),
            }
        );
    }
}

fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(vec![], |(_, r)| r.split_whitespace().collect());
    let ticks: u64 = fields.get(11).and_then(|f| f.parse().ok()).unwrap_or(0)
        + fields.get(12).and_then(|f| f.parse().ok()).unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

fn peak_rss_mib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb / 1024)
}
