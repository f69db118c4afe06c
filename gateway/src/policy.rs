//! Job limits per agent: the decision for each submission, and the sliding
//! windows (last minute, last hour) it is taken over.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use vigil_schema::QuantumJob;

use crate::config::{Limits, PolicyConfig, PolicyMode};

const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);

/// The verdict on one submission.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Allowed,
    /// Over a limit: refuse with this status (enforce mode).
    Denied(Breach),
    /// Over a limit, forwarded anyway (monitor mode).
    Monitored(Breach),
}

impl Decision {
    pub fn name(&self) -> &'static str {
        match self {
            Decision::Allowed => "allowed",
            Decision::Denied(_) => "denied",
            Decision::Monitored(_) => "monitored",
        }
    }
    pub fn breach(&self) -> Option<&Breach> {
        match self {
            Decision::Allowed => None,
            Decision::Denied(b) | Decision::Monitored(b) => Some(b),
        }
    }
}

/// Which limit a job is over, its value, and what the job would make it.
#[derive(Debug, Clone, PartialEq)]
pub struct Breach {
    pub limit: &'static str,
    /// The configured value, as JSON (a number, list or boolean).
    pub value: serde_json::Value,
    /// What the job asked for or would bring the window to.
    pub requested: serde_json::Value,
    /// 429 for rates, 403 for what the job is.
    pub status: u16,
    /// Seconds until the window lets a job like this through (rates).
    pub retry_after: Option<u64>,
    pub message: String,
}

/// Submissions the policy let through in one second.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    second: u64,
    jobs: u64,
    shots: u64,
    executions: u64,
}

/// One agent's submissions over the last hour in one-second buckets: at
/// most 3600 of them whatever the rate, with running totals for the hour,
/// so a decision costs at most 60 bucket reads (the minute) however many
/// jobs came. Windows slide by the second.
#[derive(Default)]
struct Window {
    buckets: VecDeque<Bucket>,
    hour_shots: u64,
    hour_executions: u64,
}

impl Window {
    fn prune(&mut self, now_s: u64) {
        while let Some(b) = self.buckets.front() {
            if now_s.saturating_sub(b.second) < HOUR.as_secs() {
                break;
            }
            self.hour_shots = self.hour_shots.saturating_sub(b.shots);
            self.hour_executions = self.hour_executions.saturating_sub(b.executions);
            self.buckets.pop_front();
        }
    }

    fn jobs_last_minute(&self, now_s: u64) -> u64 {
        self.buckets
            .iter()
            .rev()
            .take_while(|b| now_s.saturating_sub(b.second) < MINUTE.as_secs())
            .map(|b| b.jobs)
            .sum()
    }

    /// Seconds until the oldest second within `span` leaves it.
    fn retry_after(&self, now_s: u64, span: Duration) -> u64 {
        self.buckets
            .iter()
            .find(|b| now_s.saturating_sub(b.second) < span.as_secs())
            .map_or(1, |b| {
                (span.as_secs() - now_s.saturating_sub(b.second)).max(1)
            })
    }

    fn add(&mut self, now_s: u64, shots: u64, executions: u64) {
        // counts a body claims can be near u64::MAX: saturate, never wrap
        self.hour_shots = self.hour_shots.saturating_add(shots);
        self.hour_executions = self.hour_executions.saturating_add(executions);
        match self.buckets.back_mut() {
            Some(b) if b.second == now_s => {
                b.jobs += 1;
                b.shots = b.shots.saturating_add(shots);
                b.executions = b.executions.saturating_add(executions);
            }
            _ => self.buckets.push_back(Bucket {
                second: now_s,
                jobs: 1,
                shots,
                executions,
            }),
        }
    }
}

pub struct Policy {
    config: PolicyConfig,
    windows: HashMap<String, Window>,
    /// Windows count seconds from here.
    origin: Instant,
}

/// Key of callers outside any agent: they share the default limits' window.
const NO_AGENT: &str = "";

impl Policy {
    pub fn new(config: PolicyConfig) -> Self {
        Self {
            config,
            windows: HashMap::new(),
            origin: Instant::now(),
        }
    }

    fn limits_for(&self, agent: Option<&str>) -> (Limits, PolicyMode) {
        let mut limits = self.config.limits.clone();
        let mut mode = self.config.mode;
        if let Some(o) = agent.and_then(|a| self.config.agents.get(a)) {
            let l = &o.limits;
            macro_rules! over {
                ($($f:ident),*) => { $( if l.$f.is_some() { limits.$f = l.$f.clone(); } )* };
            }
            over!(
                jobs_per_minute,
                shots_per_hour,
                executions_per_hour,
                max_qubits,
                backends,
                allow_qpu,
                allow_hybrid_jobs
            );
            mode = o.mode.unwrap_or(mode);
        }
        (limits, mode)
    }

