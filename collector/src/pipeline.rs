//! The collector's main loop: ring buffer → decode → enrich → sinks.
//!
//! One task owns every stage up to the batcher, so the process table needs
//! no locks. Besides draining the ring buffer it closes batches that are due,
//! reports long-lived flows at an interval, emits heartbeats and spool loss
//! reports, and forgets processes that vanished without an exit record.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aya::maps::{MapData, RingBuf};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tracing::{error, warn};
use vigil_schema::{CollectorStats, Event, EventKind};

use crate::enrich::{procfs, Enricher, Output};
use crate::link::ToPipeline;
use crate::metrics::{self, Metrics};
use crate::sink::batch::Batcher;
use crate::sink::stdout::StdoutSink;
use crate::source::bpf::BpfSource;
use crate::source::records::{self, FdKey, IoClose, Record};
use tokio::sync::mpsc;

/// Pause after each drain. 16 MiB of ring holds far more than 2 ms of any
/// load measured here (bench-collector), so it costs latency, not records.
const BATCH_DELAY: Duration = Duration::from_millis(2);

/// Records handled per drain before the loop serves its timers again.
const MAX_DRAIN: u64 = 65536;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Drained {
    /// The ring buffer was empty when the drain ended.
    Empty,
    /// The drain stopped at MAX_DRAIN with records left.
    More,
}

pub struct Intervals {
    pub flow_report: Option<Duration>,
    pub heartbeat: Option<Duration>,
    pub gc: Duration,
}

/// How often due batches are closed and loss reports picked up.
const HOUSEKEEPING: Duration = Duration::from_millis(50);
/// How often the kernel drop counters are mirrored into the metrics.
const DROPS_EVERY: Duration = Duration::from_secs(1);

/// Where events go; any combination.
#[derive(Default)]
pub struct Sinks {
    pub stdout: Option<StdoutSink>,
    pub batcher: Option<Batcher>,
}

#[derive(Default)]
struct Counters {
    decode_errors: u64,
    /// Drains over SLOW_DRAIN since the last warning, and when that was.
    slow_drains: u64,
    slow_warned: Option<Instant>,
}

/// A drain longer than this is counted; the warning is at most once a minute,
/// since under sustained load every bounded drain takes about this long.
const SLOW_DRAIN: Duration = Duration::from_millis(50);
const SLOW_WARN_EVERY: Duration = Duration::from_secs(60);

/// Everything the loop mutates except the ring buffer itself.
pub struct Pipeline {
    bpf: BpfSource,
    enricher: Enricher,
    sinks: Sinks,
    metrics: Arc<Metrics>,
    counters: Counters,
    started: Instant,
    drops_mirrored: Instant,
    batch: Vec<Output>,
}

fn tick(every: Option<Duration>) -> tokio::time::Interval {
    // A disabled timer still needs a period: one that never comes.
    let period = every.unwrap_or(Duration::from_secs(365 * 24 * 3600));
    let mut t = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    t
}

impl Pipeline {
    pub fn new(bpf: BpfSource, enricher: Enricher, sinks: Sinks, metrics: Arc<Metrics>) -> Self {
        Self {
            bpf,
            enricher,
            sinks,
            metrics,
            counters: Counters::default(),
            started: Instant::now(),
            drops_mirrored: Instant::now(),
            batch: Vec::with_capacity(256),
        }
    }

