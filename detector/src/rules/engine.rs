//! Running rules: each event kind becomes a DataFusion table of the window's
//! batches, each rule's query runs over it, and every output row becomes a
//! [`Finding`].
//!
//! Tables are named after the kinds (`process`, `file`, `network`,
//! `collector`, `quantum_job`) with the columns of `vigil_schema::arrow` plus
//! `batch_seq` and `batch_row` (the event's batch and place in it) and, as a
//! view computed only when a query uses it, `event_ref` =
//! `host_id/kind/batch_seq/batch_row`.
//!
//! A query's output must have `host_id`, `time` (the event time the finding
//! is about) and `summary`; it may have `agent_id`, `agent_session`,
//! `group_key` (what repeats are grouped by; default host and agent),
//! `window_start` (the window the finding belongs to; default `time`) and
//! `event_refs` (a list or a string). Other columns become evidence.

use std::sync::Arc;

use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::compute::cast;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::execution_plan::reset_plan_states;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::{SessionConfig, SessionContext};
use vigil_schema::arrow::schema_for;
use vigil_schema::EventKind;

use super::live::LiveTable;
use super::model::Rule;

/// The extra columns every table has, after the event columns.
pub const BATCH_SEQ: &str = "batch_seq";
pub const BATCH_ROW: &str = "batch_row";

/// The columns a rule's output must have.
pub const REQUIRED_OUTPUT: [&str; 3] = ["host_id", "time", "summary"];
/// Output columns with a meaning of their own (not evidence).
const KNOWN_OUTPUT: [&str; 8] = [
    "host_id",
    "time",
    "summary",
    "agent_id",
    "agent_session",
    "group_key",
    "window_start",
    "event_refs",
];

/// The table schema of a kind: the event columns plus `batch_seq`, `batch_row`.
pub fn table_schema(kind: EventKind) -> SchemaRef {
    static SCHEMAS: std::sync::OnceLock<Vec<SchemaRef>> = std::sync::OnceLock::new();
    let all = SCHEMAS.get_or_init(|| {
        EventKind::ALL
            .iter()
            .map(|k| build_table_schema(*k))
            .collect()
    });
    all[usize::from(kind.code() - 1)].clone()
}

/// An event batch as a table batch: its columns (which must be the kind's
/// schema, field for field) plus `batch_seq` and `batch_row`.
pub fn table_batch(kind: EventKind, batch: &RecordBatch, seq: u64) -> Result<RecordBatch, String> {
    let schema = table_schema(kind);
    let n = batch.num_rows();
    let event_fields = schema.fields().len() - 2;
    if batch.num_columns() != event_fields {
        return Err(format!(
            "{} batch has {} columns, the {} schema has {event_fields}",
            kind.as_str(),
            batch.num_columns(),
            kind.as_str()
        ));
    }
    let mut columns = batch.columns().to_vec();
    columns.push(Arc::new(arrow_array::UInt64Array::from_value(seq, n)));
    columns.push(Arc::new(arrow_array::UInt32Array::from_iter_values(
        0..n as u32,
    )));
    RecordBatch::try_new(schema, columns).map_err(|e| format!("{} batch: {e}", kind.as_str()))
}

fn build_table_schema(kind: EventKind) -> SchemaRef {
    let base = schema_for(kind);
    let mut fields: Vec<Arc<Field>> = base.fields().iter().cloned().collect();
    fields.push(Arc::new(Field::new(BATCH_SEQ, DataType::UInt64, false)));
    fields.push(Arc::new(Field::new(BATCH_ROW, DataType::UInt32, false)));
    Arc::new(Schema::new_with_metadata(fields, base.metadata().clone()))
}

/// One output row of a rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub host_id: String,
    pub time_ms: i64,
    pub summary: String,
    pub agent_id: Option<String>,
    pub agent_session: Option<String>,
    pub group_key: String,
    pub window_start_ms: i64,
    pub event_refs: Vec<String>,
    /// The other output columns, by name, as JSON.
    pub evidence: serde_json::Map<String, serde_json::Value>,
}