    /// The mode (enforce, monitor) for `agent`'s calls.
    /// Called on every request: reads the mode without copying the limits.
    pub fn mode_for(&self, agent: Option<&str>) -> PolicyMode {
        agent
            .and_then(|a| self.config.agents.get(a))
            .and_then(|o| o.mode)
            .unwrap_or(self.config.mode)
    }

    /// Decide on a session `agent` opens: only the backend limits apply, and
    /// nothing is counted.
    pub fn decide_session(&mut self, agent: Option<&str>, job: &QuantumJob) -> Decision {
        let (limits, mode) = self.limits_for(agent);
        let breach = check(
            &backend_limits(&limits),
            job,
            &Window::default(),
            0,
            &who(agent),
        );
        verdict(breach, mode)
    }

    /// Decide on a submission by `agent` (None: not in an agent's tree) and
    /// count it when it goes through.
    pub fn decide(&mut self, agent: Option<&str>, job: &QuantumJob, now: Instant) -> Decision {
        let (limits, mode) = self.limits_for(agent);
        let now_s = now.saturating_duration_since(self.origin).as_secs();
        let window = self
            .windows
            .entry(agent.unwrap_or(NO_AGENT).to_string())
            .or_default();
        window.prune(now_s);
        let decision = verdict(check(&limits, job, window, now_s, &who(agent)), mode);
        if !matches!(decision, Decision::Denied(_)) {
            window.add(now_s, job.shots.unwrap_or(0), job.executions.unwrap_or(0));
        }
        decision
    }
}

