//! Arrow schemas of the event kinds, and the encoder and decoder between
//! [`Event`]s and Arrow record batches.
//!
//! Columns are flat (`process_exe`, `dst_port`) so detection SQL reads
//! naturally; each schema starts with the same envelope columns. Optional
//! sections become nullable columns, lists stay lists (`process_args`,
//! `ancestors`). The mapping is lossless: decoding a batch gives back the
//! events that were encoded, field for field (tested below), so the JSON
//! form and the Arrow form carry the same data.

use std::sync::Arc;

use arrow_array::builder::{
    ArrayBuilder, BooleanBuilder, Float64Builder, Int32Builder, Int64Builder, ListBuilder,
    StringBuilder, StructBuilder, TimestampMillisecondBuilder, UInt16Builder, UInt32Builder,
    UInt64Builder,
};
use arrow_array::cast::AsArray;
use arrow_array::types::{
    Float64Type, Int32Type, Int64Type, TimestampMillisecondType, UInt16Type, UInt32Type, UInt64Type,
};
use arrow_array::{
    Array, ArrayRef, BooleanArray, DictionaryArray, ListArray, RecordBatch, StringArray,
};
use arrow_schema::{ArrowError, DataType, Field, Fields, Schema, SchemaRef, TimeUnit};

use crate::{
    CollectorStats, Endpoint, Event, EventKind, ExitStatus, FileActivity, LossReport,
    NetworkActivity, Process, ProcessContext, ProcessRef, QuantumJob, TransportStats,
    SCHEMA_VERSION,
};

/// Schema metadata keys. A transport adds `vigil.host_id` and `vigil.seq`
/// to the schema of each batch it sends.
pub const META_KIND: &str = "vigil.kind";
pub const META_SCHEMA_VERSION: &str = "vigil.schema_version";
pub const META_HOST_ID: &str = "vigil.host_id";
pub const META_SEQ: &str = "vigil.seq";

fn utf8(name: &str, nullable: bool) -> Field {
    Field::new(name, DataType::Utf8, nullable)
}
/// A string column stored as a dictionary (Int32 keys): the process context
/// and host columns, whose values repeat across a batch.
fn dict(name: &str, nullable: bool) -> Field {
    Field::new(name, dict_type(), nullable)
}
fn dict_type() -> DataType {
    DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8))
}
fn u16f(name: &str) -> Field {
    Field::new(name, DataType::UInt16, true)
}
fn u32f(name: &str, nullable: bool) -> Field {
    Field::new(name, DataType::UInt32, nullable)
}
fn u64f(name: &str, nullable: bool) -> Field {
    Field::new(name, DataType::UInt64, nullable)
}
fn i32f(name: &str) -> Field {
    Field::new(name, DataType::Int32, true)
}
fn i64f(name: &str) -> Field {
    Field::new(name, DataType::Int64, true)
}
fn f64f(name: &str) -> Field {
    Field::new(name, DataType::Float64, true)
}
fn millis(name: &str, nullable: bool) -> Field {
    Field::new(
        name,
        DataType::Timestamp(TimeUnit::Millisecond, None),
        nullable,
    )
}
fn string_list(name: &str) -> Field {
    Field::new(name, DataType::List(Arc::new(string_item())), true)
}
fn string_item() -> Field {
    Field::new("item", DataType::Utf8, true)
}
fn struct_list(name: &str, fields: Fields) -> Field {
    Field::new(name, DataType::List(Arc::new(struct_item(fields))), true)
}
fn struct_item(fields: Fields) -> Field {
    Field::new("item", DataType::Struct(fields), true)
}

fn ancestor_fields() -> Fields {
    Fields::from(vec![
        u32f("pid", false),
        utf8("exe", false),
        utf8("uid_exec", false),
    ])
}
fn drop_fields() -> Fields {
    Fields::from(vec![utf8("kind", false), u64f("count", false)])
}

fn envelope() -> Vec<Field> {
    vec![
        millis("time", false),
        u64f("ts_ns", false),
        u32f("class_uid", false),
        u32f("activity_id", false),
        utf8("activity_name", false),
        dict("host_id", false),
        dict("hostname", false),
        dict("agent_id", true),
        dict("agent_session", true),
    ]
}

/// The acting process; `process_pid` is null when an event has none.
fn process_columns() -> Vec<Field> {
    vec![
        u32f("process_pid", true),
        u32f("process_tid", true),
        dict("process_uid_exec", true),
        dict("process_comm", true),
        dict("process_exe", true),
        string_list("process_args"),
        dict("process_cmd_line", true),
        dict("process_cwd", true),
        u32f("process_user_id", true),
        u32f("process_group_id", true),
        dict("process_user", true),
        millis("process_start_time", true),
        u64f("process_cgroup_id", true),
        dict("process_cgroup", true),
        dict("process_source", true),
        Field::new("process_truncated", DataType::Boolean, true),
        u32f("parent_pid", true),
        dict("parent_exe", true),
        dict("parent_uid_exec", true),
        struct_list("ancestors", ancestor_fields()),
    ]
}

fn kind_columns(kind: EventKind) -> Vec<Field> {
    match kind {
        EventKind::Process => vec![
            u32f("child_pid", true),
            i32f("exit_code"),
            i32f("exit_signal"),
            u32f("exit_status", true),
        ],
        // `file_path` is null when a file event has no file section
        EventKind::File => vec![
            utf8("file_path", true),
            utf8("file_new_path", true),
            i32f("file_fd"),
            u32f("file_flags", true),
            utf8("file_flags_names", true),
            i64f("result"),
            utf8("error", true),
            u64f("bytes_read", true),
            u64f("bytes_written", true),
            u64f("read_calls", true),
            u64f("write_calls", true),
            utf8("close_reason", true),
        ],
        // `protocol` is null when a network event has no network section
        EventKind::Network => vec![
            utf8("protocol", true),
            utf8("ip_version", true),
            utf8("direction", true),
            utf8("src_ip", true),
            u16f("src_port"),
            utf8("dst_ip", true),
            u16f("dst_port"),
            i32f("net_fd"),
            utf8("flow_id", true),
            i64f("result"),
            utf8("error", true),
            u64f("bytes_in", true),
            u64f("bytes_out", true),
            u64f("packets_in", true),
            u64f("packets_out", true),
            utf8("close_reason", true),
        ],
        // `version` is null when the event carries no counters (loss events)
        EventKind::Collector => vec![
            utf8("version", true),
            u64f("uptime_secs", true),
            u64f("events_total", true),
            struct_list("kernel_drops", drop_fields()),
            u64f("kernel_drops_total", true),
            u64f("queue_drops_total", true),
            u64f("decode_errors_total", true),
            u64f("processes_tracked", true),
            u64f("batches_spooled", true),
            u64f("events_spooled", true),
            u64f("batches_shipped", true),
            u64f("events_shipped", true),
            u64f("spool_bytes", true),
            u64f("evicted_batches", true),
            u64f("evicted_events", true),
            u64f("corrupt_records", true),
            u64f("producer_queue", true),
            utf8("loss_kind", true),
            u64f("loss_first_seq", true),
            u64f("loss_last_seq", true),
            u64f("loss_batches", true),
            u64f("loss_events", true),
            utf8("loss_reason", true),
        ],
        // `provider` is null when the event has no job section
        EventKind::QuantumJob => vec![
            utf8("provider", true),
            utf8("route", true),
            utf8("endpoint", true),
            utf8("method", true),
            utf8("operation", true),
            utf8("decision", true),
            utf8("policy_limit", true),
            utf8("policy_reason", true),
            u16f("http_status"),
            u64f("latency_ms", true),
            utf8("backend", true),
            utf8("device_type", true),
            utf8("program", true),
            utf8("session_id", true),
            utf8("job_id", true),
            u64f("circuits", true),
            u32f("qubits", true),
            u64f("instructions", true),
            u64f("depth", true),
            u64f("two_qubit_gates", true),
            u64f("parameters", true),
            u64f("bindings", true),
            u64f("shots", true),
            u64f("executions", true),
            u64f("tags", true),
            u64f("tags_bytes", true),
            u64f("metadata_bytes", true),
            utf8("output_location", true),
            u64f("payload_bytes", true),
            string_list("circuit_hashes"),
            utf8("status", true),
            utf8("previous_status", true),
            f64f("usage_seconds"),
            utf8("parse_error", true),
        ],
    }
}

