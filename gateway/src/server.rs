//! The gateway's HTTP side: every request goes through the same steps.
//!
//! route (normalised path → provider, upstream, allowlisted operation) →
//! caller (the collector says which process, hence which agent) → identity
//! (the agent's token must agree with the caller's tree) → body (bounded in
//! size, time and shared memory) → parse (submissions, on a blocking thread
//! with a deadline) → policy (allowlist, unattributed callers, job limits,
//! fail closed) → relay (credential injected) → record (a `quantum_job`
//! record to the collector, also when the client hung up).
//!
//! Job submissions and signed requests are read whole (the policy or the
//! signature needs them); everything else streams through.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::{watch, Semaphore};
use tracing::{debug, info, warn};
use vigil_quantum::providers::OpClass;
use vigil_quantum::{Operation, ParseLimits};
use vigil_schema::link::JobRecord;
use vigil_schema::QuantumJob;

use crate::body::{self, BodyError};
use crate::config::{GatewayConfig, OnParseError, PolicyMode};
use crate::jobs::Jobs;
use crate::link::{Caller, Link};
use crate::metrics::{self, Metrics};
use crate::policy::{Decision, Policy};
use crate::route::Route;
use crate::tokens::{Identity, Tokens};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type Body = BoxBody<Bytes, BoxError>;

/// OCSF API Activity and its activities.
const CLASS_API_ACTIVITY: u32 = 6003;

/// Lookups waiting for the collector past which a new connection's caller
/// is asked only when it sends a request.
const EARLY_LOOKUPS: usize = 64;

/// Small bodies parsed at once: SDK-sized jobs never wait for large ones.
pub const SMALL_PARSES: usize = 2;

/// Responses to submissions and polls are small JSON; beyond this the copy
/// kept for the record stops (the relay does not).
const RESPONSE_COPY_BYTES: usize = 1 << 20;

struct Shared {
    routes: Vec<Route>,
    policy: Mutex<Policy>,
    jobs: Mutex<Jobs>,
    tokens: Tokens,
    config: GatewayConfig,
    /// Body bytes all requests may hold at once, in KiB permits.
    body_budget: Arc<Semaphore>,
    /// Parse slots: large bodies, small bodies.
    parses: Arc<Semaphore>,
    small_parses: Arc<Semaphore>,
    connections: Arc<Semaphore>,
    local: SocketAddr,
    link: Link,
    metrics: Arc<Metrics>,
    /// Records being made (requests in flight).
    pending: Arc<std::sync::atomic::AtomicUsize>,
}

/// A bound, configured gateway, ready to serve.
pub struct Gateway {
    listener: std::net::TcpListener,
    shared: Arc<Shared>,
}

/// Normalise an address as the kernel tables show it (IPv4-mapped → IPv4).
fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        std::net::IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(v4.into(), addr.port()),
            None => addr,
        },
        _ => addr,
    }
}

/// Set up routes (TLS, credentials) and tokens without listening: every
/// problem the running system can tell, for `--check`.
pub fn check(config: &GatewayConfig) -> anyhow::Result<()> {
    for r in &config.routes {
        Route::new(r)?;
    }
    Tokens::load(&config.tokens)?;
    Ok(())
}

impl Gateway {
    /// Bind the listener and set up routes and tokens: every configuration
    /// problem surfaces here, before anything is served.
    pub fn bind(config: GatewayConfig, link: Link, metrics: Arc<Metrics>) -> anyhow::Result<Self> {
        let routes = config
            .routes
            .iter()
            .map(Route::new)
            .collect::<anyhow::Result<Vec<_>>>()?;
        let tokens = Tokens::load(&config.tokens)?;
        let listener = std::net::TcpListener::bind(&config.listen)
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        listener.set_nonblocking(true)?;
        let local = canonical(listener.local_addr()?);
        info!(listen = %local, routes = routes.len(), tokens = tokens.len(), "quantum job gateway listening");
        let l = &config.limits;
        let budget_kib = (l.body_budget_bytes / 1024).min(Semaphore::MAX_PERMITS);
        Ok(Gateway {
            listener,
            shared: Arc::new(Shared {
                routes,
                policy: Mutex::new(Policy::new(config.policy.clone())),
                jobs: Mutex::new(Jobs::new(l.max_job_id_bytes)),
                tokens,
                body_budget: Arc::new(Semaphore::new(budget_kib)),
                parses: Arc::new(Semaphore::new(l.max_parallel_parses)),
                small_parses: Arc::new(Semaphore::new(SMALL_PARSES)),
                connections: Arc::new(Semaphore::new(l.max_connections)),
                local,
                link,
                metrics,
                config,
                pending: Arc::default(),
            }),
        })
    }

