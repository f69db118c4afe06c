//! The quantum job gateway: a loopback HTTP relay between quantum SDKs and
//! their providers that records every job and applies the job policy.
//!
//! request → route (prefix → provider, upstream) → attribution (which
//! process, which agent) → job parse (provider body) → policy (allow, deny,
//! monitor) → relay upstream (credential injected) → response (job id,
//! status) → `quantum_job` event into the pipeline.
//!
//! Job submissions are read whole (bounded by `max_body_bytes`) because the
//! policy needs them before anything is forwarded; every other request and
//! every response streams through, responses to submissions and status
//! polls with a bounded copy kept for the record.

mod attribution;
mod policy;
mod route;
mod sigv4;
mod tee;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::sync::{mpsc, oneshot, watch, OnceCell};
use tracing::{debug, info, warn};
use vigil_quantum::{Operation, Provider};
use vigil_schema::{Event, EventKind, QuantumJob};

use crate::config::{GatewayConfig, OnParseError};
use crate::enrich::{procfs, Host, Output, SharedContext};
use crate::metrics::{self, Metrics};
use policy::{Decision, Policy};
use route::Route;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type Body = BoxBody<Bytes, BoxError>;

/// OCSF API Activity.
const CLASS_API_ACTIVITY: u32 = 6003;
const ACTIVITY_CREATE: u32 = 1;
const ACTIVITY_READ: u32 = 2;

/// Responses to submissions and polls are small JSON; beyond this the copy
/// kept for the record stops (the relay does not).
const RESPONSE_COPY_BYTES: usize = 1 << 20;
/// Jobs whose last status is remembered (to report changes only).
const JOBS_REMEMBERED: usize = 100_000;
/// Events waiting for the pipeline; beyond this they are dropped and counted.
pub const EVENT_QUEUE: usize = 65_536;

/// What the gateway asks of the pipeline, which owns the process table.
pub enum ToPipeline {
    /// The context (process, agent) of a pid.
    Lookup {
        pid: u32,
        reply: oneshot::Sender<Option<Arc<SharedContext>>>,
    },
    /// A `quantum_job` event to write to the sinks.
    Event(Box<Output>),
}

/// The caller on one connection, resolved on its first job request.
#[derive(Clone, Default)]
struct Caller {
    pid: Option<u32>,
    context: Option<Arc<SharedContext>>,
}

impl Caller {
    fn agent(&self) -> Option<&str> {
        self.context.as_ref()?.data.agent_id.as_deref()
    }
}

/// What the gateway remembers of a job between its submission and polls.
#[derive(Clone, Default)]
struct JobMemo {
    backend: Option<String>,
    device_type: Option<String>,
    program: Option<String>,
    session_id: Option<String>,
    status: Option<String>,
}

struct Shared {
    routes: Vec<Route>,
    policy: Mutex<Policy>,
    jobs: Mutex<HashMap<String, JobMemo>>,
    max_body_bytes: usize,
    on_parse_error: OnParseError,
    upstream_timeout: Duration,
    local: SocketAddr,
    host: Host,
    to_pipeline: mpsc::Sender<ToPipeline>,
    metrics: Arc<Metrics>,
}

/// Check what only the running system can tell (credential files and
/// their modes, CA files), without listening: for `--check`.
pub fn check(config: &GatewayConfig) -> anyhow::Result<()> {
    for r in &config.routes {
        Route::new(r)?;
    }
    Ok(())
}

/// A bound, configured gateway, ready to serve.
pub struct Gateway {
    listener: std::net::TcpListener,
    shared: Arc<Shared>,
}