fn has_process(kind: EventKind) -> bool {
    kind != EventKind::Collector
}

/// The Arrow schema of one event kind, with the kind and schema version in
/// its metadata.
pub fn schema_for(kind: EventKind) -> SchemaRef {
    let mut fields = envelope();
    if has_process(kind) {
        fields.extend(process_columns());
    }
    fields.extend(kind_columns(kind));
    let metadata = [
        (META_KIND.to_string(), kind.as_str().to_string()),
        (META_SCHEMA_VERSION.to_string(), SCHEMA_VERSION.to_string()),
    ]
    .into_iter()
    .collect();
    Arc::new(Schema::new_with_metadata(fields, metadata))
}

/// Appends events of one kind and turns them into a [`RecordBatch`].
///
/// Every column has one builder; `finish` leaves the builder empty and
/// ready for the next batch.
pub struct EventBatchBuilder {
    kind: EventKind,
    schema: SchemaRef,
    rows: usize,
    /// Rough size of the strings appended, for flushing by size.
    bytes: usize,
    columns: Vec<Box<dyn ArrayBuilder>>,
    /// Shared contexts seen in this batch: address → index. The Arcs are
    /// kept until `finish` so an address cannot be reused meanwhile.
    contexts: std::collections::HashMap<usize, i32>,
    keep: Vec<Arc<ProcessContext>>,
    next_context: i32,
}

fn struct_list_builder(fields: Fields) -> ListBuilder<StructBuilder> {
    ListBuilder::new(StructBuilder::from_fields(fields.clone(), 0)).with_field(struct_item(fields))
}

/// A dictionary-encoded string column. Context columns get their key from
/// the batch (one per distinct process context, the same in every context
/// column), so a context's strings are stored once per batch however many
/// events share it; host columns reuse the previous row's value when equal.
#[derive(Debug, Default)]
struct DictStringBuilder {
    keys: Int32Builder,
    values: StringBuilder,
    last: Option<(String, i32)>,
}

impl DictStringBuilder {
    /// Row refers to context `index`; `is_new`: its value is appended now.
    fn append_shared(&mut self, index: i32, is_new: bool, value: Option<&str>) {
        if is_new {
            self.values.append_option(value);
        }
        self.keys.append_value(index);
    }

    fn append_repeated(&mut self, value: &str) {
        let key = match &self.last {
            Some((v, k)) if v == value => *k,
            _ => {
                let k = self.values.len() as i32;
                self.values.append_value(value);
                self.last = Some((value.to_string(), k));
                k
            }
        };
        self.keys.append_value(key);
    }
}

impl ArrayBuilder for DictStringBuilder {
    fn len(&self) -> usize {
        self.keys.len()
    }
    fn finish(&mut self) -> ArrayRef {
        self.last = None;
        let keys = self.keys.finish();
        let values = Arc::new(self.values.finish());
        Arc::new(
            DictionaryArray::<Int32Type>::try_new(keys, values).expect("keys index the values"),
        )
    }
    fn finish_cloned(&self) -> ArrayRef {
        let keys = self.keys.finish_cloned();
        let values = Arc::new(self.values.finish_cloned());
        Arc::new(
            DictionaryArray::<Int32Type>::try_new(keys, values).expect("keys index the values"),
        )
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }
    fn into_box_any(self: Box<Self>) -> Box<dyn std::any::Any> {
        self
    }
}

/// A list column of the process context (`process_args`, `ancestors`): each
/// distinct context's list is built once per batch and copied to its rows in
/// bulk at `finish`.
struct SharedListBuilder<B: ArrayBuilder> {
    /// One list per distinct context, in context-index order.
    values: ListBuilder<B>,
    /// Per row: its context index.
    keys: Int32Builder,
}

impl<B: ArrayBuilder> std::fmt::Debug for SharedListBuilder<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedListBuilder")
            .field("rows", &self.keys.len())
            .finish()
    }
}

impl<B: ArrayBuilder> ArrayBuilder for SharedListBuilder<B> {
    fn len(&self) -> usize {
        self.keys.len()
    }
    fn finish(&mut self) -> ArrayRef {
        let values = self.values.finish();
        let keys = self.keys.finish();
        arrow_select::take::take(&values, &keys, None).expect("keys index the contexts")
    }
    fn finish_cloned(&self) -> ArrayRef {
        let values = self.values.finish_cloned();
        let keys = self.keys.finish_cloned();
        arrow_select::take::take(&values, &keys, None).expect("keys index the contexts")
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }
    fn into_box_any(self: Box<Self>) -> Box<dyn std::any::Any> {
        self
    }
}

/// How much a column held in the last batch: the next one is allocated at
/// that size up front instead of growing (and copying) from nothing.
#[derive(Debug, Clone, Copy, Default)]
struct Capacity {
    rows: usize,
    bytes: usize,
}

impl Capacity {
    fn of(builder: &mut Box<dyn ArrayBuilder>) -> Capacity {
        let rows = builder.len();
        let any = builder.as_any_mut();
        if let Some(b) = any.downcast_mut::<StringBuilder>() {
            return Capacity {
                rows,
                bytes: b.values_slice().len(),
            };
        }
        Capacity { rows, bytes: 0 }
    }
}

fn builder_for(field: &Field, c: Capacity) -> Box<dyn ArrayBuilder> {
    let rows = c.rows;
    match field.data_type() {
        DataType::Utf8 => Box::new(StringBuilder::with_capacity(rows, c.bytes)),
        DataType::Dictionary(_, _) => Box::new(DictStringBuilder {
            keys: Int32Builder::with_capacity(rows),
            ..Default::default()
        }),
        DataType::UInt16 => Box::new(UInt16Builder::with_capacity(rows)),
        DataType::UInt32 => Box::new(UInt32Builder::with_capacity(rows)),
        DataType::UInt64 => Box::new(UInt64Builder::with_capacity(rows)),
        DataType::Int32 => Box::new(Int32Builder::with_capacity(rows)),
        DataType::Int64 => Box::new(Int64Builder::with_capacity(rows)),
        DataType::Float64 => Box::new(Float64Builder::with_capacity(rows)),
        DataType::Boolean => Box::new(BooleanBuilder::with_capacity(rows)),
        DataType::Timestamp(TimeUnit::Millisecond, None) => {
            Box::new(TimestampMillisecondBuilder::with_capacity(rows))
        }
        DataType::List(item) => match item.data_type() {
            // per-row strings, not part of a process context
            DataType::Utf8 if field.name() == "circuit_hashes" => {
                Box::new(ListBuilder::new(StringBuilder::new()).with_field(string_item()))
            }
            DataType::Utf8 => Box::new(SharedListBuilder {
                values: ListBuilder::new(StringBuilder::new()).with_field(string_item()),
                keys: Int32Builder::with_capacity(rows),
            }),
            // per-row counters, not part of a process context
            DataType::Struct(fields) if field.name() == "kernel_drops" => {
                Box::new(struct_list_builder(fields.clone()))
            }
            DataType::Struct(fields) => Box::new(SharedListBuilder {
                values: struct_list_builder(fields.clone()),
                keys: Int32Builder::with_capacity(rows),
            }),
            other => unreachable!("no builder for list of {other}"),
        },
        other => unreachable!("no builder for {other}"),
    }
}