    /// How many records are being made: requests in flight, responses still
    /// relayed. Shutdown waits for it to reach 0.
    pub fn pending(&self) -> Arc<std::sync::atomic::AtomicUsize> {
        self.shared.pending.clone()
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
                            warn!(error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    let Ok(slot) = self.shared.connections.clone().try_acquire_owned() else {
                        metrics::add(&self.shared.metrics.connections_refused, 1);
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    let shared = self.shared.clone();
                    tokio::spawn(async move {
                        connection(shared, stream, canonical(peer)).await;
                        drop(slot);
                    });
                }
                _ = async { let _ = stop.wait_for(|s| *s).await; } => return Ok(()),
            }
        }
    }
}

/// The caller of one connection, once the collector has placed it (a
/// failed lookup is not kept: the next request asks again).
type CallerCell = Arc<tokio::sync::Mutex<Option<Caller>>>;

async fn connection(shared: Arc<Shared>, stream: tokio::net::TcpStream, peer: SocketAddr) {
    // the address this connection reached (a wildcard listener has many)
    let local = stream.local_addr().map_or(shared.local, canonical);
    let caller: CallerCell = Arc::default();
    early_lookup(&shared, &caller, (peer, local));
    let header_timeout = Duration::from_millis(shared.config.limits.header_timeout_ms);
    let (for_service, for_record) = ((shared.clone(), caller.clone()), (shared, caller));
    let service = service_fn(move |req| {
        let (shared, caller) = (for_service.0.clone(), for_service.1.clone());
        // its own task: a client that hangs up does not cancel a relay in
        // flight, whose record is still made
        let task = tokio::spawn(handle(shared, caller, (peer, local), req));
        async move {
            Ok::<_, Infallible>(task.await.unwrap_or_else(|_| {
                gateway_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "vigil_internal",
                    "the request handler failed".into(),
                )
            }))
        }
    });
    let served = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        // request heads: hyper answers 431/414 past this (and records are made)
        .max_buf_size(64 << 10)
        .serve_connection(TokioIo::new(stream), service)
        .await;
    if let Err(e) = served {
        debug!(error = %e, %peer, "connection ended with an error");
        if e.is_parse() || e.is_parse_too_large() {
            malformed_head(for_record.0, for_record.1, (peer, local), &e).await;
        }
    }
}

/// hyper refused a request head before routing (a request line or headers
/// over its limits: 414, 431; malformed: 400) and answered it itself,
/// without a JSON body. The refusal is still recorded, with its caller.
async fn malformed_head(
    shared: Arc<Shared>,
    caller: CallerCell,
    ends: (SocketAddr, SocketAddr),
    e: &hyper::Error,
) {
    metrics::add(&shared.metrics.limit_hits, 1);
    let caller = caller_of(&shared, &caller, ends).await;
    let (activity_id, operation) = activity(None);
    let message = format!("request head refused before routing: {e}");
    Record {
        shared: shared.clone(),
        route: 0,
        caller,
        job: QuantumJob {
            operation,
            decision: "denied".into(),
            policy_limit: Some("request_head".into()),
            policy_reason: Some(message.clone()),
            parse_error: Some(message),
            ..Default::default()
        },
        activity_id,
        class: None,
        started: Instant::now(),
        _pending: Pending::new(&shared.pending),
    }
    .emit();
}

