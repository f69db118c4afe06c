//! The detector's loop: poll the source, decode and deduplicate into the
//! window, and every `eval_interval_ms` (or as soon as the source goes idle
//! with new data) run the rules, store and publish the alerts, and only
//! then commit the source.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{debug, error, info, warn};
use vigil_schema::EventKind;

use crate::alerts::store::{self, AlertStore};
use crate::alerts::suppress::Suppressor;
use crate::alerts::{latest, Alert};
use crate::config::DetectorConfig;
use crate::decode::decode;
use crate::metrics::{add, set, Metrics};
use crate::outputs::kafka::AlertPublisher;
use crate::retain::Retention;
use crate::rules::engine::{ColumnsRead, Engine, Prepared};
use crate::rules::model::Rule;
use crate::sequence::{Seen, Sequences};
use crate::source::{Polled, Source, SourceError};
use crate::window::Window;

/// Messages taken per poll.
const POLL_MAX: usize = 256;
/// How long a poll waits when nothing is there.
const POLL_WAIT: Duration = Duration::from_millis(100);

/// A rule as the loop runs it.
struct Scheduled {
    rule: Rule,
    prepared: Prepared,
    /// The tables its query reads and the keeper holding its rows of each;
    /// it runs again only when one of them took rows (or always, when it
    /// uses `${now}`).
    inputs: Vec<(EventKind, usize)>,
    uses_now: bool,
    seen: Vec<u64>,
    last_error: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum DetectorError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error("window retention: {0}")]
    Retention(String),
    #[error("rule {rule}: {error}")]
    Prepare { rule: String, error: String },
}

pub struct Detector {
    source: Box<dyn Source>,
    window: Window,
    retention: Retention,
    rules: Vec<Scheduled>,
    engine: Engine,
    suppressor: Suppressor,
    store: AlertStore,
    publisher: Option<AlertPublisher>,
    /// Alerts stored but not yet acknowledged by the alerts topic.
    unpublished: Vec<Alert>,
    sequences: Sequences,
    metrics: Arc<Metrics>,
    eval_interval: Duration,
    last_eval: Instant,
    last_eval_took: Duration,
    /// Messages taken since the last evaluation.
    fresh: bool,
    on_alert: Box<dyn FnMut(&Alert)>,
}

impl Detector {
    pub fn new(
        config: &DetectorConfig,
        rules: Vec<Rule>,
        source: Box<dyn Source>,
        publisher: Option<AlertPublisher>,
        metrics: Arc<Metrics>,
    ) -> Result<Detector, DetectorError> {
        let store = AlertStore::open(&config.data_dir)?;
        let mut suppressor = Suppressor::default();
        // what an earlier run stored: not raised again, repeats not counted twice
        let (stored, unreadable) = store::read_all(store.dir())?;
        for e in unreadable {
            warn!(error = %e, "skipping an unreadable alert file");
        }
        let stored = latest(stored);
        info!(alerts = stored.len(), "alerts already stored");
        suppressor.seed(stored, |id| {
            rules
                .iter()
                .find(|r| r.id == id)
                .map(|r| r.suppress.as_millis() as i64)
        });
        let rules: Vec<Rule> = rules.into_iter().filter(|r| r.enabled).collect();
        let engine = Engine::new();
        let prepared = rules
            .iter()
            .map(|rule| {
                engine
                    .prepare(rule)
                    .map_err(|error| DetectorError::Prepare {
                        rule: rule.id.clone(),
                        error,
                    })
            })
            .collect::<Result<Vec<Prepared>, DetectorError>>()?;
        let columns: Vec<ColumnsRead> = prepared.iter().map(|p| p.columns.clone()).collect();
        let retention =
            Retention::for_rules(&rules, Some(&columns)).map_err(DetectorError::Retention)?;
        for (kind, predicate) in retention.described() {
            info!(table = kind.as_str(), %predicate, "the window keeps rows matching");
        }
        let rules = rules
            .into_iter()
            .zip(prepared)
            .zip(retention.inputs.iter())
            .map(|((rule, prepared), inputs)| Scheduled {
                uses_now: rule.query.contains("${now}"),
                seen: vec![0; inputs.len()],
                inputs: inputs.clone(),
                prepared,
                rule,
                last_error: None,
            })
            .collect();
        let w = &config.window;
        Ok(Detector {
            source,
            window: Window::new(
                &retention
                    .keepers
                    .iter()
                    .map(|k| (k.kind, k.lookback_ms))
                    .collect::<Vec<_>>(),
                w.span_secs as i64 * 1000,
                w.grace_secs as i64 * 1000,
                w.max_bytes as usize,
            ),
            retention,
            rules,
            engine,
            suppressor,
            store,
            publisher,
            unpublished: Vec::new(),
            sequences: Sequences::default(),
            metrics,
            eval_interval: Duration::from_millis(w.eval_interval_ms),
            last_eval: Instant::now(),
            last_eval_took: Duration::ZERO,
            fresh: false,
            on_alert: Box::new(|_| {}),
        })
    }

