//! Alerts: what a rule's finding becomes once it has an id, has been merged
//! with its repeats, and is stored.
//!
//! An alert's id is a UUIDv5 of the rule id, the group key and the window
//! start: the same finding found again (the next evaluation, a replay after
//! a restart) has the same id and is not raised twice. An alert is stored
//! as versions: the first when raised (`count` 1), a new one each time
//! repeats merge into it (suppression); readers keep the highest `count`.

pub mod store;
pub mod suppress;

use std::sync::Arc;

use arrow_array::builder::{ListBuilder, StringBuilder};
use arrow_array::{ArrayRef, RecordBatch, StringArray, TimestampMillisecondArray, UInt64Array};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::rules::engine::Finding;
use crate::rules::model::Rule;

/// Namespace of alert ids (a fixed random UUID: ids are stable across versions).
const ALERT_NAMESPACE: Uuid = Uuid::from_u128(0x6d1f_1c2e_8c0b_4c39_9a5e_3f7d_52a1_b0c4);
/// Merged finding ids kept per alert (they make merging idempotent on replay).
pub const MAX_MERGED_IDS: usize = 1000;
/// Event references kept per alert.
pub const MAX_EVENT_REFS: usize = 100;

/// The id of a finding: rule, group key and window.
pub fn alert_id(rule_id: &str, group_key: &str, window_start_ms: i64) -> String {
    let name = format!("{rule_id}\0{group_key}\0{window_start_ms}");
    Uuid::new_v5(&ALERT_NAMESPACE, name.as_bytes()).to_string()
}

/// One version of an alert, as stored and published.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    pub id: String,
    /// Event time of the first finding, ms since the epoch.
    pub time: i64,
    /// Event time of the latest merged finding.
    pub last_time: i64,
    /// Wall-clock time this version was written.
    pub detected_at: i64,
    pub rule_id: String,
    pub rule_title: String,
    pub severity: String,
    pub host_id: String,
    pub agent_id: Option<String>,
    pub agent_session: Option<String>,
    pub group_key: String,
    pub window_start: i64,
    pub summary: String,
    pub attack: Vec<String>,
    pub tags: Vec<String>,
    /// Findings merged into this alert, itself included.
    pub count: u64,
    /// The rule's other output columns, as a JSON object.
    pub evidence: String,
    /// `host/kind/batch_seq/row` of the events behind the finding.
    pub event_refs: Vec<String>,
    /// Ids of the findings merged into this one (not itself).
    pub merged_ids: Vec<String>,
}

impl Alert {
    pub fn raise(rule: &Rule, finding: &Finding, detected_at: i64) -> Alert {
        let mut refs = finding.event_refs.clone();
        refs.truncate(MAX_EVENT_REFS);
        Alert {
            id: alert_id(&rule.id, &finding.group_key, finding.window_start_ms),
            time: finding.time_ms,
            last_time: finding.time_ms,
            detected_at,
            rule_id: rule.id.clone(),
            rule_title: rule.title.clone(),
            severity: rule.severity.as_str().into(),
            host_id: finding.host_id.clone(),
            agent_id: finding.agent_id.clone(),
            agent_session: finding.agent_session.clone(),
            group_key: finding.group_key.clone(),
            window_start: finding.window_start_ms,
            summary: finding.summary.clone(),
            attack: rule.attack.clone(),
            tags: rule.tags.clone(),
            count: 1,
            evidence: serde_json::Value::Object(finding.evidence.clone()).to_string(),
            event_refs: refs,
            merged_ids: Vec::new(),
        }
    }
}

/// The Arrow (and Parquet) schema of alerts.
pub fn schema() -> SchemaRef {
    let ts = || DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()));
    let list = || DataType::List(Arc::new(Field::new("item", DataType::Utf8, true)));
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Utf8, false),
        Field::new("time", ts(), false),
        Field::new("last_time", ts(), false),
        Field::new("detected_at", ts(), false),
        Field::new("rule_id", DataType::Utf8, false),
        Field::new("rule_title", DataType::Utf8, false),
        Field::new("severity", DataType::Utf8, false),
        Field::new("host_id", DataType::Utf8, false),
        Field::new("agent_id", DataType::Utf8, true),
        Field::new("agent_session", DataType::Utf8, true),
        Field::new("group_key", DataType::Utf8, false),
        Field::new("window_start", ts(), false),
        Field::new("summary", DataType::Utf8, false),
        Field::new("attack", list(), false),
        Field::new("tags", list(), false),
        Field::new("count", DataType::UInt64, false),
        Field::new("evidence", DataType::Utf8, false),
        Field::new("event_refs", list(), false),
        Field::new("merged_ids", list(), false),
    ]))
}

pub fn to_batch(alerts: &[Alert]) -> RecordBatch {
    let strs = |f: fn(&Alert) -> &str| -> ArrayRef {
        Arc::new(StringArray::from_iter_values(alerts.iter().map(f)))
    };
    let opt = |f: fn(&Alert) -> Option<&str>| -> ArrayRef {
        Arc::new(alerts.iter().map(f).collect::<StringArray>())
    };
    let ts = |f: fn(&Alert) -> i64| -> ArrayRef {
        Arc::new(
            TimestampMillisecondArray::from_iter_values(alerts.iter().map(f)).with_timezone("UTC"),
        )
    };
    let lists = |f: fn(&Alert) -> &Vec<String>| -> ArrayRef {
        let mut b = ListBuilder::new(StringBuilder::new());
        for a in alerts {
            for s in f(a) {
                b.values().append_value(s);
            }
            b.append(true);
        }
        Arc::new(b.finish())
    };
    RecordBatch::try_new(
        schema(),
        vec![
            strs(|a| &a.id),
            ts(|a| a.time),
            ts(|a| a.last_time),
            ts(|a| a.detected_at),
            strs(|a| &a.rule_id),
            strs(|a| &a.rule_title),
            strs(|a| &a.severity),
            strs(|a| &a.host_id),
            opt(|a| a.agent_id.as_deref()),
            opt(|a| a.agent_session.as_deref()),
            strs(|a| &a.group_key),
            ts(|a| a.window_start),
            strs(|a| &a.summary),
            lists(|a| &a.attack),
            lists(|a| &a.tags),
            Arc::new(UInt64Array::from_iter_values(
                alerts.iter().map(|a| a.count),
            )),
            strs(|a| &a.evidence),
            lists(|a| &a.event_refs),
            lists(|a| &a.merged_ids),
        ],
    )
    .expect("alert columns match the alert schema")
}