fn json_response(status: StatusCode, value: serde_json::Value) -> Response<Body> {
    let mut resp = Response::new(full(Bytes::from(value.to_string())));
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

fn full(bytes: Bytes) -> Body {
    Full::new(bytes).map_err(|never| match never {}).boxed()
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

/// Where a request goes: its route, what it does there, and the upstream
/// URI, all from the normalised path (what is matched is what is sent).
struct Target {
    route: usize,
    operation: Option<Operation>,
    uri: http::Uri,
    endpoint: String,
}

#[expect(
    clippy::result_large_err,
    reason = "a refusal is the response itself, built once per request"
)]
fn target(shared: &Shared, method: &str, uri: &http::Uri) -> Result<Target, Response<Body>> {
    let bad = |message: String| gateway_error(StatusCode::BAD_REQUEST, "vigil_bad_path", message);
    let path = vigil_quantum::path::normalise(uri.path())
        .map_err(|e| bad(format!("cannot relay this path: {e}")))?;
    let Some((route, rest)) = shared
        .routes
        .iter()
        .enumerate()
        .find_map(|(i, r)| path.strip_prefix(&r.prefix).map(|rest| (i, rest)))
    else {
        return Err(gateway_error(
            StatusCode::NOT_FOUND,
            "vigil_no_route",
            format!("no gateway route for {}", path.encoded()),
        ));
    };
    let r = &shared.routes[route];
    let operation = r.provider.operation(method, &rest);
    let endpoint = format!("{}{}", r.upstream, rest.encoded());
    let full = match uri.query() {
        Some(q) => format!("{endpoint}?{q}"),
        None => endpoint.clone(),
    };
    let uri = full
        .parse::<http::Uri>()
        .map_err(|e| bad(format!("cannot relay this path: {e}")))?;
    Ok(Target {
        route,
        operation,
        uri,
        endpoint,
    })
}

/// OCSF API Activity id and the record's operation name.
fn activity(operation: Option<&Operation>) -> (u32, String) {
    let Some(op) = operation else {
        return (vigil_schema::ocsf::OTHER, "not_allowlisted".into());
    };
    let id = match op.class {
        OpClass::Submit => 1,
        OpClass::Poll | OpClass::Read => 2,
        OpClass::Session => 3,
        OpClass::Cancel => 4,
        OpClass::Auth => vigil_schema::ocsf::OTHER,
    };
    (id, op.name.to_string())
}

/// A request's record in the making: what it is, who sent it, what became of it.
struct Record {
    shared: Arc<Shared>,
    route: usize,
    caller: Caller,
    job: QuantumJob,
    activity_id: u32,
    class: Option<OpClass>,
    started: Instant,
    _pending: Pending,
}

/// Records being made, so shutdown can wait for them (a relay in flight
/// whose job the provider accepted must still be recorded).
struct Pending(Arc<std::sync::atomic::AtomicUsize>);