    /// Called with every alert version once it is stored.
    pub fn on_alert(&mut self, f: impl FnMut(&Alert) + 'static) {
        self.on_alert = Box::new(f);
    }

    /// Run until `stop` is set; then evaluate and commit what was taken.
    pub fn run(&mut self, stop: &AtomicBool) -> Result<(), DetectorError> {
        while !stop.load(Ordering::Relaxed) {
            let took = self.step()?;
            let since = self.last_eval.elapsed();
            let due = since >= self.eval_interval;
            // an idle source is evaluated at once, unless evaluating is what
            // keeps the detector busy: then at most a fifth of the time
            let idle = took == 0 && since >= self.last_eval_took * 4;
            if self.fresh && (due || idle) {
                self.evaluate()?;
            }
        }
        self.evaluate()
    }

    /// Poll once and take what came into the window; returns the messages taken.
    pub fn step(&mut self) -> Result<usize, DetectorError> {
        let polled = self.source.poll(POLL_MAX, POLL_WAIT)?;
        let n = polled.len();
        for p in polled {
            match p {
                Polled::Message(m) => {
                    add(&self.metrics.messages, 1);
                    // taken, even if dropped below: its position needs committing
                    self.fresh = true;
                    let d = match decode(&m, |kind| self.retention.decoded(kind)) {
                        Ok(d) => d,
                        Err(reason) => {
                            warn!(origin = %m.origin, %reason, place = %self.source.dead_letter_place(), "dead letter");
                            self.source.dead_letter(&m, &reason)?;
                            add(&self.metrics.dead_letters, 1);
                            continue;
                        }
                    };
                    match self.sequences.see(&d.host_id, d.kind, d.seq, d.index) {
                        Seen::Duplicate => {
                            add(&self.metrics.duplicate_batches, 1);
                            continue;
                        }
                        Seen::AfterGap { missing } => {
                            warn!(host = %d.host_id, kind = d.kind.as_str(), seq = d.seq, missing, "sequence gap");
                            add(&self.metrics.gap_batches, missing);
                        }
                        Seen::New => {}
                    }
                    let rows = d.batch.num_rows() as u64;
                    // the clock moves with every event, kept or not
                    self.window.observe(d.max_time);
                    if self.window.too_late(d.max_time) {
                        self.window.counters.late_rows += rows;
                        add(&self.metrics.late_events, rows);
                        continue;
                    }
                    let split = self
                        .retention
                        .split(d.kind, &d.batch)
                        // a compiled predicate over the kind's own schema: a bug, not bad input
                        .map_err(DetectorError::Retention)?;
                    for (keeper, e) in &split.errors {
                        add(&self.metrics.rule_errors, 1);
                        let predicate = self.retention.keepers[*keeper].predicate.as_deref();
                        warn!(table = d.kind.as_str(), ?predicate, error = %e, "a keep predicate failed; the batch is kept whole");
                    }
                    add(&self.metrics.unneeded_events, rows - split.rows_kept as u64);
                    add(&self.metrics.events, split.rows_kept as u64);
                    for (keeper, batch) in split.kept {
                        self.window
                            .admit(keeper, batch, (d.min_time, d.max_time), m.origin.clone())
                            .map_err(DetectorError::Retention)?;
                    }
                }
                Polled::Corrupt { at, reason } => {
                    warn!(%at, %reason, "corrupt spool record skipped");
                    add(&self.metrics.corrupt_records, 1);
                }
                Polled::Skipped { from, to } => {
                    warn!(%from, %to, "spool segments deleted before they were read");
                    add(&self.metrics.skipped_segments, 1);
                }
            }
        }
        Ok(n)
    }

