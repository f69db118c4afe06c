//! A rule's embedded examples as events: each example event is the
//! collector's JSON form (schema/README.md) with everything but what matters
//! to the rule left out. Missing fields take defaults: `time` is
//! [`EXAMPLE_EPOCH_MS`] plus `t` seconds, `host_id` is `example-host`, the
//! process is pid 1000 running `/usr/bin/true`, and a kind's section
//! (`file`, `network`, `collector`, `quantum_job`) starts from its empty
//! value, so an example names only the fields it is about.

use std::collections::BTreeMap;

use arrow_array::RecordBatch;
use serde_json::Value;
use vigil_schema::arrow::EventBatchBuilder;
use vigil_schema::{ocsf, Event, EventKind, Process};

/// The example events' time origin: 2026-01-01T00:00:00Z.
pub const EXAMPLE_EPOCH_MS: i64 = 1_767_225_600_000;
pub const EXAMPLE_HOST: &str = "example-host";

/// Build one event from its partial JSON, with `time` = `epoch_ms` + `t` s.
pub fn event(partial: &Value, epoch_ms: i64, host_id: &str) -> Result<Event, String> {
    let obj = partial
        .as_object()
        .ok_or("an example event must be an object")?;
    let kind_name = obj
        .get("kind")
        .and_then(Value::as_str)
        .ok_or("an example event needs \"kind\"")?;
    let kind =
        EventKind::from_name(kind_name).ok_or_else(|| format!("unknown kind {kind_name:?}"))?;
    let t = obj
        .get("t")
        .map(|v| v.as_f64().ok_or("\"t\" must be a number of seconds"));
    let t = t.transpose()?.unwrap_or(0.0);
    let activity = obj
        .get("activity_name")
        .and_then(Value::as_str)
        .unwrap_or(default_activity(kind));
    let (class_uid, activity_id) = ocsf_ids(kind, activity);
    let time = epoch_ms + (t * 1000.0).round() as i64;
    let mut ev = Event::new(
        kind,
        class_uid,
        activity_id,
        activity,
        time,
        time as u64 * 1_000_000,
        host_id,
        "example",
    );
    if kind != EventKind::Collector && kind != EventKind::QuantumJob || obj.contains_key("process")
    {
        ev.process = Some(Process {
            pid: 1000,
            tid: 1000,
            uid_exec: "example-exec".into(),
            comm: "true".into(),
            exe: "/usr/bin/true".into(),
            user: "user".into(),
            user_id: 1000,
            group_id: 1000,
            source: "exec".into(),
            ..Process::default()
        });
    }
    match kind {
        EventKind::File => ev.file = Some(Default::default()),
        EventKind::Network => ev.network = Some(Default::default()),
        EventKind::Collector if activity == "loss" => ev.loss = Some(Default::default()),
        EventKind::Collector => ev.collector = Some(Default::default()),
        EventKind::QuantumJob => ev.quantum_job = Some(Default::default()),
        EventKind::Process => {}
    }
    let mut merged = serde_json::to_value(&ev).map_err(|e| e.to_string())?;
    let mut overlay = partial.clone();
    if let Some(o) = overlay.as_object_mut() {
        o.remove("t");
        // `cmd_line` given alone also sets `args`, as the collector would
        if let Some(p) = o.get_mut("process").and_then(Value::as_object_mut) {
            if let (Some(cmd), false) = (
                p.get("cmd_line").and_then(Value::as_str),
                p.contains_key("args"),
            ) {
                let args: Vec<Value> = cmd
                    .split_whitespace()
                    .map(|a| Value::String(a.into()))
                    .collect();
                p.insert("args".into(), Value::Array(args));
            }
        }
    }
    merge(&mut merged, overlay);
    serde_json::from_value(merged)
        .map_err(|e| format!("example event does not fit the event model: {e}"))
}

/// An example's events as one batch per kind, in the table form (with
/// `batch_seq` = 1).
pub fn batches(
    events: &[Value],
    epoch_ms: i64,
    host_id: &str,
) -> Result<Vec<(EventKind, RecordBatch)>, String> {
    let mut builders: BTreeMap<EventKind, EventBatchBuilder> = BTreeMap::new();
    for (i, partial) in events.iter().enumerate() {
        let ev = event(partial, epoch_ms, host_id).map_err(|e| format!("event {}: {e}", i + 1))?;
        builders
            .entry(ev.kind)
            .or_insert_with(|| EventBatchBuilder::new(ev.kind))
            .append(&ev, None);
    }
    builders
        .into_iter()
        .map(|(kind, mut b)| Ok((kind, b.finish())))
        .collect()
}

fn merge(base: &mut Value, overlay: Value) {
    match (base, overlay) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(slot) if slot.is_object() && v.is_object() => merge(slot, v),
                    _ => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (slot, v) => *slot = v,
    }
}

fn default_activity(kind: EventKind) -> &'static str {
    match kind {
        EventKind::Process => "launch",
        EventKind::File => "open",
        EventKind::Network => "connect",
        EventKind::Collector => "heartbeat",
        EventKind::QuantumJob => "submit",
    }
}

/// OCSF class and activity ids as the collector sets them.
fn ocsf_ids(kind: EventKind, activity: &str) -> (u32, u32) {
    match kind {
        EventKind::Process => (
            ocsf::CLASS_PROCESS_ACTIVITY,
            match activity {
                "launch" => ocsf::process::LAUNCH,
                "terminate" => ocsf::process::TERMINATE,
                _ => ocsf::OTHER,
            },
        ),
        EventKind::File => (
            ocsf::CLASS_FILE_SYSTEM_ACTIVITY,
            match activity {
                "open" => ocsf::file::OPEN,
                "delete" => ocsf::file::DELETE,
                "rename" => ocsf::file::RENAME,
                _ => ocsf::OTHER,
            },
        ),
        EventKind::Network => (
            ocsf::CLASS_NETWORK_ACTIVITY,
            match activity {
                "connect" | "accept" | "send" => ocsf::network::OPEN,
                "close" => ocsf::network::CLOSE,
                "traffic" => ocsf::network::TRAFFIC,
                "listen" => ocsf::network::LISTEN,
                _ => ocsf::OTHER,
            },
        ),
        EventKind::Collector => (0, if activity == "loss" { 2 } else { 1 }),
        EventKind::QuantumJob => (6003, if activity == "status" { 2 } else { 1 }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn partial_events_take_defaults() {
        let ev = event(
            &json!({"kind": "file", "t": 5, "agent_id": "a", "file": {"path": "/x"}}),
            EXAMPLE_EPOCH_MS,
            EXAMPLE_HOST,
        )
        .unwrap();
        assert_eq!(ev.time, EXAMPLE_EPOCH_MS + 5000);
        assert_eq!(ev.activity_name, "open");
        assert_eq!(ev.activity_id, 14);
        assert_eq!(ev.file.unwrap().path, "/x");
        assert_eq!(ev.process.unwrap().pid, 1000);
        let ev = event(
            &json!({"kind": "process", "process": {"cmd_line": "tar czf x.tgz d"}}),
            0,
            "h",
        )
        .unwrap();
        assert_eq!(ev.process.unwrap().args, ["tar", "czf", "x.tgz", "d"]);
        assert!(event(&json!({"kind": "nope"}), 0, "h")
            .unwrap_err()
            .contains("unknown kind"));
        assert!(event(&json!({"kind": "file", "file": {"fd": "x"}}), 0, "h").is_err());
    }
}
