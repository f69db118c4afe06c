//! The event-time window: for each keeper (a table and one `keep`
//! predicate, see `retain`), the recent rows it kept, in chunks, as the
//! batches a rule's table is made of.
//!
//! Event time decides membership. The window's clock is the latest event
//! time seen (`latest`); a chunk leaves once its newest event is older than
//! `latest - grace - span`, and a batch arriving entirely older than that is
//! too late (dropped, counted). Late events inside the span are kept and
//! evaluated by every rule whose lookback reaches them. Memory is bounded by
//! `max_bytes`: beyond it the oldest chunks leave early, counted as
//! overflow. Each chunk remembers where its rows came from, so the source
//! can be committed up to (and on restart replayed from) the oldest origin
//! still held: a restarted detector rebuilds the same window.
//!
//! Batches arrive small (one per host, kind and collector flush, fewer rows
//! after `keep`); a keeper's newest ones are concatenated into one chunk
//! once they hold `SEAL_ROWS` rows, so that a rule scans a few large
//! batches rather than thousands of small ones.

use std::collections::{BTreeMap, VecDeque};

use arrow_array::RecordBatch;
use vigil_schema::EventKind;

use crate::columns;
use crate::source::{Origin, Stream};

/// Rows at which a keeper's pending batches become one chunk.
const SEAL_ROWS: usize = 8192;
/// Pending batches at which they are sealed whatever their rows.
const SEAL_BATCHES: usize = 256;

/// Rows of one keeper, from one or more source batches.
struct Chunk {
    batch: RecordBatch,
    min_time: i64,
    max_time: i64,
    /// The oldest origin of its rows per source stream.
    origins: Vec<Origin>,
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

/// One keeper's rows: sealed chunks (oldest first) and the batches since.
struct Kept {
    kind: EventKind,
    /// How far back its rules look (at most the span): older rows leave.
    horizon_ms: i64,
    sealed: VecDeque<Chunk>,
    pending: Vec<Chunk>,
    pending_rows: usize,
    /// Batches added, ever: a rule runs again only when one of its
    /// keepers' generations moved.
    generation: u64,
}

impl Kept {
    fn chunks(&self) -> impl Iterator<Item = &Chunk> {
        self.sealed.iter().chain(self.pending.iter())
    }