/// Appends one row, column by column, in schema order.
struct Row<'a> {
    columns: std::slice::IterMut<'a, Box<dyn ArrayBuilder>>,
    bytes: usize,
}

impl Row<'_> {
    fn next<T: ArrayBuilder>(&mut self) -> &mut T {
        self.columns
            .next()
            .expect("row has as many values as the schema has columns")
            .as_any_mut()
            .downcast_mut::<T>()
            .expect("column builder matches the schema")
    }
    fn str(&mut self, v: Option<&str>) {
        self.bytes += v.map_or(0, str::len);
        self.next::<StringBuilder>().append_option(v);
    }
    /// A context column: the row's context is number `index` in this batch.
    fn shared(&mut self, ctx: (i32, bool), v: Option<&str>) {
        if ctx.1 {
            self.bytes += v.map_or(0, str::len);
        }
        self.next::<DictStringBuilder>()
            .append_shared(ctx.0, ctx.1, v);
    }
    fn repeated(&mut self, v: &str) {
        self.next::<DictStringBuilder>().append_repeated(v);
    }
    fn u16(&mut self, v: Option<u16>) {
        self.next::<UInt16Builder>().append_option(v);
    }
    fn u32(&mut self, v: Option<u32>) {
        self.next::<UInt32Builder>().append_option(v);
    }
    fn u64(&mut self, v: Option<u64>) {
        self.next::<UInt64Builder>().append_option(v);
    }
    fn i32(&mut self, v: Option<i32>) {
        self.next::<Int32Builder>().append_option(v);
    }
    fn i64(&mut self, v: Option<i64>) {
        self.next::<Int64Builder>().append_option(v);
    }
    fn bool(&mut self, v: Option<bool>) {
        self.next::<BooleanBuilder>().append_option(v);
    }
    fn f64(&mut self, v: Option<f64>) {
        self.next::<Float64Builder>().append_option(v);
    }
    /// A list of strings of this row alone (null when `None`).
    fn row_strings(&mut self, v: Option<&[String]>) {
        self.bytes += v.map_or(0, |items| items.iter().map(String::len).sum());
        let b = self.next::<ListBuilder<StringBuilder>>();
        match v {
            Some(items) => {
                for s in items {
                    b.values().append_value(s);
                }
                b.append(true);
            }
            None => b.append(false),
        }
    }
    fn millis(&mut self, v: Option<i64>) {
        self.next::<TimestampMillisecondBuilder>().append_option(v);
    }
    fn strings(&mut self, ctx: (i32, bool), v: Option<&[String]>) {
        let shared = self.next::<SharedListBuilder<StringBuilder>>();
        shared.keys.append_value(ctx.0);
        if !ctx.1 {
            return;
        }
        let b = &mut shared.values;
        match v {
            Some(items) => {
                for s in items {
                    b.values().append_value(s);
                }
                b.append(true);
            }
            None => b.append(false),
        }
        self.bytes += v.map_or(0, |items| items.iter().map(String::len).sum());
    }
    fn ancestors(&mut self, ctx: (i32, bool), v: Option<&[ProcessRef]>) {
        if ctx.1 {
            self.bytes += v.map_or(0, |items| {
                items
                    .iter()
                    .map(|a| a.exe.len() + a.uid_exec.len() + 4)
                    .sum()
            });
        }
        let shared = self.next::<SharedListBuilder<StructBuilder>>();
        shared.keys.append_value(ctx.0);
        if !ctx.1 {
            return;
        }
        let b = &mut shared.values;
        match v {
            Some(items) => {
                let s = b.values();
                for a in items {
                    s.field_builder::<UInt32Builder>(0)
                        .expect("pid")
                        .append_value(a.pid);
                    s.field_builder::<StringBuilder>(1)
                        .expect("exe")
                        .append_value(&a.exe);
                    s.field_builder::<StringBuilder>(2)
                        .expect("uid_exec")
                        .append_value(&a.uid_exec);
                    s.append(true);
                }
                b.append(true);
            }
            None => b.append(false),
        }
    }
    fn drops(&mut self, v: Option<&std::collections::BTreeMap<String, u64>>) {
        let b = self.next::<ListBuilder<StructBuilder>>();
        match v {
            Some(items) => {
                let s = b.values();
                for (kind, count) in items {
                    s.field_builder::<StringBuilder>(0)
                        .expect("kind")
                        .append_value(kind);
                    s.field_builder::<UInt64Builder>(1)
                        .expect("count")
                        .append_value(*count);
                    s.append(true);
                }
                b.append(true);
            }
            None => b.append(false),
        }
    }
}

impl EventBatchBuilder {
    pub fn new(kind: EventKind) -> Self {
        let schema = schema_for(kind);
        let columns = schema
            .fields()
            .iter()
            .map(|f| builder_for(f, Capacity::default()))
            .collect();
        Self {
            kind,
            schema,
            rows: 0,
            bytes: 0,
            columns,
            contexts: std::collections::HashMap::new(),
            keep: Vec::new(),
            next_context: 0,
        }
    }

    pub fn kind(&self) -> EventKind {
        self.kind
    }

