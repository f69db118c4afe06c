//! The event-time window: per kind, the batches whose events are recent
//! enough for some rule to look at, as DataFusion tables.
//!
//! Event time decides membership. The window's clock is the latest event
//! time seen (`latest`); a batch leaves once its newest event is older than
//! `latest - grace - span`, and a batch arriving entirely older than that is
//! too late (dropped, counted). Late events inside the span are kept and
//! evaluated by every rule whose lookback reaches them. Memory is bounded by
//! `max_bytes`: beyond it the oldest batches leave early, counted as
//! overflow. Each batch remembers where it came from, so the source can be
//! committed up to (and on restart replayed from) the oldest batch still
//! held: a restarted detector rebuilds the same window.

use std::collections::{BTreeMap, VecDeque};

use arrow_array::RecordBatch;
use vigil_schema::EventKind;

use crate::rules::engine::Tables;
use crate::source::{Origin, Stream};

/// One batch in the window.
struct Chunk {
    batch: RecordBatch,
    min_time: i64,
    max_time: i64,
    origin: Origin,
    bytes: usize,
}

/// What the window did with a batch.
#[derive(Debug, PartialEq, Eq)]
pub enum Admitted {
    Added,
    /// Every event was older than the window: counted, not kept.
    TooLate,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct WindowCounters {
    pub evicted_rows: u64,
    /// Rows evicted before their time because of `max_bytes`.
    pub overflow_rows: u64,
    pub late_rows: u64,
}

pub struct Window {
    span_ms: i64,
    grace_ms: i64,
    max_bytes: usize,
    kinds: BTreeMap<EventKind, VecDeque<Chunk>>,
    /// Batches added per kind, ever: rules skip evaluation when the tables
    /// they read have not changed.
    generation: BTreeMap<EventKind, u64>,
    bytes: usize,
    rows: usize,
    latest_ms: Option<i64>,
    pub counters: WindowCounters,
}

impl Window {
    pub fn new(span_ms: i64, grace_ms: i64, max_bytes: usize) -> Window {
        Window {
            span_ms,
            grace_ms,
            max_bytes,
            kinds: BTreeMap::new(),
            generation: BTreeMap::new(),
            bytes: 0,
            rows: 0,
            latest_ms: None,
            counters: WindowCounters::default(),
        }
    }

    /// The latest event time seen: the window's clock, `${now}` in rules.
    pub fn now(&self) -> Option<i64> {
        self.latest_ms
    }

    fn cutoff(&self) -> i64 {
        self.latest_ms.unwrap_or(i64::MIN / 2) - self.grace_ms - self.span_ms
    }

    /// Move the clock to an event time seen, whether or not its batch is kept.
    pub fn observe(&mut self, time_ms: i64) {
        if time_ms >= self.cutoff() {
            self.latest_ms = Some(self.latest_ms.map_or(time_ms, |l| l.max(time_ms)));
        }
    }

    /// Add a table batch (with its events' time range) from `origin`.
    pub fn admit(
        &mut self,
        kind: EventKind,
        batch: RecordBatch,
        times: (i64, i64),
        origin: Origin,
    ) -> Admitted {
        let (min_time, max_time) = times;
        if max_time < self.cutoff() {
            self.counters.late_rows += batch.num_rows() as u64;
            return Admitted::TooLate;
        }
        self.latest_ms = Some(self.latest_ms.map_or(max_time, |l| l.max(max_time)));
        let bytes = batch.get_array_memory_size();
        self.bytes += bytes;
        self.rows += batch.num_rows();
        *self.generation.entry(kind).or_default() += 1;
        self.kinds.entry(kind).or_default().push_back(Chunk {
            batch,
            min_time,
            max_time,
            origin,
            bytes,
        });
        Admitted::Added
    }

    /// Drop what event time has left behind, then the oldest beyond `max_bytes`.
    pub fn evict(&mut self) {
        let cutoff = self.cutoff();
        for chunks in self.kinds.values_mut() {
            // batches arrive roughly in time order: a late one is retained
            // until those before it leave, a bounded over-retention
            while chunks.front().is_some_and(|c| c.max_time < cutoff) {
                let c = chunks.pop_front().expect("front exists");
                self.bytes -= c.bytes;
                self.rows -= c.batch.num_rows();
                self.counters.evicted_rows += c.batch.num_rows() as u64;
            }
        }
        while self.bytes > self.max_bytes {
            let Some(chunks) = self
                .kinds
                .values_mut()
                .filter(|c| !c.is_empty())
                .min_by_key(|c| c.front().map(|c| c.min_time))
            else {
                break;
            };
            let c = chunks.pop_front().expect("non-empty");
            self.bytes -= c.bytes;
            self.rows -= c.batch.num_rows();
            self.counters.evicted_rows += c.batch.num_rows() as u64;
            self.counters.overflow_rows += c.batch.num_rows() as u64;
        }
    }