impl Gateway {
    /// Bind the listener and set up routes (TLS, credentials): every
    /// configuration problem surfaces here, before the collector starts.
    pub fn bind(
        config: &GatewayConfig,
        host: Host,
        to_pipeline: mpsc::Sender<ToPipeline>,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Gateway> {
        let routes = config
            .routes
            .iter()
            .map(Route::new)
            .collect::<anyhow::Result<Vec<_>>>()?;
        let listener = std::net::TcpListener::bind(&config.listen)
            .with_context(|| format!("gateway: cannot listen on {}", config.listen))?;
        listener.set_nonblocking(true)?;
        let local = attribution::canonical(listener.local_addr()?);
        info!(listen = %local, routes = routes.len(), "quantum job gateway listening");
        Ok(Gateway {
            listener,
            shared: Arc::new(Shared {
                routes,
                policy: Mutex::new(Policy::new(config.policy.clone())),
                jobs: Mutex::new(HashMap::new()),
                max_body_bytes: config.max_body_bytes,
                on_parse_error: config.on_parse_error,
                upstream_timeout: Duration::from_secs(config.upstream_timeout_secs),
                local,
                host,
                to_pipeline,
                metrics,
            }),
        })
    }

    /// Serve connections until `stop` turns true.
    pub async fn serve(self, mut stop: watch::Receiver<bool>) -> anyhow::Result<()> {
        let listener = tokio::net::TcpListener::from_std(self.listener)?;
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let (stream, peer) = match accepted {
                        Ok(a) => a,
                        Err(e) => {
                            warn!(error = %e, "gateway: accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    let _ = stream.set_nodelay(true);
                    tokio::spawn(connection(self.shared.clone(), stream, attribution::canonical(peer)));
                }
                _ = stop.wait_for(|s| *s) => return Ok(()),
            }
        }
    }
}

async fn connection(shared: Arc<Shared>, stream: tokio::net::TcpStream, peer: SocketAddr) {
    let caller = Arc::new(OnceCell::<Caller>::new());
    let service = service_fn(move |req| {
        let shared = shared.clone();
        let caller = caller.clone();
        async move { Ok::<_, Infallible>(handle(shared, caller, peer, req).await) }
    });
    if let Err(e) = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .await
    {
        debug!(error = %e, %peer, "gateway connection ended with an error");
    }
}

/// Who is on the other end: pid through /proc, context from the pipeline.
async fn resolve(shared: &Shared, peer: SocketAddr) -> Caller {
    let local = shared.local;
    let pid = tokio::task::spawn_blocking(move || {
        attribution::peer_pid(std::path::Path::new("/proc"), peer, local)
    })
    .await
    .ok()
    .flatten();
    let Some(pid) = pid else {
        warn!(%peer, "gateway: cannot tell which process is calling");
        metrics::add(&shared.metrics.gateway_unattributed, 1);
        return Caller::default();
    };
    let (reply, answer) = oneshot::channel();
    let context = match shared
        .to_pipeline
        .send(ToPipeline::Lookup { pid, reply })
        .await
    {
        Ok(()) => answer.await.ok().flatten(),
        Err(_) => None,
    };
    Caller {
        pid: Some(pid),
        context,
    }
}

fn json_response(status: StatusCode, value: serde_json::Value) -> Response<Body> {
    let body = Full::new(Bytes::from(value.to_string()))
        .map_err(|never| match never {})
        .boxed();
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

fn gateway_error(status: StatusCode, code: &str, message: String) -> Response<Body> {
    json_response(
        status,
        serde_json::json!({"error": {"code": code, "message": message}}),
    )
}

/// Hop-by-hop headers (RFC 9110 7.6.1) are the relay's own, never passed on.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // headers the Connection header names are hop-by-hop too
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in named {
        headers.remove(n);
    }
    let hop: Vec<HeaderName> = headers
        .keys()
        .filter(|k| is_hop_by_hop(k))
        .cloned()
        .collect();
    for n in hop {
        headers.remove(n);
    }
}

/// Handle one request; every outcome is a response (errors included).
async fn handle(
    shared: Arc<Shared>,
    caller: Arc<OnceCell<Caller>>,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Response<Body> {
    let started = Instant::now();
    metrics::add(&shared.metrics.gateway_requests, 1);
    let path = req.uri().path().to_string();
    let Some((index, rest)) = shared
        .routes
        .iter()
        .enumerate()
        .find_map(|(i, r)| r.strip(&path).map(|rest| (i, rest.to_string())))
    else {
        return gateway_error(
            StatusCode::NOT_FOUND,
            "vigil_no_route",
            format!("no gateway route for {path}"),
        );
    };
    let route = &shared.routes[index];
    let rest = if rest.is_empty() {
        "/".to_string()
    } else {
        rest
    };
    let operation = route.provider.operation(req.method().as_str(), &rest);
    let target = match req.uri().query() {
        Some(q) => format!("{}{rest}?{q}", route.upstream),
        None => format!("{}{rest}", route.upstream),
    };
    let Ok(uri) = target.parse::<http::Uri>() else {
        return gateway_error(
            StatusCode::BAD_REQUEST,
            "vigil_bad_path",
            format!("cannot relay path {path}"),
        );
    };
    let (mut parts, body) = req.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    parts.headers.remove(header::HOST);
    parts.uri = uri;
    parts.version = http::Version::HTTP_11;

    // Streamed unless the policy (submissions) or a signature needs it whole.
    if operation == Operation::Other && !route.signs_body() {
        route.authorize(&mut parts, b"");
        let upstream = Request::from_parts(parts, body.map_err(BoxError::from).boxed());
        return relay(&shared, route, upstream, None).await;
    }
    let whole = Limited::new(body, shared.max_body_bytes).collect().await;
    // the body is in hand: the upstream gets it at once, nothing to wait for
    parts.headers.remove(header::EXPECT);

    if operation == Operation::Other {
        let bytes = match whole {
            Ok(b) => b.to_bytes(),
            Err(e) => return body_error(&shared, e).1,
        };
        route.authorize(&mut parts, &bytes);
        let upstream = Request::from_parts(parts, full(bytes));
        return relay(&shared, route, upstream, None).await;
    }

    let caller = caller.get_or_init(|| resolve(&shared, peer)).await.clone();
    let mut job = QuantumJob {
        provider: route.provider.name().to_string(),
        route: route.prefix.clone(),
        endpoint: target.split('?').next().unwrap_or_default().to_string(),
        method: parts.method.to_string(),
        operation: operation.name().to_string(),
        decision: "allowed".to_string(),
        ..Default::default()
    };
    let bytes = match whole {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            let (refusal, response) = body_error(&shared, e);
            job.decision = "denied".into();
            job.policy_limit = refusal.limit.map(str::to_string);
            job.policy_reason = Some(refusal.message);
            job.http_status = Some(refusal.status.as_u16());
            emit(&shared, &caller, job);
            return response;
        }
    };
    match &operation {
        Operation::Submit => {
            metrics::add(&shared.metrics.gateway_jobs, 1);
            job.payload_bytes = bytes.len() as u64;
            parse_submit(&route.provider, &bytes, &mut job);
            if let Some(denied) = decide(&shared, &caller, &mut job) {
                emit(&shared, &caller, job);
                return denied;
            }
        }
        Operation::Status { job_id } => {
            metrics::add(&shared.metrics.gateway_polls, 1);
            job.job_id = Some(job_id.clone());
        }
        Operation::Other => {}
    }
    route.authorize(&mut parts, &bytes);
    let upstream = Request::from_parts(parts, full(bytes));
    let record = Record {
        shared: shared.clone(),
        route: index,
        caller,
        job,
        started,
    };
    relay(&shared, route, upstream, Some(record)).await
}

fn full(bytes: Bytes) -> Body {
    Full::new(bytes).map_err(|never| match never {}).boxed()
}

/// Why a request body was refused before it was read whole.
struct Refusal {
    status: StatusCode,
    limit: Option<&'static str>,
    message: String,
}

/// A body over `max_body_bytes` (413) or one that broke off (400).
fn body_error(shared: &Shared, e: BoxError) -> (Refusal, Response<Body>) {
    if e.downcast_ref::<http_body_util::LengthLimitError>()
        .is_some()
    {
        let message = format!(
            "request body over the gateway's max_body_bytes of {}",
            shared.max_body_bytes
        );
        let response = json_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            serde_json::json!({"error": {"code": "vigil_policy_denied", "limit": "max_body_bytes",
                "value": shared.max_body_bytes, "message": message}}),
        );
        let refusal = Refusal {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            limit: Some("max_body_bytes"),
            message,
        };
        return (refusal, response);
    }
    let message = format!("cannot read the request body: {e}");
    let response = gateway_error(StatusCode::BAD_REQUEST, "vigil_bad_body", message.clone());
    let refusal = Refusal {
        status: StatusCode::BAD_REQUEST,
        limit: None,
        message,
    };
    (refusal, response)
}