    pub fn len(&self) -> usize {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Approximate bytes appended since the last `finish` (strings plus 8
    /// per fixed-width column), for flushing by size.
    pub fn approx_bytes(&self) -> usize {
        self.bytes + self.rows * self.columns.len() * 8
    }

    /// The row's context number in this batch, and whether it is new.
    fn context_index(&mut self, context: Option<&Arc<ProcessContext>>) -> (i32, bool) {
        let index = self.next_context;
        let Some(c) = context else {
            self.next_context += 1;
            return (index, true);
        };
        let addr = Arc::as_ptr(c) as usize;
        if let Some(i) = self.contexts.get(&addr) {
            return (*i, false);
        }
        self.contexts.insert(addr, index);
        self.keep.push(c.clone());
        self.next_context += 1;
        (index, true)
    }

    /// Append one event. Its process context comes from `context` when
    /// given (the collector shares one per process: stored once per batch),
    /// else from the event itself.
    ///
    /// Panics if the event's kind is not the builder's: a caller bug.
    pub fn append(&mut self, event: &Event, context: Option<&Arc<ProcessContext>>) {
        assert_eq!(event.kind, self.kind, "event appended to the wrong batch");
        let ctx = self.context_index(context);
        let context = context.map(|c| c.as_ref());
        let mut row = Row {
            columns: self.columns.iter_mut(),
            bytes: 0,
        };
        row.millis(Some(event.time));
        row.u64(Some(event.ts_ns));
        row.u32(Some(event.class_uid));
        row.u32(Some(event.activity_id));
        row.str(Some(&event.activity_name));
        row.repeated(&event.host_id);
        row.repeated(&event.hostname);
        let (agent_id, agent_session, process, parent, ancestors) = match context {
            Some(c) => (
                c.agent_id.as_deref(),
                c.agent_session.as_deref(),
                Some(&c.process),
                c.parent_process.as_ref(),
                c.ancestors.as_slice(),
            ),
            None => (
                event.agent_id.as_deref(),
                event.agent_session.as_deref(),
                event.process.as_ref(),
                event.parent_process.as_ref(),
                event.ancestors.as_slice(),
            ),
        };
        row.shared(ctx, agent_id);
        row.shared(ctx, agent_session);
        if has_process(self.kind) {
            append_process(&mut row, ctx, process, parent, ancestors);
        }
        match self.kind {
            EventKind::Process => {
                row.u32(event.child_pid);
                let exit = event.exit.as_ref();
                row.i32(exit.and_then(|e| e.code));
                row.i32(exit.and_then(|e| e.signal));
                row.u32(exit.map(|e| e.status));
            }
            EventKind::File => {
                let f = event.file.as_ref();
                row.str(f.map(|f| f.path.as_str()));
                row.str(f.and_then(|f| f.new_path.as_deref()));
                row.i32(f.and_then(|f| f.fd));
                row.u32(f.and_then(|f| f.flags));
                row.str(f.and_then(|f| f.flags_names.as_deref()));
                row.i64(f.and_then(|f| f.result));
                row.str(f.and_then(|f| f.error.as_deref()));
                row.u64(f.and_then(|f| f.bytes_read));
                row.u64(f.and_then(|f| f.bytes_written));
                row.u64(f.and_then(|f| f.read_calls));
                row.u64(f.and_then(|f| f.write_calls));
                row.str(f.and_then(|f| f.close_reason.as_deref()));
            }
            EventKind::Network => {
                let n = event.network.as_ref();
                row.str(n.map(|n| n.protocol.as_str()));
                row.str(n.map(|n| n.ip_version.as_str()));
                row.str(n.map(|n| n.direction.as_str()));
                row.str(n.map(|n| n.src_endpoint.ip.as_str()));
                row.u16(n.map(|n| n.src_endpoint.port));
                row.str(n.map(|n| n.dst_endpoint.ip.as_str()));
                row.u16(n.map(|n| n.dst_endpoint.port));
                row.i32(n.map(|n| n.fd));
                row.str(n.map(|n| n.flow_id.as_str()));
                row.i64(n.and_then(|n| n.result));
                row.str(n.and_then(|n| n.error.as_deref()));
                row.u64(n.and_then(|n| n.bytes_in));
                row.u64(n.and_then(|n| n.bytes_out));
                row.u64(n.and_then(|n| n.packets_in));
                row.u64(n.and_then(|n| n.packets_out));
                row.str(n.and_then(|n| n.close_reason.as_deref()));
            }
            EventKind::Collector => {
                let c = event.collector.as_ref();
                let t = c.map(|c| &c.transport);
                row.str(c.map(|c| c.version.as_str()));
                row.u64(c.map(|c| c.uptime_secs));
                row.u64(c.map(|c| c.events_total));
                row.drops(c.map(|c| &c.kernel_drops));
                row.u64(c.map(|c| c.kernel_drops_total));
                row.u64(c.map(|c| c.queue_drops_total));
                row.u64(c.map(|c| c.decode_errors_total));
                row.u64(c.map(|c| c.processes_tracked));
                row.u64(t.map(|t| t.batches_spooled));
                row.u64(t.map(|t| t.events_spooled));
                row.u64(t.map(|t| t.batches_shipped));
                row.u64(t.map(|t| t.events_shipped));
                row.u64(t.map(|t| t.spool_bytes));
                row.u64(t.map(|t| t.evicted_batches));
                row.u64(t.map(|t| t.evicted_events));
                row.u64(t.map(|t| t.corrupt_records));
                row.u64(t.map(|t| t.producer_queue));
                let l = event.loss.as_ref();
                row.str(l.map(|l| l.lost_kind.as_str()));
                row.u64(l.map(|l| l.first_seq));
                row.u64(l.map(|l| l.last_seq));
                row.u64(l.map(|l| l.batches));
                row.u64(l.map(|l| l.events));
                row.str(l.map(|l| l.reason.as_str()));
            }
            EventKind::QuantumJob => append_job(&mut row, event.quantum_job.as_deref()),
        }
        debug_assert!(row.columns.next().is_none(), "every column appended");
        self.bytes += row.bytes;
        self.rows += 1;
    }

    /// The rows appended so far as a batch; the builder starts over empty,
    /// with room for a batch like this one.
    pub fn finish(&mut self) -> RecordBatch {
        let arrays: Vec<ArrayRef> = self
            .columns
            .iter_mut()
            .zip(self.schema.fields().iter())
            .map(|(b, field)| {
                let capacity = Capacity::of(b);
                let array = b.finish();
                *b = builder_for(field, capacity);
                array
            })
            .collect();
        self.rows = 0;
        self.bytes = 0;
        self.contexts.clear();
        self.keep.clear();
        self.next_context = 0;
        RecordBatch::try_new(self.schema.clone(), arrays).expect("builders follow the schema")
    }
}

fn append_job(row: &mut Row<'_>, j: Option<&QuantumJob>) {
    let s = |f: fn(&QuantumJob) -> &str| j.map(f);
    let o = |f: fn(&QuantumJob) -> Option<&str>| j.and_then(f);
    let n = |f: fn(&QuantumJob) -> Option<u64>| j.and_then(f);
    row.str(s(|j| &j.provider));
    row.str(s(|j| &j.route));
    row.str(s(|j| &j.endpoint));
    row.str(s(|j| &j.method));
    row.str(s(|j| &j.operation));
    row.str(s(|j| &j.decision));
    row.str(o(|j| j.policy_limit.as_deref()));
    row.str(o(|j| j.policy_reason.as_deref()));
    row.u16(j.and_then(|j| j.http_status));
    row.u64(n(|j| j.latency_ms));
    row.str(o(|j| j.backend.as_deref()));
    row.str(o(|j| j.device_type.as_deref()));
    row.str(o(|j| j.program.as_deref()));
    row.str(o(|j| j.session_id.as_deref()));
    row.str(o(|j| j.job_id.as_deref()));
    row.u64(n(|j| j.circuits));
    row.u32(j.and_then(|j| j.qubits));
    row.u64(n(|j| j.instructions));
    row.u64(n(|j| j.depth));
    row.u64(n(|j| j.two_qubit_gates));
    row.u64(n(|j| j.parameters));
    row.u64(n(|j| j.bindings));
    row.u64(n(|j| j.shots));
    row.u64(n(|j| j.executions));
    row.u64(n(|j| j.tags));
    row.u64(n(|j| j.tags_bytes));
    row.u64(n(|j| j.metadata_bytes));
    row.str(o(|j| j.output_location.as_deref()));
    row.u64(j.map(|j| j.payload_bytes));
    row.row_strings(j.map(|j| j.circuit_hashes.as_slice()));
    row.str(o(|j| j.status.as_deref()));
    row.str(o(|j| j.previous_status.as_deref()));
    row.f64(j.and_then(|j| j.usage_seconds));
    row.str(o(|j| j.parse_error.as_deref()));
}

fn append_process(
    row: &mut Row<'_>,
    ctx: (i32, bool),
    p: Option<&Process>,
    parent: Option<&ProcessRef>,
    ancestors: &[ProcessRef],
) {
    row.u32(p.map(|p| p.pid));
    row.u32(p.map(|p| p.tid));
    row.shared(ctx, p.map(|p| p.uid_exec.as_str()));
    row.shared(ctx, p.map(|p| p.comm.as_str()));
    row.shared(ctx, p.map(|p| p.exe.as_str()));
    row.strings(ctx, p.map(|p| p.args.as_slice()));
    row.shared(ctx, p.map(|p| p.cmd_line.as_str()));
    row.shared(ctx, p.map(|p| p.cwd.as_str()));
    row.u32(p.map(|p| p.user_id));
    row.u32(p.map(|p| p.group_id));
    row.shared(ctx, p.map(|p| p.user.as_str()));
    row.millis(p.map(|p| p.start_time));
    row.u64(p.map(|p| p.cgroup_id));
    row.shared(ctx, p.map(|p| p.cgroup.as_str()));
    row.shared(ctx, p.map(|p| p.source.as_str()));
    row.bool(p.map(|p| p.truncated));
    row.u32(parent.map(|p| p.pid));
    row.shared(ctx, parent.map(|p| p.exe.as_str()));
    row.shared(ctx, parent.map(|p| p.uid_exec.as_str()));
    row.ancestors(ctx, (!ancestors.is_empty()).then_some(ancestors));
}

/// Why a batch could not be turned back into events.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("schema metadata has no {META_KIND}")]
    NoKind,
    #[error("unknown event kind {0:?}")]
    UnknownKind(String),
    #[error("unsupported schema version {found:?} (this build reads {SCHEMA_VERSION})")]
    Version { found: Option<String> },
    #[error("column {column}: {problem}")]
    Column {
        column: &'static str,
        problem: String,
    },
    #[error(transparent)]
    Arrow(#[from] ArrowError),
}

/// Read access to a batch's columns by name, with errors that name the column.
struct Columns<'a> {
    batch: &'a RecordBatch,
}

impl<'a> Columns<'a> {
    fn get(&self, column: &'static str) -> Result<&'a ArrayRef, DecodeError> {
        self.batch
            .column_by_name(column)
            .ok_or(DecodeError::Column {
                column,
                problem: "missing".into(),
            })
    }
    fn typed<T: Array + 'static>(&self, column: &'static str) -> Result<&'a T, DecodeError> {
        let array = self.get(column)?;
        array
            .as_any()
            .downcast_ref::<T>()
            .ok_or_else(|| DecodeError::Column {
                column,
                problem: format!("unexpected type {}", array.data_type()),
            })
    }
    fn str(&self, column: &'static str) -> Result<Str<'a>, DecodeError> {
        let array = self.get(column)?;
        if let Some(a) = array.as_any().downcast_ref::<StringArray>() {
            return Ok(Str::Plain(a));
        }
        if let Some(d) = array.as_any().downcast_ref::<DictionaryArray<Int32Type>>() {
            if let Some(values) = d.values().as_any().downcast_ref::<StringArray>() {
                return Ok(Str::Dict(d.keys(), values));
            }
        }
        Err(DecodeError::Column {
            column,
            problem: format!("unexpected type {}", array.data_type()),
        })
    }
    fn prim<T: arrow_array::ArrowPrimitiveType>(
        &self,
        column: &'static str,
    ) -> Result<Prim<'a, T>, DecodeError> {
        Ok(Prim(self.typed::<arrow_array::PrimitiveArray<T>>(column)?))
    }
    fn bool(&self, column: &'static str) -> Result<&'a BooleanArray, DecodeError> {
        self.typed::<BooleanArray>(column)
    }
    fn list(&self, column: &'static str) -> Result<&'a ListArray, DecodeError> {
        self.typed::<ListArray>(column)
    }
}

enum Str<'a> {
    Plain(&'a StringArray),
    Dict(&'a arrow_array::Int32Array, &'a StringArray),
}
impl Str<'_> {
    fn get(&self, i: usize) -> Option<String> {
        match self {
            Str::Plain(a) => a.is_valid(i).then(|| a.value(i).to_string()),
            Str::Dict(keys, values) => {
                if !keys.is_valid(i) {
                    return None;
                }
                let k = usize::try_from(keys.value(i)).ok()?;
                (k < values.len() && values.is_valid(k)).then(|| values.value(k).to_string())
            }
        }
    }
    fn or_empty(&self, i: usize) -> String {
        self.get(i).unwrap_or_default()
    }
}
struct Prim<'a, T: arrow_array::ArrowPrimitiveType>(&'a arrow_array::PrimitiveArray<T>);
impl<T: arrow_array::ArrowPrimitiveType> Prim<'_, T> {
    fn get(&self, i: usize) -> Option<T::Native> {
        self.0.is_valid(i).then(|| self.0.value(i))
    }
    fn or_default(&self, i: usize) -> T::Native {
        self.get(i).unwrap_or_default()
    }
}

