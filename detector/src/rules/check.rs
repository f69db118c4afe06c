//! `vigil rules check` and `vigil rules test`: validate a rule directory
//! (shape, SQL parse and plan against the event schemas, unique ids) and run
//! each rule's examples. Every problem names its file and line; a broken
//! rule never hides the others.

use std::collections::BTreeMap;
use std::path::Path;

use regex::Regex;

use super::engine::{table_batch, Engine, Tables};
use super::examples::{batches, EXAMPLE_EPOCH_MS, EXAMPLE_HOST};
use super::model::{load_dir, Rule, RuleError};
use crate::retain::{compile, filter};

/// The outcome of checking a directory: the rules that passed, and every error.
pub struct Checked {
    pub rules: Vec<Rule>,
    pub errors: Vec<RuleError>,
}

/// Load and plan every rule in `dir`.
pub fn check_dir(engine: &Engine, dir: &Path) -> Result<Checked, std::io::Error> {
    let mut rules = Vec::new();
    let mut errors = Vec::new();
    let ctx = engine
        .context(&Tables::default())
        .expect("empty tables of the built-in schemas register");
    let mut ids: BTreeMap<String, std::path::PathBuf> = BTreeMap::new();
    for loaded in load_dir(dir)? {
        let rule = match loaded {
            Ok(r) => r,
            Err(e) => {
                errors.extend(e);
                continue;
            }
        };
        if let Some(first) = ids.get(&rule.id) {
            errors.push(RuleError {
                file: rule.file.clone(),
                line: Some(1),
                problem: format!("id {:?} is already used by {}", rule.id, first.display()),
            });
            continue;
        }
        ids.insert(rule.id.clone(), rule.file.clone());
        if let Some((kind, e)) = rule
            .keep
            .iter()
            .find_map(|(kind, p)| compile(*kind, p).err().map(|e| (*kind, e)))
        {
            errors.push(RuleError {
                file: rule.file.clone(),
                line: rule.keep_line(kind),
                problem: concise(&e),
            });
            continue;
        }
        let sql = Engine::render(&rule, EXAMPLE_EPOCH_MS);
        if let Err(e) = engine.plan(&ctx, &sql) {
            errors.push(sql_error(&rule, &e));
            continue;
        }
        rules.push(rule);
    }
    Ok(Checked { rules, errors })
}

/// A DataFusion error placed in the rule file: parse errors carry a line
/// within the query, which becomes a line of the file.
pub fn sql_error(rule: &Rule, message: &str) -> RuleError {
    let at = Regex::new(r"Line: (\d+), Column: (\d+)").expect("valid regex");
    let named = Regex::new(r"No field named ([\w.]+)|table '(?:\w+\.)*(\w+)' not found")
        .expect("valid regex");
    // the list of every valid field is long; DataFusion's suggestion stays
    let message = message
        .split("Valid fields are")
        .next()
        .unwrap_or(message)
        .trim_end();
    let line = if let Some(c) = at.captures(message) {
        rule.line_in_file(c[1].parse().unwrap_or(1))
    } else if let Some(c) = named.captures(message) {
        // planning errors have no position: the first query line naming the culprit
        let name = c.get(1).or(c.get(2)).map_or("", |m| m.as_str());
        let name = name.trim_end_matches('.');
        let name = name.rsplit('.').next().unwrap_or(name);
        let word = Regex::new(&format!(r"\b{}\b", regex::escape(name))).expect("escaped");
        rule.query
            .lines()
            .position(|l| word.is_match(l))
            .map_or(rule.query_line, |i| rule.line_in_file(i + 1))
    } else {
        rule.query_line
    };
    RuleError {
        file: rule.file.clone(),
        line: Some(line),
        problem: format!("query: {message}"),
    }
}

/// An error on one line, without DataFusion's list of every valid field
/// (long; its "Did you mean" suggestion stays).
fn concise(message: &str) -> String {
    message
        .split("Valid fields are")
        .next()
        .unwrap_or(message)
        .trim_end()
        .replace('\n', " ")
}

/// What one example did.
#[derive(Debug)]
pub struct ExampleOutcome {
    pub name: String,
    pub expected_fire: bool,
    pub fired: usize,
    pub error: Option<String>,
}

impl ExampleOutcome {
    pub fn passed(&self) -> bool {
        self.error.is_none() && (self.fired > 0) == self.expected_fire
    }
}

/// Run each example of a rule on its own: its events (those its `keep`
/// retains) are the whole window, and the rule is evaluated at the time of
/// the last one.
pub fn run_examples(engine: &Engine, rule: &Rule) -> Vec<ExampleOutcome> {
    rule.examples
        .iter()
        .map(|ex| {
            let outcome = |fired, error| ExampleOutcome {
                name: ex.name.clone(),
                expected_fire: ex.fires,
                fired,
                error,
            };
            match example_findings(engine, rule, &ex.events) {
                Ok(n) => outcome(n, None),
                Err(e) => outcome(0, Some(e)),
            }
        })
        .collect()
}

fn example_findings(
    engine: &Engine,
    rule: &Rule,
    events: &[serde_json::Value],
) -> Result<usize, String> {
    let mut tables = Tables::default();
    let mut now = EXAMPLE_EPOCH_MS;
    for (kind, batch) in batches(events, EXAMPLE_EPOCH_MS, EXAMPLE_HOST)? {
        if let Some(max) = max_time(&batch) {
            now = now.max(max);
        }
        let mut batch = table_batch(kind, &batch, 1)?;
        // the rule's own `keep` applies, as in the window: a predicate that
        // drops rows the query needs makes the examples fail
        if let Some((_, p)) = rule.keep.iter().find(|(k, _)| *k == kind) {
            match filter(&compile(kind, p)?, batch)? {
                Some(kept) => batch = kept,
                None => continue,
            }
        }
        tables.by_kind.push((kind, vec![batch]));
    }
    let ctx = engine.context(&tables)?;
    Ok(engine.run(&ctx, &Engine::render(rule, now))?.len())
}

/// The latest `time` in an event batch (column 0).
pub fn max_time(batch: &arrow_array::RecordBatch) -> Option<i64> {
    let t = batch
        .column(0)
        .as_any()
        .downcast_ref::<arrow_array::TimestampMillisecondArray>()?;
    datafusion::arrow::compute::max(t)
}