/// The batches of each kind a query sees.
#[derive(Default, Clone)]
pub struct Tables {
    pub by_kind: Vec<(EventKind, Vec<RecordBatch>)>,
}

impl Tables {
    pub fn get(&self, kind: EventKind) -> &[RecordBatch] {
        self.by_kind
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, b)| b.as_slice())
            .unwrap_or(&[])
    }

    pub fn rows(&self) -> usize {
        self.by_kind
            .iter()
            .flat_map(|(_, b)| b.iter())
            .map(RecordBatch::num_rows)
            .sum()
    }
}

/// Runs queries; owns a single-threaded runtime for DataFusion's async API.
pub struct Engine {
    runtime: tokio::runtime::Runtime,
    config: SessionConfig,
}

impl Default for Engine {
    fn default() -> Self {
        Self::new()
    }
}

impl Engine {
    pub fn new() -> Self {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a current-thread runtime builds");
        // windows are small in-memory tables: one partition, no repartitioning
        let config = SessionConfig::new()
            .with_target_partitions(1)
            .with_information_schema(false);
        Self { runtime, config }
    }

    /// A context with one table (and `event_ref` view) per kind, filled
    /// with `tables`.
    pub fn context(&self, tables: &Tables) -> Result<SessionContext, String> {
        let (ctx, held) = self.empty_context()?;
        for (kind, table) in &held {
            fill(table, tables.get(*kind).to_vec());
        }
        Ok(ctx)
    }

    /// A context whose tables are empty [`LiveTable`]s, returned with it so
    /// that they can be refilled: the `event_ref` views are planned once.
    fn empty_context(&self) -> Result<(SessionContext, HeldTables), String> {
        let ctx = SessionContext::new_with_config(self.config.clone());
        ctx.register_udf(super::regex::regexp_like());
        let mut held = Vec::new();
        self.runtime.block_on(async {
            for kind in EventKind::ALL {
                let name = kind.as_str();
                let table = Arc::new(LiveTable::new(table_schema(kind)));
                ctx.register_table(format!("{name}_rows"), table.clone())
                    .map_err(|e| format!("table {name}: {e}"))?;
                ctx.sql(&format!(
                    "CREATE VIEW {name} AS SELECT *, concat(host_id, '/{name}/', \
                     CAST({BATCH_SEQ} AS VARCHAR), '/', CAST({BATCH_ROW} AS VARCHAR)) AS event_ref \
                     FROM {name}_rows"
                ))
                .await
                .map_err(|e| format!("view {name}: {e}"))?;
                held.push((kind, table));
            }
            Ok::<(), String>(())
        })?;
        Ok((ctx, held))
    }

    /// A rule made ready to run again and again over new window contents:
    /// its own context, and its query parsed and optimized once (unless
    /// it uses `${now}` or `${lookback_start}`, which change with every run).
    pub fn prepare(&self, rule: &Rule) -> Result<Prepared, String> {
        let (ctx, tables) = self.empty_context()?;
        let state = ctx.state();
        // `${now}` as 0 here only to read the plan's shape
        let plan = self.runtime.block_on(async {
            let plan = state
                .create_logical_plan(&Self::render(rule, 0))
                .await
                .map_err(|e| e.to_string())?;
            state.optimize(&plan).map_err(|e| e.to_string())
        })?;
        let columns = columns_read(&plan)?;
        let dynamic = rule.query.contains("${now}") || rule.query.contains("${lookback_start}");
        let physical = if dynamic {
            None
        } else {
            // the scans read the tables when executed, so the plan outlives them
            let physical = self.runtime.block_on(async {
                state
                    .query_planner()
                    .create_physical_plan(&plan, &state)
                    .await
                    .map_err(|e| e.to_string())
            })?;
            Some(physical)
        };
        Ok(Prepared {
            ctx,
            tables,
            physical,
            columns,
        })
    }

