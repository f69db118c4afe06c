//! The quantum job gateway end to end: the real collector, the real SDKs
//! (qiskit-ibm-runtime, amazon-braket-sdk) in a virtualenv, a loopback
//! stand-in for the providers. Job events must carry exactly what the SDK
//! sent and who sent it; the policy must deny and record; the real
//! credential must reach the provider and nothing else.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use vigil_e2e::kafka::free_port;
use vigil_e2e::quantum::{http, run_sdk, shared, Upstream};
use vigil_e2e::{marker, Collector, Value};

const WAIT: Duration = Duration::from_secs(20);

fn job(v: &Value) -> &Value {
    &v["quantum_job"]
}

fn is_job(v: &Value, operation: &str, job_id: &str) -> bool {
    v["kind"] == "quantum_job" && job(v)["operation"] == operation && job(v)["job_id"] == job_id
}

fn submits(c: &Collector) -> Vec<Value> {
    c.events()
        .into_iter()
        .filter(|v| v["kind"] == "quantum_job" && job(v)["operation"] == "submit")
        .collect()
}

/// The first `n` submit events, waiting for them to arrive.
fn wait_submits(c: &Collector, n: usize) -> Vec<Value> {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let events = submits(c);
        if events.len() >= n {
            return events;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} of {n} job events; stderr:\n{}",
            events.len(),
            c.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A credential file the gateway will accept: readable by its owner only.
fn secret_file(dir: &std::path::Path, name: &str, content: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// Nothing the collector printed holds any of `needles`.
fn assert_output_lacks(c: &Collector, needles: &[&str]) {
    let output = c.raw_output();
    for needle in needles {
        assert!(
            !output.contains(needle),
            "collector output contains {needle:?}"
        );
    }
}

#[test]
fn ibm_runtime_sdk_jobs_over_https_with_a_brokered_credential() {
    let upstream = Upstream::start(true);
    let secret = "real-ibm-token-9f8e7d6c";
    let cred = secret_file(upstream.dir(), "ibm-token", &format!("{secret}\n"));
    let port = free_port();
    let tag = marker("ibm");
    let c = Collector::start(&format!(
        r#"host_id = "e2e-gateway"
[[agents]]
name = "quantum-agent"
cmdline = 'ibm_client\.py .*{tag}'
[gateway]
listen = "127.0.0.1:{port}"
[[gateway.routes]]
prefix = "/ibm"
provider = "ibm_runtime"
upstream = "{url}"
ca_file = "{ca}"
[gateway.routes.credential]
header = "Authorization"
file = "{cred}"
format = "Bearer {{}}"
# IBM Cloud IAM through the gateway too (relayed, not a job API)
[[gateway.routes]]
prefix = "/iam"
provider = "generic"
upstream = "{url}"
ca_file = "{ca}"
[gateway.policy]
jobs_per_minute = 100
"#,
        url = upstream.url(),
        ca = upstream.ca.as_ref().unwrap().display(),
        cred = cred.display(),
    ));
    let gw = format!("http://127.0.0.1:{port}");
    let (pid, sent) = run_sdk(
        "ibm_client.py",
        &[
            &format!("{gw}/ibm/api/v1"),
            &format!("{gw}/iam"),
            "ibm_fez",
            "--session",
            &tag,
        ],
        &[("QISKIT_IBM_TOKEN", "placeholder-api-key")],
    );
    assert_eq!(sent.len(), 2, "a sampler and an estimator job: {sent:?}");
    for truth in &sent {
        let id = truth["job_id"].as_str().unwrap();
        let ev = c.wait_for(&format!("submit of {id}"), WAIT, |v| {
            is_job(v, "submit", id)
        });
        let j = job(&ev);
        for field in [
            "backend",
            "qubits",
            "instructions",
            "parameters",
            "bindings",
            "shots",
        ] {
            assert_eq!(j[field], truth[field], "{field} of {id}: {j}");
        }
        assert_eq!(j["program"], truth["primitive"]);
        assert_eq!(j["provider"], "ibm_runtime");
        assert_eq!(j["device_type"], "qpu");
        assert_eq!(j["decision"], "allowed");
        assert_eq!(j["http_status"], 200);
        assert_eq!(j["circuits"], 1);
        let executions = truth["bindings"].as_u64().unwrap() * truth["shots"].as_u64().unwrap();
        assert_eq!(j["executions"], executions);
        assert!(
            j["session_id"].as_str().unwrap().starts_with("sess-"),
            "{j}"
        );
        assert_eq!(j["circuit_hashes"].as_array().unwrap().len(), 1);
        // who sent it: the Python process, in the agent's tree
        assert_eq!(ev["process"]["pid"], pid, "{ev}");
        assert_eq!(ev["agent_id"], "quantum-agent");
        assert!(ev["agent_session"].is_string());
        let poll = c.wait_for(&format!("status of {id}"), WAIT, |v| {
            is_job(v, "status", id)
        });
        assert_eq!(job(&poll)["status"], "Queued");
        assert_eq!(job(&poll)["backend"], "ibm_fez");
        assert_eq!(poll["agent_id"], "quantum-agent");
    }

    // the provider saw the real credential on every Runtime call, and only it
    let requests = upstream.requests();
    let runtime: Vec<&Value> = requests
        .iter()
        .filter(|r| r["path"].as_str().unwrap().starts_with("/api/v1/"))
        .collect();
    assert!(runtime.len() >= 6, "{requests:?}");
    for r in &runtime {
        assert_eq!(
            r["headers"]["authorization"],
            format!("Bearer {secret}"),
            "{r}"
        );
    }
    let iam = requests
        .iter()
        .find(|r| r["path"] == "/identity/token")
        .expect("IAM call relayed");
    assert_eq!(iam["headers"]["authorization"], Value::Null);
    // ...and nothing the collector emitted holds a credential, real or placeholder
    assert_output_lacks(&c, &[secret, "placeholder-api-key", "Bearer", "eyJ"]);
    assert!(
        !c.stderr().contains(secret),
        "collector log holds the secret"
    );
    c.stop();
}

#[test]
fn braket_sdk_task_and_program_set_re_signed_with_brokered_aws_keys() {
    let (real_key, real_secret) = ("AKIAREALKEY000000001", "real-aws-secret-5b7e41");
    let upstream = Upstream::start_with_env(
        false,
        &[("FAKE_AWS_KEY", real_key), ("FAKE_AWS_SECRET", real_secret)],
    );
    let cred = secret_file(
        upstream.dir(),
        "aws-credentials",
        &format!(
            "[default]\naws_access_key_id = {real_key}\naws_secret_access_key = {real_secret}\n"
        ),
    );
    let port = free_port();
    let tag = marker("braket");
    let c = Collector::start(&format!(
        r#"host_id = "e2e-gateway"
[[agents]]
name = "braket-agent"
cmdline = 'braket_client\.py .*{tag}'
[gateway]
listen = "127.0.0.1:{port}"
[[gateway.routes]]
prefix = "/braket"
provider = "braket"
upstream = "{url}"
[gateway.routes.credential]
kind = "aws_sigv4"
file = "{cred}"
region = "us-east-1"
"#,
        url = upstream.url(),
        cred = cred.display(),
    ));
    // the agent only has placeholder keys
    let (pid, sent) = run_sdk(
        "braket_client.py",
        &[&format!("http://127.0.0.1:{port}/braket"), &tag],
        &[
            ("AWS_ACCESS_KEY_ID", "AKIAPLACEHOLDER00000"),
            ("AWS_SECRET_ACCESS_KEY", "placeholder-secret"),
        ],
    );
    assert_eq!(sent.len(), 2, "{sent:?}");
    for truth in &sent {
        let arn = truth["task_arn"].as_str().unwrap();
        let ev = c.wait_for(&format!("submit of {arn}"), WAIT, |v| {
            is_job(v, "submit", arn)
        });
        let j = job(&ev);
        assert_eq!(j["backend"], truth["device"]);
        assert_eq!(j["device_type"], "simulator");
        for field in ["qubits", "parameters", "bindings", "shots"] {
            assert_eq!(j[field], truth[field], "{field} of {arn}: {j}");
        }
        let single = truth["kind"] == "program";
        assert_eq!(
            j["program"],
            if single { "openqasm" } else { "program_set" }
        );
        if single {
            assert_eq!(j["instructions"], truth["instructions"]);
            assert_eq!(j["executions"], 100);
            assert_eq!(j["tags"], 1);
        } else {
            // the task's shots are already the total over the 5 bindings
            assert_eq!(j["executions"], truth["shots"]);
        }
        assert_eq!(
            j["output_location"],
            "s3://amazon-braket-us-east-1-123456789012/tasks"
        );
        assert_eq!(ev["process"]["pid"], pid);
        assert_eq!(ev["agent_id"], "braket-agent");
        let poll = c.wait_for(&format!("status of {arn}"), WAIT, |v| {
            is_job(v, "status", arn)
        });
        assert_eq!(job(&poll)["status"], "QUEUED");
    }
    // every call reached the provider signed with the real keys (checked by botocore)
    let requests = upstream.requests();
    assert_eq!(requests.len(), 4, "2 submissions, 2 polls: {requests:?}");
    for r in &requests {
        assert_eq!(r["sigv4"], "valid", "{r}");
        let auth = r["headers"]["authorization"].as_str().unwrap();
        assert!(auth.contains(&format!("Credential={real_key}/")), "{auth}");
    }
    assert_output_lacks(
        &c,
        &[
            real_key,
            real_secret,
            "AKIAPLACEHOLDER",
            "placeholder-secret",
            "AWS4-HMAC",
        ],
    );
    c.stop();
}

fn policy_collector(upstream: &Upstream, port: u16, policy: &str) -> Collector {
    Collector::start(&format!(
        r#"host_id = "e2e-gateway"
[gateway]
listen = "127.0.0.1:{port}"
{policy}
[[gateway.routes]]
prefix = "/braket"
provider = "braket"
upstream = "{url}"
[[gateway.routes]]
prefix = "/ibm"
provider = "ibm_runtime"
upstream = "{url}"
[gateway.policy]
jobs_per_minute = 2
max_qubits = 4
"#,
        url = upstream.url(),
    ))
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(shared().join("quantum/requests").join(name)).unwrap()
}

const JSON: [(&str, &str); 1] = [("Content-Type", "application/json")];

#[test]
fn quota_breach_is_denied_and_recorded() {
    let upstream = Upstream::start(false);
    let port = free_port();
    let c = policy_collector(&upstream, port, "on_parse_error = \"deny\"");
    let gw = format!("127.0.0.1:{port}");
    let braket = fixture("braket-task-single-program.json");
    for _ in 0..2 {
        assert_eq!(
            http(&gw, "POST", "/braket/quantum-task", &JSON, &braket).status,
            201
        );
    }
    let r = http(&gw, "POST", "/braket/quantum-task", &JSON, &braket);
    assert_eq!(r.status, 429, "{}", r.body);
    let e = &r.json()["error"];
    assert_eq!(e["code"], "vigil_policy_denied");
    assert_eq!(e["limit"], "jobs_per_minute");
    assert_eq!(e["value"], 2);
    assert_eq!(e["requested"], 3);
    assert!(e["message"]
        .as_str()
        .unwrap()
        .contains("jobs_per_minute limit of 2"));
    assert!(r.header("retry-after").is_some());
    // what the job is: 5 qubits against max_qubits = 4
    let r = http(
        &gw,
        "POST",
        "/ibm/api/v1/jobs",
        &JSON,
        &fixture("ibm-runtime-estimator-job.json"),
    );
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(r.json()["error"]["limit"], "max_qubits");
    assert_eq!(r.json()["error"]["value"], 4);
    assert_eq!(r.json()["error"]["requested"], 5);
    // a body that is not a job, with on_parse_error = deny
    let r = http(&gw, "POST", "/braket/quantum-task", &JSON, b"{not json");
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(r.json()["error"]["limit"], "on_parse_error");

    // denied jobs never reached the provider
    let posts = upstream
        .requests()
        .into_iter()
        .filter(|r| r["method"] == "POST")
        .count();
    assert_eq!(posts, 2);
    let events = wait_submits(&c, 5);
    let decisions: Vec<(String, Value, Value)> = events
        .iter()
        .map(|v| {
            let j = job(v);
            (
                j["decision"].as_str().unwrap().to_string(),
                j["policy_limit"].clone(),
                j["http_status"].clone(),
            )
        })
        .collect();
    assert_eq!(
        decisions,
        vec![
            ("allowed".into(), Value::Null, 201.into()),
            ("allowed".into(), Value::Null, 201.into()),
            ("denied".into(), "jobs_per_minute".into(), 429.into()),
            ("denied".into(), "max_qubits".into(), 403.into()),
            ("denied".into(), "on_parse_error".into(), 403.into()),
        ]
    );
    assert!(job(&events[4])["parse_error"]
        .as_str()
        .unwrap()
        .contains("not JSON"));
    // the caller is this test process (no agent: the default limits)
    assert_eq!(events[2]["process"]["pid"], std::process::id());
    assert_eq!(events[2]["agent_id"], Value::Null);
    c.stop();
}

#[test]
fn monitor_mode_forwards_and_records() {
    let upstream = Upstream::start(false);
    let port = free_port();
    let c = Collector::start(&format!(
        r#"host_id = "e2e-gateway"
[gateway]
listen = "127.0.0.1:{port}"
[[gateway.routes]]
prefix = "/braket"
provider = "braket"
upstream = "{url}"
[gateway.policy]
mode = "monitor"
jobs_per_minute = 2
"#,
        url = upstream.url(),
    ));
    let gw = format!("127.0.0.1:{port}");
    let braket = fixture("braket-task-single-program.json");
    for _ in 0..3 {
        assert_eq!(
            http(&gw, "POST", "/braket/quantum-task", &JSON, &braket).status,
            201
        );
    }
    // on_parse_error = forward (the default): relayed, and recorded as such
    assert_eq!(
        http(&gw, "POST", "/braket/quantum-task", &JSON, b"[1, 2").status,
        201
    );
    let posts = upstream
        .requests()
        .into_iter()
        .filter(|r| r["method"] == "POST")
        .count();
    assert_eq!(posts, 4);
    let events = wait_submits(&c, 4);
    let decisions: Vec<&str> = events
        .iter()
        .map(|v| job(v)["decision"].as_str().unwrap())
        .collect();
    assert_eq!(decisions, ["allowed", "allowed", "monitored", "monitored"]);
    assert_eq!(job(&events[2])["policy_limit"], "jobs_per_minute");
    assert!(job(&events[2])["job_id"]
        .as_str()
        .unwrap()
        .starts_with("arn:aws:braket"));
    assert!(job(&events[3])["parse_error"]
        .as_str()
        .unwrap()
        .contains("not JSON"));
    c.stop();
}
