//! The gateway's end of the link to the collector (`vigil_schema::link`):
//! who a caller is, and where job records go.
//!
//! Records are numbered and kept until the collector acknowledges them, so
//! a collector restart loses none: after reconnecting, everything not yet
//! acknowledged is sent again. The buffer is bounded (`buffer_records`);
//! past it the oldest records are dropped and counted. Lookups need the
//! collector: while it is away they fail at once, and the caller is
//! unattributed (the policy decides what that allows).
//!
//! A record is framed once, when it is made; frames go out in batches (one
//! write for up to `BATCH` of them, after at most `LINGER`), so a busy
//! gateway wakes the collector once per batch rather than once per job.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot, watch, Notify};
use tracing::{error, info, warn};
use vigil_schema::link::{self, JobRecord, ToCollector, ToGateway};
use vigil_schema::ProcessContext;

use crate::metrics::{self, Metrics};

/// How long a caller's lookup may take before the caller is unattributed
/// (a loaded collector drains its ring buffer first: 2 s was seen to be
/// too short on a saturated 2-core machine).
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);
/// Lookups waiting for the writer.
const LOOKUP_QUEUE: usize = 1024;
/// Reconnection backoff bounds.
const RETRY_MIN: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_secs(2);
/// A link that ends sooner than this was refused, not lost.
const SHORT_LINK: Duration = Duration::from_secs(1);
/// Records written at once, and how long a record may wait for others to
/// share its write (each write wakes the collector's link and pipeline).
const BATCH: usize = 64;
const LINGER: Duration = Duration::from_millis(5);

/// The process on the other end of a connection, as the collector knows it.
#[derive(Debug, Clone, Default)]
pub struct Caller {
    pub pid: Option<u32>,
    pub context: Option<ProcessContext>,
}

impl Caller {
    pub fn agent(&self) -> Option<&str> {
        self.context.as_ref()?.agent_id.as_deref()
    }
}

/// A record as it goes on the link: numbered and framed.
struct Framed {
    seq: u64,
    frame: Vec<u8>,
}

/// Records not yet acknowledged, oldest first (by sequence number: they
/// are numbered under the buffer's lock).
#[derive(Default)]
struct Buffer {
    records: VecDeque<Framed>,
    next_seq: u64,
    /// Highest sequence number written on the current connection.
    sent: u64,
}

struct Inner {
    path: PathBuf,
    instance: String,
    capacity: usize,
    next_id: AtomicU64,
    buffer: Mutex<Buffer>,
    new_record: Notify,
    pending: Mutex<HashMap<u64, oneshot::Sender<Caller>>>,
    lookups: mpsc::Sender<ToCollector>,
    connected: watch::Sender<bool>,
    metrics: Arc<Metrics>,
}

/// A handle on the link; cheap to clone.
#[derive(Clone)]
pub struct Link(Arc<Inner>);

impl Link {
    /// The link to the collector's socket at `path`, with its task started
    /// on the current runtime (it reconnects until `stop`).
    pub fn start(
        path: PathBuf,
        capacity: usize,
        metrics: Arc<Metrics>,
        stop: watch::Receiver<bool>,
    ) -> Link {
        let (lookups, lookup_rx) = mpsc::channel(LOOKUP_QUEUE);
        let instance = format!(
            "{:x}-{:x}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos()
        );
        let link = Link(Arc::new(Inner {
            path,
            instance,
            capacity,
            next_id: AtomicU64::new(1),
            buffer: Mutex::new(Buffer::default()),
            new_record: Notify::new(),
            pending: Mutex::new(HashMap::new()),
            lookups,
            connected: watch::channel(false).0,
            metrics,
        }));
        tokio::spawn(link.clone().run(lookup_rx, stop));
        link
    }