impl Pending {
    fn new(count: &Arc<std::sync::atomic::AtomicUsize>) -> Self {
        count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Pending(count.clone())
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Why a request is refused, as the caller is told and the record says.
struct Refusal {
    status: StatusCode,
    limit: String,
    message: String,
    /// The configured value and what the request asked for (job limits).
    value: serde_json::Value,
    requested: serde_json::Value,
    retry_after: Option<u64>,
}

impl Refusal {
    fn new(status: StatusCode, limit: &str, message: String) -> Self {
        Refusal {
            status,
            limit: limit.into(),
            message,
            value: serde_json::Value::Null,
            requested: serde_json::Value::Null,
            retry_after: None,
        }
    }
}

impl Record {
    /// Refuse the request: recorded as denied, answered with a JSON reason.
    fn deny(mut self, r: Refusal) -> Response<Body> {
        metrics::add(&self.shared.metrics.denied, 1);
        info!(agent = ?self.caller.agent(), limit = %r.limit, operation = %self.job.operation, "denied");
        self.job.decision = "denied".into();
        self.job.policy_limit = Some(r.limit.clone());
        self.job.policy_reason = Some(r.message.clone());
        self.job.http_status = Some(r.status.as_u16());
        let agent = self.caller.agent().map(str::to_string);
        self.emit();
        let mut resp = json_response(
            r.status,
            serde_json::json!({"error": {
                "code": "vigil_policy_denied",
                "limit": r.limit,
                "value": r.value,
                "requested": r.requested,
                "agent_id": agent,
                "message": r.message,
            }}),
        );
        if let Some(secs) = r.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }

    /// Forwarded although over a rule (monitor mode): said in the record.
    fn monitored(&mut self, limit: &str, message: String) {
        metrics::add(&self.shared.metrics.monitored, 1);
        self.job.decision = "monitored".into();
        self.job.policy_limit = Some(limit.into());
        self.job.policy_reason = Some(message);
    }

    /// Hand the record to the collector (never blocking the relay).
    fn emit(self) {
        let now_ns = boot_now_ns();
        let record = JobRecord {
            seq: 0,
            instance: String::new(),
            time_ms: wall_now_ms(),
            ts_ns: now_ns,
            class_uid: CLASS_API_ACTIVITY,
            activity_id: self.activity_id,
            activity: self.job.operation.clone(),
            pid: self.caller.pid,
            context: self.caller.context,
            job: self.job,
        };
        self.shared.link.record(record);
    }
}

fn wall_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// CLOCK_BOOTTIME, the clock of the kernel's events.
fn boot_now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into the valid pointer given.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    if rc != 0 {
        return 0;
    }
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Handle one request; every outcome is a response (errors included).
async fn handle(
    shared: Arc<Shared>,
    caller: CallerCell,
    ends: (SocketAddr, SocketAddr),
    req: Request<Incoming>,
) -> Response<Body> {
    let started = Instant::now();
    metrics::add(&shared.metrics.requests, 1);
    let t = match target(&shared, req.method().as_str(), req.uri()) {
        Ok(t) => t,
        Err(resp) => return resp,
    };
    let caller = caller_of(&shared, &caller, ends).await;
    let route = &shared.routes[t.route];
    let (activity_id, operation) = activity(t.operation.as_ref());
    let record = Record {
        shared: shared.clone(),
        route: t.route,
        caller,
        job: QuantumJob {
            provider: route.provider.name().to_string(),
            route: route.prefix_text.clone(),
            endpoint: t.endpoint.clone(),
            method: req.method().to_string(),
            operation,
            decision: "allowed".to_string(),
            job_id: t.operation.as_ref().and_then(|o| o.job_id.clone()),
            ..Default::default()
        },
        activity_id,
        class: t.operation.as_ref().map(|o| o.class),
        started,
        _pending: Pending::new(&shared.pending),
    };
    let (mut parts, body) = req.into_parts();
    let mut record = match admit(record, &parts.headers, t.operation.is_some()) {
        Ok(r) => r,
        Err(denied) => return denied,
    };
    strip_hop_by_hop(&mut parts.headers);
    parts.headers.remove(header::HOST);
    // what was classified is the method sent: no override reaches the provider
    for name in [
        "x-http-method-override",
        "x-http-method",
        "x-method-override",
    ] {
        parts.headers.remove(name);
    }
    parts.uri = t.uri;
    parts.version = http::Version::HTTP_11;

    if record.class == Some(OpClass::Auth) {
        return iam_exchange(&shared, record, parts, body).await;
    }
    // submissions, and sessions (which reserve a backend), are read and policed
    let submit = record.class == Some(OpClass::Submit);
    let session = t
        .operation
        .as_ref()
        .is_some_and(|o| o.name == "session_create");
    if !submit && !session && !route.signs_body() {
        route.authorize(&mut parts, b"");
        let upstream = Request::from_parts(parts, body.map_err(BoxError::from).boxed());
        return relay(upstream, record).await;
    }
    let whole = read_whole(&shared, &parts.headers, body, shared.config.max_body_bytes).await;
    let (bytes, _held) = match whole {
        Ok(b) => b,
        Err(e) => return refuse_body(record, e),
    };
    // the body is in hand: the upstream gets it at once, nothing to wait for
    parts.headers.remove(header::EXPECT);
    if (submit || session) && encoded(&parts.headers) {
        metrics::add(&shared.metrics.limit_hits, 1);
        let message = "a compressed or encoded job body cannot be read: send it with Content-Encoding identity".to_string();
        record.job.parse_error = Some(message.clone());
        return record.deny(Refusal::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "content_encoding",
            message,
        ));
    }
    if submit || session {
        if submit {
            metrics::add(&shared.metrics.jobs, 1);
        }
        record.job.payload_bytes = bytes.len() as u64;
        if let Some(op) = &t.operation {
            parse(&shared, route, op, bytes.clone(), &mut record.job).await;
        }
        record = match decide(record, session) {
            Ok(r) => r,
            Err(denied) => return denied,
        };
    }
    route.authorize(&mut parts, &bytes);
    relay(Request::from_parts(parts, full(bytes)), record).await
}

/// A request body read whole, up to `max` bytes, within the body timeout
/// and the shared memory budget.
async fn read_whole(
    shared: &Shared,
    headers: &HeaderMap,
    body: Incoming,
    max: usize,
) -> Result<(Bytes, body::Held), BodyError> {
    let limits = &shared.config.limits;
    body::read(
        body,
        headers.get(header::CONTENT_LENGTH),
        max,
        limits.small_body_bytes,
        &shared.body_budget,
        Duration::from_millis(limits.body_timeout_ms),
    )
    .await
}

/// The IAM exchange: an agent presenting its gateway token as its API key
/// gets a bearer carrying that token, minted here (see [`crate::iam`]);
/// the token of another agent is refused; any other key goes to IAM as sent.
async fn iam_exchange(
    shared: &Shared,
    mut record: Record,
    mut parts: http::request::Parts,
    body: Incoming,
) -> Response<Body> {
    let max = shared.config.limits.small_body_bytes;
    let whole = read_whole(shared, &parts.headers, body, max).await;
    let (bytes, _held) = match whole {
        Ok(b) => b,
        Err(e) => return refuse_body(record, e),
    };
    // a body IAM could read otherwise than here is not relayed
    let key = if encoded(&parts.headers) {
        Err("a compressed or encoded form cannot be read: send it with Content-Encoding identity")
    } else {
        crate::iam::api_key(&bytes)
    };
    let key = match key {
        Ok(key) => key,
        Err(why) => {
            metrics::add(&shared.metrics.limit_hits, 1);
            record.job.parse_error = Some(why.to_string());
            return record.deny(Refusal::new(
                StatusCode::BAD_REQUEST,
                "iam_form",
                why.into(),
            ));
        }
    };
    match shared
        .tokens
        .identify(key.as_deref(), record.caller.agent())
    {
        Identity::Agent => {
            let now_s = (wall_now_ms() / 1000).max(0) as u64;
            let answer = crate::iam::response(key.as_deref().unwrap_or_default(), now_s);
            record.job.http_status = Some(200);
            record.job.latency_ms = Some(record.started.elapsed().as_millis() as u64);
            record.emit();
            json_response(StatusCode::OK, answer)
        }
        Identity::Mismatch(message) => {
            metrics::add(&shared.metrics.token_mismatches, 1);
            record.deny(Refusal::new(StatusCode::FORBIDDEN, "token", message))
        }
        Identity::Untokened(_) => {
            parts.headers.remove(header::EXPECT);
            let route = &shared.routes[record.route];
            route.authorize(&mut parts, &bytes);
            relay(Request::from_parts(parts, full(bytes)), record).await
        }
    }
}

/// Whether a body comes with a content coding the parsers would not undo
/// (the provider would, and run what the policy never read).
fn encoded(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::CONTENT_ENCODING)
        .iter()
        .any(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"))
}

/// Ask who the caller is as soon as the connection is accepted, while its
/// request is still arriving: the first request then waits for less of the
/// round trip to the collector. The cell stays locked until the answer is
/// in; a failed lookup leaves it empty for the request to ask again.
/// Not while many lookups wait: a flood of idle connections must not
/// crowd out the lookups of requests.
fn early_lookup(shared: &Arc<Shared>, cell: &CallerCell, ends: (SocketAddr, SocketAddr)) {
    if shared.link.lookups_waiting() >= EARLY_LOOKUPS {
        return;
    }
    let Ok(mut guard) = cell.clone().try_lock_owned() else {
        return;
    };
    let shared = shared.clone();
    tokio::spawn(async move {
        let (peer, local) = ends;
        if let Some(c) = shared.link.lookup(peer, local).await {
            if c.pid.is_some() {
                *guard = Some(c);
            }
        }
    });
}

/// Who is on the other end of `(peer, local)`, from the collector: asked
/// once per connection, again on the next request if it could not say.
async fn caller_of(
    shared: &Shared,
    cell: &CallerCell,
    (peer, local): (SocketAddr, SocketAddr),
) -> Caller {
    let mut cached = cell.lock().await;
    if let Some(c) = cached.as_ref() {
        return c.clone();
    }
    match shared.link.lookup(peer, local).await {
        Some(c) if c.pid.is_some() => {
            *cached = Some(c.clone());
            c
        }
        _ => {
            metrics::add(&shared.metrics.unattributed, 1);
            warn!(%peer, "cannot tell which process is calling");
            Caller::default()
        }
    }
}

/// The checks that need no body: the operation is on the allowlist, the
/// token agrees with the caller, an untokened caller may use the brokered
/// credential. `Err(response)`: refused (and recorded).
#[expect(
    clippy::result_large_err,
    reason = "a refusal is the response itself, built once per request"
)]
fn admit(
    mut record: Record,
    headers: &HeaderMap,
    allowlisted: bool,
) -> Result<Record, Response<Body>> {
    let shared = record.shared.clone();
    let route = &shared.routes[record.route];
    let mode = lock(&shared.policy).mode_for(record.caller.agent());
    if !allowlisted {
        metrics::add(&shared.metrics.not_allowed, 1);
        let message = format!(
            "{} {} is not an operation the gateway relays for {}",
            record.job.method,
            record.job.endpoint,
            route.provider.name()
        );
        match mode {
            PolicyMode::Enforce => {
                return Err(record.deny(Refusal::new(StatusCode::FORBIDDEN, "allowlist", message)))
            }
            PolicyMode::Monitor => record.monitored("allowlist", message),
        }
    }
    // a bearer minted here holds an agent's gateway token: never upstream
    let minted = headers
        .get_all(header::AUTHORIZATION)
        .iter()
        .any(|v| v.to_str().is_ok_and(crate::iam::is_minted));
    if minted && route.credential.is_none() {
        let message = format!(
            "a bearer minted by the gateway is not relayed to {} (the route holds no credential to put in its place)",
            route.provider.name()
        );
        return Err(record.deny(Refusal::new(StatusCode::FORBIDDEN, "token", message)));
    }
    let presented = route.presented_token(headers);
    match shared
        .tokens
        .identify(presented.as_deref(), record.caller.agent())
    {
        Identity::Agent => owned(record),
        Identity::Mismatch(message) => {
            metrics::add(&shared.metrics.token_mismatches, 1);
            Err(record.deny(Refusal::new(StatusCode::FORBIDDEN, "token", message)))
        }
        Identity::Untokened(why) => {
            if route.credential.is_none() || shared.config.policy.unattributed.broker_credentials {
                return owned(record);
            }
            let message = format!(
                "{why}: callers without their agent's gateway token get no brokered credential \
                 (policy.unattributed.broker_credentials = false)"
            );
            match mode {
                PolicyMode::Enforce => {
                    Err(record.deny(Refusal::new(StatusCode::FORBIDDEN, "unattributed", message)))
                }
                PolicyMode::Monitor => {
                    record.monitored("unattributed", message);
                    Ok(record)
                }
            }
        }
    }
}