/// Alerts back from a batch of the alert schema.
pub fn from_batch(batch: &RecordBatch) -> Result<Vec<Alert>, String> {
    use arrow_array::{Array, ListArray};
    let col = |name: &str| {
        batch
            .column_by_name(name)
            .ok_or_else(|| format!("alert column {name} is missing"))
    };
    let s = |name: &str| -> Result<&StringArray, String> {
        col(name)?
            .as_any()
            .downcast_ref::<StringArray>()
            .ok_or_else(|| format!("alert column {name} is not Utf8"))
    };
    let t = |name: &str| -> Result<&TimestampMillisecondArray, String> {
        col(name)?
            .as_any()
            .downcast_ref::<TimestampMillisecondArray>()
            .ok_or_else(|| format!("alert column {name} is not a ms timestamp"))
    };
    let l = |name: &str| -> Result<&ListArray, String> {
        col(name)?
            .as_any()
            .downcast_ref::<ListArray>()
            .ok_or_else(|| format!("alert column {name} is not a list"))
    };
    let list_at = |a: &ListArray, i: usize| -> Vec<String> {
        let v = a.value(i);
        let v = v
            .as_any()
            .downcast_ref::<StringArray>()
            .expect("lists of Utf8");
        (0..v.len()).map(|j| v.value(j).to_string()).collect()
    };
    let opt = |a: &StringArray, i: usize| a.is_valid(i).then(|| a.value(i).to_string());
    let count = col("count")?
        .as_any()
        .downcast_ref::<UInt64Array>()
        .ok_or("alert column count is not UInt64")?;
    let (id, rule_id, title, sev, host, agent, session, key, summary, evidence) = (
        s("id")?,
        s("rule_id")?,
        s("rule_title")?,
        s("severity")?,
        s("host_id")?,
        s("agent_id")?,
        s("agent_session")?,
        s("group_key")?,
        s("summary")?,
        s("evidence")?,
    );
    let (time, last, detected, window) = (
        t("time")?,
        t("last_time")?,
        t("detected_at")?,
        t("window_start")?,
    );
    let (attack, tags, refs, merged) =
        (l("attack")?, l("tags")?, l("event_refs")?, l("merged_ids")?);
    Ok((0..batch.num_rows())
        .map(|i| Alert {
            id: id.value(i).into(),
            time: time.value(i),
            last_time: last.value(i),
            detected_at: detected.value(i),
            rule_id: rule_id.value(i).into(),
            rule_title: title.value(i).into(),
            severity: sev.value(i).into(),
            host_id: host.value(i).into(),
            agent_id: opt(agent, i),
            agent_session: opt(session, i),
            group_key: key.value(i).into(),
            window_start: window.value(i),
            summary: summary.value(i).into(),
            attack: list_at(attack, i),
            tags: list_at(tags, i),
            count: count.value(i),
            evidence: evidence.value(i).into(),
            event_refs: list_at(refs, i),
            merged_ids: list_at(merged, i),
        })
        .collect())
}

/// The latest version of each alert (highest count, then latest write), in
/// time order.
pub fn latest(versions: Vec<Alert>) -> Vec<Alert> {
    let mut by_id: std::collections::HashMap<String, Alert> = std::collections::HashMap::new();
    for a in versions {
        match by_id.get(&a.id) {
            Some(old) if (old.count, old.detected_at) >= (a.count, a.detected_at) => {}
            _ => {
                by_id.insert(a.id.clone(), a);
            }
        }
    }
    let mut out: Vec<Alert> = by_id.into_values().collect();
    out.sort_by(|a, b| (a.time, &a.id).cmp(&(b.time, &b.id)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_depend_on_rule_key_and_window_only() {
        let a = alert_id("r", "h/a", 60_000);
        assert_eq!(a, alert_id("r", "h/a", 60_000));
        assert_ne!(a, alert_id("r", "h/a", 120_000));
        assert_ne!(a, alert_id("r", "h/b", 60_000));
        assert_ne!(a, alert_id("s", "h/a", 60_000));
    }

    #[test]
    fn batches_round_trip() {
        let a = Alert {
            id: "x".into(),
            time: 1,
            last_time: 2,
            detected_at: 3,
            rule_id: "r".into(),
            rule_title: "R".into(),
            severity: "high".into(),
            host_id: "h".into(),
            agent_id: Some("a".into()),
            agent_session: None,
            group_key: "h/a".into(),
            window_start: 0,
            summary: "s".into(),
            attack: vec!["T1".into()],
            tags: vec![],
            count: 2,
            evidence: "{}".into(),
            event_refs: vec!["h/file/1/0".into()],
            merged_ids: vec!["y".into()],
        };
        let back = from_batch(&to_batch(std::slice::from_ref(&a))).unwrap();
        assert_eq!(back, vec![a]);
    }
}
