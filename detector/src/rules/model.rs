//! A detection rule as written in `rules/*.yaml`, and its loading.
//!
//! Loading checks the YAML shape only (required keys, types, known
//! severities, durations, parameter references); [`super::check`] plans the
//! SQL against the event schemas. Every problem carries the file and line.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use vigil_schema::EventKind;

/// How bad a finding is, in the order an analyst triages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

/// A rule parameter: a threshold or a list the query uses as `${name}`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Param {
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
    List(Vec<Param>),
}

impl Param {
    /// The parameter as a SQL literal (a list becomes `a, b, c` for `IN (…)`).
    pub fn to_sql(&self) -> String {
        match self {
            Param::Bool(b) => b.to_string(),
            Param::Int(i) => i.to_string(),
            Param::Float(f) => format!("{f:?}"),
            Param::Text(s) => format!("'{}'", s.replace('\'', "''")),
            Param::List(items) => items
                .iter()
                .map(Param::to_sql)
                .collect::<Vec<_>>()
                .join(", "),
        }
    }
}

/// One embedded example: events (partial collector JSON, see
/// [`super::examples`]) and whether the rule must fire on them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Example {
    pub name: String,
    pub fires: bool,
    pub events: Vec<serde_json::Value>,
}

/// The file form of a rule.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    id: String,
    title: String,
    description: String,
    severity: Severity,
    #[serde(default)]
    attack: Vec<String>,
    #[serde(default)]
    tags: Vec<String>,
    /// How far back the query looks, e.g. `60s`, `15m` (at most the window span).
    lookback: String,
    /// Repeats of the same finding within this period merge into one alert.
    #[serde(default = "default_suppress")]
    suppress: String,
    #[serde(default)]
    params: BTreeMap<String, Param>,
    query: String,
    /// Per table, the rows this rule can use at all (a SQL predicate): the
    /// window keeps a row only if some rule reading its table wants it.
    #[serde(default)]
    keep: BTreeMap<String, String>,
    #[serde(default)]
    examples: Vec<Example>,
    #[serde(default = "default_enabled")]
    enabled: bool,
}

fn default_suppress() -> String {
    "10m".into()
}

fn default_enabled() -> bool {
    true
}

/// A loaded rule: the file's content, durations parsed, with where it came from.
#[derive(Debug, Clone)]
pub struct Rule {
    pub id: String,
    pub title: String,
    pub description: String,
    pub severity: Severity,
    pub attack: Vec<String>,
    pub tags: Vec<String>,
    pub lookback: Duration,
    pub suppress: Duration,
    pub params: BTreeMap<String, Param>,
    pub query: String,
    /// Per kind, the predicate (parameters rendered) of rows this rule uses.
    pub keep: Vec<(EventKind, String)>,
    pub examples: Vec<Example>,
    pub enabled: bool,
    pub file: PathBuf,
    /// Line of the first line of the query's text in the file.
    pub query_line: usize,
}

/// A problem with one rule file, at a line when known.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleError {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub problem: String,
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}: {}", self.file.display(), self.problem),
            None => write!(f, "{}: {}", self.file.display(), self.problem),
        }
    }
}

/// Names the query may use besides the rule's own parameters; the engine
/// fills them in at each evaluation.
pub const BUILTIN_PARAMS: [&str; 2] = ["now", "lookback_start"];

/// Longest duration a rule may give: a year (and nothing that overflows
/// when turned into milliseconds).
const MAX_DURATION_MS: u64 = 366 * 86_400_000;

/// Parse a duration such as `500ms`, `30s`, `15m`, `2h`, `1d`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("duration {text:?} has no unit (ms, s, m, h, d)"))?;
    let (n, unit) = t.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("duration {text:?} does not start with a number"))?;
    let unit_ms: u64 = match unit {
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        other => {
            return Err(format!(
                "duration {text:?}: unknown unit {other:?} (ms, s, m, h, d)"
            ))
        }
    };
    match n.checked_mul(unit_ms) {
        Some(ms) if ms <= MAX_DURATION_MS => Ok(Duration::from_millis(ms)),
        _ => Err(format!("duration {text:?} is longer than a year (366d)")),
    }
}

/// Every `*.yaml`/`*.yml` file in `dir`, sorted, loaded one by one: a broken
/// file yields its errors and never stops the others.
pub fn load_dir(dir: &Path) -> Result<Vec<Result<Rule, Vec<RuleError>>>, std::io::Error> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
        .collect();
    files.sort();
    Ok(files.iter().map(|f| load_file(f)).collect())
}

pub fn load_file(file: &Path) -> Result<Rule, Vec<RuleError>> {
    let err = |line: Option<usize>, problem: String| RuleError {
        file: file.to_path_buf(),
        line,
        problem,
    };
    let text =
        std::fs::read_to_string(file).map_err(|e| vec![err(None, format!("cannot read: {e}"))])?;
    parse(&text, file)
}

