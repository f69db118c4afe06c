//! The collector's end of the gateway link (`vigil_schema::link`): a unix
//! socket on which the quantum job gateway — its own unprivileged process —
//! asks which process is on the other end of a loopback connection, and
//! hands over its job records, which the pipeline writes like any event.
//!
//! Only the configured users may connect (the peer's credentials, checked
//! at accept). Callers are found from the kernel's connect records the
//! pipeline already holds; /proc (sock_diag, then the fds of processes) is
//! the fallback for a connection made before the collector started.

pub mod attribution;

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, info, warn};
use vigil_schema::link::{self, JobRecord, ToCollector, ToGateway};

use crate::config::LinkConfig;
use crate::enrich::SharedContext;
use crate::metrics::{self, Metrics};

/// Requests waiting for the pipeline; a full queue slows the gateway down
/// (its records wait on its side, bounded and counted there). At most
/// 1024 frames of 256 KiB: what a misbehaving gateway can make us hold.
pub const PIPELINE_QUEUE: usize = 1024;
/// Answers waiting to be written to one gateway connection.
const REPLY_QUEUE: usize = 4096;
/// Answers written at once, at most.
const REPLIES_PER_WRITE: usize = 256;
/// Read buffer per gateway connection.
const READ_BUFFER: usize = 64 << 10;
/// Lookups in flight per connection; past it, reading waits.
const LOOKUPS_IN_FLIGHT: usize = 256;
/// Job records written but not yet acknowledged per connection (a record
/// is acknowledged once its batch is in the spool, up to
/// `batch.flush_interval_ms` later); past it, reading waits (a gateway that
/// does not read its acks stalls itself).
const ACKS_PENDING: usize = 16384;
/// /proc walks at once, for all connections: each reads many fd tables.
static PROC_WALKS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);
/// A caller with at most this many open files is checked on the link's
/// own thread (a few readlinks); more, on a blocking thread.
const INLINE_CHECK_FDS: usize = 256;
/// Longest gateway instance name accepted.
const MAX_INSTANCE_BYTES: usize = 64;

/// What the link asks of the pipeline, which owns the process table.
pub enum ToPipeline {
    /// Which process made the loopback connection `peer` → `local`, as the
    /// kernel reported it; `None` when no connect record is known.
    Connection {
        peer: SocketAddr,
        local: SocketAddr,
        reply: oneshot::Sender<Option<(u32, Option<Arc<SharedContext>>)>>,
    },
    /// The context of a process found through /proc.
    Process {
        pid: u32,
        reply: oneshot::Sender<Option<Arc<SharedContext>>>,
    },
    /// A job record to write to the sinks; `written` fires once it is.
    Job {
        record: Box<JobRecord>,
        written: oneshot::Sender<()>,
    },
}

/// The bound socket, ready to serve.
pub struct LinkServer {
    listener: std::os::unix::net::UnixListener,
    path: PathBuf,
    allowed: Vec<u32>,
    metrics: Arc<Metrics>,
}

/// A user name or numeric uid as a uid.
fn uid_of(user: &str) -> anyhow::Result<u32> {
    if let Ok(uid) = user.parse() {
        return Ok(uid);
    }
    let found = nix::unistd::User::from_name(user)
        .with_context(|| format!("cannot look up user {user:?}"))?;
    Ok(found
        .with_context(|| format!("link.allowed_users: no user {user:?} on this host"))?
        .uid
        .as_raw())
}