    /// Wait until the link is up (tests, start-up), at most `timeout`.
    pub async fn wait_connected(&self, timeout: Duration) -> bool {
        let mut rx = self.0.connected.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|c| *c))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Who holds the client end of `peer` → `local`; `None` when the
    /// collector cannot be asked or does not answer in time.
    pub async fn lookup(&self, peer: SocketAddr, local: SocketAddr) -> Option<Caller> {
        if !*self.0.connected.borrow() {
            return None;
        }
        let id = self.0.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        lock(&self.0.pending).insert(id, tx);
        let asked = self
            .0
            .lookups
            .try_send(ToCollector::Lookup { id, peer, local })
            .is_ok();
        let answer = if asked {
            tokio::time::timeout(LOOKUP_TIMEOUT, rx)
                .await
                .ok()
                .and_then(Result::ok)
        } else {
            None
        };
        lock(&self.0.pending).remove(&id);
        answer
    }

    /// Lookups sent and not yet answered.
    pub fn lookups_waiting(&self) -> usize {
        lock(&self.0.pending).len()
    }

    /// Number a record and queue it for the collector (never blocks).
    pub fn record(&self, mut record: JobRecord) {
        record.instance = self.0.instance.clone();
        let mut buffer = lock(&self.0.buffer);
        buffer.next_seq += 1;
        record.seq = buffer.next_seq;
        let Some(frame) = frame(record) else {
            metrics::add(&self.0.metrics.records_dropped, 1);
            return;
        };
        let seq = buffer.next_seq;
        buffer.records.push_back(Framed { seq, frame });
        while buffer.records.len() > self.0.capacity {
            buffer.records.pop_front();
            metrics::add(&self.0.metrics.records_dropped, 1);
        }
        metrics::set(
            &self.0.metrics.records_buffered,
            buffer.records.len() as u64,
        );
        drop(buffer);
        metrics::add(&self.0.metrics.records, 1);
        self.0.new_record.notify_one();
    }

    /// Records not yet acknowledged by the collector.
    pub fn unacknowledged(&self) -> usize {
        lock(&self.0.buffer).records.len()
    }

    async fn run(self, mut lookups: mpsc::Receiver<ToCollector>, mut stop: watch::Receiver<bool>) {
        let mut backoff = RETRY_MIN;
        let mut warned = false;
        loop {
            let stream = tokio::select! {
                s = UnixStream::connect(&self.0.path) => s,
                _ = stopped(&mut stop) => return,
            };
            match stream {
                Ok(stream) => {
                    if !warned {
                        info!(socket = %self.0.path.display(), "connected to the collector");
                    }
                    let since = std::time::Instant::now();
                    self.0.connected.send_replace(true);
                    self.serve(stream, &mut lookups, &mut stop).await;
                    self.0.connected.send_replace(false);
                    // lookups in flight will not be answered on a new connection
                    lock(&self.0.pending).clear();
                    lock(&self.0.buffer).sent = 0;
                    metrics::add(&self.0.metrics.link_disconnects, 1);
                    if since.elapsed() >= SHORT_LINK {
                        backoff = RETRY_MIN;
                        warned = false;
                        warn!("lost the collector link; job records are kept until it is back");
                    } else if !warned {
                        // the collector closes at once on a peer it does not allow
                        error!(socket = %self.0.path.display(), uid = own_uid(),
                            "the collector closed the link at once: is this user in its [link] allowed_users? Callers cannot be attributed meanwhile");
                        warned = true;
                    }
                }
                Err(e) => {
                    if !warned {
                        warn!(socket = %self.0.path.display(), error = %e, "cannot reach the collector; retrying");
                        warned = true;
                    }
                }
            }
            // lookups asked while away fail now rather than at their timeout
            while lookups.try_recv().is_ok() {}
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = stopped(&mut stop) => return,
            }
            backoff = (backoff * 2).min(RETRY_MAX);
        }
    }

    /// One connection: records and lookups out, answers and acks in, until
    /// either side fails or `stop`.
    async fn serve(
        &self,
        stream: UnixStream,
        lookups: &mut mpsc::Receiver<ToCollector>,
        stop: &mut watch::Receiver<bool>,
    ) {
        let (read, mut write) = stream.into_split();
        // answers are read on their own task, never held up by a write: the
        // collector stops reading when its acks cannot be written, and a
        // writer that is not reading them then waits on it for ever
        let mut reader = AbortOnDrop(tokio::spawn(self.clone().read_answers(read)));
        // while Some: records are waiting for others to share their write
        let mut linger: Option<tokio::time::Instant> = None;
        loop {
            // lookups first (a caller waits on each), then records by batches
            while let Ok(lookup) = lookups.try_recv() {
                if write_frame(&mut write, &lookup).await.is_err() {
                    return;
                }
            }
            if linger.is_none() || self.unsent() >= BATCH {
                linger = None;
                match self.send_records(&mut write).await {
                    Err(_) => return,
                    Ok(true) => continue,
                    Ok(false) => {}
                }
            }
            tokio::select! {
                biased;
                _ = &mut reader.0 => return,
                Some(lookup) = lookups.recv() => {
                    if write_frame(&mut write, &lookup).await.is_err() {
                        return;
                    }
                }
                _ = tokio::time::sleep_until(linger.unwrap_or_else(tokio::time::Instant::now)),
                    if linger.is_some() => linger = None,
                _ = self.0.new_record.notified() => {
                    linger.get_or_insert_with(|| tokio::time::Instant::now() + LINGER);
                }
                // on stop, what is buffered goes out at once; acks may follow
                _ = stopped(stop) => {
                    while let Ok(true) = self.send_records(&mut write).await {}
                    let _ = tokio::time::timeout(Duration::from_secs(1), &mut reader.0).await;
                    return;
                }
            }
        }
    }

    /// Records buffered and not yet written on this connection.
    fn unsent(&self) -> usize {
        let b = lock(&self.0.buffer);
        b.records.len() - b.records.partition_point(|r| r.seq <= b.sent)
    }

    /// Send the next batch of buffered records the collector has not been
    /// sent on this connection, in one write; `true` when more are waiting.
    async fn send_records(&self, write: &mut OwnedWriteHalf) -> std::io::Result<bool> {
        let (batch, last, more) = {
            let buffer = lock(&self.0.buffer);
            let first = buffer.records.partition_point(|r| r.seq <= buffer.sent);
            let next = buffer.records.range(first..).take(BATCH);
            let mut batch = Vec::new();
            let mut last = None;
            for r in next {
                batch.extend_from_slice(&r.frame);
                last = Some(r.seq);
            }
            (batch, last, buffer.records.len() - first > BATCH)
        };
        let Some(last) = last else {
            return Ok(false);
        };
        write.write_all(&batch).await?;
        let mut buffer = lock(&self.0.buffer);
        buffer.sent = buffer.sent.max(last);
        Ok(more)
    }

    async fn read_answers(self, mut read: OwnedReadHalf) {
        loop {
            let mut header = [0u8; 4];
            if read.read_exact(&mut header).await.is_err() {
                return;
            }
            let Ok(len) = link::frame_len(header) else {
                warn!("collector link: oversized frame; reconnecting");
                return;
            };
            let mut body = vec![0u8; len];
            if read.read_exact(&mut body).await.is_err() {
                return;
            }
            match link::decode::<ToGateway>(&body) {
                Ok(ToGateway::Caller {
                    id, pid, context, ..
                }) => {
                    if let Some(tx) = lock(&self.0.pending).remove(&id) {
                        let _ = tx.send(Caller {
                            pid,
                            context: context.map(|c| *c),
                        });
                    }
                }
                Ok(ToGateway::Ack { instance, seq }) if instance == self.0.instance => {
                    let mut buffer = lock(&self.0.buffer);
                    while buffer.records.front().is_some_and(|r| r.seq <= seq) {
                        buffer.records.pop_front();
                    }
                    metrics::set(
                        &self.0.metrics.records_buffered,
                        buffer.records.len() as u64,
                    );
                }
                Ok(ToGateway::Ack { .. }) => {}
                Err(e) => {
                    warn!(error = %e, "collector link: bad frame; reconnecting");
                    return;
                }
            }
        }
    }
}