/// The event kind a batch's schema says it holds, after checking its version.
pub fn batch_kind(schema: &Schema) -> Result<EventKind, DecodeError> {
    let meta = schema.metadata();
    let version = meta.get(META_SCHEMA_VERSION);
    if version.map(String::as_str) != Some(&SCHEMA_VERSION.to_string()) {
        return Err(DecodeError::Version {
            found: version.cloned(),
        });
    }
    let name = meta.get(META_KIND).ok_or(DecodeError::NoKind)?;
    EventKind::from_name(name).ok_or_else(|| DecodeError::UnknownKind(name.clone()))
}

/// The events a batch holds: the inverse of [`EventBatchBuilder`].
pub fn decode_batch(batch: &RecordBatch) -> Result<Vec<Event>, DecodeError> {
    let kind = batch_kind(&batch.schema())?;
    let c = Columns { batch };
    let time = c.prim::<TimestampMillisecondType>("time")?;
    let ts_ns = c.prim::<UInt64Type>("ts_ns")?;
    let class_uid = c.prim::<UInt32Type>("class_uid")?;
    let activity_id = c.prim::<UInt32Type>("activity_id")?;
    let activity_name = c.str("activity_name")?;
    let host_id = c.str("host_id")?;
    let hostname = c.str("hostname")?;
    let agent_id = c.str("agent_id")?;
    let agent_session = c.str("agent_session")?;
    let process = if has_process(kind) {
        Some(ProcessColumns::new(&c)?)
    } else {
        None
    };
    let body = BodyColumns::new(kind, &c)?;

    let mut events = Vec::with_capacity(batch.num_rows());
    for i in 0..batch.num_rows() {
        let mut ev = Event::new(
            kind,
            class_uid.or_default(i),
            activity_id.or_default(i),
            &activity_name.or_empty(i),
            time.or_default(i),
            ts_ns.or_default(i),
            &host_id.or_empty(i),
            &hostname.or_empty(i),
        );
        ev.agent_id = agent_id.get(i);
        ev.agent_session = agent_session.get(i);
        if let Some(p) = &process {
            p.fill(i, &mut ev);
        }
        body.fill(i, &mut ev);
        events.push(ev);
    }
    Ok(events)
}

struct ProcessColumns<'a> {
    pid: Prim<'a, UInt32Type>,
    tid: Prim<'a, UInt32Type>,
    uid_exec: Str<'a>,
    comm: Str<'a>,
    exe: Str<'a>,
    args: &'a ListArray,
    cmd_line: Str<'a>,
    cwd: Str<'a>,
    user_id: Prim<'a, UInt32Type>,
    group_id: Prim<'a, UInt32Type>,
    user: Str<'a>,
    start_time: Prim<'a, TimestampMillisecondType>,
    cgroup_id: Prim<'a, UInt64Type>,
    cgroup: Str<'a>,
    source: Str<'a>,
    truncated: &'a BooleanArray,
    parent_pid: Prim<'a, UInt32Type>,
    parent_exe: Str<'a>,
    parent_uid_exec: Str<'a>,
    ancestors: &'a ListArray,
}

