//! The quantum job gateway end to end: the real collector (with its
//! `[link]` socket) and the real `vigil-gateway` as two processes, the real
//! SDKs (qiskit-ibm-runtime, amazon-braket-sdk) in a virtualenv, a loopback
//! stand-in for the providers. Job events must carry exactly what the SDK
//! sent and who sent it; the policy must deny and record; the real
//! credential must reach the provider and nothing else; an agent's gateway
//! token is honoured only from its own process tree.

use std::time::{Duration, Instant};

use vigil_e2e::gateway::{
    collector_config, gateway_config, proc_status_field, secret_file, socket_dir, user_ids,
    Gateway, Pair, LISTENING,
};
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

fn jobs(c: &Collector) -> Vec<Value> {
    c.events()
        .into_iter()
        .filter(|v| v["kind"] == "quantum_job")
        .collect()
}

fn submits(c: &Collector) -> Vec<Value> {
    jobs(c)
        .into_iter()
        .filter(|v| job(v)["operation"] == "submit")
        .collect()
}

/// The first `n` submit events, waiting for them to arrive.
fn wait_submits(c: &Collector, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + WAIT;
    loop {
        let events = submits(c);
        if events.len() >= n {
            return events;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {n} job events; collector stderr:\n{}",
            events.len(),
            c.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
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

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(shared().join("quantum/requests").join(name)).unwrap()
}

const JSON: [(&str, &str); 1] = [("Content-Type", "application/json")];
const SV1: &str = "arn:aws:braket:::device/quantum-simulator/amazon/sv1";

/// Requests the upstream received with this method whose path starts so.
fn upstream_calls(upstream: &Upstream, method: &str, path_prefix: &str) -> Vec<Value> {
    upstream
        .requests()
        .into_iter()
        .filter(|r| r["method"] == method && r["path"].as_str().unwrap().starts_with(path_prefix))
        .collect()
}

#[test]
fn ibm_runtime_sdk_jobs_over_https_with_a_brokered_credential() {
    let upstream = Upstream::start(true);
    let secret = "real-ibm-token-9f8e7d6c";
    let cred = secret_file(upstream.dir(), "ibm-token", &format!("{secret}\n"), None);
    // the agent's SDK holds its gateway token as its IBM Cloud API key
    let agent_token = "quantum-agent-gateway-token-51c3";
    let token = secret_file(upstream.dir(), "agent-token", agent_token, None);
    let tag = marker("ibm");
    let pair = Pair::start(
        &format!(
            r#"host_id = "e2e-gateway"
[[agents]]
name = "quantum-agent"
cmdline = 'ibm_client\.py .*{tag}'
"#
        ),
        &format!(
            r#"[[routes]]
prefix = "/ibm"
provider = "ibm_runtime"
upstream = "{url}"
ca_file = "{ca}"
[routes.credential]
header = "Authorization"
file = "{cred}"
format = "Bearer {{}}"
# IBM Cloud IAM through the gateway too (the API key exchange, not a job API)
[[routes]]
prefix = "/iam"
provider = "ibm_iam"
upstream = "{url}"
ca_file = "{ca}"
[policy]
jobs_per_minute = 100
[tokens]
quantum-agent = "{token}"
"#,
            url = upstream.url(),
            ca = upstream.ca.as_ref().unwrap().display(),
            cred = cred.display(),
            token = token.display(),
        ),
        None,
    );
    let c = &pair.collector;
    let gw = pair.url();
    let (pid, sent) = run_sdk(
        "ibm_client.py",
        &[
            &format!("{gw}/ibm/api/v1"),
            &format!("{gw}/iam"),
            "ibm_fez",
            "--session",
            &tag,
        ],
        &[("QISKIT_IBM_TOKEN", agent_token)],
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
    // the exchange of the agent's gateway token was answered by the gateway
    // (the token never reached IAM) and recorded
    assert!(
        requests.iter().all(|r| r["path"] != "/identity/token"),
        "{requests:?}"
    );
    let exchange = c.wait_for("the IAM exchange", WAIT, |v| {
        v["kind"] == "quantum_job" && job(v)["operation"] == "iam_token"
    });
    assert_eq!(job(&exchange)["http_status"], 200);
    assert_eq!(exchange["agent_id"], "quantum-agent");
    // the agent's token from a process outside its tree: refused, recorded
    let form =
        format!("grant_type=urn%3Aibm%3Aparams%3Aoauth%3Agrant-type%3Aapikey&apikey={agent_token}");
    let r = http(
        pair.addr(),
        "POST",
        "/iam/identity/token",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        form.as_bytes(),
    );
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(r.json()["error"]["limit"], "token");
    // a form IAM might read otherwise (two keys) is refused, not relayed
    let r = http(
        pair.addr(),
        "POST",
        "/iam/identity/token",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        format!("apikey=x&apikey={agent_token}").as_bytes(),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.json()["error"]["limit"], "iam_form");
    // a bearer the gateway minted never goes to a route holding no
    // credential to put in its place (it carries the agent's token)
    let minted = format!(
        "Bearer eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCIsImtpZCI6InZpZ2lsLWdhdGV3YXkifQ.e30.{}",
        "cXVhbnR1bS1hZ2VudC1nYXRld2F5LXRva2VuLTUxYzM"
    );
    let r = http(
        pair.addr(),
        "POST",
        "/iam/identity/token",
        &[("Authorization", minted.as_str())],
        b"grant_type=x",
    );
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body.contains("minted"), "{}", r.body);
    c.wait_for("the refused IAM exchange", WAIT, |v| {
        v["kind"] == "quantum_job"
            && job(v)["operation"] == "iam_token"
            && job(v)["decision"] == "denied"
    });
    // ...and nothing the collector emitted holds a credential, real or the agent's
    assert_output_lacks(c, &[secret, agent_token, "Bearer", "eyJ"]);
    assert!(
        !c.stderr().contains(secret),
        "collector log holds the secret"
    );
    assert!(
        !pair.gateway.stderr().contains(secret),
        "gateway log holds the secret"
    );
    pair.stop();
}

/// A Braket pair: `/braket` re-signed with the real AWS keys, `braket-agent`
/// (the braket_client.py run carrying `tag`) holding `token`.
fn braket_pair(
    upstream: &Upstream,
    real: (&str, &str),
    tag: &str,
    token: &str,
    as_user: Option<&str>,
) -> Pair {
    let cred = secret_file(
        upstream.dir(),
        "aws-credentials",
        &format!(
            "[default]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
            real.0, real.1
        ),
        as_user,
    );
    let token_file = secret_file(
        upstream.dir(),
        "braket-agent.token",
        &format!("{token}\n"),
        as_user,
    );
    Pair::start(
        &format!(
            r#"host_id = "e2e-gateway"
[[agents]]
name = "braket-agent"
cmdline = 'braket_client\.py .*{tag}'
"#
        ),
        &format!(
            r#"[[routes]]
prefix = "/braket"
provider = "braket"
upstream = "{url}"
[routes.credential]
kind = "aws_sigv4"
file = "{cred}"
region = "us-east-1"
[tokens]
braket-agent = "{token}"
"#,
            url = upstream.url(),
            cred = cred.display(),
            token = token_file.display(),
        ),
        as_user,
    )
}

/// Run braket_client.py as `braket-agent` with its gateway token as the
/// AWS access key id; check both tasks' records and the provider's view.
fn braket_sdk_flow(pair: &Pair, upstream: &Upstream, real: (&str, &str), tag: &str, token: &str) {
    let c = &pair.collector;
    // the agent holds its gateway token in the access key's place, and a placeholder secret
    let (pid, sent) = run_sdk(
        "braket_client.py",
        &[&format!("{}/braket", pair.url()), tag],
        &[
            ("AWS_ACCESS_KEY_ID", token),
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
        assert_eq!(poll["agent_id"], "braket-agent");
    }
    // every call reached the provider signed with the real keys (checked by botocore)
    let requests = upstream.requests();
    assert_eq!(requests.len(), 4, "2 submissions, 2 polls: {requests:?}");
    for r in &requests {
        assert_eq!(r["sigv4"], "valid", "{r}");
        let auth = r["headers"]["authorization"].as_str().unwrap();
        assert!(auth.contains(&format!("Credential={}/", real.0)), "{auth}");
    }
    assert_output_lacks(
        c,
        &[real.0, real.1, token, "placeholder-secret", "AWS4-HMAC"],
    );
    assert!(
        !pair.gateway.stderr().contains(real.1) && !pair.gateway.stderr().contains(token),
        "gateway log holds a secret:\n{}",
        pair.gateway.stderr()
    );
}

const AWS_REAL: (&str, &str) = ("AKIAREALKEY000000001", "real-aws-secret-5b7e41");

fn aws_upstream() -> Upstream {
    Upstream::start_with_env(
        false,
        &[
            ("FAKE_AWS_KEY", AWS_REAL.0),
            ("FAKE_AWS_SECRET", AWS_REAL.1),
        ],
    )
}

#[test]
fn braket_sdk_task_and_program_set_re_signed_with_brokered_aws_keys() {
    let upstream = aws_upstream();
    let tag = marker("braket");
    let token = "VIGILGWTOKENBRAKET0001";
    let pair = braket_pair(&upstream, AWS_REAL, &tag, token, None);
    braket_sdk_flow(&pair, &upstream, AWS_REAL, &tag, token);
    pair.stop();
}

/// Routes without a brokered credential (so this test process, in no
/// agent, is admitted) and the given policy.
fn policy_pair(upstream: &Upstream, top: &str, policy: &str) -> Pair {
    Pair::start(
        "host_id = \"e2e-gateway\"\n",
        &format!(
            r#"{top}
[[routes]]
prefix = "/braket"
provider = "braket"
upstream = "{url}"
[[routes]]
prefix = "/ibm"
provider = "ibm_runtime"
upstream = "{url}"
[policy]
{policy}
"#,
            url = upstream.url(),
        ),
        None,
    )
}

#[test]
fn quota_breach_is_denied_and_recorded() {
    let upstream = Upstream::start(false);
    let pair = policy_pair(
        &upstream,
        "on_parse_error = \"deny\"",
        "jobs_per_minute = 2\nmax_qubits = 4",
    );
    let c = &pair.collector;
    let gw = pair.addr();
    let braket = fixture("braket-task-single-program.json");
    for _ in 0..2 {
        assert_eq!(
            http(gw, "POST", "/braket/quantum-task", &JSON, &braket).status,
            201
        );
    }
    let r = http(gw, "POST", "/braket/quantum-task", &JSON, &braket);
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
        gw,
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
    let r = http(gw, "POST", "/braket/quantum-task", &JSON, b"{not json");
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(r.json()["error"]["limit"], "on_parse_error");

    // denied jobs never reached the provider
    let posts = upstream
        .requests()
        .into_iter()
        .filter(|r| r["method"] == "POST")
        .count();
    assert_eq!(posts, 2);
    let events = wait_submits(c, 5);
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
    assert_eq!(
        events[2]["process"]["pid"],
        std::process::id(),
        "{}\ngateway stderr:\n{}",
        events[2],
        pair.gateway.stderr()
    );
    assert_eq!(events[2]["agent_id"], Value::Null);
    pair.stop();
}

#[test]
fn monitor_mode_forwards_and_records() {
    let upstream = Upstream::start(false);
    let pair = policy_pair(&upstream, "", "mode = \"monitor\"\njobs_per_minute = 2");
    let c = &pair.collector;
    let gw = pair.addr();
    let braket = fixture("braket-task-single-program.json");
    for _ in 0..3 {
        assert_eq!(
            http(gw, "POST", "/braket/quantum-task", &JSON, &braket).status,
            201
        );
    }
    // on_parse_error = forward (the default): relayed, and recorded as such
    assert_eq!(
        http(gw, "POST", "/braket/quantum-task", &JSON, b"[1, 2").status,
        201
    );
    let posts = upstream
        .requests()
        .into_iter()
        .filter(|r| r["method"] == "POST")
        .count();
    assert_eq!(posts, 4);
    let events = wait_submits(c, 4);
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
    pair.stop();
}

/// One request from a process of its own (tests/quantum/http_call.py, its
/// command line carrying `tag`); its pid and `{status, body}`.
fn call_as(tag: &str, method: &str, url: &str, body: &[u8], headers: &[&str]) -> (u32, Value) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("body");
    std::fs::write(&file, body).unwrap();
    let file = file.display().to_string();
    // headers (tokens) in a file: a command line is seen by every collector
    let header_file = dir.path().join("headers");
    std::fs::write(&header_file, headers.join("\n")).unwrap();
    let header_file = header_file.display().to_string();
    let args = [method, url, tag, file.as_str(), header_file.as_str()];
    let (pid, mut out) = run_sdk("http_call.py", &args, &[]);
    assert_eq!(out.len(), 1, "{out:?}");
    (pid, out.remove(0))
}

#[test]
fn a_token_is_honoured_only_from_its_agents_tree() {
    let upstream = Upstream::start(false);
    let secret = "real-ibm-token-1a2b3c4d";
    let cred = secret_file(upstream.dir(), "ibm-token", &format!("{secret}\n"), None);
    let aws = secret_file(
        upstream.dir(),
        "aws-credentials",
        "[default]\naws_access_key_id = AKIAREALKEY000000002\naws_secret_access_key = real-aws-secret-2\n",
        None,
    );
    let (alpha_token, beta_token) = ("alpha-gateway-token-000001", "beta-gateway-token-0000002");
    let alpha_file = secret_file(upstream.dir(), "alpha.token", alpha_token, None);
    let beta_file = secret_file(upstream.dir(), "beta.token", beta_token, None);
    let (tag_a, tag_b) = (marker("alpha"), marker("beta"));
    let pair = Pair::start(
        &format!(
            r#"host_id = "e2e-gateway"
[[agents]]
name = "alpha"
cmdline = 'http_call\.py .*{tag_a}'
[[agents]]
name = "beta"
cmdline = 'http_call\.py .*{tag_b}'
"#
        ),
        &format!(
            r#"[[routes]]
prefix = "/ibm"
provider = "ibm_runtime"
upstream = "{url}"
[routes.credential]
header = "Authorization"
file = "{cred}"
format = "Bearer {{}}"
[[routes]]
prefix = "/braket"
provider = "braket"
upstream = "{url}"
[routes.credential]
kind = "aws_sigv4"
file = "{aws}"
region = "us-east-1"
[tokens]
alpha = "{alpha}"
beta = "{beta}"
"#,
            url = upstream.url(),
            cred = cred.display(),
            aws = aws.display(),
            alpha = alpha_file.display(),
            beta = beta_file.display(),
        ),
        None,
    );
    let c = &pair.collector;
    let gw = pair.url();
    let ibm_jobs = format!("{gw}/ibm/api/v1/jobs");
    let braket_tasks = format!("{gw}/braket/quantum-task");
    let ibm_body = fixture("ibm-runtime-estimator-job.json");
    let braket_body = fixture("braket-task-single-program.json");
    let bearer = |t: &str| format!("Authorization=Bearer {t}");
    let sigv4 = |t: &str| {
        format!(
            "Authorization=AWS4-HMAC-SHA256 Credential={t}/20260101/us-east-1/braket/aws4_request, SignedHeaders=host;x-amz-date, Signature=00"
        )
    };
    let json_ct = "Content-Type=application/json";

    // (who, pid, response, expected limit, expected agent)
    let mut denied: Vec<(&str, u32, Value, &str, Value)> = Vec::new();
    // this test process, in no agent: no token, then alpha's token
    let me = std::process::id();
    let r = http(pair.addr(), "POST", "/ibm/api/v1/jobs", &JSON, &ibm_body);
    denied.push((
        "outsider without a token",
        me,
        serde_json::json!({"status": r.status, "body": r.body}),
        "unattributed",
        Value::Null,
    ));
    let auth = format!("Bearer {alpha_token}");
    let r = http(
        pair.addr(),
        "POST",
        "/ibm/api/v1/jobs",
        &[
            ("Content-Type", "application/json"),
            ("Authorization", &auth),
        ],
        &ibm_body,
    );
    denied.push((
        "outsider with alpha's token",
        me,
        serde_json::json!({"status": r.status, "body": r.body}),
        "token",
        Value::Null,
    ));
    // agent beta with alpha's token (header and AWS access key id), and with none
    let (pid, r) = call_as(
        &tag_b,
        "POST",
        &ibm_jobs,
        &ibm_body,
        &[json_ct, &bearer(alpha_token)],
    );
    denied.push((
        "beta with alpha's bearer token",
        pid,
        r,
        "token",
        "beta".into(),
    ));
    let (pid, r) = call_as(
        &tag_b,
        "POST",
        &braket_tasks,
        &braket_body,
        &[json_ct, &sigv4(alpha_token), "X-Amz-Date=20260101T000000Z"],
    );
    denied.push((
        "beta with alpha's AWS key id",
        pid,
        r,
        "token",
        "beta".into(),
    ));
    let (pid, r) = call_as(&tag_b, "POST", &ibm_jobs, &ibm_body, &[json_ct]);
    denied.push((
        "beta without a token",
        pid,
        r,
        "unattributed",
        "beta".into(),
    ));
    // the control: alpha with its own token goes through, with the real credential
    let (alpha_pid, r) = call_as(
        &tag_a,
        "POST",
        &ibm_jobs,
        &ibm_body,
        &[json_ct, &bearer(alpha_token)],
    );
    assert_eq!(r["status"], 200, "alpha with its own token: {r}");
    let (beta_pid, r) = call_as(
        &tag_b,
        "POST",
        &braket_tasks,
        &braket_body,
        &[json_ct, &sigv4(beta_token), "X-Amz-Date=20260101T000000Z"],
    );
    assert_eq!(r["status"], 201, "beta with its own AWS key id: {r}");

    for (who, pid, r, limit, agent) in &denied {
        assert_eq!(r["status"], 403, "{who}: {r}");
        let body: Value = serde_json::from_str(r["body"].as_str().unwrap())
            .unwrap_or_else(|e| panic!("{who}: not JSON ({e}): {r}"));
        assert_eq!(
            body["error"]["code"], "vigil_policy_denied",
            "{who}: {body}"
        );
        assert_eq!(body["error"]["limit"], *limit, "{who}: {body}");
        assert!(
            !r.to_string().contains(alpha_token) && !r.to_string().contains(secret),
            "{who}: the answer repeats a secret: {r}"
        );
        let ev = c.wait_for(&format!("the denial of {who}"), WAIT, |v| {
            v["kind"] == "quantum_job"
                && job(v)["decision"] == "denied"
                && job(v)["policy_limit"] == *limit
                && v["process"]["pid"] == *pid
                && v["agent_id"] == *agent
        });
        assert_eq!(job(&ev)["http_status"], 403, "{who}: {ev}");
        assert_eq!(job(&ev)["operation"], "submit", "{who}: {ev}");
    }
    // the upstream saw only the two calls made with their own tokens
    let posts: Vec<Value> = upstream
        .requests()
        .into_iter()
        .filter(|r| r["method"] == "POST")
        .collect();
    assert_eq!(posts.len(), 2, "{posts:?}");
    let ibm = posts.iter().find(|r| r["path"] == "/api/v1/jobs").unwrap();
    assert_eq!(ibm["headers"]["authorization"], format!("Bearer {secret}"));
    let braket = posts.iter().find(|r| r["path"] == "/quantum-task").unwrap();
    assert!(braket["headers"]["authorization"]
        .as_str()
        .unwrap()
        .contains("Credential=AKIAREALKEY000000002/"));
    for (pid, agent) in [(alpha_pid, "alpha"), (beta_pid, "beta")] {
        let ev = c.wait_for(&format!("{agent}'s own submission"), WAIT, |v| {
            v["kind"] == "quantum_job"
                && v["process"]["pid"] == pid
                && job(v)["decision"] == "allowed"
        });
        assert_eq!(ev["agent_id"], agent, "{ev}");
    }
    assert_output_lacks(c, &[secret, alpha_token, beta_token]);
    pair.stop();
}

#[test]
fn hybrid_jobs_sessions_and_cancels_are_policed_and_recorded() {
    let upstream = Upstream::start(false);
    // hybrid jobs allowed explicitly: with backends limited they are refused by default
    let pair = policy_pair(
        &upstream,
        "",
        &format!("backends = [\"{SV1}\", \"ibm_fez\"]\nallow_hybrid_jobs = true"),
    );
    let c = &pair.collector;
    let gw = pair.addr();
    let tag = marker("hybrid");
    let create_job = |device: &str, name: &str| {
        serde_json::json!({
            "jobName": name,
            "roleArn": "arn:aws:iam::123456789012:role/service-role/AmazonBraketJobsExecutionRole",
            "algorithmSpecification": {"scriptModeConfig": {
                "entryPoint": "algorithm_script:start_here",
                "s3Uri": format!("s3://amazon-braket-us-east-1-123456789012/jobs/{name}/script/source.tar.gz"),
                "compressionType": "GZIP"
            }},
            "instanceConfig": {"instanceType": "ml.m5.large", "instanceCount": 1, "volumeSizeInGb": 30},
            "outputDataConfig": {"s3Path": format!("s3://amazon-braket-us-east-1-123456789012/jobs/{name}/data")},
            "checkpointConfig": {"s3Uri": format!("s3://amazon-braket-us-east-1-123456789012/jobs/{name}/checkpoints"), "localPath": "/opt/jobs/checkpoints"},
            "stoppingCondition": {"maxRuntimeInSeconds": 432000},
            "deviceConfig": {"device": device},
            "hyperParameters": {"shots": "100", "n_qubits": "2"},
            "clientToken": format!("{name}-token"),
            "tags": {"agent": "demo"}
        })
        .to_string()
        .into_bytes()
    };
    let aria = "arn:aws:braket:us-east-1::device/qpu/ionq/Aria-1";
    let (ok_job, bad_job) = (format!("{tag}-sv1"), format!("{tag}-aria"));

    // Braket CreateJob: on sv1 allowed, on a QPU not in `backends` denied
    let r = http(gw, "POST", "/braket/job", &JSON, &create_job(SV1, &ok_job));
    assert_eq!(r.status, 201, "CreateJob on sv1: {}", r.body);
    let r = http(
        gw,
        "POST",
        "/braket/job",
        &JSON,
        &create_job(aria, &bad_job),
    );
    assert_eq!(r.status, 403, "CreateJob on Aria-1: {}", r.body);
    assert_eq!(r.json()["error"]["limit"], "backends", "{}", r.body);
    // IBM sessions: on ibm_fez allowed, on ibm_brisbane denied
    let session = |backend: &str| {
        serde_json::json!({"backend": backend, "instance": "crn:v1:bluemix:public:quantum-computing:us-east:a/0000:1111::", "max_ttl": 28800, "mode": "dedicated"})
            .to_string()
            .into_bytes()
    };
    let r = http(
        gw,
        "POST",
        "/ibm/api/v1/sessions",
        &JSON,
        &session("ibm_fez"),
    );
    assert_eq!(r.status, 200, "session on ibm_fez: {}", r.body);
    let r = http(
        gw,
        "POST",
        "/ibm/api/v1/sessions",
        &JSON,
        &session("ibm_brisbane"),
    );
    assert_eq!(r.status, 403, "session on ibm_brisbane: {}", r.body);
    assert_eq!(r.json()["error"]["limit"], "backends", "{}", r.body);
    // cancels, IBM and Braket
    let ibm_job = "d0123456789abcdef0123";
    let r = http(
        gw,
        "POST",
        &format!("/ibm/api/v1/jobs/{ibm_job}/cancel"),
        &JSON,
        b"",
    );
    assert_eq!(r.status, 204, "IBM cancel: {}", r.body);
    let arn =
        "arn:aws:braket:us-east-1:123456789012:quantum-task/7c1f0b5e-1d2c-4a8e-9f00-0123456789ab";
    let encoded = arn.replace(':', "%3A").replace('/', "%2F");
    let r = http(
        gw,
        "PUT",
        &format!("/braket/quantum-task/{encoded}/cancel"),
        &JSON,
        b"",
    );
    assert_eq!(r.status, 200, "Braket cancel: {}", r.body);

    // the denied ones never reached the provider
    let created = upstream_calls(&upstream, "POST", "/job");
    assert_eq!(created.len(), 1, "{created:?}");
    assert_eq!(created[0]["json"]["jobName"], ok_job.as_str());
    let sessions = upstream_calls(&upstream, "POST", "/api/v1/sessions");
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    assert_eq!(sessions[0]["json"]["backend"], "ibm_fez");

    // every call recorded, with its decision
    let record = |what: &str, pred: &dyn Fn(&Value) -> bool| {
        c.wait_for(what, WAIT, |v| v["kind"] == "quantum_job" && pred(job(v)))
    };
    let ev = record("CreateJob on sv1", &|j| {
        j["method"] == "POST"
            && j["endpoint"].as_str().unwrap().ends_with("/job")
            && j["decision"] == "allowed"
    });
    let j = job(&ev);
    assert_eq!(j["backend"], SV1, "{j}");
    assert_eq!(j["http_status"], 201, "{j}");
    assert!(
        j["job_id"]
            .as_str()
            .unwrap_or("")
            .ends_with(&format!("job/{ok_job}")),
        "the hybrid job's ARN: {j}"
    );
    assert!(
        !matches!(
            j["operation"].as_str(),
            Some("not_allowlisted" | "other") | None
        ),
        "{j}"
    );
    let ev = record("CreateJob on Aria-1", &|j| {
        j["endpoint"].as_str().unwrap().ends_with("/job") && j["decision"] == "denied"
    });
    assert_eq!(job(&ev)["policy_limit"], "backends", "{ev}");
    assert_eq!(job(&ev)["backend"], aria, "{ev}");
    let ev = record("session on ibm_fez", &|j| {
        j["endpoint"].as_str().unwrap().ends_with("/sessions") && j["decision"] == "allowed"
    });
    assert_eq!(job(&ev)["http_status"], 200, "{ev}");
    let ev = record("session on ibm_brisbane", &|j| {
        j["endpoint"].as_str().unwrap().ends_with("/sessions") && j["decision"] == "denied"
    });
    assert_eq!(job(&ev)["policy_limit"], "backends", "{ev}");
    let ev = record("IBM cancel", &|j| {
        j["operation"] == "cancel" && j["provider"] == "ibm_runtime"
    });
    assert_eq!(job(&ev)["job_id"], ibm_job, "{ev}");
    assert_eq!(job(&ev)["http_status"], 204, "{ev}");
    let ev = record("Braket cancel", &|j| {
        j["operation"] == "cancel" && j["provider"] == "braket"
    });
    assert_eq!(job(&ev)["job_id"], arn, "{ev}");
    assert_eq!(job(&ev)["http_status"], 200, "{ev}");
    for ev in jobs(c) {
        assert_eq!(ev["process"]["pid"], std::process::id(), "{ev}");
    }
    pair.stop();
}

#[test]
fn submission_path_spellings_are_policed_like_the_plain_one() {
    let upstream = Upstream::start(false);
    // the fixtures' circuits have 2 (Braket) and 5 (IBM) qubits: all denied
    let pair = policy_pair(&upstream, "", "max_qubits = 1");
    let c = &pair.collector;
    let gw = pair.addr();
    let braket = fixture("braket-task-single-program.json");
    let ibm = fixture("ibm-runtime-estimator-job.json");
    let spellings: [(&str, &[u8]); 8] = [
        ("/braket/quantum-task", &braket),
        ("/braket/%71uantum-task", &braket),
        ("/braket//quantum-task", &braket),
        ("/braket/x/../quantum-task", &braket),
        ("/braket/./quantum-task/", &braket),
        ("/%62raket/quantum-task", &braket),
        ("/ibm/api/v1/%6Aobs", &ibm),
        ("/ibm/api//v1/jobs", &ibm),
    ];
    for (path, body) in spellings {
        let r = http(gw, "POST", path, &JSON, body);
        assert_eq!(r.status, 403, "POST {path}: {}", r.body);
        assert_eq!(
            r.json()["error"]["limit"],
            "max_qubits",
            "POST {path}: {}",
            r.body
        );
    }
    // spellings an upstream could read otherwise are refused outright
    for path in [
        "/braket/x%2F..%2Fquantum-task",
        "/braket/%2e%2e/braket/quantum-task",
        "/braket/quantum-task%00",
        "/braket/quantum-task\\",
    ] {
        let r = http(gw, "POST", path, &JSON, &braket);
        assert!(
            (400..500).contains(&r.status),
            "POST {path}: {} {}",
            r.status,
            r.body
        );
        assert!(
            serde_json::from_str::<Value>(&r.body).is_ok(),
            "POST {path}: no JSON reason: {}",
            r.body
        );
    }
    assert_eq!(
        upstream_calls(&upstream, "POST", "/").len(),
        0,
        "no submission reached the provider: {:?}",
        upstream.requests()
    );
    let events = wait_submits(c, 8);
    for ev in &events[..8] {
        let j = job(ev);
        assert_eq!(j["decision"], "denied", "{ev}");
        assert_eq!(j["policy_limit"], "max_qubits", "{ev}");
    }
    pair.stop();
}

/// Braket tasks submitted through the gateway at `addr` every 40 ms until
/// the flag is set; the thread returns the task ids and any failures.
#[allow(clippy::type_complexity)]
fn submit_until_stopped(
    addr: &str,
) -> (
    std::sync::Arc<std::sync::atomic::AtomicBool>,
    std::thread::JoinHandle<(Vec<String>, Vec<String>)>,
) {
    let addr = addr.to_string();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop.clone();
    let body = fixture("braket-task-single-program.json");
    let submitter = std::thread::spawn(move || {
        let mut ids = Vec::new();
        let mut failures = Vec::new();
        while !flag.load(std::sync::atomic::Ordering::Relaxed) {
            let r = http(&addr, "POST", "/braket/quantum-task", &JSON, &body);
            if r.status == 201 {
                ids.push(r.json()["quantumTaskArn"].as_str().unwrap().to_string());
            } else {
                failures.push(format!("{} {}", r.status, r.body));
            }
            std::thread::sleep(Duration::from_millis(40));
        }
        (ids, failures)
    });
    (stop, submitter)
}

#[test]
fn no_job_record_is_lost_while_the_collector_restarts() {
    let upstream = Upstream::start(false);
    let sock_dir = socket_dir();
    let socket = sock_dir.path().join("collector.sock");
    let collector_toml = collector_config("host_id = \"e2e-gateway\"\n", &socket, &["root"]);
    let first = Collector::start(&collector_toml);
    let gateway = Gateway::start(
        &gateway_config(
            &format!(
                "[[routes]]\nprefix = \"/braket\"\nprovider = \"braket\"\nupstream = \"{}\"\n",
                upstream.url()
            ),
            &socket,
        ),
        None,
    );
    let (stop, submitter) = submit_until_stopped(gateway.addr());
    let mut outputs: Vec<Vec<Value>> = Vec::new();
    let mut current = first;
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(1500));
        outputs.push(current.terminate());
        std::thread::sleep(Duration::from_millis(300));
        current = Collector::start(&collector_toml);
    }
    std::thread::sleep(Duration::from_millis(1500));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ids, failures) = submitter.join().unwrap();
    assert!(failures.is_empty(), "submissions failed: {failures:?}");
    assert!(ids.len() >= 20, "only {} jobs submitted", ids.len());

    let recorded = |events: &[Value]| -> Vec<String> {
        events
            .iter()
            .filter(|v| v["kind"] == "quantum_job" && job(v)["operation"] == "submit")
            .filter_map(|v| job(v)["job_id"].as_str().map(str::to_string))
            .collect()
    };
    // the last collector gets what the others did not acknowledge
    let deadline = Instant::now() + WAIT;
    let missing = loop {
        let mut seen: std::collections::HashSet<String> =
            outputs.iter().flat_map(|o| recorded(o)).collect();
        seen.extend(recorded(&current.events()));
        let missing: Vec<&String> = ids.iter().filter(|id| !seen.contains(*id)).collect();
        if missing.is_empty() || Instant::now() > deadline {
            break missing.into_iter().cloned().collect::<Vec<_>>();
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let per_collector: Vec<usize> = outputs.iter().map(|o| recorded(o).len()).collect();
    assert!(
        missing.is_empty(),
        "{} of {} job records lost across collector restarts (records per stopped collector {per_collector:?}, last {}): {missing:?}\ngateway stderr:\n{}",
        missing.len(),
        ids.len(),
        recorded(&current.events()).len(),
        gateway.stderr()
    );
    // each collector wrote some: the restarts happened while jobs flowed
    assert!(per_collector.iter().all(|n| *n > 0), "{per_collector:?}");
    let mut all: Vec<String> = outputs.iter().flat_map(|o| recorded(o)).collect();
    all.extend(recorded(&current.events()));
    let duplicates = all.len() - all.iter().collect::<std::collections::HashSet<_>>().len();
    println!(
        "{} jobs, {} records, {duplicates} sent twice",
        ids.len(),
        all.len()
    );
    gateway.stop();
    current.stop();
}

#[test]
fn gateway_runs_as_nobody_without_capabilities() {
    let upstream = aws_upstream();
    let tag = marker("nobody");
    let token = "VIGILGWTOKENNOBODY0001";
    let pair = braket_pair(&upstream, AWS_REAL, &tag, token, Some("nobody"));
    let pid = pair.gateway.pid();
    let (uid, gid) = user_ids("nobody");
    let field = |f: &str| proc_status_field(pid, f).unwrap_or_else(|| panic!("no {f} for {pid}"));
    let ids =
        |s: String| -> Vec<u32> { s.split_whitespace().map(|x| x.parse().unwrap()).collect() };
    assert_eq!(ids(field("Uid")), vec![uid; 4], "Uid");
    assert_eq!(ids(field("Gid")), vec![gid; 4], "Gid");
    assert_eq!(field("Groups"), "", "supplementary groups");
    for cap in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(field(cap), "0000000000000000", "{cap}");
    }
    assert_eq!(field("NoNewPrivs"), "1");
    braket_sdk_flow(&pair, &upstream, AWS_REAL, &tag, token);
    pair.stop();
}