/// A record's frame, kept under `ROOM`: a job with tens of thousands of
/// circuits loses its hash list (said in `parse_error`) rather than the
/// record. `None` only if even the trimmed record cannot be framed.
fn frame(record: JobRecord) -> Option<Vec<u8>> {
    const ROOM: usize = link::MAX_FRAME_BYTES / 4;
    let message = ToCollector::Job(Box::new(record));
    if let Ok(frame) = link::encode(&message) {
        if frame.len() <= ROOM {
            return Some(frame);
        }
    }
    let ToCollector::Job(mut record) = message else {
        unreachable!("built as a job above")
    };
    trim(&mut record, ROOM);
    let frame = link::encode(&ToCollector::Job(record));
    frame
        .inspect_err(|e| warn!(error = %e, "job record cannot be framed"))
        .ok()
}

/// Cut what can grow without bound in a record until it fits in `room`.
fn trim(record: &mut JobRecord, room: usize) {
    const FIELD: usize = 1024;
    let size = |r: &JobRecord| serde_json::to_vec(r).map_or(usize::MAX, |v| v.len());
    let j = &mut record.job;
    let hashes = std::mem::take(&mut j.circuit_hashes).len();
    let clip = |s: &mut String| {
        if s.len() > FIELD {
            *s = s.chars().take(FIELD).collect();
        }
    };
    for s in [
        &mut j.method,
        &mut j.endpoint,
        &mut j.route,
        &mut j.operation,
    ] {
        clip(s);
    }
    for s in [
        &mut j.policy_reason,
        &mut j.job_id,
        &mut j.program,
        &mut j.session_id,
        &mut j.backend,
        &mut j.output_location,
        &mut j.status,
        &mut j.previous_status,
        &mut j.parse_error,
    ]
    .into_iter()
    .flatten()
    {
        clip(s);
    }
    let note = format!(
        "record trimmed to fit the link: {hashes} circuit hashes left out, long fields cut"
    );
    j.parse_error = Some(match j.parse_error.take() {
        Some(e) => format!("{note}; {e}"),
        None => note,
    });
    if size(record) > room {
        // the process context itself is huge (arguments): keep the pid only
        if let Some(c) = record.context.take() {
            record.pid = record.pid.or(Some(c.process.pid));
        }
    }
}