impl<'a> ProcessColumns<'a> {
    fn new(c: &Columns<'a>) -> Result<Self, DecodeError> {
        Ok(Self {
            pid: c.prim("process_pid")?,
            tid: c.prim("process_tid")?,
            uid_exec: c.str("process_uid_exec")?,
            comm: c.str("process_comm")?,
            exe: c.str("process_exe")?,
            args: c.list("process_args")?,
            cmd_line: c.str("process_cmd_line")?,
            cwd: c.str("process_cwd")?,
            user_id: c.prim("process_user_id")?,
            group_id: c.prim("process_group_id")?,
            user: c.str("process_user")?,
            start_time: c.prim("process_start_time")?,
            cgroup_id: c.prim("process_cgroup_id")?,
            cgroup: c.str("process_cgroup")?,
            source: c.str("process_source")?,
            truncated: c.bool("process_truncated")?,
            parent_pid: c.prim("parent_pid")?,
            parent_exe: c.str("parent_exe")?,
            parent_uid_exec: c.str("parent_uid_exec")?,
            ancestors: c.list("ancestors")?,
        })
    }

    fn fill(&self, i: usize, ev: &mut Event) {
        if let Some(pid) = self.pid.get(i) {
            ev.process = Some(Process {
                pid,
                tid: self.tid.or_default(i),
                uid_exec: self.uid_exec.or_empty(i),
                comm: self.comm.or_empty(i),
                exe: self.exe.or_empty(i),
                args: strings_at(self.args, i),
                cmd_line: self.cmd_line.or_empty(i),
                cwd: self.cwd.or_empty(i),
                user_id: self.user_id.or_default(i),
                group_id: self.group_id.or_default(i),
                user: self.user.or_empty(i),
                start_time: self.start_time.or_default(i),
                cgroup_id: self.cgroup_id.or_default(i),
                cgroup: self.cgroup.or_empty(i),
                source: self.source.or_empty(i),
                truncated: self.truncated.is_valid(i) && self.truncated.value(i),
            });
        }
        if let Some(pid) = self.parent_pid.get(i) {
            ev.parent_process = Some(ProcessRef {
                pid,
                exe: self.parent_exe.or_empty(i),
                uid_exec: self.parent_uid_exec.or_empty(i),
            });
        }
        if self.ancestors.is_valid(i) {
            let entries = self.ancestors.value(i);
            let s = entries.as_struct();
            let pid = s.column(0).as_primitive::<UInt32Type>();
            let exe = s.column(1).as_string::<i32>();
            let uid = s.column(2).as_string::<i32>();
            ev.ancestors = (0..s.len())
                .map(|j| ProcessRef {
                    pid: pid.value(j),
                    exe: exe.value(j).to_string(),
                    uid_exec: uid.value(j).to_string(),
                })
                .collect();
        }
    }
}

fn strings_at(list: &ListArray, i: usize) -> Vec<String> {
    if !list.is_valid(i) {
        return Vec::new();
    }
    let values = list.value(i);
    let s = values.as_string::<i32>();
    (0..s.len()).map(|j| s.value(j).to_string()).collect()
}

