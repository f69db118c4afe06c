//! The spool writer thread: numbers each batch, encodes it (Arrow IPC with
//! its identity in the schema metadata, or JSON lines), appends it to the
//! spool and wakes the shipper. Disk writes and fsync stay off the thread
//! that drains the ring buffer.
//!
//! When the size bound evicts unshipped batches, this thread appends the
//! `loss` events that report them itself, right behind the batch that caused
//! the eviction: so every eviction is reported, even one during shutdown.

use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tracing::error;
use vigil_schema::arrow::EventBatchBuilder;
use vigil_schema::{ipc, EventKind, LossReport};
use vigil_spool::{Encoding, SpoolWriter};

use crate::config::{BatchConfig, BatchEncoding, IpcCompression};
use crate::enrich::Host;
use crate::metrics::{self, Metrics};
use crate::sink::batch::{Batch, Payload};

/// Batches waiting for the writer (each up to batch.max_bytes, so this bounds
/// memory too); beyond this the pipeline waits (and the
/// ring buffer absorbs the load, its drops counted by the kernel).
const QUEUE: usize = 8;

/// How the pipeline hands batches to the writer thread.
pub struct SpoolHandle {
    tx: SyncSender<Batch>,
    metrics: Arc<Metrics>,
}

impl SpoolHandle {
    pub fn send(&self, batch: Batch) {
        let events = u64::from(batch.events);
        let lost = match self.tx.try_send(batch) {
            Ok(()) => false,
            Err(TrySendError::Full(batch)) => {
                let started = Instant::now();
                let lost = self.tx.send(batch).is_err();
                metrics::add(
                    &self.metrics.spool_wait_ns,
                    started.elapsed().as_nanos() as u64,
                );
                lost
            }
            Err(TrySendError::Disconnected(_)) => true,
        };
        if lost {
            metrics::add(&self.metrics.queue_drops_batches, 1);
            metrics::add(&self.metrics.queue_drops_events, events);
        }
    }
}

pub struct SpoolThread {
    thread: JoinHandle<()>,
}

impl SpoolThread {
    /// Start the writer; `shipper` is woken after every append.
    pub fn start(
        writer: SpoolWriter,
        host: Host,
        batch: &BatchConfig,
        shipper: Option<Arc<Notify>>,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<(SpoolHandle, SpoolThread)> {
        let (tx, rx) = mpsc::sync_channel(QUEUE);
        let handle = SpoolHandle {
            tx,
            metrics: metrics.clone(),
        };
        let encoding = batch.encoding;
        let compression = match batch.compression {
            IpcCompression::Zstd => ipc::Compression::Zstd,
            IpcCompression::Lz4 => ipc::Compression::Lz4,
            IpcCompression::None => ipc::Compression::None,
        };
        let thread = std::thread::Builder::new()
            .name("vigil-spool".into())
            .spawn(move || {
                let mut w = Writer {
                    writer,
                    host,
                    encoding,
                    compression,
                    shipper,
                    metrics,
                    errors: 0,
                    loss_batches: std::collections::BTreeMap::new(),
                };
                w.run(rx)
            })?;
        Ok((handle, SpoolThread { thread }))
    }

    /// Wait until every batch sent before the handle was dropped is written and synced.
    pub fn join(self) {
        if self.thread.join().is_err() {
            error!("the spool writer thread panicked");
        }
    }
}

struct Writer {
    writer: SpoolWriter,
    host: Host,
    encoding: BatchEncoding,
    compression: ipc::Compression,
    shipper: Option<Arc<Notify>>,
    metrics: Arc<Metrics>,
    errors: u64,
    /// The reports in each loss batch written (by collector sequence
    /// number), so that a loss batch evicted in its turn is reported again
    /// rather than taking its reports with it. Bounded: the oldest are
    /// dropped first, long shipped by then.
    loss_batches: std::collections::BTreeMap<u64, Vec<LossReport>>,
}

/// Loss batches remembered for re-reporting (see `Writer::loss_batches`).
const LOSS_BATCHES_REMEMBERED: usize = 4096;

impl Writer {
    fn run(&mut self, rx: Receiver<Batch>) {
        loop {
            match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(batch) => self.append(batch, None),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            if let Err(e) = self.writer.sync_if_due() {
                error!(error = %e, "spool: fsync failed");
            }
        }
        if let Err(e) = self.writer.sync() {
            error!(error = %e, "spool: final fsync failed");
        }
    }