/// A call on a job this gateway saw another agent submit (cancel, results,
/// status) is refused: agents do not touch each other's jobs.
#[expect(
    clippy::result_large_err,
    reason = "a refusal is the response itself, built once per request"
)]
fn owned(record: Record) -> Result<Record, Response<Body>> {
    let Some(id) = record.job.job_id.as_deref() else {
        return Ok(record);
    };
    let owner = lock(&record.shared.jobs).may_touch(id, record.caller.agent());
    match owner {
        Ok(()) => Ok(record),
        Err(owner) => {
            let monitor =
                lock(&record.shared.policy).mode_for(record.caller.agent()) == PolicyMode::Monitor;
            let whose = owner.map_or("a caller outside every agent".into(), |a| {
                format!("agent {a}")
            });
            let message = format!(
                "job {} was submitted by {whose}; {} may not {} it",
                id.chars().take(128).collect::<String>(),
                record
                    .caller
                    .agent()
                    .map_or("a caller outside every agent".into(), |a| format!(
                        "agent {a}"
                    )),
                record.job.operation
            );
            if monitor {
                let mut record = record;
                record.monitored("job_owner", message);
                return Ok(record);
            }
            Err(record.deny(Refusal::new(StatusCode::FORBIDDEN, "job_owner", message)))
        }
    }
}