    /// Run a prepared rule over `tables` (each kind's batches), with the
    /// window's clock at `now_ms`.
    pub fn run_prepared(
        &self,
        prepared: &Prepared,
        rule: &Rule,
        tables: Vec<(EventKind, Vec<RecordBatch>)>,
        now_ms: i64,
    ) -> Result<Vec<Finding>, String> {
        for (kind, table) in &prepared.tables {
            let batches = tables
                .iter()
                .find(|(k, _)| k == kind)
                .map(|(_, b)| b.clone())
                .unwrap_or_default();
            fill(table, batches);
        }
        let result = match &prepared.physical {
            None => self.run(&prepared.ctx, &Self::render(rule, now_ms)),
            Some(plan) => {
                let batches = self.runtime.block_on(async {
                    // joins, sorts and dynamic filters hold per-run state
                    let plan = reset_plan_states(plan.clone()).map_err(|e| e.to_string())?;
                    datafusion::physical_plan::collect(plan, prepared.ctx.task_ctx())
                        .await
                        .map_err(|e| e.to_string())
                })?;
                findings_in(&batches)
            }
        };
        // the window's batches are not held between runs
        for (_, table) in &prepared.tables {
            fill(table, Vec::new());
        }
        result
    }

    /// Plan a rendered query and check its output columns; the error is
    /// DataFusion's message (with `Line: N, Column: M` for parse errors).
    pub fn plan(&self, ctx: &SessionContext, sql: &str) -> Result<(), String> {
        self.runtime.block_on(async {
            let df = ctx.sql(sql).await.map_err(|e| e.to_string())?;
            let schema = df.schema().clone();
            check_output(schema.as_arrow())?;
            df.create_physical_plan().await.map_err(|e| e.to_string())?;
            Ok(())
        })
    }

    /// Run a rendered query; every output row is a finding.
    pub fn run(&self, ctx: &SessionContext, sql: &str) -> Result<Vec<Finding>, String> {
        let batches = self.runtime.block_on(async {
            let df = ctx.sql(sql).await.map_err(|e| e.to_string())?;
            df.collect().await.map_err(|e| e.to_string())
        })?;
        findings_in(&batches)
    }

    /// Render a rule for evaluation at event time `now_ms`.
    pub fn render(rule: &Rule, now_ms: i64) -> String {
        let start = now_ms - rule.lookback.as_millis() as i64;
        rule.render(&[
            ("now", format!("to_timestamp_millis({now_ms})")),
            ("lookback_start", format!("to_timestamp_millis({start})")),
        ])
    }
}

/// Per table a query reads, the columns it uses (indexes into `table_schema`).
pub type ColumnsRead = Vec<(EventKind, Vec<usize>)>;

/// A context's tables, to be refilled before each run.
type HeldTables = Vec<(EventKind, Arc<LiveTable>)>;

/// The columns of each `<kind>_rows` table an optimized plan scans
/// (indexes into `table_schema`): the only ones its rule needs kept.
fn columns_read(plan: &LogicalPlan) -> Result<ColumnsRead, String> {
    let mut read: ColumnsRead = Vec::new();
    plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            let table = scan.table_name.table();
            if let Some(kind) = EventKind::ALL
                .into_iter()
                .find(|k| table.strip_suffix("_rows") == Some(k.as_str()))
            {
                let schema = table_schema(kind);
                let mut columns: Vec<usize> = match &scan.projection {
                    Some(p) => p.clone(),
                    None => (0..schema.fields().len()).collect(),
                };
                for filter in &scan.filters {
                    for c in filter.column_refs() {
                        columns.extend(schema.index_of(&c.name).ok());
                    }
                }
                match read.iter_mut().find(|(k, _)| *k == kind) {
                    Some((_, all)) => all.extend(columns),
                    None => read.push((kind, columns)),
                }
            }
        }
        Ok(TreeNodeRecursion::Continue)
    })
    .map_err(|e| e.to_string())?;
    for (_, columns) in &mut read {
        columns.sort_unstable();
        columns.dedup();
    }
    Ok(read)
}