impl LinkServer {
    /// Create the socket (replacing a stale one), so a bad path or user
    /// fails before the BPF programs load.
    pub fn bind(config: &LinkConfig, metrics: Arc<Metrics>) -> anyhow::Result<LinkServer> {
        let allowed = config
            .allowed_users
            .iter()
            .map(|u| uid_of(u))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let path = config.socket.clone();
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("cannot replace {}", path.display())),
        }
        let listener = std::os::unix::net::UnixListener::bind(&path)
            .with_context(|| format!("link: cannot listen on {}", path.display()))?;
        // Anyone may connect at the file level; the peer check decides, so
        // the socket needs no group shared with the gateway's user.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666))?;
        listener.set_nonblocking(true)?;
        info!(socket = %path.display(), users = ?config.allowed_users, "gateway link listening");
        Ok(LinkServer {
            listener,
            path,
            allowed,
            metrics,
        })
    }

    /// Serve gateway connections until `stop` turns true.
    pub async fn serve(
        self,
        to_pipeline: mpsc::Sender<ToPipeline>,
        mut stop: watch::Receiver<bool>,
    ) -> anyhow::Result<()> {
        let listener = UnixListener::from_std(self.listener)?;
        let allowed = Arc::new(self.allowed);
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let stream = match accepted {
                        Ok((s, _)) => s,
                        Err(e) => {
                            warn!(error = %e, "link: accept failed");
                            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    let uid = stream.peer_cred().map(|c| c.uid()).ok();
                    if !uid.is_some_and(|u| allowed.contains(&u)) {
                        metrics::add(&self.metrics.link_refused, 1);
                        // any user can connect: the log says it at 1, 2, 4, 8... refusals
                        let n = metrics::get(&self.metrics.link_refused);
                        if n.is_power_of_two() {
                            warn!(?uid, refused = n, "link: connection from a user not in link.allowed_users refused");
                        }
                        continue;
                    }
                    let (to_pipeline, metrics) = (to_pipeline.clone(), self.metrics.clone());
                    tokio::spawn(async move {
                        if let Err(e) = connection(stream, to_pipeline, metrics).await {
                            debug!(error = %e, "link connection ended");
                        }
                    });
                }
                _ = stop.wait_for(|s| *s) => break,
            }
        }
        let _ = std::fs::remove_file(&self.path);
        Ok(())
    }
}

/// One gateway connection: frames in, answers out (through a writer task,
/// so a slow pipeline answer never holds up reading the next request).
async fn connection(
    stream: UnixStream,
    to_pipeline: mpsc::Sender<ToPipeline>,
    metrics: Arc<Metrics>,
) -> anyhow::Result<()> {
    let (read, write) = stream.into_split();
    // the gateway writes records in batches: one read takes many frames
    let mut read = tokio::io::BufReader::with_capacity(READ_BUFFER, read);
    let (replies, outbox) = mpsc::channel::<ToGateway>(REPLY_QUEUE);
    let writer = tokio::spawn(write_replies(write, outbox));
    let in_flight = Arc::new(tokio::sync::Semaphore::new(LOOKUPS_IN_FLIGHT));
    // acks in order, once each record is in the spool
    let (pending_acks, acks) = mpsc::channel::<(ToGateway, oneshot::Receiver<()>)>(ACKS_PENDING);
    let mut acker = tokio::spawn(send_acks(acks, replies.clone()));
    let reading = async {
        loop {
            let mut header = [0u8; 4];
            match read.read_exact(&mut header).await {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(e) => return Err(anyhow::Error::from(e)),
            }
            let mut body = vec![0u8; link::frame_len(header)?];
            read.read_exact(&mut body).await?;
            match link::decode::<ToCollector>(&body)? {
                ToCollector::Lookup { id, peer, local } => {
                    metrics::add(&metrics.link_lookups, 1);
                    let slot = in_flight.clone().acquire_owned().await?;
                    let (to_pipeline, replies, metrics) =
                        (to_pipeline.clone(), replies.clone(), metrics.clone());
                    tokio::spawn(async move {
                        let answer = lookup(&to_pipeline, &metrics, id, peer, local).await;
                        let _ = replies.send(answer).await;
                        drop(slot);
                    });
                }
                ToCollector::Job(record) => {
                    metrics::add(&metrics.link_jobs, 1);
                    anyhow::ensure!(
                        record.instance.len() <= MAX_INSTANCE_BYTES,
                        "gateway instance name over {MAX_INSTANCE_BYTES} bytes"
                    );
                    let ack = ToGateway::Ack {
                        instance: record.instance.clone(),
                        seq: record.seq,
                    };
                    let (written, done) = oneshot::channel();
                    to_pipeline
                        .send(ToPipeline::Job { record, written })
                        .await
                        .context("the pipeline has stopped")?;
                    pending_acks.send((ack, done)).await?;
                }
            }
        }
    };
    // the acker stops at a record that was not written: the link closes,
    // and the gateway sends everything unacknowledged again
    let result = tokio::select! {
        r = reading => r,
        _ = &mut acker => Err(anyhow::anyhow!(
            "a job record was not written; closing the link so the gateway sends it again"
        )),
    };
    drop((replies, pending_acks));
    if !acker.is_finished() {
        let _ = acker.await;
    }
    let _ = writer.await;
    result
}