/// Fail closed: a limit whose input the body did not tell cannot be
/// checked, so the job is over it (403, naming the input). Rates count
/// jobs, which are always known; shots and executions limits need the
/// job's counts.
fn unread_input(limits: &Limits, job: &QuantumJob) -> Option<Breach> {
    let needs: [(&'static str, bool, &str, bool); 5] = [
        (
            "backends",
            limits.backends.is_some(),
            "backend",
            job.backend.is_some(),
        ),
        (
            "allow_qpu",
            limits.allow_qpu == Some(false),
            "backend",
            job.backend.is_some(),
        ),
        (
            "max_qubits",
            limits.max_qubits.is_some(),
            "qubits",
            job.qubits.is_some(),
        ),
        (
            "shots_per_hour",
            limits.shots_per_hour.is_some(),
            "shots",
            job.shots.is_some(),
        ),
        (
            "executions_per_hour",
            limits.executions_per_hour.is_some(),
            "executions",
            job.executions.is_some(),
        ),
    ];
    let (limit, _, input, _) = needs
        .into_iter()
        .find(|(_, set, _, known)| *set && !*known)?;
    Some(Breach {
        limit,
        value: serde_json::Value::Null,
        requested: serde_json::Value::Null,
        status: 403,
        retry_after: None,
        message: format!(
            "the job's {input} could not be read from the request, so the {limit} limit cannot be checked (fail closed)"
        ),
    })
}

/// How a caller is named in messages.
fn who(agent: Option<&str>) -> String {
    agent.map_or_else(
        || "callers outside any agent".to_string(),
        |a| format!("agent {a}"),
    )
}

/// A breach denies in enforce mode and is only recorded in monitor mode.
fn verdict(breach: Option<Breach>, mode: PolicyMode) -> Decision {
    match (breach, mode) {
        (None, _) => Decision::Allowed,
        (Some(b), PolicyMode::Enforce) => Decision::Denied(b),
        (Some(b), PolicyMode::Monitor) => Decision::Monitored(b),
    }
}

/// What applies to a session, which reserves a backend but runs nothing
/// itself: the backend limits (and their inputs), not rates or sizes.
fn backend_limits(limits: &Limits) -> Limits {
    Limits {
        backends: limits.backends.clone(),
        allow_qpu: limits.allow_qpu,
        ..Limits::default()
    }
}

fn check(
    limits: &Limits,
    job: &QuantumJob,
    window: &Window,
    now_s: u64,
    who: &str,
) -> Option<Breach> {
    use serde_json::json;
    let deny = |limit: &'static str,
                value: serde_json::Value,
                requested: serde_json::Value,
                message: String| Breach {
        limit,
        value,
        requested,
        status: 403,
        retry_after: None,
        message,
    };
    if let Some(missing) = unread_input(limits, job) {
        return Some(missing);
    }
    let backend = job.backend.as_deref();
    if let (Some(allowed), Some(b)) = (&limits.backends, backend) {
        if !allowed.iter().any(|a| a == b) {
            return Some(deny(
                "backends",
                json!(allowed),
                json!(b),
                format!("backend {b} is not among the backends allowed for {who}"),
            ));
        }
    }
    if limits.allow_qpu == Some(false) && job.device_type.as_deref() != Some("simulator") {
        let b = backend.unwrap_or_default();
        return Some(deny(
            "allow_qpu",
            json!(false),
            json!(b),
            format!("QPU backends are not allowed for {who} ({b} is not a known simulator)"),
        ));
    }
    if job.program.as_deref() == Some("hybrid_job")
        && limits.allow_hybrid_jobs != Some(true)
        && (limits.backends.is_some() || limits.allow_qpu == Some(false))
    {
        return Some(deny(
            "hybrid_jobs",
            json!(false),
            json!(job.backend),
            format!(
                "a hybrid job submits its tasks from its own container, past the gateway: \
                 not allowed for {who}, whose backends are limited (allow_hybrid_jobs)"
            ),
        ));
    }
    if let (Some(max), Some(q)) = (limits.max_qubits, job.qubits) {
        if q > max {
            return Some(deny(
                "max_qubits",
                json!(max),
                json!(q),
                format!("the job uses {q} qubits, over the max_qubits limit of {max} for {who}"),
            ));
        }
    }
    let rate = |limit: &'static str, value: u64, requested: u64, span: Duration, what: &str| {
        Breach {
        limit,
        value: json!(value),
        requested: json!(requested),
        status: 429,
        retry_after: Some(window.retry_after(now_s, span)),
        message: format!("{limit} limit of {value} reached for {who}: this job would make it {requested} {what}"),
    }
    };
    if let Some(max) = limits.jobs_per_minute {
        let n = window.jobs_last_minute(now_s) + 1;
        if n > max {
            return Some(rate(
                "jobs_per_minute",
                max,
                n,
                MINUTE,
                "jobs in the last minute",
            ));
        }
    }
    if let Some(max) = limits.shots_per_hour {
        let n = window.hour_shots.saturating_add(job.shots.unwrap_or(0));
        if n > max {
            return Some(rate(
                "shots_per_hour",
                max,
                n,
                HOUR,
                "shots in the last hour",
            ));
        }
    }
    if let Some(max) = limits.executions_per_hour {
        let n = window
            .hour_executions
            .saturating_add(job.executions.unwrap_or(0));
        if n > max {
            return Some(rate(
                "executions_per_hour",
                max,
                n,
                HOUR,
                "executions in the last hour",
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AgentPolicy;

    fn job(shots: u64, qubits: u32, backend: &str, device: &str) -> QuantumJob {
        QuantumJob {
            shots: Some(shots),
            executions: Some(shots.saturating_mul(10)),
            qubits: Some(qubits),
            backend: Some(backend.into()),
            device_type: Some(device.into()),
            ..Default::default()
        }
    }

    fn policy() -> Policy {
        let mut config = PolicyConfig {
            limits: Limits {
                jobs_per_minute: Some(3),
                shots_per_hour: Some(10_000),
                ..Default::default()
            },
            ..Default::default()
        };
        config.agents.insert(
            "cowork".into(),
            AgentPolicy {
                mode: None,
                limits: Limits {
                    jobs_per_minute: Some(1),
                    max_qubits: Some(10),
                    allow_qpu: Some(false),
                    ..Default::default()
                },
            },
        );
        Policy::new(config)
    }

    #[test]
    fn rate_limits_per_agent_with_defaults() {
        let mut p = policy();
        let t = Instant::now();
        let sim = job(100, 5, "sim", "simulator");
        assert_eq!(p.decide(Some("cowork"), &sim, t), Decision::Allowed);
        let d = p.decide(Some("cowork"), &sim, t);
        let b = d.breach().unwrap();
        assert!(matches!(d, Decision::Denied(_)));
        assert_eq!((b.limit, b.status), ("jobs_per_minute", 429));
        assert_eq!(b.value, serde_json::json!(1));
        assert_eq!(b.retry_after, Some(60));
        // a minute later the window has room again
        assert_eq!(
            p.decide(Some("cowork"), &sim, t + Duration::from_secs(61)),
            Decision::Allowed
        );
        // other callers have the default limit (3 a minute)
        for _ in 0..3 {
            assert_eq!(p.decide(None, &sim, t), Decision::Allowed);
        }
        assert_eq!(
            p.decide(None, &sim, t).breach().unwrap().limit,
            "jobs_per_minute"
        );
    }

    #[test]
    fn what_the_job_is() {
        let mut p = policy();
        let t = Instant::now();
        let d = p.decide(Some("cowork"), &job(10, 5, "ibm_fez", "qpu"), t);
        assert_eq!(d.breach().unwrap().limit, "allow_qpu");
        assert_eq!(d.breach().unwrap().status, 403);
        let d = p.decide(Some("cowork"), &job(10, 11, "sim", "simulator"), t);
        assert_eq!(d.breach().unwrap().limit, "max_qubits");
        // shots over the hour: 9000 + 2000 > 10000
        assert_eq!(
            p.decide(Some("other"), &job(9000, 2, "s", "simulator"), t),
            Decision::Allowed
        );
        let d = p.decide(Some("other"), &job(2000, 2, "s", "simulator"), t);
        assert_eq!(d.breach().unwrap().limit, "shots_per_hour");
        assert_eq!(d.breach().unwrap().requested, serde_json::json!(11000));
        // an hour later the shots have left the window
        let later = t + Duration::from_secs(3601);
        assert_eq!(
            p.decide(Some("other"), &job(2000, 2, "s", "simulator"), later),
            Decision::Allowed
        );
    }

    #[test]
    fn limits_fail_closed_on_inputs_the_body_did_not_tell() {
        let mut p = policy();
        let t = Instant::now();
        let mut unknown = job(10, 2, "sim", "simulator");
        unknown.qubits = None;
        // cowork has max_qubits: its input is missing
        let d = p.decide(Some("cowork"), &unknown, t);
        let b = d.breach().expect("denied");
        assert!(matches!(d, Decision::Denied(_)));
        assert_eq!((b.limit, b.status), ("max_qubits", 403));
        assert!(
            b.message.contains("qubits could not be read"),
            "{}",
            b.message
        );
        // the default limits have shots_per_hour: shots unknown → denied
        let mut no_shots = job(10, 2, "sim", "simulator");
        no_shots.shots = None;
        assert_eq!(
            p.decide(None, &no_shots, t).breach().unwrap().limit,
            "shots_per_hour"
        );
        // without backend, allow_qpu = false cannot be checked
        let mut no_backend = job(10, 2, "sim", "simulator");
        no_backend.backend = None;
        no_backend.device_type = None;
        assert_eq!(
            p.decide(Some("cowork"), &no_backend, t)
                .breach()
                .unwrap()
                .limit,
            "allow_qpu"
        );
    }

    #[test]
    fn sessions_answer_to_the_backend_limits_only() {
        let mut p = policy();
        let t = Instant::now();
        let qpu = job(10, 100, "ibm_fez", "qpu");
        assert_eq!(
            p.decide_session(Some("cowork"), &qpu)
                .breach()
                .unwrap()
                .limit,
            "allow_qpu"
        );
        // qubits and rates do not apply to a session
        let sim = job(1, 100, "sim", "simulator");
        for _ in 0..5 {
            assert_eq!(p.decide_session(Some("cowork"), &sim), Decision::Allowed);
        }
        // and sessions are not counted as jobs
        assert_eq!(
            p.decide(Some("cowork"), &job(1, 5, "sim", "simulator"), t),
            Decision::Allowed
        );
    }

    #[test]
    fn hybrid_jobs_fail_closed_where_backends_are_limited_and_counts_saturate() {
        let mut p = policy();
        let t = Instant::now();
        let mut hybrid = job(
            1,
            1,
            "arn:aws:braket:::device/quantum-simulator/amazon/sv1",
            "simulator",
        );
        hybrid.program = Some("hybrid_job".into());
        // cowork may not use QPUs: its hybrid jobs could, from their container
        assert_eq!(
            p.decide(Some("cowork"), &hybrid, t).breach().unwrap().limit,
            "hybrid_jobs"
        );
        // a body claiming u64::MAX shots: over the hour's limit, never a wrap or a panic
        let huge = job(u64::MAX, 1, "s", "simulator");
        assert_eq!(
            p.decide(Some("other"), &huge, t).breach().unwrap().limit,
            "shots_per_hour"
        );
        let mut monitor = policy();
        monitor.config.mode = PolicyMode::Monitor;
        monitor.decide(Some("x"), &huge, t);
        let d = monitor.decide(Some("x"), &huge, t);
        assert_eq!(d.breach().unwrap().requested, serde_json::json!(u64::MAX));
    }

    #[test]
    fn monitor_mode_records_and_counts() {
        let mut p = policy();
        p.config.mode = PolicyMode::Monitor;
        assert_eq!(p.mode_for(Some("cowork")), PolicyMode::Monitor);
        p.config.agents.get_mut("cowork").unwrap().mode = Some(PolicyMode::Enforce);
        assert_eq!(p.mode_for(Some("cowork")), PolicyMode::Enforce);
        assert_eq!(p.mode_for(None), PolicyMode::Monitor);
        p.config.agents.get_mut("cowork").unwrap().mode = None;
        let t = Instant::now();
        let sim = job(1, 1, "s", "simulator");
        assert_eq!(p.decide(Some("cowork"), &sim, t), Decision::Allowed);
        let d = p.decide(Some("cowork"), &sim, t);
        assert!(matches!(d, Decision::Monitored(_)));
        // monitored jobs still count: the third is over by two
        let d = p.decide(Some("cowork"), &sim, t);
        assert_eq!(d.breach().unwrap().requested, serde_json::json!(3));
    }
}