/// A rule's own context, its tables and (without `${now}`) its physical plan.
pub struct Prepared {
    ctx: SessionContext,
    tables: HeldTables,
    physical: Option<Arc<dyn ExecutionPlan>>,
    /// Per table it reads, the columns it uses.
    pub columns: ColumnsRead,
}

/// Replace a table's contents.
fn fill(table: &LiveTable, batches: Vec<RecordBatch>) {
    *table.batches.lock() = batches;
}

fn check_output(schema: &Schema) -> Result<(), String> {
    let missing: Vec<&str> = REQUIRED_OUTPUT
        .iter()
        .copied()
        .filter(|c| schema.field_with_name(c).is_err())
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "the query's output lacks {} (it must have host_id, time, summary; has {})",
            missing.join(", "),
            schema
                .fields()
                .iter()
                .map(|f| f.name().as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let ts = |name: &str| -> Result<(), String> {
        match schema.field_with_name(name) {
            Ok(f) if !matches!(f.data_type(), DataType::Timestamp(_, _)) => Err(format!(
                "output column {name} must be a timestamp, not {}",
                f.data_type()
            )),
            _ => Ok(()),
        }
    };
    ts("time")?;
    ts("window_start")
}

fn column<'a>(batch: &'a RecordBatch, name: &str) -> Option<&'a ArrayRef> {
    batch.schema().index_of(name).ok().map(|i| batch.column(i))
}

/// Milliseconds of a timestamp column of any unit.
fn millis(array: &ArrayRef) -> Result<Vec<Option<i64>>, String> {
    let ms = cast(array, &DataType::Timestamp(TimeUnit::Millisecond, None))
        .map_err(|e| e.to_string())?;
    let ms = cast(&ms, &DataType::Int64).map_err(|e| e.to_string())?;
    let ms = ms
        .as_any()
        .downcast_ref::<arrow_array::Int64Array>()
        .ok_or("timestamp did not cast to Int64")?;
    Ok((0..ms.len())
        .map(|i| ms.is_valid(i).then(|| ms.value(i)))
        .collect())
}

fn strings(array: &ArrayRef) -> Result<Vec<Option<String>>, String> {
    let s = cast(array, &DataType::Utf8).map_err(|e| e.to_string())?;
    let s = s
        .as_any()
        .downcast_ref::<arrow_array::StringArray>()
        .ok_or("did not cast to Utf8")?;
    Ok((0..s.len())
        .map(|i| s.is_valid(i).then(|| s.value(i).to_string()))
        .collect())
}

/// Every output row of a query's batches as a finding.
fn findings_in(batches: &[RecordBatch]) -> Result<Vec<Finding>, String> {
    let mut findings = Vec::new();
    for b in batches {
        check_output(b.schema().as_ref())?;
        findings.extend(findings_of(b)?);
    }
    Ok(findings)
}