/// Acknowledge records as the pipeline writes them, in order.
async fn send_acks(
    mut acks: mpsc::Receiver<(ToGateway, oneshot::Receiver<()>)>,
    replies: mpsc::Sender<ToGateway>,
) {
    while let Some((ack, written)) = acks.recv().await {
        if written.await.is_err() || replies.send(ack).await.is_err() {
            return;
        }
    }
}

/// Replies ready together go out in one write; of the acks among them only
/// the last counts (an ack covers every record up to its number).
async fn write_replies(mut write: OwnedWriteHalf, mut outbox: mpsc::Receiver<ToGateway>) {
    let mut ready = Vec::new();
    while outbox.recv_many(&mut ready, REPLIES_PER_WRITE).await > 0 {
        let last_ack = ready
            .iter()
            .rposition(|r| matches!(r, ToGateway::Ack { .. }));
        let mut out = Vec::new();
        for (i, reply) in ready.drain(..).enumerate() {
            let superseded = matches!(reply, ToGateway::Ack { .. }) && Some(i) != last_ack;
            if let (false, Ok(frame)) = (superseded, link::encode(&reply)) {
                out.extend_from_slice(&frame);
            }
        }
        if write.write_all(&out).await.is_err() {
            return;
        }
    }
}

/// Where a caller was found.
enum Found {
    /// The kernel's connect record, confirmed: the pid holds the socket now.
    Kernel(u32, Option<Arc<SharedContext>>),
    /// The process holding the socket, by a walk of /proc (or none).
    Proc(Option<u32>),
}

/// Who is on the other end of `peer` → `local`: the kernel's connect
/// records first, /proc second.
async fn lookup(
    to_pipeline: &mpsc::Sender<ToPipeline>,
    metrics: &Metrics,
    id: u64,
    peer: SocketAddr,
    local: SocketAddr,
) -> ToGateway {
    let (peer, local) = (attribution::canonical(peer), attribution::canonical(local));
    let (reply, answer) = oneshot::channel();
    let from_bpf = match to_pipeline
        .send(ToPipeline::Connection { peer, local, reply })
        .await
    {
        Ok(()) => answer.await.ok().flatten(),
        Err(_) => None,
    };
    let proc_root = std::path::Path::new("/proc");
    // the connect record is checked against the socket the pid holds now:
    // here when the pid has few files open (a hop to a blocking thread and
    // back cost more than the check), on a blocking thread otherwise
    let checked = from_bpf
        .as_ref()
        .map(|(pid, _)| attribution::holds_within(proc_root, *pid, peer, local, INLINE_CHECK_FDS));
    if let (Some(Some(true)), Some((pid, context))) = (checked, &from_bpf) {
        return caller(id, Some(*pid), context.clone(), "bpf");
    }
    let Ok(_walk) = PROC_WALKS.acquire().await else {
        return caller(id, None, None, "none");
    };
    let found = tokio::task::spawn_blocking(move || match from_bpf {
        Some((pid, context))
            if checked == Some(None) && attribution::holds(proc_root, pid, peer, local) =>
        {
            Found::Kernel(pid, context)
        }
        _ => Found::Proc(attribution::peer_pid(proc_root, peer, local)),
    })
    .await
    .unwrap_or(Found::Proc(None));
    let pid = match found {
        Found::Kernel(pid, context) => return caller(id, Some(pid), context, "bpf"),
        Found::Proc(pid) => pid,
    };
    let Some(pid) = pid else {
        metrics::add(&metrics.link_unattributed, 1);
        return caller(id, None, None, "none");
    };
    let (reply, answer) = oneshot::channel();
    let context = match to_pipeline.send(ToPipeline::Process { pid, reply }).await {
        Ok(()) => answer.await.ok().flatten(),
        Err(_) => None,
    };
    caller(id, Some(pid), context, "proc")
}

fn caller(
    id: u64,
    pid: Option<u32>,
    context: Option<Arc<SharedContext>>,
    source: &str,
) -> ToGateway {
    ToGateway::Caller {
        id,
        pid,
        context: context.map(|c| Box::new((*c.data).clone())),
        source: Some(source.into()),
    }
}
