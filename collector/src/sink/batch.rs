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
}

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
        self.spool.send(Batch {
            kind,
            events: events as u32,
            payload,
        });
    }
}