fn findings_of(batch: &RecordBatch) -> Result<Vec<Finding>, String> {
    let n = batch.num_rows();
    let host = strings(column(batch, "host_id").expect("checked"))?;
    let time = millis(column(batch, "time").expect("checked"))?;
    let summary = strings(column(batch, "summary").expect("checked"))?;
    let opt = |name: &str| -> Result<Vec<Option<String>>, String> {
        match column(batch, name) {
            Some(a) => strings(a),
            None => Ok(vec![None; n]),
        }
    };
    let agent = opt("agent_id")?;
    let session = opt("agent_session")?;
    let key = opt("group_key")?;
    let window = match column(batch, "window_start") {
        Some(a) => millis(a)?,
        None => vec![None; n],
    };
    let refs = column(batch, "event_refs");
    let evidence: Vec<(String, &ArrayRef)> = batch
        .schema()
        .fields()
        .iter()
        .zip(batch.columns())
        .filter(|(f, _)| !KNOWN_OUTPUT.contains(&f.name().as_str()))
        .map(|(f, a)| (f.name().clone(), a))
        .collect();
    let mut out = Vec::with_capacity(n);
    for row in 0..n {
        let (Some(host_id), Some(time_ms)) = (host[row].clone(), time[row]) else {
            // a finding without host or time cannot be placed; the rule is wrong
            return Err(format!("output row {row} has a null host_id or time"));
        };
        let agent_id = agent[row].clone();
        let group_key = key[row].clone().unwrap_or_else(|| match &agent_id {
            Some(a) => format!("{host_id}/{a}"),
            None => host_id.clone(),
        });
        let mut ev = serde_json::Map::new();
        for (name, array) in &evidence {
            ev.insert(name.clone(), json_value(array, row));
        }
        out.push(Finding {
            host_id,
            time_ms,
            summary: summary[row].clone().unwrap_or_default(),
            agent_id,
            agent_session: session[row].clone(),
            group_key,
            window_start_ms: window[row].unwrap_or(time_ms),
            event_refs: refs.map(|a| string_list(a, row)).unwrap_or_default(),
            evidence: ev,
        });
    }
    Ok(out)
}

/// A cell as JSON: numbers and booleans as themselves, lists as arrays,
/// anything else as Arrow displays it.
fn json_value(array: &ArrayRef, row: usize) -> serde_json::Value {
    use serde_json::Value;
    if array.is_null(row) {
        return Value::Null;
    }
    let as_f64 = |a: &ArrayRef| {
        cast(&a.slice(row, 1), &DataType::Float64)
            .ok()
            .and_then(|c| {
                c.as_any()
                    .downcast_ref::<arrow_array::Float64Array>()
                    .map(|f| f.value(0))
            })
    };
    match array.data_type() {
        DataType::Boolean => Value::Bool(
            array
                .as_any()
                .downcast_ref::<arrow_array::BooleanArray>()
                .is_some_and(|b| b.value(row)),
        ),
        t if t.is_integer() => cast(&array.slice(row, 1), &DataType::Int64)
            .ok()
            .and_then(|c| {
                c.as_any()
                    .downcast_ref::<arrow_array::Int64Array>()
                    .map(|i| i.value(0))
            })
            .map(Value::from)
            .unwrap_or(Value::Null),
        t if t.is_floating() || matches!(t, DataType::Decimal128(_, _)) => {
            as_f64(array).map(Value::from).unwrap_or(Value::Null)
        }
        DataType::List(_) | DataType::LargeList(_) => Value::Array(
            string_list(array, row)
                .into_iter()
                .map(Value::String)
                .collect(),
        ),
        _ => Value::String(display(array, row)),
    }
}

fn display(array: &ArrayRef, row: usize) -> String {
    let options = FormatOptions::default();
    ArrayFormatter::try_new(array.as_ref(), &options)
        .map(|f| f.value(row).to_string())
        .unwrap_or_default()
}

/// A list cell (or a string cell) as strings.
fn string_list(array: &ArrayRef, row: usize) -> Vec<String> {
    if array.is_null(row) {
        return Vec::new();
    }
    let values = match array.data_type() {
        DataType::List(_) => array
            .as_any()
            .downcast_ref::<arrow_array::ListArray>()
            .map(|l| l.value(row)),
        DataType::LargeList(_) => array
            .as_any()
            .downcast_ref::<arrow_array::LargeListArray>()
            .map(|l| l.value(row)),
        _ => return vec![display(array, row)],
    };
    match values.and_then(|v| strings(&v).ok()) {
        Some(v) => v.into_iter().flatten().collect(),
        None => Vec::new(),
    }
}