    /// Run the rules over the window, store and publish what they found,
    /// then commit the source.
    pub fn evaluate(&mut self) -> Result<(), DetectorError> {
        let started = Instant::now();
        self.last_eval = started;
        self.fresh = false;
        self.window.evict();
        let wall = crate::wall_ms();
        if let Some(now) = self.window.now() {
            for s in &mut self.rules {
                let gens: Vec<u64> = s
                    .inputs
                    .iter()
                    .map(|(_, keeper)| self.window.generation(*keeper))
                    .collect();
                if !s.uses_now && gens == s.seen {
                    continue;
                }
                s.seen = gens;
                let since = self.window.since(s.rule.lookback.as_millis() as i64);
                let tables = s
                    .inputs
                    .iter()
                    .map(|(kind, keeper)| (*kind, self.window.batches(*keeper, since)))
                    .collect();
                add(&self.metrics.evaluations, 1);
                match self.engine.run_prepared(&s.prepared, &s.rule, tables, now) {
                    Ok(mut findings) => {
                        s.last_error = None;
                        add(&self.metrics.findings, findings.len() as u64);
                        findings.sort_by(|a, b| {
                            (a.time_ms, &a.group_key).cmp(&(b.time_ms, &b.group_key))
                        });
                        for f in &findings {
                            self.suppressor.offer(&s.rule, f, wall);
                        }
                    }
                    Err(e) => {
                        add(&self.metrics.rule_errors, 1);
                        // a broken rule never stops the others; say so once per distinct error
                        if s.last_error.as_deref() != Some(&e) {
                            error!(rule = %s.rule.id, file = %s.rule.file.display(), error = %e, "rule failed");
                            s.last_error = Some(e);
                        }
                    }
                }
            }
        }
        let changed = self.suppressor.take_changed(wall);
        if !changed.is_empty() {
            self.store.write(&changed, wall)?;
            add(&self.metrics.alerts_written, changed.len() as u64);
            for a in &changed {
                (self.on_alert)(a);
            }
            if self.publisher.is_some() {
                self.unpublished.extend(changed);
            }
        }
        if let Some(p) = &self.publisher {
            if !self.unpublished.is_empty() {
                match p.publish(&self.unpublished) {
                    Ok(()) => {
                        add(
                            &self.metrics.alerts_published,
                            self.unpublished.len() as u64,
                        );
                        self.unpublished.clear();
                    }
                    Err(e) => {
                        // not committed: a restart would replay and publish them
                        add(&self.metrics.publish_errors, 1);
                        warn!(error = %e, pending = self.unpublished.len(), "alerts not published; will retry");
                        self.finish_metrics(started);
                        return Ok(());
                    }
                }
            }
        }
        self.source.commit(&self.window.oldest_origins())?;
        add(&self.metrics.commits, 1);
        set(
            &self.metrics.evaluated_messages,
            crate::metrics::get(&self.metrics.messages),
        );
        if let Some(min) = self.window.min_time() {
            let max_suppress = self
                .rules
                .iter()
                .map(|s| s.rule.suppress.as_millis() as i64)
                .max()
                .unwrap_or(0);
            let rules = &self.rules;
            self.suppressor.prune(min - max_suppress, |id| {
                rules
                    .iter()
                    .find(|s| s.rule.id == id)
                    .map_or(0, |s| s.rule.suppress.as_millis() as i64)
            });
        }
        self.finish_metrics(started);
        Ok(())
    }

    fn finish_metrics(&mut self, started: Instant) {
        self.last_eval_took = started.elapsed();
        let m = &self.metrics;
        add(&m.evaluation_ns, started.elapsed().as_nanos() as u64);
        set(&m.window_events, self.window.rows() as u64);
        set(&m.window_bytes, self.window.bytes() as u64);
        set(&m.window_evicted_events, self.window.counters.evicted_rows);
        set(
            &m.window_overflow_events,
            self.window.counters.overflow_rows,
        );
        debug!(
            rows = self.window.rows(),
            bytes = self.window.bytes(),
            took_ms = started.elapsed().as_millis() as u64,
            "evaluated"
        );
    }

    /// Rules enabled.
    pub fn rule_count(&self) -> usize {
        self.rules.len()
    }

    pub fn window(&self) -> &Window {
        &self.window
    }
}