    /// Append a batch; `loss` holds the reports of a loss batch, which
    /// counts no events in the spool: loss events are bookkeeping, and
    /// their own eviction is reported by re-issuing what they said.
    fn append(&mut self, batch: Batch, loss: Option<Vec<LossReport>>) {
        let kind = batch.kind;
        let acks = batch.acks;
        let seq = self.writer.next_seq(kind);
        let (encoding, payload) = match batch.payload {
            Payload::Arrow(b) => match ipc::encode(&b, &self.host.host_id, seq, self.compression) {
                Ok(bytes) => (Encoding::Arrow, bytes),
                Err(e) => return self.failed(batch.events, &e.to_string()),
            },
            Payload::Json(lines) => (Encoding::Json, lines),
        };
        let events = if loss.is_some() { 0 } else { batch.events };
        match self.writer.append(kind, encoding, events, &payload) {
            Ok(appended) => {
                if let Some(reports) = loss {
                    self.loss_batches.insert(appended.seq, reports);
                    while self.loss_batches.len() > LOSS_BATCHES_REMEMBERED {
                        self.loss_batches.pop_first();
                    }
                }
                if !appended.evicted.is_empty() {
                    self.report_losses(appended.evicted);
                }
                if let Some(n) = &self.shipper {
                    n.notify_one();
                }
                // in the spool file: a SIGKILL now loses none of it
                for ack in acks {
                    let _ = ack.send(());
                }
            }
            // unacknowledged, the gateway's records are sent again
            Err(e) => self.failed(batch.events, &e.to_string()),
        }
    }

    /// Append one `loss` event per evicted (segment, kind) as a collector batch.
    fn report_losses(&mut self, mut reports: Vec<LossReport>) {
        // loss batches among the evicted: what they reported is lost again
        let collector = EventKind::Collector.as_str();
        let mut again = Vec::new();
        for r in reports.iter().filter(|r| r.lost_kind == collector) {
            let evicted: Vec<u64> = self
                .loss_batches
                .range(r.first_seq..=r.last_seq)
                .map(|(seq, _)| *seq)
                .collect();
            for seq in evicted {
                again.extend(self.loss_batches.remove(&seq).unwrap_or_default());
            }
        }
        reports.extend(again);
        let events: Vec<vigil_schema::Event> = reports
            .iter()
            .cloned()
            .map(|report| {
                let mut ev = crate::pipeline::collector_event(&self.host, 2, "loss");
                ev.loss = Some(report);
                ev
            })
            .collect();
        metrics::add(&self.metrics.loss_events, events.len() as u64);
        let payload = match self.encoding {
            BatchEncoding::Arrow => {
                let mut b = EventBatchBuilder::new(EventKind::Collector);
                for ev in &events {
                    b.append(ev, None);
                }
                Payload::Arrow(b.finish())
            }
            BatchEncoding::Json => {
                let mut lines = Vec::new();
                for ev in &events {
                    serde_json::to_writer(&mut lines, ev).expect("an event serialises");
                    lines.push(b'\n');
                }
                Payload::Json(lines)
            }
        };
        // its own append may evict more: reported by the next loss batch
        self.append(
            Batch {
                kind: EventKind::Collector,
                events: events.len() as u32,
                payload,
                acks: Vec::new(),
            },
            Some(reports),
        );
    }

    fn failed(&mut self, events: u32, why: &str) {
        metrics::add(&self.metrics.queue_drops_batches, 1);
        metrics::add(&self.metrics.queue_drops_events, u64::from(events));
        self.errors += 1;
        if self.errors.is_power_of_two() {
            error!(
                error = why,
                events,
                failures = self.errors,
                "spool: batch not written (dropped, counted)"
            );
        }
    }
}