/// Read a submission into `job`; a parser failure (even a panic) becomes
/// `parse_error`, never a crash.
fn parse_submit(provider: &Provider, body: &[u8], job: &mut QuantumJob) {
    // what was read before an error (backend, shots...) stays in the job
    let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| provider.parse_submit(body, job)));
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(e)) => job.parse_error = Some(e.to_string()),
        Err(_) => job.parse_error = Some(format!("{}: parser failure", provider.name())),
    }
    if let Some(b) = &job.backend {
        job.device_type = Some(provider.device_type(b).to_string());
    }
}

/// Apply the parse-error rule and the policy. `Some(response)`: refused.
fn decide(shared: &Shared, caller: &Caller, job: &mut QuantumJob) -> Option<Response<Body>> {
    if let Some(err) = &job.parse_error {
        metrics::add(&shared.metrics.gateway_parse_errors, 1);
        warn!(provider = %job.provider, error = %err, pid = ?caller.pid, "gateway: job body not understood");
        if shared.on_parse_error == OnParseError::Deny {
            job.decision = "denied".into();
            job.policy_limit = Some("on_parse_error".into());
            job.policy_reason = Some(format!(
                "the job body could not be read ({err}) and on_parse_error = deny"
            ));
            job.http_status = Some(403);
            metrics::add(&shared.metrics.gateway_denied, 1);
            return Some(json_response(
                StatusCode::FORBIDDEN,
                serde_json::json!({"error": {"code": "vigil_policy_denied", "limit": "on_parse_error",
                    "value": "deny", "message": job.policy_reason}}),
            ));
        }
    }
    let decision = shared
        .policy
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .decide(caller.agent(), job, Instant::now());
    job.decision = decision.name().to_string();
    if let Some(b) = decision.breach() {
        job.policy_limit = Some(b.limit.to_string());
        job.policy_reason = Some(b.message.clone());
    }
    match decision {
        Decision::Allowed => None,
        Decision::Monitored(b) => {
            metrics::add(&shared.metrics.gateway_monitored, 1);
            info!(agent = ?caller.agent(), limit = b.limit, "gateway: over a limit (monitor mode, forwarded)");
            None
        }
        Decision::Denied(b) => {
            metrics::add(&shared.metrics.gateway_denied, 1);
            info!(agent = ?caller.agent(), limit = b.limit, "gateway: job denied");
            job.http_status = Some(b.status);
            let status = StatusCode::from_u16(b.status).unwrap_or(StatusCode::FORBIDDEN);
            let mut resp = json_response(
                status,
                serde_json::json!({"error": {
                    "code": "vigil_policy_denied",
                    "limit": b.limit,
                    "value": b.value,
                    "requested": b.requested,
                    "agent_id": caller.agent(),
                    "message": b.message,
                }}),
            );
            if let Some(secs) = b.retry_after {
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(secs));
            }
            Some(resp)
        }
    }
}