/// A task that ends with its handle (the connection it serves is gone).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// This process's uid, for the log.
fn own_uid() -> u32 {
    // SAFETY: getuid has no preconditions and cannot fail.
    unsafe { libc::getuid() }
}

/// Resolves once `stop` turns true (its guard not held across awaits).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

async fn write_frame(write: &mut OwnedWriteHalf, message: &ToCollector) -> std::io::Result<()> {
    let frame = link::encode(message).map_err(std::io::Error::other)?;
    write.write_all(&frame).await
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::UnixListener;

    /// A stand-in for the collector's end: answers lookups with pid 42 and
    /// acknowledges records when `ack` is set; returns the records it saw.
    async fn collector(stream: UnixStream, ack: bool, want: usize) -> Vec<u64> {
        let (mut read, mut write) = stream.into_split();
        let mut seen = Vec::new();
        while seen.len() < want {
            let mut header = [0u8; 4];
            if read.read_exact(&mut header).await.is_err() {
                break;
            }
            let mut body = vec![0u8; link::frame_len(header).unwrap()];
            read.read_exact(&mut body).await.unwrap();
            let answer = match link::decode::<ToCollector>(&body).unwrap() {
                ToCollector::Lookup { id, .. } => ToGateway::Caller {
                    id,
                    pid: Some(42),
                    context: None,
                    source: Some("bpf".into()),
                },
                ToCollector::Job(r) => {
                    seen.push(r.seq);
                    if !ack {
                        continue;
                    }
                    ToGateway::Ack {
                        instance: r.instance,
                        seq: r.seq,
                    }
                }
            };
            write
                .write_all(&link::encode(&answer).unwrap())
                .await
                .unwrap();
        }
        seen
    }

    fn record() -> JobRecord {
        JobRecord {
            seq: 0,
            instance: String::new(),
            time_ms: 0,
            ts_ns: 0,
            class_uid: 6003,
            activity_id: 1,
            activity: "submit".into(),
            pid: None,
            context: None,
            job: Default::default(),
        }
    }

    #[tokio::test]
    async fn lookups_are_answered_and_unacknowledged_records_are_sent_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let (_stop_tx, stop) = watch::channel(false);
        let link = Link::start(path, 10, Arc::new(Metrics::default()), stop);
        let (first, _) = listener.accept().await.unwrap();
        assert!(link.wait_connected(Duration::from_secs(5)).await);
        let peer: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        // the first collector answers lookups but acknowledges nothing, then goes away
        let first = tokio::spawn(collector(first, false, 2));
        let caller = link.lookup(peer, peer).await.expect("an answer");
        assert_eq!(caller.pid, Some(42));
        link.record(record());
        link.record(record());
        assert_eq!(first.await.unwrap(), vec![1, 2]);
        assert_eq!(link.unacknowledged(), 2);
        // a restarted collector gets both again and acknowledges them
        let (second, _) = listener.accept().await.unwrap();
        assert_eq!(collector(second, true, 2).await, vec![1, 2]);
        for _ in 0..100 {
            if link.unacknowledged() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(link.unacknowledged(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn records_made_on_many_threads_arrive_numbered_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let (_stop_tx, stop) = watch::channel(false);
        let link = Link::start(path, 10_000, Arc::new(Metrics::default()), stop);
        let (stream, _) = listener.accept().await.unwrap();
        assert!(link.wait_connected(Duration::from_secs(5)).await);
        let seen = tokio::spawn(collector(stream, true, 2000));
        let makers: Vec<_> = (0..4)
            .map(|_| {
                let link = link.clone();
                std::thread::spawn(move || (0..500).for_each(|_| link.record(record())))
            })
            .collect();
        makers.into_iter().for_each(|t| t.join().unwrap());
        // a gap or a reordering would let an ack cover a record never sent
        let seen = tokio::time::timeout(Duration::from_secs(30), seen)
            .await
            .expect(
            "all 2000 records within 30 s (a link that writes without reading its acks deadlocks)",
        );
        assert_eq!(seen.unwrap(), (1..=2000).collect::<Vec<u64>>());
    }

    #[tokio::test]
    async fn a_full_buffer_drops_the_oldest_and_counts_them() {
        let (_stop_tx, stop) = watch::channel(false);
        let metrics = Arc::new(Metrics::default());
        let link = Link::start("/nonexistent/c.sock".into(), 3, metrics.clone(), stop);
        assert!(link
            .lookup(
                "127.0.0.1:1".parse().unwrap(),
                "127.0.0.1:2".parse().unwrap()
            )
            .await
            .is_none());
        for _ in 0..5 {
            link.record(record());
        }
        assert_eq!(link.unacknowledged(), 3);
        assert_eq!(metrics::get(&metrics.records_dropped), 2);
    }

    #[test]
    fn an_oversized_record_is_trimmed_not_lost() {
        let mut r = record();
        r.job.circuit_hashes = vec!["0".repeat(64); 20_000];
        let framed = frame(r).expect("a frame");
        assert!(framed.len() <= link::MAX_FRAME_BYTES / 4);
        let Ok(ToCollector::Job(r)) = link::decode(&framed[4..]) else {
            panic!("not a job record")
        };
        assert!(r.job.circuit_hashes.is_empty());
        assert!(r
            .job
            .parse_error
            .unwrap()
            .contains("20000 circuit hashes left out"));
    }
}
