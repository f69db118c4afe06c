//! Vigil's durable spool: every batch the collector makes is appended here
//! first, and leaves only when a consumer (the Kafka shipper) has had it
//! acknowledged — or when the spool is full and the oldest unread batches are
//! evicted, counted and reported.
//!
//! The spool is one ordered log split into segment files (`<id>.seg`) in one
//! directory. [`SpoolWriter`] appends checksummed records, rolls segments and
//! enforces the size bound; [`SpoolReader`] reads records in order, skips
//! corrupt ones, and deletes segments once everything in them is
//! acknowledged. Both share a [`Spool`]: the segment table and counters. The
//! byte format is documented in `spool/README.md`, for the detector that
//! reads a spool directly.

pub mod files;
pub mod format;
pub mod reader;
pub mod segment;
pub mod tail;
pub mod writer;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

pub use format::{Encoding, RecordHeader};
pub use reader::{Position, SpoolReader};
pub use tail::{SpoolTail, Tailed};
pub use writer::{Fsync, SpoolWriter, WriterOptions};

/// The contiguous run of one kind's sequence numbers inside a segment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KindRange {
    pub first_seq: u64,
    pub last_seq: u64,
    pub batches: u64,
    pub events: u64,
}

impl KindRange {
    fn add(&mut self, seq: u64, events: u64) {
        if self.batches == 0 {
            self.first_seq = seq;
        }
        self.last_seq = seq;
        self.batches += 1;
        self.events += events;
    }
}

#[derive(Debug, Clone, Default)]
pub(crate) struct SegmentMeta {
    /// Bytes written (for the segment being written: committed so far).
    pub bytes: u64,
    /// No more records will be appended.
    pub sealed: bool,
    /// By kind code.
    pub kinds: BTreeMap<u8, KindRange>,
}

#[derive(Debug, Default)]
pub(crate) struct State {
    pub segments: BTreeMap<u64, SegmentMeta>,
    /// Segments the consumer still needs, inclusive: from the one holding its
    /// acknowledged position through the one it is reading. They are never
    /// evicted, so what an eviction loses was never sent.
    pub pinned: Option<(u64, u64)>,
    /// Whether a consumer (shipper) reads this spool. Without one, a full
    /// spool retires its oldest segments as retention, not as loss.
    pub consumer: bool,
}

impl State {
    pub fn total_bytes(&self) -> u64 {
        self.segments.values().map(|s| s.bytes).sum()
    }
}

/// Counters of a spool, readable at any time (metrics and heartbeats).
#[derive(Debug, Default)]
pub struct SpoolCounters {
    pub batches_spooled: AtomicU64,
    pub events_spooled: AtomicU64,
    pub bytes: AtomicU64,
    pub evicted_batches: AtomicU64,
    pub evicted_events: AtomicU64,
    /// Segments deleted by the size bound with no consumer registered.
    pub retired_segments: AtomicU64,
    pub corrupt_records: AtomicU64,
    /// Bytes cut from the end of a segment at recovery (a record torn by a crash).
    pub torn_bytes: AtomicU64,
}

impl SpoolCounters {
    pub(crate) fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }
}

/// What the writer and the reader of one spool directory share.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    state: Mutex<State>,
    pub counters: SpoolCounters,
}

impl Spool {
    pub(crate) fn new(dir: PathBuf, state: State) -> Self {
        Self {
            dir,
            state: Mutex::new(state),
            counters: SpoolCounters::default(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub(crate) fn state(&self) -> MutexGuard<'_, State> {
        // a panic elsewhere while holding the lock leaves consistent data:
        // every update is a single field write or map insert
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}