#[test]
fn a_link_peer_not_in_allowed_users_is_refused() {
    let upstream = Upstream::start(false);
    let sock_dir = socket_dir();
    let socket = sock_dir.path().join("collector.sock");
    let metrics_port = free_port();
    let tag = marker("refused");
    let collector = Collector::start(&collector_config(
        &format!(
            "host_id = \"e2e-gateway\"\n[[agents]]\nname = \"alpha\"\ncmdline = 'http_call\\.py .*{tag}'\n[metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n"
        ),
        &socket,
        &["root"],
    ));
    let token = "alpha-gateway-token-refused";
    let token_file = secret_file(upstream.dir(), "alpha.token", token, Some("nobody"));
    let cred = secret_file(
        upstream.dir(),
        "ibm-token",
        "real-ibm-token-77",
        Some("nobody"),
    );
    // the gateway as nobody: the collector accepts the socket, then refuses the peer
    let gateway = Gateway::start_waiting_for(
        &gateway_config(
            &format!(
                r#"[[routes]]
prefix = "/ibm"
provider = "ibm_runtime"
upstream = "{url}"
[routes.credential]
header = "Authorization"
file = "{cred}"
format = "Bearer {{}}"
[tokens]
alpha = "{token_file}"
"#,
                url = upstream.url(),
                cred = cred.display(),
                token_file = token_file.display(),
            ),
            &socket,
        ),
        Some("nobody"),
        LISTENING,
    );
    let deadline = Instant::now() + WAIT;
    while !collector.stderr().contains("link.allowed_users") {
        assert!(
            Instant::now() < deadline,
            "the collector did not log the refused peer:\n{}",
            collector.stderr()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let metrics = http(
        &format!("127.0.0.1:{metrics_port}"),
        "GET",
        "/metrics",
        &[],
        b"",
    );
    let refused: u64 = metrics
        .body
        .lines()
        .find(|l| l.starts_with("vigil_link_refused"))
        .and_then(|l| l.split_whitespace().last()?.parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "no vigil_link_refused in the collector's metrics:\n{}",
                metrics.body
            )
        });
    assert!(refused >= 1, "vigil_link_refused = {refused}");
    // the gateway cannot tell who calls: alpha's own token is not honoured
    let (_, r) = call_as(
        &tag,
        "POST",
        &format!("{}/ibm/api/v1/jobs", gateway.url()),
        &fixture("ibm-runtime-estimator-job.json"),
        &[
            "Content-Type=application/json",
            &format!("Authorization=Bearer {token}"),
        ],
    );
    assert_eq!(r["status"], 403, "{r}");
    let body: Value = serde_json::from_str(r["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["error"]["limit"], "token", "{body}");
    assert!(upstream.requests().is_empty(), "{:?}", upstream.requests());
    // and no job record reached the collector
    std::thread::sleep(Duration::from_millis(500));
    assert!(jobs(&collector).is_empty(), "{:?}", jobs(&collector));
    gateway.kill();
    collector.stop();
}

#[test]
fn no_route_and_upstream_failures_are_answered_in_json_and_failures_recorded() {
    let upstream = Upstream::start(false);
    // a port nobody listens on; an upstream that takes connections (the
    // kernel's backlog) and never answers
    let dead = free_port();
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent = silent.local_addr().map(|a| (a, silent)).unwrap();
    let pair = Pair::start(
        "host_id = \"e2e-gateway\"\n",
        &format!(
            r#"upstream_timeout_secs = 1
[[routes]]
prefix = "/braket"
provider = "braket"
upstream = "{url}"
[[routes]]
prefix = "/dead"
provider = "braket"
upstream = "http://127.0.0.1:{dead}"
[[routes]]
prefix = "/silent"
provider = "braket"
upstream = "http://{silent}"
"#,
            url = upstream.url(),
            silent = silent.0,
        ),
        None,
    );
    let c = &pair.collector;
    let body = fixture("braket-task-single-program.json");
    let error = |r: &vigil_e2e::quantum::HttpResponse, status: u16, code: &str| {
        assert_eq!(r.status, status, "{}", r.body);
        assert_eq!(r.json()["error"]["code"], code, "{}", r.body);
    };
    let r = http(pair.addr(), "POST", "/nowhere/quantum-task", &JSON, &body);
    error(&r, 404, "vigil_no_route");
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("/nowhere/quantum-task"));

    let r = http(pair.addr(), "POST", "/dead/quantum-task", &JSON, &body);
    error(&r, 502, "vigil_upstream_unreachable");
    let started = Instant::now();
    let r = http(
        pair.addr(),
        "GET",
        "/silent/quantum-task/arn%3Aaws%3Abraket%3Atask%2F1",
        &[],
        b"",
    );
    error(&r, 504, "vigil_upstream_timeout");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "504 after {:?}",
        started.elapsed()
    );

    // each failure is a record with the status the caller got; the no-route
    // request never reached a provider and is not a job record
    let deadline = Instant::now() + WAIT;
    let status_of = |route: &str| {
        jobs(c)
            .into_iter()
            .find(|v| job(v)["route"] == route)
            .map(|v| job(&v)["http_status"].clone())
    };
    while (status_of("/dead").is_none() || status_of("/silent").is_none())
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(status_of("/dead"), Some(Value::from(502)), "{}", c.stderr());
    assert_eq!(
        status_of("/silent"),
        Some(Value::from(504)),
        "{}",
        c.stderr()
    );
    assert!(jobs(c)
        .iter()
        .all(|v| !job(v)["endpoint"].to_string().contains("nowhere")));
    drop(silent);
}

