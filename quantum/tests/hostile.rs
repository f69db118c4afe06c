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
    let src = fill("qreg q[200000];\n", "barrier q;\n", BODY);
    let r = submit(&Provider::Braket, &braket_body(&src));
    assert_limit(r, "max_work", "more than 4000000 units of work");
    // broadcast gates over the same register likewise
    let src = fill("qreg q[200000];\n", "x q;\n", 1 << 20);
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

/// Builds a case's body only when it is the one measured.
type MakeBody = Box<dyn Fn() -> Vec<u8>>;

/// Worst cases for the report: `HOSTILE=<case> cargo test -p vigil-quantum
/// --release --test hostile -- --ignored --nocapture measure` (one case per
/// process: the body is built first, then the peak RSS is reset, so the
/// extra memory printed is the parse's own).
#[test]
#[ignore]
fn measure_worst_cases() {
    let which = std::env::var("HOSTILE").unwrap_or_default();
    let braket = |head: &str, unit: &str| -> MakeBody {
        let (head, unit) = (head.to_string(), unit.to_string());
        // the source is escaped into the action, then the action into the body
        Box::new(move || braket_body(&fill(&head, &unit, BODY - 400)))
    };
    let json = |unit: &'static str, bytes: usize| -> MakeBody {
        Box::new(move || format!("{{\"a\": [{}0]}}", fill("", unit, bytes)).into_bytes())
    };
    let cases: Vec<(&str, Provider, MakeBody)> = vec![
        (
            "nested-if",
            Provider::Braket,
            braket("qubit q; bit c;", "if (c) {"),
        ),
        (
            "nested-braceless",
            Provider::Braket,
            braket("qubit q; bit c;", "if (c) "),
        ),
        (
            "barrier-1M",
            Provider::Braket,
            braket("qreg q[1000000]; ", "barrier q; "),
        ),
        (
            "barrier-240k",
            Provider::Braket,
            braket("qreg q[240000]; ", "barrier q; "),
        ),
        (
            "broadcast-x-240k",
            Provider::Braket,
            braket("qreg q[240000]; ", "x q; "),
        ),
        (
            "condition",
            Provider::Braket,
            braket("qreg q[1]; creg c[65536]; ", "if(c==5)x q[0]; "),
        ),
        ("tokens", Provider::Braket, braket("qubit q;", ";")),
        (
            "cx-distinct-wires",
            Provider::Braket,
            Box::new(|| {
                let mut s = String::from("qreg q[240000]; ");
                let mut i = 0;
                while s.len() < BODY - 400 {
                    s.push_str(&format!("cx q[{}],q[{}]; ", i % 239_999, i % 239_999 + 1));
                    i += 1;
                }
                braket_body(&s)
            }),
        ),
        ("json-array", Provider::IbmRuntime, json("0,", BODY - 10)),
        (
            "json-array-under-limit",
            Provider::IbmRuntime,
            json("0,", 990_000),
        ),
        (
            "json-objects-under-limit",
            Provider::IbmRuntime,
            json("{\"a\":0},", 360_000),
        ),
        (
            "json-strings-8MiB",
            Provider::IbmRuntime,
            json("\"abcdefghijklmnopq\",", BODY - 10),
        ),
        ("json-deep", Provider::IbmRuntime, json("[", BODY - 10)),
    ];
    for (name, p, make) in cases {
        if !which.is_empty() && which != name {
            continue;
        }
        let body = make();
        let before = rss_kib("VmRSS:");
        // reset the peak (VmHWM) to the current RSS
        let _ = std::fs::write("/proc/self/clear_refs", "5");
        let start = Instant::now();
        let cpu = cpu_time();
        let r = submit(&p, &body);
        let (wall, cpu) = (start.elapsed(), cpu_time() - cpu);
        let extra = rss_kib("VmHWM:").saturating_sub(before) / 1024;
        println!(
            "{name}: {} bytes, wall {wall:.1?}, cpu {cpu:?}, extra peak rss {extra} MiB: {}",
            body.len(),
            match r {
                Ok(_) => "parsed".to_string(),
                Err(e) => format!("{:?}: {e}", e.limit),
            }
        );
    }
}

/// The smallest `max_work` and `max_tokens` (to a factor of 2) under which
/// every QASMBench circuit still parses: the headroom of the defaults.
#[test]
#[ignore]
fn measure_qasmbench_needs() {
    let shared = std::env::var_os("VIGIL_SHARED").map_or_else(
        || std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared"),
        std::path::PathBuf::from,
    );
    let root = shared.join("qasm");
    let mut files = vec![];
    let mut stack = vec![root];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|e| e == "qasm") {
                files.push(p);
            }
        }
    }
    let (mut work, mut tokens, mut slowest) = (1u64 << 10, 1usize << 10, Duration::ZERO);
    for f in &files {
        let src = std::fs::read_to_string(f).unwrap();
        let start = Instant::now();
        qasm::analyze(&src).unwrap();
        slowest = slowest.max(start.elapsed());
        while let Err(e) = qasm::analyze_with(
            &src,
            &ParseLimits {
                max_work: work,
                max_tokens: tokens,
                ..ParseLimits::default()
            },
        ) {
            match e.limit {
                Some("max_work") => work *= 2,
                Some("max_tokens") => tokens *= 2,
                _ => panic!("{}: {e}", f.display()),
            }
        }
    }
    println!(
        "{} circuits: max_work {work}, max_tokens {tokens} suffice; slowest parse {slowest:?}",
        files.len()
    );
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

fn rss_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
        .unwrap_or(0)
}