enum BodyColumns<'a> {
    Process {
        child_pid: Prim<'a, UInt32Type>,
        code: Prim<'a, Int32Type>,
        signal: Prim<'a, Int32Type>,
        status: Prim<'a, UInt32Type>,
    },
    File {
        path: Str<'a>,
        new_path: Str<'a>,
        fd: Prim<'a, Int32Type>,
        flags: Prim<'a, UInt32Type>,
        flags_names: Str<'a>,
        result: Prim<'a, Int64Type>,
        error: Str<'a>,
        bytes_read: Prim<'a, UInt64Type>,
        bytes_written: Prim<'a, UInt64Type>,
        read_calls: Prim<'a, UInt64Type>,
        write_calls: Prim<'a, UInt64Type>,
        close_reason: Str<'a>,
    },
    Network(Box<NetworkColumns<'a>>),
    Collector(Box<CollectorColumns<'a>>),
    QuantumJob(Box<JobColumns<'a>>),
}

struct NetworkColumns<'a> {
    protocol: Str<'a>,
    ip_version: Str<'a>,
    direction: Str<'a>,
    src_ip: Str<'a>,
    src_port: Prim<'a, UInt16Type>,
    dst_ip: Str<'a>,
    dst_port: Prim<'a, UInt16Type>,
    fd: Prim<'a, Int32Type>,
    flow_id: Str<'a>,
    result: Prim<'a, Int64Type>,
    error: Str<'a>,
    bytes_in: Prim<'a, UInt64Type>,
    bytes_out: Prim<'a, UInt64Type>,
    packets_in: Prim<'a, UInt64Type>,
    packets_out: Prim<'a, UInt64Type>,
    close_reason: Str<'a>,
}

struct JobColumns<'a> {
    /// provider, route, endpoint, method, operation, decision, policy_limit,
    /// policy_reason, backend, device_type, program, session_id, job_id,
    /// output_location, status, previous_status, parse_error
    text: [Str<'a>; 17],
    http_status: Prim<'a, UInt16Type>,
    qubits: Prim<'a, UInt32Type>,
    /// latency_ms, circuits, instructions, depth, two_qubit_gates, parameters,
    /// bindings, shots, executions, tags, tags_bytes, metadata_bytes, payload_bytes
    counts: [Prim<'a, UInt64Type>; 13],
    circuit_hashes: &'a ListArray,
    usage_seconds: Prim<'a, Float64Type>,
}

const JOB_TEXT: [&str; 17] = [
    "provider",
    "route",
    "endpoint",
    "method",
    "operation",
    "decision",
    "policy_limit",
    "policy_reason",
    "backend",
    "device_type",
    "program",
    "session_id",
    "job_id",
    "output_location",
    "status",
    "previous_status",
    "parse_error",
];
const JOB_COUNTS: [&str; 13] = [
    "latency_ms",
    "circuits",
    "instructions",
    "depth",
    "two_qubit_gates",
    "parameters",
    "bindings",
    "shots",
    "executions",
    "tags",
    "tags_bytes",
    "metadata_bytes",
    "payload_bytes",
];

impl<'a> JobColumns<'a> {
    fn new(c: &Columns<'a>) -> Result<Self, DecodeError> {
        let mut text = Vec::with_capacity(JOB_TEXT.len());
        for name in JOB_TEXT {
            text.push(c.str(name)?);
        }
        let mut counts = Vec::with_capacity(JOB_COUNTS.len());
        for name in JOB_COUNTS {
            counts.push(c.prim(name)?);
        }
        Ok(Self {
            text: text.try_into().ok().expect("one per JOB_TEXT name"),
            http_status: c.prim("http_status")?,
            qubits: c.prim("qubits")?,
            counts: counts.try_into().ok().expect("one per JOB_COUNTS name"),
            circuit_hashes: c.list("circuit_hashes")?,
            usage_seconds: c.prim("usage_seconds")?,
        })
    }

    fn fill(&self, i: usize) -> Option<QuantumJob> {
        let t = |k: usize| self.text[k].get(i);
        let n = |k: usize| self.counts[k].get(i);
        Some(QuantumJob {
            provider: t(0)?,
            route: t(1).unwrap_or_default(),
            endpoint: t(2).unwrap_or_default(),
            method: t(3).unwrap_or_default(),
            operation: t(4).unwrap_or_default(),
            decision: t(5).unwrap_or_default(),
            policy_limit: t(6),
            policy_reason: t(7),
            http_status: self.http_status.get(i),
            latency_ms: n(0),
            backend: t(8),
            device_type: t(9),
            program: t(10),
            session_id: t(11),
            job_id: t(12),
            circuits: n(1),
            qubits: self.qubits.get(i),
            instructions: n(2),
            depth: n(3),
            two_qubit_gates: n(4),
            parameters: n(5),
            bindings: n(6),
            shots: n(7),
            executions: n(8),
            tags: n(9),
            tags_bytes: n(10),
            metadata_bytes: n(11),
            output_location: t(13),
            payload_bytes: n(12).unwrap_or_default(),
            circuit_hashes: strings_at(self.circuit_hashes, i),
            status: t(14),
            previous_status: t(15),
            usage_seconds: self.usage_seconds.get(i),
            parse_error: t(16),
        })
    }
}

struct CollectorColumns<'a> {
    version: Str<'a>,
    uptime_secs: Prim<'a, UInt64Type>,
    events_total: Prim<'a, UInt64Type>,
    kernel_drops: &'a ListArray,
    kernel_drops_total: Prim<'a, UInt64Type>,
    queue_drops_total: Prim<'a, UInt64Type>,
    decode_errors_total: Prim<'a, UInt64Type>,
    processes_tracked: Prim<'a, UInt64Type>,
    transport: [Prim<'a, UInt64Type>; 9],
    loss_kind: Str<'a>,
    loss: [Prim<'a, UInt64Type>; 4],
    loss_reason: Str<'a>,
}

impl<'a> BodyColumns<'a> {
    fn new(kind: EventKind, c: &Columns<'a>) -> Result<Self, DecodeError> {
        Ok(match kind {
            EventKind::Process => BodyColumns::Process {
                child_pid: c.prim("child_pid")?,
                code: c.prim("exit_code")?,
                signal: c.prim("exit_signal")?,
                status: c.prim("exit_status")?,
            },
            EventKind::File => BodyColumns::File {
                path: c.str("file_path")?,
                new_path: c.str("file_new_path")?,
                fd: c.prim("file_fd")?,
                flags: c.prim("file_flags")?,
                flags_names: c.str("file_flags_names")?,
                result: c.prim("result")?,
                error: c.str("error")?,
                bytes_read: c.prim("bytes_read")?,
                bytes_written: c.prim("bytes_written")?,
                read_calls: c.prim("read_calls")?,
                write_calls: c.prim("write_calls")?,
                close_reason: c.str("close_reason")?,
            },
            EventKind::Network => BodyColumns::Network(Box::new(NetworkColumns {
                protocol: c.str("protocol")?,
                ip_version: c.str("ip_version")?,
                direction: c.str("direction")?,
                src_ip: c.str("src_ip")?,
                src_port: c.prim("src_port")?,
                dst_ip: c.str("dst_ip")?,
                dst_port: c.prim("dst_port")?,
                fd: c.prim("net_fd")?,
                flow_id: c.str("flow_id")?,
                result: c.prim("result")?,
                error: c.str("error")?,
                bytes_in: c.prim("bytes_in")?,
                bytes_out: c.prim("bytes_out")?,
                packets_in: c.prim("packets_in")?,
                packets_out: c.prim("packets_out")?,
                close_reason: c.str("close_reason")?,
            })),
            EventKind::QuantumJob => BodyColumns::QuantumJob(Box::new(JobColumns::new(c)?)),
            EventKind::Collector => BodyColumns::Collector(Box::new(CollectorColumns {
                version: c.str("version")?,
                uptime_secs: c.prim("uptime_secs")?,
                events_total: c.prim("events_total")?,
                kernel_drops: c.list("kernel_drops")?,
                kernel_drops_total: c.prim("kernel_drops_total")?,
                queue_drops_total: c.prim("queue_drops_total")?,
                decode_errors_total: c.prim("decode_errors_total")?,
                processes_tracked: c.prim("processes_tracked")?,
                transport: [
                    c.prim("batches_spooled")?,
                    c.prim("events_spooled")?,
                    c.prim("batches_shipped")?,
                    c.prim("events_shipped")?,
                    c.prim("spool_bytes")?,
                    c.prim("evicted_batches")?,
                    c.prim("evicted_events")?,
                    c.prim("corrupt_records")?,
                    c.prim("producer_queue")?,
                ],
                loss_kind: c.str("loss_kind")?,
                loss: [
                    c.prim("loss_first_seq")?,
                    c.prim("loss_last_seq")?,
                    c.prim("loss_batches")?,
                    c.prim("loss_events")?,
                ],
                loss_reason: c.str("loss_reason")?,
            })),
        })
    }

    fn fill(&self, i: usize, ev: &mut Event) {
        match self {
            BodyColumns::Process {
                child_pid,
                code,
                signal,
                status,
            } => {
                ev.child_pid = child_pid.get(i);
                ev.exit = status.get(i).map(|status| ExitStatus {
                    code: code.get(i),
                    signal: signal.get(i),
                    status,
                });
            }
            BodyColumns::File {
                path,
                new_path,
                fd,
                flags,
                flags_names,
                result,
                error,
                bytes_read,
                bytes_written,
                read_calls,
                write_calls,
                close_reason,
            } => {
                ev.file = path.get(i).map(|path| FileActivity {
                    path,
                    new_path: new_path.get(i),
                    fd: fd.get(i),
                    flags: flags.get(i),
                    flags_names: flags_names.get(i),
                    result: result.get(i),
                    error: error.get(i),
                    bytes_read: bytes_read.get(i),
                    bytes_written: bytes_written.get(i),
                    read_calls: read_calls.get(i),
                    write_calls: write_calls.get(i),
                    close_reason: close_reason.get(i),
                });
            }
            BodyColumns::Network(n) => {
                ev.network = n.protocol.get(i).map(|protocol| NetworkActivity {
                    protocol,
                    ip_version: n.ip_version.or_empty(i),
                    direction: n.direction.or_empty(i),
                    src_endpoint: Endpoint {
                        ip: n.src_ip.or_empty(i),
                        port: n.src_port.or_default(i),
                    },
                    dst_endpoint: Endpoint {
                        ip: n.dst_ip.or_empty(i),
                        port: n.dst_port.or_default(i),
                    },
                    fd: n.fd.or_default(i),
                    flow_id: n.flow_id.or_empty(i),
                    result: n.result.get(i),
                    error: n.error.get(i),
                    bytes_in: n.bytes_in.get(i),
                    bytes_out: n.bytes_out.get(i),
                    packets_in: n.packets_in.get(i),
                    packets_out: n.packets_out.get(i),
                    close_reason: n.close_reason.get(i),
                });
            }
            BodyColumns::Collector(c) => {
                ev.collector = c.version.get(i).map(|version| {
                    let t = |k: usize| c.transport[k].or_default(i);
                    let mut kernel_drops = std::collections::BTreeMap::new();
                    if c.kernel_drops.is_valid(i) {
                        let entries = c.kernel_drops.value(i);
                        let s = entries.as_struct();
                        let kind = s.column(0).as_string::<i32>();
                        let count = s.column(1).as_primitive::<UInt64Type>();
                        for j in 0..s.len() {
                            kernel_drops.insert(kind.value(j).to_string(), count.value(j));
                        }
                    }
                    CollectorStats {
                        version,
                        uptime_secs: c.uptime_secs.or_default(i),
                        events_total: c.events_total.or_default(i),
                        kernel_drops,
                        kernel_drops_total: c.kernel_drops_total.or_default(i),
                        queue_drops_total: c.queue_drops_total.or_default(i),
                        decode_errors_total: c.decode_errors_total.or_default(i),
                        processes_tracked: c.processes_tracked.or_default(i),
                        transport: TransportStats {
                            batches_spooled: t(0),
                            events_spooled: t(1),
                            batches_shipped: t(2),
                            events_shipped: t(3),
                            spool_bytes: t(4),
                            evicted_batches: t(5),
                            evicted_events: t(6),
                            corrupt_records: t(7),
                            producer_queue: t(8),
                        },
                    }
                });
                ev.loss = c.loss_kind.get(i).map(|lost_kind| LossReport {
                    lost_kind,
                    first_seq: c.loss[0].or_default(i),
                    last_seq: c.loss[1].or_default(i),
                    batches: c.loss[2].or_default(i),
                    events: c.loss[3].or_default(i),
                    reason: c.loss_reason.or_empty(i),
                });
            }
            BodyColumns::QuantumJob(j) => ev.quantum_job = j.fill(i).map(Box::new),
        }
    }
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
                schema.metadata()[META_SCHEMA_VERSION],
                SCHEMA_VERSION.to_string()
            );
        }
    }

    fn sample(kind: EventKind, n: u32) -> Event {
        let mut ev = Event::new(kind, 1001, 14, "open", 1_700_000_000_000, 5, "h1", "vm");
        if kind != EventKind::Collector {
            ev.set_context(&ProcessContext {
                agent_id: n.is_multiple_of(2).then(|| "cowork".into()),
                agent_session: n.is_multiple_of(2).then(|| "s-1".into()),
                process: Process {
                    pid: n,
                    tid: n + 1,
                    uid_exec: "u".into(),
                    comm: "cat".into(),
                    exe: "/usr/bin/cat".into(),
                    args: vec!["cat".into(), format!("/tmp/{n}")],
                    cmd_line: format!("cat /tmp/{n}"),
                    cwd: "/".into(),
                    user_id: 1000,
                    group_id: 1000,
                    user: "alice".into(),
                    start_time: 1_699_999_999_000,
                    cgroup_id: 77,
                    cgroup: "/user.slice".into(),
                    source: "exec".into(),
                    truncated: n.is_multiple_of(3),
                },
                parent_process: (n % 2 == 1).then(|| ProcessRef {
                    pid: 1,
                    exe: "/sbin/init".into(),
                    uid_exec: "p".into(),
                }),
                ancestors: (0..n % 3)
                    .map(|a| ProcessRef {
                        pid: a,
                        exe: format!("/a/{a}"),
                        uid_exec: "x".into(),
                    })
                    .collect(),
            });
        }
        match kind {
            EventKind::Process => {
                ev.child_pid = n.is_multiple_of(2).then_some(n + 10);
                ev.exit = (n % 2 == 1).then_some(ExitStatus {
                    code: None,
                    signal: Some(9),
                    status: 9,
                });
            }
            EventKind::File => {
                ev.file = Some(FileActivity {
                    path: "/etc/passwd".into(),
                    new_path: n.is_multiple_of(2).then(|| "/tmp/x".into()),
                    fd: Some(3),
                    flags: Some(0),
                    flags_names: Some("O_RDONLY".into()),
                    result: Some(-2),
                    error: Some("ENOENT".into()),
                    bytes_read: Some(12345),
                    bytes_written: None,
                    read_calls: Some(u64::MAX),
                    write_calls: Some(0),
                    close_reason: Some("close".into()),
                })
            }
            EventKind::Network => {
                ev.network = Some(NetworkActivity {
                    protocol: "tcp".into(),
                    ip_version: "ipv6".into(),
                    direction: "outbound".into(),
                    src_endpoint: Endpoint {
                        ip: "::1".into(),
                        port: 40000,
                    },
                    dst_endpoint: Endpoint {
                        ip: "::1".into(),
                        port: 443,
                    },
                    fd: 7,
                    flow_id: "f".into(),
                    result: Some(0),
                    error: None,
                    bytes_in: Some(1),
                    bytes_out: Some(2),
                    packets_in: Some(3),
                    packets_out: None,
                    close_reason: None,
                })
            }
            EventKind::Collector => {
                if n.is_multiple_of(2) {
                    ev.collector = Some(CollectorStats {
                        version: "0.1.0".into(),
                        uptime_secs: 3,
                        events_total: 4,
                        kernel_drops: [("exec".to_string(), 5u64)].into_iter().collect(),
                        kernel_drops_total: 5,
                        queue_drops_total: 0,
                        decode_errors_total: 1,
                        processes_tracked: 9,
                        transport: TransportStats {
                            evicted_events: 11,
                            ..Default::default()
                        },
                    });
                } else {
                    ev.loss = Some(LossReport {
                        lost_kind: "file".into(),
                        first_seq: 3,
                        last_seq: 9,
                        batches: 7,
                        events: 700,
                        reason: "spool_full".into(),
                    });
                }
            }
            EventKind::QuantumJob => {
                ev.quantum_job = (n != 3).then(|| {
                    Box::new(QuantumJob {
                        provider: "ibm_runtime".into(),
                        route: "/ibm".into(),
                        endpoint: "https://quantum.cloud.ibm.com/api/v1/jobs".into(),
                        method: "POST".into(),
                        operation: "submit".into(),
                        decision: "allowed".into(),
                        policy_limit: n.is_multiple_of(2).then(|| "shots_per_hour".into()),
                        http_status: Some(200),
                        backend: Some("ibm_fez".into()),
                        qubits: Some(156),
                        bindings: Some(u64::from(n) * 8),
                        circuit_hashes: (0..n % 3).map(|h| format!("{h:064x}")).collect(),
                        usage_seconds: (n == 5).then_some(2.5),
                        payload_bytes: 2303,
                        ..Default::default()
                    })
                });
            }
        }
        ev
    }

    #[test]
    fn every_kind_round_trips_field_for_field() {
        for kind in EventKind::ALL {
            let events: Vec<Event> = (0..7).map(|n| sample(kind, n)).collect();
            let mut builder = EventBatchBuilder::new(kind);
            for ev in &events {
                builder.append(ev, None);
            }
            assert_eq!(builder.len(), 7);
            let batch = builder.finish();
            assert!(builder.is_empty());
            assert_eq!(decode_batch(&batch).unwrap(), events, "{kind:?}");
            // the builder is reusable after finish
            builder.append(&events[0], None);
            assert_eq!(decode_batch(&builder.finish()).unwrap(), events[..1]);
        }
    }

    #[test]
    fn shared_context_is_encoded_like_the_event_fields() {
        let full = sample(EventKind::File, 4);
        let mut bare = full.clone();
        let context = ProcessContext {
            agent_id: bare.agent_id.take(),
            agent_session: bare.agent_session.take(),
            process: bare.process.take().unwrap(),
            parent_process: bare.parent_process.take(),
            ancestors: std::mem::take(&mut bare.ancestors),
        };
        let context = Arc::new(context);
        let mut builder = EventBatchBuilder::new(EventKind::File);
        // the same context three times: stored once, decoded into each event
        for _ in 0..3 {
            builder.append(&bare, Some(&context));
        }
        let other = sample(EventKind::File, 5);
        builder.append(&other, None);
        let batch = builder.finish();
        let exe = batch
            .column_by_name("process_exe")
            .unwrap()
            .as_any()
            .downcast_ref::<DictionaryArray<Int32Type>>()
            .unwrap()
            .values()
            .len();
        assert_eq!(exe, 2, "one value per distinct context");
        assert_eq!(
            decode_batch(&batch).unwrap(),
            vec![full.clone(), full.clone(), full, other]
        );
    }

    #[test]
    fn unknown_version_is_refused() {
        let mut builder = EventBatchBuilder::new(EventKind::File);
        builder.append(&sample(EventKind::File, 1), None);
        let batch = builder.finish();
        let mut meta = batch.schema().metadata().clone();
        meta.insert(META_SCHEMA_VERSION.into(), "99".into());
        let schema = Arc::new(batch.schema().as_ref().clone().with_metadata(meta));
        let batch = RecordBatch::try_new(schema, batch.columns().to_vec()).unwrap();
        let err = decode_batch(&batch).unwrap_err().to_string();
        assert!(err.contains("\"99\""), "{err}");
    }
}
