//! Gathering events into batches per kind: closed by count, size or age,
//! then handed to the spool writer.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use arrow_array::RecordBatch;
use vigil_schema::arrow::EventBatchBuilder;
use vigil_schema::EventKind;

use crate::config::{BatchConfig, BatchEncoding};
use crate::enrich::Output;
use crate::sink::spool::SpoolHandle;

/// A closed batch on its way to the spool.
pub struct Batch {
    pub kind: EventKind,
    pub events: u32,
    pub payload: Payload,
    /// Fired once the batch is in the spool: the gateway's job records are
    /// acknowledged then, not before (it keeps them until acknowledged).
    pub acks: Vec<Ack>,
}

/// Told when an event is in the spool.
pub type Ack = tokio::sync::oneshot::Sender<()>;

pub enum Payload {
    Arrow(RecordBatch),
    /// One JSON object per line.
    Json(Vec<u8>),
}

enum Rows {
    Arrow(EventBatchBuilder),
    Json { lines: Vec<u8>, count: usize },
}

impl Rows {
    fn len(&self) -> usize {
        match self {
            Rows::Arrow(b) => b.len(),
            Rows::Json { count, .. } => *count,
        }
    }
    fn bytes(&self) -> usize {
        match self {
            Rows::Arrow(b) => b.approx_bytes(),
            Rows::Json { lines, .. } => lines.len(),
        }
    }
}

struct Pending {
    rows: Rows,
    acks: Vec<Ack>,
    /// When the batch's first event arrived.
    since: Instant,
}

pub struct Batcher {
    max_events: usize,
    max_bytes: usize,
    max_age: Duration,
    encoding: BatchEncoding,
    pending: BTreeMap<EventKind, Pending>,
    spool: SpoolHandle,
}

impl Batcher {
    pub fn new(config: &BatchConfig, spool: SpoolHandle) -> Self {
        Self {
            max_events: config.max_events,
            max_bytes: config.max_bytes,
            max_age: Duration::from_millis(config.flush_interval_ms),
            encoding: config.encoding,
            pending: BTreeMap::new(),
            spool,
        }
    }

    pub fn push(&mut self, output: &Output) -> std::io::Result<()> {
        self.push_acked(output, None)
    }

    /// [`Batcher::push`], with `ack` fired once the event is in the spool.
    pub fn push_acked(&mut self, output: &Output, ack: Option<Ack>) -> std::io::Result<()> {
        let kind = output.event.kind;
        let encoding = self.encoding;
        let pending = self.pending.entry(kind).or_insert_with(|| Pending {
            rows: match encoding {
                BatchEncoding::Arrow => Rows::Arrow(EventBatchBuilder::new(kind)),
                BatchEncoding::Json => Rows::Json {
                    lines: Vec::with_capacity(1 << 16),
                    count: 0,
                },
            },
            since: Instant::now(),
            acks: Vec::new(),
        });
        if pending.rows.len() == 0 {
            pending.since = Instant::now();
        }
        match &mut pending.rows {
            Rows::Arrow(b) => b.append(&output.event, output.context.as_ref().map(|c| &c.data)),
            Rows::Json { lines, count } => {
                super::json::write_line(lines, output)?;
                *count += 1;
            }
        }
        // only once the row is in: a failed append must not be acknowledged
        pending.acks.extend(ack);
        if pending.rows.len() >= self.max_events || pending.rows.bytes() >= self.max_bytes {
            self.flush(kind);
        }
        Ok(())
    }

    /// Close the batches whose first event is older than the flush interval.
    pub fn flush_due(&mut self) {
        let due: Vec<EventKind> = self
            .pending
            .iter()
            .filter(|(_, p)| p.rows.len() > 0 && p.since.elapsed() >= self.max_age)
            .map(|(k, _)| *k)
            .collect();
        for kind in due {
            self.flush(kind);
        }
    }

    pub fn flush_all(&mut self) {
        let kinds: Vec<EventKind> = self.pending.keys().copied().collect();
        for kind in kinds {
            self.flush(kind);
        }
    }