    /// Concatenate the pending batches into one chunk.
    fn seal(&mut self) -> Result<(), String> {
        if self.pending.len() < 2 {
            self.sealed.extend(self.pending.drain(..));
            self.pending_rows = 0;
            return Ok(());
        }
        let parts: Vec<&RecordBatch> = self.pending.iter().map(|c| &c.batch).collect();
        let batch = columns::concat(self.kind, &parts)
            .map_err(|e| format!("sealing {} batches: {e}", self.pending.len()))?;
        let mut origins: BTreeMap<Stream, Origin> = BTreeMap::new();
        for o in self.pending.iter().flat_map(|c| c.origins.iter()) {
            match origins.get(&o.stream()) {
                Some(held) if held.offset() <= o.offset() => {}
                _ => {
                    origins.insert(o.stream(), o.clone());
                }
            }
        }
        let chunk = Chunk {
            min_time: self.pending.iter().map(|c| c.min_time).min().unwrap_or(0),
            max_time: self.pending.iter().map(|c| c.max_time).max().unwrap_or(0),
            origins: origins.into_values().collect(),
            bytes: columns::held_bytes(&batch),
            batch,
        };
        self.pending.clear();
        self.pending_rows = 0;
        self.sealed.push_back(chunk);
        Ok(())
    }
}

pub struct Window {
    span_ms: i64,
    grace_ms: i64,
    max_bytes: usize,
    kept: Vec<Kept>,
    bytes: usize,
    rows: usize,
    latest_ms: Option<i64>,
    pub counters: WindowCounters,
}

impl Window {
    /// A window with one list of rows per keeper (indexes as in
    /// `retain::Retention`), each held for as long as the longest lookback
    /// among the rules it serves (`lookbacks_ms`), at most `span_ms`.
    pub fn new(
        keepers: &[(EventKind, i64)],
        span_ms: i64,
        grace_ms: i64,
        max_bytes: usize,
    ) -> Window {
        Window {
            span_ms,
            grace_ms,
            max_bytes,
            kept: keepers
                .iter()
                .map(|(kind, lookback_ms)| Kept {
                    kind: *kind,
                    horizon_ms: (*lookback_ms).min(span_ms),
                    sealed: VecDeque::new(),
                    pending: Vec::new(),
                    pending_rows: 0,
                    generation: 0,
                })
                .collect(),
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

    fn cutoff_of(&self, kept: &Kept) -> i64 {
        self.latest_ms.unwrap_or(i64::MIN / 2) - self.grace_ms - kept.horizon_ms
    }

    /// Move the clock to an event time seen, whether or not its batch is kept.
    pub fn observe(&mut self, time_ms: i64) {
        if time_ms >= self.cutoff() {
            self.latest_ms = Some(self.latest_ms.map_or(time_ms, |l| l.max(time_ms)));
        }
    }

    /// Whether a batch whose newest event is at `max_time` is too late to keep.
    pub fn too_late(&self, max_time: i64) -> bool {
        max_time < self.cutoff()
    }

    /// Add a keeper's rows of a batch (with the batch's time range) from `origin`.
    pub fn admit(
        &mut self,
        keeper: usize,
        batch: RecordBatch,
        times: (i64, i64),
        origin: Origin,
    ) -> Result<Admitted, String> {
        let (min_time, max_time) = times;
        if self.too_late(max_time) {
            self.counters.late_rows += batch.num_rows() as u64;
            return Ok(Admitted::TooLate);
        }
        if max_time < self.cutoff_of(&self.kept[keeper]) {
            // within the span, but older than any of its rules looks
            return Ok(Admitted::Added);
        }
        self.latest_ms = Some(self.latest_ms.map_or(max_time, |l| l.max(max_time)));
        let bytes = columns::held_bytes(&batch);
        let rows = batch.num_rows();
        let kept = &mut self.kept[keeper];
        kept.generation += 1;
        kept.pending_rows += rows;
        kept.pending.push(Chunk {
            batch,
            min_time,
            max_time,
            origins: vec![origin],
            bytes,
        });
        self.rows += rows;
        self.bytes += bytes;
        if kept.pending_rows >= SEAL_ROWS || kept.pending.len() >= SEAL_BATCHES {
            let before: usize = kept.pending.iter().map(|c| c.bytes).sum();
            kept.seal()?;
            let after = kept.sealed.back().map_or(0, |c| c.bytes);
            self.bytes = self.bytes + after - before;
        }
        Ok(Admitted::Added)
    }

    /// Drop what event time has left behind, then the oldest beyond `max_bytes`.
    pub fn evict(&mut self) {
        let mut gone = Vec::new();
        let latest = self.latest_ms.unwrap_or(i64::MIN / 2);
        for kept in &mut self.kept {
            let cutoff = latest - self.grace_ms - kept.horizon_ms;
            // chunks are sealed roughly in time order: a late one is retained
            // until those before it leave, a bounded over-retention
            while kept.sealed.front().is_some_and(|c| c.max_time < cutoff) {
                gone.extend(kept.sealed.pop_front());
            }
            if kept.pending.first().is_some_and(|c| c.max_time < cutoff) {
                let (old, young): (Vec<Chunk>, Vec<Chunk>) =
                    kept.pending.drain(..).partition(|c| c.max_time < cutoff);
                kept.pending = young;
                kept.pending_rows = kept.pending.iter().map(|c| c.batch.num_rows()).sum();
                gone.extend(old);
            }
        }
        for c in gone {
            self.forget(&c, false);
        }
        while self.bytes > self.max_bytes {
            let oldest = self
                .kept
                .iter()
                .enumerate()
                .filter_map(|(i, k)| k.chunks().next().map(|c| (c.min_time, i)))
                .min();
            let Some((_, i)) = oldest else { break };
            let kept = &mut self.kept[i];
            let c = match kept.sealed.pop_front() {
                Some(c) => c,
                None => {
                    let c = kept.pending.remove(0);
                    kept.pending_rows -= c.batch.num_rows();
                    c
                }
            };
            self.forget(&c, true);
        }
    }

    fn forget(&mut self, c: &Chunk, overflow: bool) {
        let rows = c.batch.num_rows();
        self.bytes -= c.bytes;
        self.rows -= rows;
        self.counters.evicted_rows += rows as u64;
        if overflow {
            self.counters.overflow_rows += rows as u64;
        }
    }

    /// A keeper's batches holding events at or after `since_ms`.
    pub fn batches(&self, keeper: usize, since_ms: i64) -> Vec<RecordBatch> {
        self.kept[keeper]
            .chunks()
            .filter(|c| c.max_time >= since_ms)
            .map(|c| c.batch.clone())
            .collect()
    }

    /// The rule clock minus a rule's lookback and the grace period.
    pub fn since(&self, lookback_ms: i64) -> i64 {
        self.latest_ms.unwrap_or(0) - lookback_ms - self.grace_ms
    }

    pub fn generation(&self, keeper: usize) -> u64 {
        self.kept[keeper].generation
    }

    /// Per source stream, the oldest origin still held.
    pub fn oldest_origins(&self) -> BTreeMap<Stream, Origin> {
        let mut oldest: BTreeMap<Stream, Origin> = BTreeMap::new();
        for o in self
            .kept
            .iter()
            .flat_map(|k| k.chunks())
            .flat_map(|c| c.origins.iter())
        {
            let s = o.stream();
            match oldest.get(&s) {
                Some(held) if held.offset() <= o.offset() => {}
                _ => {
                    oldest.insert(s, o.clone());
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

    pub fn min_time(&self) -> Option<i64> {
        self.kept
            .iter()
            .filter_map(|k| k.chunks().map(|c| c.min_time).min())
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
        let mut w = Window::new(
            &[(EventKind::Collector, i64::MAX)],
            60_000,
            5_000,
            usize::MAX,
        );
        assert_eq!(
            w.admit(0, batch(&[1_000, 6_000]), (1_000, 6_000), origin(0))
                .unwrap(),
            Admitted::Added
        );
        assert_eq!(
            w.admit(0, batch(&[70_000]), (70_000, 70_000), origin(10))
                .unwrap(),
            Admitted::Added
        );
        w.evict();
        // 6_000 >= 70_000 - 65_000: still held
        assert_eq!(w.rows(), 3);
        assert_eq!(w.oldest_origins().values().next(), Some(&origin(0)));
        w.admit(0, batch(&[80_000]), (80_000, 80_000), origin(20))
            .unwrap();
        w.evict();
        assert_eq!(w.rows(), 2);
        assert_eq!(w.counters.evicted_rows, 2);
        assert_eq!(w.oldest_origins().values().next(), Some(&origin(10)));
        // older than the span and grace: too late
        assert_eq!(
            w.admit(0, batch(&[10_000]), (10_000, 10_000), origin(30))
                .unwrap(),
            Admitted::TooLate
        );
        assert_eq!(w.counters.late_rows, 1);
        // inside the span but late: kept
        assert_eq!(
            w.admit(0, batch(&[20_000]), (20_000, 20_000), origin(40))
                .unwrap(),
            Admitted::Added
        );
        let rows = |b: Vec<RecordBatch>| b.iter().map(|b| b.num_rows()).sum::<usize>();
        assert_eq!(rows(w.batches(0, w.since(30_000))), 2);
    }

    #[test]
    fn memory_is_bounded() {
        let one = columns::held_bytes(&batch(&[1]));
        let mut w = Window::new(
            &[(EventKind::Collector, i64::MAX)],
            i64::MAX / 4,
            0,
            one * 3,
        );
        for i in 0..10 {
            w.admit(0, batch(&[i]), (i, i), origin(i as u64)).unwrap();
            w.evict();
        }
        assert!(w.bytes() <= one * 3);
        assert_eq!(w.rows(), 3);
        assert_eq!(w.counters.overflow_rows, 7);
    }

    #[test]
    fn small_batches_are_sealed_into_one_chunk_keeping_the_oldest_origin() {
        let mut w = Window::new(
            &[(EventKind::Collector, i64::MAX); 2],
            60_000,
            0,
            usize::MAX,
        );
        for i in 0..SEAL_BATCHES as i64 {
            w.admit(
                0,
                batch(&[1_000 + i]),
                (1_000 + i, 1_000 + i),
                origin(100 + i as u64),
            )
            .unwrap();
        }
        w.admit(1, batch(&[5_000]), (5_000, 5_000), origin(50))
            .unwrap();
        assert_eq!(w.batches(0, 0).len(), 1, "sealed into one chunk");
        assert_eq!(w.batches(0, 0)[0].num_rows(), SEAL_BATCHES);
        assert_eq!(w.rows(), SEAL_BATCHES + 1);
        assert_eq!(w.generation(0), SEAL_BATCHES as u64);
        assert_eq!(w.generation(1), 1);
        assert_eq!(w.oldest_origins().values().next(), Some(&origin(50)));
        // the clock passes the sealed chunk's newest event: it leaves whole
        w.admit(1, batch(&[61_300]), (61_300, 61_300), origin(60))
            .unwrap();
        w.evict();
        assert_eq!(w.rows(), 2);
        assert_eq!(w.oldest_origins().values().next(), Some(&origin(50)));
        assert!(w.batches(0, 0).is_empty());
    }
}