    /// The batches holding events at or after `since_ms`, per kind.
    pub fn tables(&self, since_ms: i64) -> Tables {
        Tables {
            by_kind: self
                .kinds
                .iter()
                .map(|(kind, chunks)| {
                    let batches = chunks
                        .iter()
                        .filter(|c| c.max_time >= since_ms)
                        .map(|c| c.batch.clone())
                        .collect();
                    (*kind, batches)
                })
                .collect(),
        }
    }

    /// The rule clock minus a rule's lookback and the grace period.
    pub fn since(&self, lookback_ms: i64) -> i64 {
        self.latest_ms.unwrap_or(0) - lookback_ms - self.grace_ms
    }

    pub fn generation(&self, kind: EventKind) -> u64 {
        self.generation.get(&kind).copied().unwrap_or(0)
    }

    /// Per source stream, the oldest origin still held.
    pub fn oldest_origins(&self) -> BTreeMap<Stream, Origin> {
        let mut oldest: BTreeMap<Stream, Origin> = BTreeMap::new();
        for c in self.kinds.values().flatten() {
            let s = c.origin.stream();
            match oldest.get(&s) {
                Some(o) if o.offset() <= c.origin.offset() => {}
                _ => {
                    oldest.insert(s, c.origin.clone());
                }
            }
        }
        oldest
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Rows outside any lookback but held: the span's size at this rate.
    pub fn span_ms(&self) -> i64 {
        self.span_ms
    }

    pub fn min_time(&self) -> Option<i64> {
        self.kinds
            .values()
            .filter_map(|c| c.front())
            .map(|c| c.min_time)
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::engine::table_batch;
    use vigil_schema::arrow::EventBatchBuilder;
    use vigil_schema::Event;
    use vigil_spool::Position;

    fn batch(times: &[i64]) -> RecordBatch {
        let mut b = EventBatchBuilder::new(EventKind::Collector);
        for t in times {
            b.append(
                &Event::new(EventKind::Collector, 0, 1, "heartbeat", *t, 0, "h", "h"),
                None,
            );
        }
        table_batch(EventKind::Collector, &b.finish(), 1).unwrap()
    }

    fn origin(offset: u64) -> Origin {
        Origin::Spool(Position { segment: 1, offset })
    }

    #[test]
    fn event_time_decides_membership() {
        let mut w = Window::new(60_000, 5_000, usize::MAX);
        assert_eq!(
            w.admit(
                EventKind::Collector,
                batch(&[1_000, 6_000]),
                (1_000, 6_000),
                origin(0)
            ),
            Admitted::Added
        );
        assert_eq!(
            w.admit(
                EventKind::Collector,
                batch(&[70_000]),
                (70_000, 70_000),
                origin(10)
            ),
            Admitted::Added
        );
        w.evict();
        // 6_000 >= 70_000 - 65_000: still held
        assert_eq!(w.rows(), 3);
        assert_eq!(w.oldest_origins().values().next(), Some(&origin(0)));
        w.admit(
            EventKind::Collector,
            batch(&[80_000]),
            (80_000, 80_000),
            origin(20),
        );
        w.evict();
        assert_eq!(w.rows(), 2);
        assert_eq!(w.counters.evicted_rows, 2);
        assert_eq!(w.oldest_origins().values().next(), Some(&origin(10)));
        // older than the span and grace: too late
        assert_eq!(
            w.admit(
                EventKind::Collector,
                batch(&[10_000]),
                (10_000, 10_000),
                origin(30)
            ),
            Admitted::TooLate
        );
        assert_eq!(w.counters.late_rows, 1);
        // inside the span but late: kept
        assert_eq!(
            w.admit(
                EventKind::Collector,
                batch(&[20_000]),
                (20_000, 20_000),
                origin(40)
            ),
            Admitted::Added
        );
        assert_eq!(w.tables(w.since(30_000)).rows(), 2);
    }

    #[test]
    fn memory_is_bounded() {
        let one = batch(&[1]).get_array_memory_size();
        let mut w = Window::new(i64::MAX / 4, 0, one * 3);
        for i in 0..10 {
            w.admit(EventKind::Collector, batch(&[i]), (i, i), origin(i as u64));
            w.evict();
        }
        assert!(w.bytes() <= one * 3);
        assert_eq!(w.rows(), 3);
        assert_eq!(w.counters.overflow_rows, 7);
    }
}