/// A body over a limit or one that broke off: refused and recorded.
fn refuse_body(mut record: Record, e: BodyError) -> Response<Body> {
    let shared = record.shared.clone();
    metrics::add(&shared.metrics.limit_hits, 1);
    let (status, limit) = match &e {
        BodyError::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "max_body_bytes"),
        BodyError::TimedOut { .. } => (StatusCode::REQUEST_TIMEOUT, "body_timeout_ms"),
        BodyError::Broken(_) => (StatusCode::BAD_REQUEST, "body"),
    };
    record.job.parse_error = Some(e.to_string());
    record.deny(Refusal::new(status, limit, e.to_string()))
}

/// Read a submission into `job` on a blocking thread, with a deadline; a
/// parser failure (a limit, an error, even a panic) becomes `parse_error`.
async fn parse(shared: &Shared, route: &Route, op: &Operation, body: Bytes, job: &mut QuantumJob) {
    let l = &shared.config.limits;
    // small bodies (SDK-sized) have their own lane and a short deadline
    let (lane, ms) = if body.len() <= l.small_body_bytes {
        (&shared.small_parses, l.small_parse_timeout_ms)
    } else {
        (&shared.parses, l.parse_timeout_ms)
    };
    let timeout = Duration::from_millis(ms);
    // a lane kept busy (by one caller's flood) makes a submission wait at
    // most its parse deadline again, then it is recorded as unread
    let wait = tokio::time::timeout(timeout, lane.clone().acquire_owned()).await;
    let Ok(Ok(slot)) = wait else {
        job.parse_error = Some(format!(
            "{}: no parse slot free within {ms} ms (gateway busy)",
            route.provider.name()
        ));
        return;
    };
    let limits = ParseLimits {
        max_json_elements: l.max_json_elements,
        max_depth: l.max_depth,
        max_tokens: l.max_tokens,
        deadline: Some(Instant::now() + timeout),
        ..ParseLimits::default()
    };
    let (provider, op, mut parsed) = (route.provider.clone(), op.clone(), job.clone());
    let work = tokio::task::spawn_blocking(move || {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            provider.parse_operation(&op, &body, &mut parsed, &limits)
        }));
        drop(slot);
        let error = match outcome {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some(format!("{}: parser failure", provider.name())),
        };
        if let Some(b) = &parsed.backend {
            parsed.device_type = Some(provider.device_type(b).to_string());
        }
        (parsed, error)
    });
    // the parser checks its deadline itself; this bounds the wait if it did not
    match tokio::time::timeout(timeout + Duration::from_secs(1), work).await {
        Ok(Ok((parsed, error))) => {
            *job = parsed;
            job.parse_error = error;
        }
        _ => {
            job.parse_error = Some(format!(
                "{}: body not read within its parse deadline ({ms} ms)",
                route.provider.name(),
            ))
        }
    }
}