/// A job request on its way: recorded when its response has been read.
struct Record {
    shared: Arc<Shared>,
    /// Index of the request's route in `shared.routes`.
    route: usize,
    caller: Caller,
    job: QuantumJob,
    started: Instant,
}

async fn relay(
    shared: &Shared,
    route: &Route,
    upstream: Request<Body>,
    record: Option<Record>,
) -> Response<Body> {
    let outcome =
        tokio::time::timeout(shared.upstream_timeout, route.client.request(upstream)).await;
    let failure = match outcome {
        Ok(Ok(resp)) => {
            let (mut parts, body) = resp.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            let body = match record {
                None => body.map_err(BoxError::from).boxed(),
                Some(mut r) => {
                    r.job.http_status = Some(parts.status.as_u16());
                    r.job.latency_ms = Some(r.started.elapsed().as_millis() as u64);
                    let status_ok = parts.status.is_success();
                    tee::TeeBody::new(
                        body,
                        RESPONSE_COPY_BYTES,
                        Box::new(move |copy| finish(r, status_ok, copy)),
                    )
                    .boxed()
                }
            };
            return Response::from_parts(parts, body);
        }
        Ok(Err(e)) => (
            StatusCode::BAD_GATEWAY,
            "vigil_upstream_unreachable",
            format!("upstream {}: {}", route.upstream, error_chain(&e)),
        ),
        Err(_) => (
            StatusCode::GATEWAY_TIMEOUT,
            "vigil_upstream_timeout",
            format!(
                "upstream {} did not answer within {} s",
                route.upstream,
                shared.upstream_timeout.as_secs()
            ),
        ),
    };
    metrics::add(&shared.metrics.gateway_upstream_errors, 1);
    warn!(route = %route.prefix, error = %failure.2, "gateway: upstream failed");
    if let Some(mut r) = record {
        r.job.http_status = Some(failure.0.as_u16());
        r.job.latency_ms = Some(r.started.elapsed().as_millis() as u64);
        emit(&r.shared, &r.caller, r.job);
    }
    gateway_error(failure.0, failure.1, failure.2)
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// The response has been relayed: complete the job from it and emit.
fn finish(mut r: Record, status_ok: bool, copy: Option<&[u8]>) {
    let shared = r.shared.clone();
    let provider = &shared.routes[r.route].provider;
    let mut jobs = r.shared.jobs.lock().unwrap_or_else(|e| e.into_inner());
    match r.job.operation.as_str() {
        "submit" => {
            if let (true, Some(body)) = (status_ok, copy) {
                r.job.job_id = provider.submitted_job_id(body);
            }
            if let Some(id) = &r.job.job_id {
                if jobs.len() >= JOBS_REMEMBERED {
                    jobs.clear();
                }
                jobs.insert(
                    id.clone(),
                    JobMemo {
                        backend: r.job.backend.clone(),
                        device_type: r.job.device_type.clone(),
                        program: r.job.program.clone(),
                        session_id: r.job.session_id.clone(),
                        status: None,
                    },
                );
            }
        }
        "status" => {
            if let (true, Some(body)) = (status_ok, copy) {
                provider.status(body, &mut r.job);
            }
            let id = r.job.job_id.clone().unwrap_or_default();
            let memo = jobs.entry(id).or_default();
            if status_ok && r.job.status.is_some() && r.job.status == memo.status {
                // an unchanged status is not news
                return;
            }
            r.job.previous_status = memo.status.clone();
            if r.job.status.is_some() {
                memo.status = r.job.status.clone();
            }
            r.job.backend = r.job.backend.take().or_else(|| memo.backend.clone());
            r.job.device_type = memo.device_type.clone().or_else(|| {
                r.job
                    .backend
                    .as_deref()
                    .map(|b| provider.device_type(b).to_string())
            });
            r.job.program = memo.program.clone();
            r.job.session_id = memo.session_id.clone();
        }
        _ => {}
    }
    drop(jobs);
    emit(&r.shared, &r.caller, r.job);
}

/// Hand a job event to the pipeline (never blocking the relay).
fn emit(shared: &Shared, caller: &Caller, job: QuantumJob) {
    let (activity_id, activity) = match job.operation.as_str() {
        "submit" => (ACTIVITY_CREATE, "submit"),
        "status" => (ACTIVITY_READ, "status"),
        _ => (vigil_schema::ocsf::OTHER, "other"),
    };
    let now_ns = procfs::boot_now_ns();
    let mut event = Event::new(
        EventKind::QuantumJob,
        CLASS_API_ACTIVITY,
        activity_id,
        activity,
        procfs::boot_wall_ms() + (now_ns / 1_000_000) as i64,
        now_ns,
        &shared.host.host_id,
        &shared.host.hostname,
    );
    if caller.context.is_none() {
        if let Some(pid) = caller.pid {
            // the table did not know it: at least say which pid
            event.process = Some(vigil_schema::Process {
                pid,
                tid: pid,
                ..Default::default()
            });
        }
    }
    event.quantum_job = Some(Box::new(job));
    let out = Output {
        event,
        context: caller.context.clone(),
    };
    if shared
        .to_pipeline
        .try_send(ToPipeline::Event(Box::new(out)))
        .is_err()
    {
        metrics::add(&shared.metrics.gateway_event_drops, 1);
    }
}