/// Parse a rule from its text (`file` names it in errors).
pub fn parse(text: &str, file: &Path) -> Result<Rule, Vec<RuleError>> {
    let err = |line: Option<usize>, problem: String| RuleError {
        file: file.to_path_buf(),
        line,
        problem,
    };
    let raw: RuleFile = serde_yaml_ng::from_str(text).map_err(|e| {
        let line = e.location().map(|l| l.line());
        // serde_yaml_ng appends " at line L column C": the prefix says it already
        let msg = e.to_string();
        let msg = msg.split(" at line ").next().unwrap_or(&msg).to_string();
        vec![err(line, msg)]
    })?;
    let line_of = |key: &str| key_line(text, key);
    let mut errors = Vec::new();

    if raw.id.is_empty()
        || !raw
            .id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        errors.push(err(
            line_of("id"),
            format!(
                "id {:?} must be non-empty and use only letters, digits, '.', '_', '-'",
                raw.id
            ),
        ));
    }
    let mut duration = |key: &str, text: &str| match parse_duration(text) {
        Ok(d) if d.is_zero() => {
            errors.push(err(line_of(key), format!("{key} must be more than zero")));
            Duration::from_secs(1)
        }
        Ok(d) => d,
        Err(e) => {
            errors.push(err(line_of(key), format!("{key}: {e}")));
            Duration::from_secs(1)
        }
    };
    let lookback = duration("lookback", &raw.lookback);
    let suppress = duration("suppress", &raw.suppress);
    for t in &raw.attack {
        let ok = t.len() >= 5
            && t.starts_with('T')
            && t[1..]
                .split('.')
                .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()));
        if !ok {
            errors.push(err(
                line_of("attack"),
                format!(
                    "attack id {t:?} is not a MITRE ATT&CK technique id such as T1552 or T1552.001"
                ),
            ));
        }
    }
    for name in raw.params.keys() {
        if BUILTIN_PARAMS.contains(&name.as_str()) {
            errors.push(err(
                line_of("params"),
                format!("parameter {name:?} is reserved: the engine sets it"),
            ));
        }
    }
    let query_line = line_of("query")
        .map(|l| query_first_line(text, l))
        .unwrap_or(1);
    for (offset, name) in placeholders(&raw.query) {
        if !raw.params.contains_key(&name) && !BUILTIN_PARAMS.contains(&name.as_str()) {
            let line = query_line + raw.query[..offset].matches('\n').count();
            errors.push(err(
                Some(line),
                format!(
                    "query uses ${{{name}}}, which is neither in params ({}) nor built in ({})",
                    raw.params.keys().cloned().collect::<Vec<_>>().join(", "),
                    BUILTIN_PARAMS.join(", ")
                ),
            ));
        }
    }
    let mut keep = Vec::new();
    for (table, predicate) in &raw.keep {
        let Some(kind) = EventKind::from_name(table) else {
            errors.push(err(
                line_of("keep"),
                format!(
                    "keep: {table:?} is not a table (process, file, network, collector, quantum_job)"
                ),
            ));
            continue;
        };
        for (_, name) in placeholders(predicate) {
            if !raw.params.contains_key(&name) {
                errors.push(err(
                    line_of("keep"),
                    format!("keep.{table} uses ${{{name}}}, which is not in params (built-ins are for the query only)"),
                ));
            }
        }
        keep.push((kind, predicate.clone()));
    }
    if raw.examples.is_empty() {
        errors.push(err(
            line_of("examples").or(line_of("id")),
            "no examples: a rule needs at least one event set that fires and one that does not"
                .into(),
        ));
    } else {
        if !raw.examples.iter().any(|e| e.fires) {
            errors.push(err(
                line_of("examples"),
                "no example with fires: true".into(),
            ));
        }
        if !raw.examples.iter().any(|e| !e.fires) {
            errors.push(err(
                line_of("examples"),
                "no example with fires: false".into(),
            ));
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let mut rule = Rule {
        id: raw.id,
        title: raw.title,
        description: raw.description,
        severity: raw.severity,
        attack: raw.attack,
        tags: raw.tags,
        lookback,
        suppress,
        params: raw.params,
        query: raw.query,
        keep: Vec::new(),
        examples: raw.examples,
        enabled: raw.enabled,
        file: file.to_path_buf(),
        query_line,
    };
    rule.keep = keep
        .into_iter()
        .map(|(kind, p)| (kind, rule.render_text(&p, &[])))
        .collect();
    Ok(rule)
}

impl Rule {
    /// The query with `${name}` replaced by parameter literals, and the
    /// built-ins by `builtins`.
    pub fn render(&self, builtins: &[(&str, String)]) -> String {
        self.render_text(&self.query, builtins)
    }

    /// Any text of the rule with its `${name}` placeholders filled in.
    fn render_text(&self, text: &str, builtins: &[(&str, String)]) -> String {
        let mut out = String::with_capacity(text.len() + 64);
        let mut rest = text;
        while let Some(start) = rest.find("${") {
            let Some(len) = rest[start..].find('}') else {
                break;
            };
            let name = &rest[start + 2..start + len];
            out.push_str(&rest[..start]);
            if let Some(p) = self.params.get(name) {
                out.push_str(&p.to_sql());
            } else if let Some((_, v)) = builtins.iter().find(|(n, _)| *n == name) {
                out.push_str(v);
            } else {
                out.push_str(&rest[start..start + len + 1]);
            }
            rest = &rest[start + len + 1..];
        }
        out.push_str(rest);
        out
    }

    /// The tables the query reads (by name, as a word of the query).
    pub fn reads(&self) -> Vec<EventKind> {
        let mut reads: Vec<EventKind> = EventKind::ALL
            .into_iter()
            .filter(|k| {
                let name = k.as_str();
                self.query.match_indices(name).any(|(i, _)| {
                    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
                    let before = self.query[..i].chars().next_back().is_none_or(|c| !word(c));
                    let after = self.query[i + name.len()..]
                        .chars()
                        .next()
                        .is_none_or(|c| !word(c));
                    before && after
                })
            })
            .collect();
        reads.sort();
        reads
    }

    /// The line of a table's predicate under `keep`, for errors in it.
    pub fn keep_line(&self, kind: EventKind) -> Option<usize> {
        let text = std::fs::read_to_string(&self.file).ok()?;
        let keep = key_line(&text, "keep")?;
        let entry = format!("{}:", kind.as_str());
        let below = text
            .lines()
            .skip(keep)
            .take_while(|l| l.starts_with(' '))
            .position(|l| l.trim_start().starts_with(&entry));
        Some(below.map_or(keep, |i| keep + i + 1))
    }

    /// The file line of a line within the query text (1-based).
    pub fn line_in_file(&self, query_line: usize) -> usize {
        self.query_line + query_line.saturating_sub(1)
    }
}

/// `${name}` occurrences in a query: byte offset and name.
fn placeholders(query: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(i) = query[from..].find("${") {
        let start = from + i;
        match query[start..].find('}') {
            Some(len) => {
                found.push((start, query[start + 2..start + len].to_string()));
                from = start + len + 1;
            }
            None => {
                found.push((start, query[start + 2..].to_string()));
                break;
            }
        }
    }
    found
}

/// The 1-based line of a top-level `key:` in the YAML text.
fn key_line(text: &str, key: &str) -> Option<usize> {
    text.lines()
        .position(|l| l.strip_prefix(key).is_some_and(|r| r.starts_with(':')))
        .map(|i| i + 1)
}

/// The first line of a query's text: the line after `query: |`, or the
/// `query:` line itself for an inline string.
fn query_first_line(text: &str, key_line: usize) -> usize {
    let line = text.lines().nth(key_line - 1).unwrap_or("");
    let value = line.split_once(':').map(|(_, v)| v.trim()).unwrap_or("");
    if value.starts_with('|') || value.starts_with('>') || value.is_empty() {
        key_line + 1
    } else {
        key_line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "id: t.one
title: T
description: D
severity: high
attack: [T1552.001]
lookback: 1m
params:
  paths: ['/a', \"/b'c\"]
  n: 3
query: |
  SELECT host_id, time, 'x' AS summary
  FROM file WHERE file_path IN (${paths}) AND ${n} > 1
examples:
  - name: yes
    fires: true
    events: []
  - name: no
    fires: false
    events: []
";

    #[test]
    fn parses_and_renders_parameters_as_sql_literals() {
        let r = parse(GOOD, Path::new("g.yaml")).unwrap();
        assert_eq!(r.lookback, Duration::from_secs(60));
        assert_eq!(r.suppress, Duration::from_secs(600));
        assert_eq!(r.query_line, 11);
        let q = r.render(&[]);
        assert!(q.contains("IN ('/a', '/b''c') AND 3 > 1"), "{q}");
    }

    #[test]
    fn errors_name_the_line_and_problem() {
        let bad = GOOD
            .replace("severity: high", "severity: urgent")
            .replace("${n}", "${m}");
        let e = parse(&bad, Path::new("b.yaml")).unwrap_err();
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].line, Some(4));
        assert!(
            e[0].problem.contains("unknown variant `urgent`"),
            "{}",
            e[0]
        );

        let bad = GOOD
            .replace("${n}", "${m}")
            .replace("lookback: 1m", "lookback: 1y");
        let e = parse(&bad, Path::new("b.yaml")).unwrap_err();
        let text: Vec<String> = e.iter().map(ToString::to_string).collect();
        assert_eq!(e.len(), 2, "{text:?}");
        assert!(text[0].starts_with("b.yaml:6: lookback"), "{text:?}");
        assert!(
            text[1].starts_with("b.yaml:12: query uses ${m}"),
            "{text:?}"
        );
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("m").is_err());
        // found by fuzzing (rule_yaml): the product overflowed u64
        let e = parse_duration("0000000000000009632337040368467960h").unwrap_err();
        assert!(e.contains("longer than a year"), "{e}");
        assert!(parse_duration("367d").is_err());
        assert_eq!(
            parse_duration("366d").unwrap(),
            Duration::from_secs(366 * 86_400)
        );
    }
}