/// Apply the parse-error rule and the job limits (a session's: the backend
/// limits). `Err(response)`: refused.
#[expect(
    clippy::result_large_err,
    reason = "a refusal is the response itself, built once per request"
)]
fn decide(mut record: Record, session: bool) -> Result<Record, Response<Body>> {
    let shared = record.shared.clone();
    if let Some(err) = record.job.parse_error.clone() {
        metrics::add(&shared.metrics.parse_errors, 1);
        warn!(provider = %record.job.provider, error = %err, pid = ?record.caller.pid, "job body not understood");
        if shared.config.on_parse_error == OnParseError::Deny {
            let message =
                format!("the job body could not be read ({err}) and on_parse_error = deny");
            return Err(record.deny(Refusal::new(
                StatusCode::FORBIDDEN,
                "on_parse_error",
                message,
            )));
        }
    }
    let agent = record.caller.agent().map(str::to_string);
    let mut policy = lock(&shared.policy);
    let decision = if session {
        policy.decide_session(agent.as_deref(), &record.job)
    } else {
        policy.decide(agent.as_deref(), &record.job, Instant::now())
    };
    drop(policy);
    match decision {
        Decision::Allowed => Ok(record),
        Decision::Monitored(b) => {
            info!(agent = ?agent, limit = b.limit, "over a limit (monitor mode, forwarded)");
            record.monitored(b.limit, b.message);
            Ok(record)
        }
        Decision::Denied(b) => Err(record.deny(Refusal {
            status: StatusCode::from_u16(b.status).unwrap_or(StatusCode::FORBIDDEN),
            limit: b.limit.to_string(),
            message: b.message,
            value: b.value,
            requested: b.requested,
            retry_after: b.retry_after,
        })),
    }
}