    /// Run until `shutdown` resolves, then drain what is left and report counters.
    pub async fn run(
        mut self,
        ring: RingBuf<MapData>,
        intervals: Intervals,
        mut gateway: Option<mpsc::Receiver<ToPipeline>>,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> (Sinks, std::io::Result<()>) {
        // SAFETY: the RingBuf owns its map fd, which stays open and unchanged
        // until the RingBuf (moved into the AsyncFd) is dropped with it.
        let mut ring = match unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) } {
            Ok(ring) => ring,
            Err(e) => return (self.sinks, Err(std::io::Error::other(e.to_string()))),
        };
        let served = self
            .serve(&mut ring, intervals, &mut gateway, shutdown)
            .await;
        // every way out, an error included, closes the batches: the caller
        // then joins the spool writer, which writes them
        let closed = self.close(ring.get_mut(), &mut gateway);
        (self.sinks, served.and(closed))
    }

    /// The loop: until `shutdown`, or the first error.
    async fn serve(
        &mut self,
        ring: &mut AsyncFd<RingBuf<MapData>>,
        intervals: Intervals,
        gateway: &mut Option<mpsc::Receiver<ToPipeline>>,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> std::io::Result<()> {
        let mut flows = tick(intervals.flow_report);
        let mut heartbeat = tick(intervals.heartbeat);
        let mut gc = tick(Some(intervals.gc));
        let mut housekeeping = tick(Some(HOUSEKEEPING));
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                guard = ring.readable_mut() => {
                    let mut guard = guard?;
                    if self.drain(guard.get_inner_mut())? == Drained::Empty {
                        guard.clear_ready();
                        drop(guard);
                        // The kernel wakes us for the first record after each drain:
                        // letting records gather for a moment turns a wakeup, a
                        // drain and a write per event into one per batch. The job
                        // gateway's lookups are answered meanwhile (a caller waits).
                        let pause = tokio::time::sleep(BATCH_DELAY);
                        tokio::pin!(pause);
                        loop {
                            tokio::select! {
                                _ = &mut pause => break,
                                Some(msg) = next_message(gateway) => self.link(msg, ring.get_mut())?,
                            }
                        }
                    }
                    // else readiness is kept: the kernel only wakes a reader that
                    // caught up, so the rest must be read without a new wakeup.
                }
                _ = flows.tick() => self.report_flows()?,
                _ = heartbeat.tick() => self.emit_heartbeat()?,
                _ = gc.tick() => self.collect_garbage(),
                _ = housekeeping.tick() => self.housekeeping()?,
                Some(msg) = next_message(gateway) => self.link(msg, ring.get_mut())?,
                _ = &mut shutdown => return Ok(()),
            }
        }
    }

    /// On the way out: what arrived before, as far as the sinks still take
    /// it (bounded, should the load never stop), the last heartbeat, and
    /// every batch closed whatever failed before. The first error is kept.
    fn close(
        &mut self,
        ring: &mut RingBuf<MapData>,
        gateway: &mut Option<mpsc::Receiver<ToPipeline>>,
    ) -> std::io::Result<()> {
        let mut result = Ok(());
        for _ in 0..64 {
            match self.drain(ring) {
                Ok(Drained::Empty) => break,
                Ok(_) => {}
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        // job events already recorded by the gateway
        if let Some(rx) = gateway {
            while let Ok(msg) = rx.try_recv() {
                if let Err(e) = self.link(msg, ring) {
                    result = result.and(Err(e));
                    break;
                }
            }
        }
        let result = result.and(self.emit_heartbeat()).and(self.housekeeping());
        if let Some(b) = &mut self.sinks.batcher {
            b.flush_all();
        }
        result
    }

    /// Handle what is waiting in the ring buffer, at most MAX_DRAIN records so
    /// timers and shutdown are served under sustained load; flush the sink once.
    fn drain(&mut self, ring: &mut RingBuf<MapData>) -> std::io::Result<Drained> {
        let started = Instant::now();
        let mut n = 0u64;
        let mut outcome = Drained::Empty;
        while let Some(item) = ring.next() {
            n += 1;
            if n >= MAX_DRAIN {
                outcome = Drained::More;
            }
            match records::decode(&item) {
                Ok(Record::Exit(exit)) => {
                    // what the process still had open is reported before its exit
                    self.flush_fds_of(exit.h.tgid, exit.h.ts_ns);
                    self.enricher.handle(&Record::Exit(exit), &mut self.batch);
                }
                Ok(rec) => self.enricher.handle(&rec, &mut self.batch),
                Err(e) => {
                    self.counters.decode_errors += 1;
                    if self.counters.decode_errors.is_power_of_two() {
                        error!(error = %e, total = self.counters.decode_errors, "undecodable BPF record dropped");
                    }
                }
            }
            drop(item);
            self.write_batch()?;
            if outcome == Drained::More {
                break;
            }
        }
        let took = started.elapsed();
        if took > SLOW_DRAIN {
            let c = &mut self.counters;
            c.slow_drains += 1;
            if c.slow_warned.is_none_or(|t| t.elapsed() > SLOW_WARN_EVERY) {
                warn!(
                    records = n,
                    ms = took.as_millis() as u64,
                    slow_drains = c.slow_drains,
                    "slow drains: the ring buffer may overflow"
                );
                c.slow_drains = 0;
                c.slow_warned = Some(Instant::now());
            }
        }
        self.flush()?;
        Ok(outcome)
    }

    /// A request from the gateway link: who made a connection, a process's
    /// context, or a job record to write.
    fn link(&mut self, msg: ToPipeline, ring: &mut RingBuf<MapData>) -> std::io::Result<()> {
        match msg {
            ToPipeline::Connection { peer, local, reply } => {
                // the caller's connect record may still be in the ring
                self.drain(ring)?;
                let owner = self.enricher.connection_owner(peer, local);
                let _ = reply.send(owner.map(|pid| (pid, self.enricher.context_of_process(pid))));
                Ok(())
            }
            ToPipeline::Process { pid, reply } => {
                let _ = reply.send(self.enricher.context_of_process(pid));
                Ok(())
            }
            ToPipeline::Job { record, written } => {
                // what came before it first, then the record, acknowledged
                // once it is in the spool (or, printed only, once printed)
                self.write_batch()?;
                let out = job_output(self.enricher.host(), *record);
                self.metrics.count_event(out.event.kind);
                let printed_only = match &mut self.sinks.batcher {
                    Some(b) => {
                        b.push_acked(&out, Some(written))?;
                        None
                    }
                    None => Some(written),
                };
                if let Some(s) = &mut self.sinks.stdout {
                    s.write(&out)?;
                }
                self.flush()?;
                if let Some(written) = printed_only {
                    let _ = written.send(());
                }
                Ok(())
            }
        }
    }

    fn write_batch(&mut self) -> std::io::Result<()> {
        for out in self.batch.drain(..) {
            self.metrics.count_event(out.event.kind);
            // the spool first: a broken stdout must not take it down too
            if let Some(b) = &mut self.sinks.batcher {
                b.push(&out)?;
            }
            if let Some(s) = &mut self.sinks.stdout {
                s.write(&out)?;
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match &mut self.sinks.stdout {
            Some(s) => s.flush(),
            None => Ok(()),
        }
    }

    /// Close due batches and refresh mirrored counters.
    fn housekeeping(&mut self) -> std::io::Result<()> {
        if let Some(b) = &mut self.sinks.batcher {
            b.flush_due();
        }
        if self.drops_mirrored.elapsed() >= DROPS_EVERY {
            self.mirror_drops();
        }
        Ok(())
    }

    fn mirror_drops(&mut self) -> u64 {
        let drops: BTreeMap<String, u64> = self
            .bpf
            .drops()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        let total = drops.values().sum();
        *self
            .metrics
            .kernel_drops
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = drops;
        metrics::set(&self.metrics.decode_errors, self.counters.decode_errors);
        metrics::set(
            &self.metrics.processes_tracked,
            self.enricher.processes() as u64,
        );
        self.drops_mirrored = Instant::now();
        total
    }

    fn collector_event(&self, activity_id: u32, activity: &str) -> Event {
        collector_event(self.enricher.host(), activity_id, activity)
    }

    /// Close records for the fds a process had open when it exited (the
    /// kernel already reported those below INHERIT_FDS).
    fn flush_fds_of(&mut self, tgid: u32, ts_ns: u64) {
        for fd in self.enricher.open_fds_of(tgid) {
            if fd < records::INHERIT_FDS {
                continue;
            }
            let key = FdKey { tgid, fd };
            if let Some(stats) = self.bpf.fd_stats(&key) {
                self.bpf.forget_fd(&key);
                let close = synthetic_close(tgid, fd, stats, ts_ns);
                self.enricher
                    .handle(&Record::IoClose(close), &mut self.batch);
            }
        }
    }

    /// Traffic of long-lived flows since their last report; close what belongs to dead processes.
    fn report_flows(&mut self) -> std::io::Result<()> {
        let now = procfs::boot_now_ns();
        for (key, stats) in self.bpf.tracked_fds() {
            if stats.kind == records::FD_SOCKET {
                if let Some(ev) = self.enricher.flow_traffic(key.tgid, key.fd, &stats, now) {
                    self.batch.push(ev);
                }
            }
        }
        self.write_batch()?;
        self.flush()
    }

    /// Entries whose process is gone: its exit record was lost or it was never seen.
    fn collect_garbage(&mut self) {
        let now = procfs::boot_now_ns();
        for (key, stats) in self.bpf.tracked_fds() {
            if !procfs::is_alive(key.tgid) {
                self.bpf.forget_fd(&key);
                if self.enricher.is_known(key.tgid) {
                    let close = synthetic_close(key.tgid, key.fd, stats, now);
                    self.enricher
                        .handle(&Record::IoClose(close), &mut self.batch);
                }
            }
        }
        let forgotten = self.enricher.forget_dead();
        if forgotten > 0 {
            warn!(
                processes = forgotten,
                "processes vanished without an exit record"
            );
        }
        if let Err(e) = self.write_batch().and_then(|_| self.flush()) {
            error!(error = %e, "cannot write events");
        }
    }

    /// The heartbeat: version, uptime and every counter, so a silent host
    /// can be told from a quiet one.
    fn emit_heartbeat(&mut self) -> std::io::Result<()> {
        let total = self.mirror_drops();
        if total > 0 {
            warn!(
                kernel_drops = total,
                "the kernel dropped records (ring buffer full)"
            );
        }
        let m = &self.metrics;
        let mut ev = self.collector_event(1, "heartbeat");
        ev.collector = Some(CollectorStats {
            version: env!("CARGO_PKG_VERSION").to_string(),
            uptime_secs: self.started.elapsed().as_secs(),
            events_total: m.events_total(),
            kernel_drops: m.kernel_drops(),
            kernel_drops_total: total,
            queue_drops_total: metrics::get(&m.queue_drops_events),
            decode_errors_total: self.counters.decode_errors,
            processes_tracked: self.enricher.processes() as u64,
            transport: m.transport(),
        });
        self.batch.push(Output {
            event: ev,
            context: None,
        });
        self.write_batch()?;
        self.flush()
    }
}

/// The gateway's next message; never, when there is no gateway.
async fn next_message(rx: &mut Option<mpsc::Receiver<ToPipeline>>) -> Option<ToPipeline> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// A gateway's job record as an event of this host.
fn job_output(host: &crate::enrich::Host, r: vigil_schema::link::JobRecord) -> Output {
    let mut event = Event::new(
        EventKind::QuantumJob,
        r.class_uid,
        r.activity_id,
        &r.activity,
        r.time_ms,
        r.ts_ns,
        &host.host_id,
        &host.hostname,
    );
    if r.context.is_none() {
        if let Some(pid) = r.pid {
            // the collector could not describe it: at least say which pid
            event.process = Some(vigil_schema::Process {
                pid,
                tid: pid,
                ..Default::default()
            });
        }
    }
    event.quantum_job = Some(Box::new(r.job));
    Output {
        event,
        context: r
            .context
            .map(|c| Arc::new(crate::enrich::SharedContext::new(c))),
    }
}

/// An event about the collector itself (heartbeat, loss), stamped now.
pub fn collector_event(host: &crate::enrich::Host, activity_id: u32, activity: &str) -> Event {
    let now = procfs::boot_now_ns();
    Event::new(
        EventKind::Collector,
        0,
        activity_id,
        activity,
        procfs::boot_wall_ms() + (now / 1_000_000) as i64,
        now,
        &host.host_id,
        &host.hostname,
    )
}

fn synthetic_close(tgid: u32, fd: i32, stats: records::FdStats, ts_ns: u64) -> IoClose {
    let kind = if stats.kind == records::FD_SOCKET {
        records::kind::NET_CLOSE
    } else {
        records::kind::FILE_CLOSE
    };
    IoClose {
        h: records::Header::synthetic(kind, tgid, ts_ns),
        fd,
        reason: records::CLOSE_EXIT,
        stats,
    }
}