    fn flush(&mut self, kind: EventKind) {
        let Some(pending) = self.pending.get_mut(&kind) else {
            return;
        };
        let events = pending.rows.len();
        if events == 0 {
            return;
        }
        let payload = match &mut pending.rows {
            Rows::Arrow(b) => Payload::Arrow(b.finish()),
            Rows::Json { lines, count } => {
                *count = 0;
                Payload::Json(std::mem::replace(lines, Vec::with_capacity(1 << 16)))
            }
        };
        let acks = std::mem::take(&mut pending.acks);
        self.spool.send(Batch {
            kind,
            events: events as u32,
            payload,
            acks,
        });
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use vigil_schema::{Event, EventKind};
    use vigil_spool::reader::Read;
    use vigil_spool::{Fsync, SpoolReader, SpoolWriter, WriterOptions};

    use super::*;
    use crate::config::BatchConfig;
    use crate::enrich::{Host, Output};
    use crate::metrics::Metrics;
    use crate::sink::spool::SpoolThread;

    fn output(kind: EventKind, n: u64) -> Output {
        Output {
            event: Event::new(kind, 1001, 14, "open", 1, n, "h", "vm"),
            context: None,
        }
    }

    /// (kind, seq, events) of every batch in the spool.
    fn spooled(
        dir: &std::path::Path,
        config: &BatchConfig,
        feed: impl FnOnce(&mut Batcher),
    ) -> Vec<(EventKind, u64, u32)> {
        let (writer, _) = SpoolWriter::open(WriterOptions {
            dir: dir.to_path_buf(),
            host_id: "h".into(),
            max_bytes: 1 << 30,
            segment_bytes: 1 << 20,
            fsync: Fsync::Never,
            group: None,
        })
        .unwrap();
        let spool = writer.spool();
        let host = Host {
            host_id: "h".into(),
            hostname: "vm".into(),
        };
        let (handle, thread) =
            SpoolThread::start(writer, host, config, None, Arc::new(Metrics::default())).unwrap();
        let mut batcher = Batcher::new(config, handle);
        feed(&mut batcher);
        drop(batcher);
        thread.join();
        let mut reader = SpoolReader::open(spool, "test").unwrap();
        let mut out = Vec::new();
        while let Read::Batch { record, .. } = reader.next_batch().unwrap() {
            let h = record.header;
            out.push((h.kind().unwrap(), h.seq, h.events));
        }
        out
    }

    #[test]
    fn batches_close_by_count_by_age_and_per_kind() {
        let dir = tempfile::tempdir().unwrap();
        let config = BatchConfig {
            max_events: 3,
            flush_interval_ms: 30,
            ..Default::default()
        };
        let got = spooled(dir.path(), &config, |b| {
            for n in 0..7 {
                b.push(&output(EventKind::File, n)).unwrap();
            }
            b.push(&output(EventKind::Network, 0)).unwrap();
            b.flush_due(); // nothing is 30 ms old yet
            std::thread::sleep(Duration::from_millis(40));
            b.flush_due();
        });
        assert_eq!(
            got,
            [
                (EventKind::File, 1, 3),
                (EventKind::File, 2, 3),
                (EventKind::File, 3, 1),
                (EventKind::Network, 1, 1)
            ]
        );
    }

    #[test]
    fn an_acked_event_is_acknowledged_once_its_batch_is_in_the_spool_not_before() {
        let dir = tempfile::tempdir().unwrap();
        let config = BatchConfig {
            max_events: 100,
            ..Default::default()
        };
        let (ack, mut acked) = tokio::sync::oneshot::channel();
        let mut acked_before_flush = None;
        let got = spooled(dir.path(), &config, |b| {
            b.push(&output(EventKind::QuantumJob, 0)).unwrap();
            b.push_acked(&output(EventKind::QuantumJob, 1), Some(ack))
                .unwrap();
            std::thread::sleep(Duration::from_millis(50));
            acked_before_flush = Some(acked.try_recv().is_ok());
            b.flush_all();
        });
        assert_eq!(
            acked_before_flush,
            Some(false),
            "acknowledged while in memory"
        );
        assert_eq!(got, [(EventKind::QuantumJob, 1, 2)]);
        assert_eq!(acked.try_recv(), Ok(()), "not acknowledged once spooled");
    }

    #[test]
    fn batches_close_by_size_in_either_encoding() {
        for encoding in [BatchEncoding::Arrow, BatchEncoding::Json] {
            let dir = tempfile::tempdir().unwrap();
            let config = BatchConfig {
                encoding,
                max_bytes: 2048,
                ..Default::default()
            };
            let got = spooled(dir.path(), &config, |b| {
                for n in 0..100 {
                    b.push(&output(EventKind::File, n)).unwrap();
                }
                b.flush_all();
            });
            let events: u32 = got.iter().map(|g| g.2).sum();
            assert_eq!(events, 100, "{encoding:?}");
            assert!(got.len() > 2, "{encoding:?}: closed by size: {got:?}");
        }
    }
}