async fn relay(upstream: Request<Body>, mut record: Record) -> Response<Body> {
    let shared = record.shared.clone();
    let route = &shared.routes[record.route];
    let timeout = Duration::from_secs(shared.config.upstream_timeout_secs);
    let outcome = tokio::time::timeout(timeout, route.client.request(upstream)).await;
    let failure = match outcome {
        Ok(Ok(resp)) => {
            let (mut parts, body) = resp.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            record.job.http_status = Some(parts.status.as_u16());
            record.job.latency_ms = Some(record.started.elapsed().as_millis() as u64);
            let status_ok = parts.status.is_success();
            let copy = match record.class {
                Some(OpClass::Submit | OpClass::Poll) => RESPONSE_COPY_BYTES,
                _ => 0,
            };
            let body = crate::tee::TeeBody::new(
                body,
                copy,
                Box::new(move |bytes| finish(record, status_ok, bytes)),
            )
            .boxed();
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
                timeout.as_secs()
            ),
        ),
    };
    metrics::add(&shared.metrics.upstream_errors, 1);
    warn!(route = %route.prefix_text, error = %failure.2, "upstream failed");
    record.job.http_status = Some(failure.0.as_u16());
    record.job.latency_ms = Some(record.started.elapsed().as_millis() as u64);
    record.emit();
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

/// The response has been relayed (or the client left): complete the record
/// from it and emit. Unchanged status polls are not news and are dropped.
fn finish(mut r: Record, status_ok: bool, copy: Option<&[u8]>) {
    let shared = r.shared.clone();
    let provider = &shared.routes[r.route].provider;
    match r.class {
        Some(OpClass::Submit) => {
            if let (true, Some(body)) = (status_ok, copy) {
                r.job.job_id = provider.submitted_job_id(body);
            }
            lock(&shared.jobs).submitted(&r.job, r.caller.agent());
        }
        Some(OpClass::Poll) => {
            metrics::add(&shared.metrics.polls, 1);
            if let (true, Some(body)) = (status_ok, copy) {
                provider.status(body, &mut r.job);
            }
            if !lock(&shared.jobs).polled(&mut r.job, status_ok, |b| provider.device_type(b)) {
                return;
            }
        }
        _ => {}
    }
    r.emit();
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