/// The job ids of every `quantum_job` submit event in the spool at `dir`.
fn spooled_submits(dir: &std::path::Path) -> Vec<String> {
    use vigil_spool::tail::{SpoolTail, Tailed};
    let mut tail = SpoolTail::open(dir, Default::default());
    let mut ids = Vec::new();
    loop {
        match tail.next_batch().expect("the spool reads") {
            Tailed::Batch { record, .. } => {
                if record.header.kind() != Some(vigil_schema::EventKind::QuantumJob) {
                    continue;
                }
                let (_, batches) = vigil_schema::ipc::decode(&record.payload).expect("Arrow IPC");
                for b in &batches {
                    for e in vigil_schema::arrow::decode_batch(b).expect("a quantum_job batch") {
                        let job = e.quantum_job.expect("a quantum_job event has its job");
                        if job.operation == "submit" {
                            ids.extend(job.job_id);
                        }
                    }
                }
            }
            Tailed::Corrupt { .. } | Tailed::Skipped { .. } => {}
            Tailed::Idle => return ids,
        }
    }
}

#[test]
fn no_acknowledged_job_record_is_lost_when_the_collector_is_killed() {
    // spool output: a record is acknowledged once its batch is in the
    // spool file, so a SIGKILL loses none the gateway stopped keeping
    let upstream = Upstream::start(false);
    let sock_dir = socket_dir();
    let socket = sock_dir.path().join("collector.sock");
    let data = tempfile::tempdir().unwrap();
    let collector_toml = collector_config(
        "host_id = \"e2e-gateway\"\n[batch]\nflush_interval_ms = 400\n",
        &socket,
        &["root"],
    );
    let options = vigil_e2e::StartOptions {
        output: "spool",
        data_dir: Some(data.path().to_path_buf()),
    };
    let mut current = Collector::start_with(&collector_toml, options.clone());
    let gateway = Gateway::start(
        &gateway_config(
            &format!(
                "[[routes]]\nprefix = \"/braket\"\nprovider = \"braket\"\nupstream = \"{}\"\n",
                upstream.url()
            ),
            &socket,
        ),
        None,
    );
    let (stop, submitter) = submit_until_stopped(gateway.addr());
    for _ in 0..3 {
        // killed mid-batch: some records are in memory, not yet spooled
        std::thread::sleep(Duration::from_millis(1300));
        current.kill();
        std::thread::sleep(Duration::from_millis(300));
        current = Collector::start_with(&collector_toml, options.clone());
    }
    std::thread::sleep(Duration::from_millis(1000));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ids, failures) = submitter.join().unwrap();
    assert!(failures.is_empty(), "submissions failed: {failures:?}");
    assert!(ids.len() >= 20, "only {} jobs submitted", ids.len());
    // the last collector gets what the killed ones never spooled
    let spool = data.path().join("spool");
    let deadline = Instant::now() + WAIT;
    let missing = loop {
        let seen: std::collections::HashSet<String> = spooled_submits(&spool).into_iter().collect();
        let missing: Vec<&String> = ids.iter().filter(|id| !seen.contains(*id)).collect();
        if missing.is_empty() || Instant::now() > deadline {
            break missing.into_iter().cloned().collect::<Vec<_>>();
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        missing.is_empty(),
        "{} of {} job records lost across SIGKILLs: {missing:?}\ngateway stderr:\n{}",
        missing.len(),
        ids.len(),
        gateway.stderr()
    );
    gateway.stop();
    current.stop();
}
