//! What the window keeps: a row only if some rule reading its table can use
//! it. Each rule may say, per table, which rows it uses (`keep:` in its file,
//! a SQL predicate); a table's retention is the OR of its readers'
//! predicates, or everything when one reader says nothing, or nothing when
//! no rule reads it. A workstation's bulk (file opens of compilers and
//! browsers) so never reaches the window when the rules are about agents.
//! Predicates are compiled once into DataFusion physical expressions.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow_array::{Array, BooleanArray, RecordBatch};
use datafusion::common::DFSchema;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::prelude::SessionContext;
use vigil_schema::EventKind;

use crate::rules::engine::table_schema;
use crate::rules::model::Rule;

#[derive(Clone)]
pub enum Keep {
    All,
    Nothing,
    Where(Arc<dyn PhysicalExpr>),
}

pub struct Retention {
    keeps: BTreeMap<EventKind, Keep>,
    /// The predicate text of each filtered kind, for the log.
    pub described: Vec<(EventKind, String)>,
}

/// Compile a predicate over a kind's table.
pub fn compile(kind: EventKind, predicate: &str) -> Result<Arc<dyn PhysicalExpr>, String> {
    let ctx = SessionContext::new();
    let schema =
        DFSchema::try_from(table_schema(kind).as_ref().clone()).map_err(|e| e.to_string())?;
    let expr = ctx
        .parse_sql_expr(predicate, &schema)
        .map_err(|e| format!("keep.{}: {e}", kind.as_str()))?;
    ctx.create_physical_expr(expr, &schema)
        .map_err(|e| format!("keep.{}: {e}", kind.as_str()))
}

impl Retention {
    /// Everything, for every kind.
    pub fn all() -> Retention {
        Retention {
            keeps: EventKind::ALL.iter().map(|k| (*k, Keep::All)).collect(),
            described: Vec::new(),
        }
    }

    /// The retention the given rules need.
    pub fn for_rules<'a>(
        rules: impl IntoIterator<Item = &'a Rule> + Clone,
    ) -> Result<Retention, String> {
        let mut keeps = BTreeMap::new();
        let mut described = Vec::new();
        for kind in EventKind::ALL {
            let readers: Vec<&Rule> = rules
                .clone()
                .into_iter()
                .filter(|r| r.reads().contains(&kind))
                .collect();
            let predicates: Option<Vec<&str>> = readers
                .iter()
                .map(|r| {
                    r.keep
                        .iter()
                        .find(|(k, _)| *k == kind)
                        .map(|(_, p)| p.as_str())
                })
                .collect();
            let keep = match predicates {
                _ if readers.is_empty() => Keep::Nothing,
                None => Keep::All,
                Some(ps) => {
                    let text = ps
                        .iter()
                        .map(|p| format!("({p})"))
                        .collect::<Vec<_>>()
                        .join(" OR ");
                    let expr = compile(kind, &text)?;
                    described.push((kind, text));
                    Keep::Where(expr)
                }
            };
            keeps.insert(kind, keep);
        }
        Ok(Retention { keeps, described })
    }

    /// The rows of `batch` to keep; `None` when there are none.
    pub fn apply(
        &self,
        kind: EventKind,
        batch: RecordBatch,
    ) -> Result<Option<RecordBatch>, String> {
        match self.keeps.get(&kind).unwrap_or(&Keep::All) {
            Keep::All => Ok(Some(batch)),
            Keep::Nothing => Ok(None),
            Keep::Where(expr) => filter(expr, batch),
        }
    }
}

/// The rows of `batch` for which `expr` is true (null counts as false).
pub fn filter(
    expr: &Arc<dyn PhysicalExpr>,
    batch: RecordBatch,
) -> Result<Option<RecordBatch>, String> {
    let mask = expr
        .evaluate(&batch)
        .and_then(|v| v.into_array(batch.num_rows()))
        .map_err(|e| e.to_string())?;
    let mask = mask
        .as_any()
        .downcast_ref::<BooleanArray>()
        .ok_or("a keep predicate is not boolean")?;
    let kept = mask.true_count();
    if kept == 0 {
        return Ok(None);
    }
    if kept == batch.num_rows() && mask.null_count() == 0 {
        return Ok(Some(batch));
    }
    datafusion::arrow::compute::filter_record_batch(&batch, mask)
        .map(Some)
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::engine::table_batch;
    use crate::rules::model::load_dir;
    use vigil_schema::arrow::EventBatchBuilder;
    use vigil_schema::{Event, FileActivity, Process};

    #[test]
    fn builtin_rules_keep_agent_file_rows_only() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../rules");
        let rules: Vec<Rule> = load_dir(&dir)
            .unwrap()
            .into_iter()
            .map(Result::unwrap)
            .collect();
        let retention = Retention::for_rules(&rules).unwrap();
        let mut b = EventBatchBuilder::new(EventKind::File);
        for (i, agent) in [None, Some("a"), None, Some("b")].into_iter().enumerate() {
            let mut e = Event::new(EventKind::File, 1001, 14, "open", i as i64, 0, "h", "h");
            e.agent_id = agent.map(str::to_string);
            e.process = Some(Process::default());
            e.file = Some(FileActivity {
                path: format!("/f{i}"),
                ..Default::default()
            });
            b.append(&e, None);
        }
        let batch = table_batch(EventKind::File, &b.finish(), 7).unwrap();
        let kept = retention.apply(EventKind::File, batch).unwrap().unwrap();
        assert_eq!(kept.num_rows(), 2);
        // rows keep their place in the original batch, for event references
        let rows = kept
            .column_by_name("batch_row")
            .unwrap()
            .as_any()
            .downcast_ref::<arrow_array::UInt32Array>()
            .unwrap();
        assert_eq!(rows.values().to_vec(), vec![1, 3]);
        // no rule at all: nothing is kept
        let none = Retention::for_rules(&[]).unwrap();
        let empty = table_batch(
            EventKind::File,
            &EventBatchBuilder::new(EventKind::File).finish(),
            1,
        )
        .unwrap();
        assert!(none.apply(EventKind::File, empty).unwrap().is_none());
    }
}
