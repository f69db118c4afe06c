//! Arrow schemas of the event kinds, for the batch transport.
//!
//! Columns are flat (`process_exe`, `dst_port`) so detection SQL reads
//! naturally; each schema starts with the same envelope columns. Optional
//! sections become nullable columns. The JSON form carries the same data.

use std::sync::Arc;

use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};

use crate::{EventKind, SCHEMA_VERSION};

fn utf8(name: &str, nullable: bool) -> Field {
    Field::new(name, DataType::Utf8, nullable)
}

fn envelope() -> Vec<Field> {
    vec![
        Field::new(
            "time",
            DataType::Timestamp(TimeUnit::Millisecond, None),
            false,
        ),
        Field::new("ts_ns", DataType::UInt64, false),
        Field::new("class_uid", DataType::UInt32, false),
        Field::new("activity_id", DataType::UInt32, false),
        utf8("activity_name", false),
        utf8("host_id", false),
        utf8("hostname", false),
        utf8("agent_id", true),
        utf8("agent_session", true),
    ]
}

fn process_columns() -> Vec<Field> {
    vec![
        Field::new("process_pid", DataType::UInt32, true),
        Field::new("process_tid", DataType::UInt32, true),
        utf8("process_uid_exec", true),
        utf8("process_comm", true),
        utf8("process_exe", true),
        Field::new(
            "process_args",
            DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
            true,
        ),
        utf8("process_cmd_line", true),
        utf8("process_cwd", true),
        Field::new("process_user_id", DataType::UInt32, true),
        Field::new("process_group_id", DataType::UInt32, true),
        utf8("process_user", true),
        Field::new(
            "process_start_time",
            DataType::Timestamp(TimeUnit::Millisecond, None),
            true,
        ),
        Field::new("process_cgroup_id", DataType::UInt64, true),
        utf8("process_cgroup", true),
        Field::new("parent_pid", DataType::UInt32, true),
        utf8("parent_exe", true),
        utf8("parent_uid_exec", true),
        Field::new(
            "ancestor_exes",
            DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
            true,
        ),
    ]
}

/// The Arrow schema of one event kind, with the schema version in its metadata.
pub fn schema_for(kind: EventKind) -> SchemaRef {
    let mut fields = envelope();
    match kind {
        EventKind::Process => {
            fields.extend(process_columns());
            fields.push(Field::new("child_pid", DataType::UInt32, true));
            fields.push(Field::new("exit_code", DataType::Int32, true));
            fields.push(Field::new("exit_signal", DataType::Int32, true));
        }
        EventKind::File => {
            fields.extend(process_columns());
            fields.extend([
                utf8("file_path", false),
                utf8("file_new_path", true),
                Field::new("file_fd", DataType::Int32, true),
                Field::new("file_flags", DataType::UInt32, true),
                Field::new("result", DataType::Int64, true),
                utf8("error", true),
                Field::new("bytes_read", DataType::UInt64, true),
                Field::new("bytes_written", DataType::UInt64, true),
                utf8("close_reason", true),
            ]);
        }
        EventKind::Network => {
            fields.extend(process_columns());
            fields.extend([
                utf8("protocol", false),
                utf8("direction", false),
                utf8("src_ip", false),
                Field::new("src_port", DataType::UInt16, false),
                utf8("dst_ip", false),
                Field::new("dst_port", DataType::UInt16, false),
                utf8("flow_id", false),
                Field::new("result", DataType::Int64, true),
                utf8("error", true),
                Field::new("bytes_in", DataType::UInt64, true),
                Field::new("bytes_out", DataType::UInt64, true),
                utf8("close_reason", true),
            ]);
        }
        EventKind::Collector => {
            fields.extend([
                utf8("version", false),
                Field::new("uptime_secs", DataType::UInt64, false),
                Field::new("events_total", DataType::UInt64, false),
                Field::new("kernel_drops_total", DataType::UInt64, false),
                Field::new("queue_drops_total", DataType::UInt64, false),
                Field::new("decode_errors_total", DataType::UInt64, false),
            ]);
        }
    }
    let metadata = [
        ("vigil.kind".to_string(), kind.as_str().to_string()),
        (
            "vigil.schema_version".to_string(),
            SCHEMA_VERSION.to_string(),
        ),
    ]
    .into_iter()
    .collect();
    Arc::new(Schema::new_with_metadata(fields, metadata))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_envelope_and_unique_columns() {
        for kind in EventKind::ALL {
            let schema = schema_for(kind);
            assert_eq!(schema.field(0).name(), "time");
            assert!(schema.field_with_name("host_id").is_ok());
            let mut names: Vec<_> = schema.fields().iter().map(|f| f.name().clone()).collect();
            let n = names.len();
            names.sort();
            names.dedup();
            assert_eq!(names.len(), n, "duplicate column in {kind:?}");
            assert_eq!(
                schema.metadata()["vigil.schema_version"],
                SCHEMA_VERSION.to_string()
            );
        }
    }
}
