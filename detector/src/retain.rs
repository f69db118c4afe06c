//! What the window keeps: a row only if some rule reading its table can use
//! it. Each rule may say, per table, which rows it uses (`keep:` in its file,
//! a SQL predicate); a table's retention is the OR of its readers'
//! predicates, or everything when one reader says nothing, or nothing when
//! no rule reads it. A workstation's bulk (file opens of compilers and
//! browsers) so never reaches the window when the rules are about agents.
//! Predicates are compiled once into DataFusion physical expressions.
//!
//! The conjuncts every keeper of a table shares (most often
//! `agent_id IS NOT NULL`) form the table's prefilter: evaluated once per
//! batch, the rows it passes are the only ones each keeper's own remaining
//! conjuncts see. Most events belong to no agent, so most of a batch is
//! dropped at the cost of one predicate rather than one per keeper.

use std::sync::Arc;

use arrow_array::{Array, BooleanArray, RecordBatch};
use datafusion::common::DFSchema;
use datafusion::logical_expr::utils::{conjunction, split_conjunction_owned};
use datafusion::logical_expr::Expr;
use datafusion::optimizer::simplify_expressions::{ExprSimplifier, SimplifyContext};
use datafusion::physical_expr::utils::collect_columns;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::prelude::SessionContext;
use vigil_schema::EventKind;

use crate::columns::{self, compact};
use crate::rules::engine::{table_schema, ColumnsRead};
use crate::rules::model::Rule;

/// One distinct `keep` of one table: the rows one or more rules use. Rules
/// with the same predicate share a keeper (and so the window's rows).
pub struct Keeper {
    pub kind: EventKind,
    /// The predicate as written (after `${param}` substitution); `None`
    /// keeps every row (a reader that says nothing).
    pub predicate: Option<String>,
    /// The predicate's conjuncts (simplified); empty keeps every row.
    conjuncts: Vec<Expr>,
    /// The whole predicate, compiled (for the columns it reads).
    expr: Option<Arc<dyn PhysicalExpr>>,
    /// The conjuncts the table's prefilter does not already apply;
    /// `None`: every row the prefilter passes.
    rest: Option<Arc<dyn PhysicalExpr>>,
    /// The longest lookback of the rules it serves.
    pub lookback_ms: i64,
    /// The columns its rules read (`None`: every column).
    pub needed: Option<Vec<bool>>,
}

/// Per table, the keepers its readers need, and for each rule which keeper
/// holds its rows of each table it reads.
pub struct Retention {
    pub keepers: Vec<Keeper>,
    /// Per kind, the conjuncts all its keepers share (see the module doc).
    prefilters: Vec<Prefilter>,
    /// Per kind, the event columns worth decoding (`None`: all): what the
    /// keepers hold and their predicates read.
    decoded: Vec<(EventKind, Option<Vec<usize>>)>,
    /// Per rule (in the order given), (table, keeper index) for each table
    /// it reads.
    pub inputs: Vec<Vec<(EventKind, usize)>>,
}

/// The conjuncts shared by every keeper of one table, applied once.
struct Prefilter {
    kind: EventKind,
    expr: Arc<dyn PhysicalExpr>,
    /// The columns the rows it passes carry on to the keepers (`None`: all).
    carry: Option<Vec<bool>>,
}

/// The rows of one batch that the window keeps, per keeper.
pub struct Split {
    /// (keeper index, its rows), keepers without rows left out.
    pub kept: Vec<(usize, RecordBatch)>,
    /// Rows that at least one keeper kept.
    pub rows_kept: usize,
    /// Keepers whose predicate failed on this batch (they kept every row:
    /// better too much than an alert lost).
    pub errors: Vec<(usize, String)>,
}

/// Compile a predicate over a kind's table.
pub fn compile(kind: EventKind, predicate: &str) -> Result<Arc<dyn PhysicalExpr>, String> {
    physical(kind, parse(kind, predicate)?)
}

/// A predicate over a kind's table as a simplified logical expression.
fn parse(kind: EventKind, predicate: &str) -> Result<Expr, String> {
    let (ctx, schema) = context(kind)?;
    let expr = ctx
        .parse_sql_expr(predicate, &schema)
        .map_err(|e| format!("keep.{}: {e}", kind.as_str()))?;
    // as the query planner does: some functions (coalesce) exist only
    // before simplification
    let simplify = SimplifyContext::builder()
        .with_schema(Arc::new(schema.clone()))
        .build();
    ExprSimplifier::new(simplify)
        .simplify(expr)
        .map_err(|e| format!("keep.{}: {e}", kind.as_str()))
}

fn physical(kind: EventKind, expr: Expr) -> Result<Arc<dyn PhysicalExpr>, String> {
    let (ctx, schema) = context(kind)?;
    ctx.create_physical_expr(expr, &schema)
        .map_err(|e| format!("keep.{}: {e}", kind.as_str()))
}

fn context(kind: EventKind) -> Result<(SessionContext, DFSchema), String> {
    let ctx = SessionContext::new();
    ctx.register_udf(crate::rules::regex::regexp_like());
    let schema =
        DFSchema::try_from(table_schema(kind).as_ref().clone()).map_err(|e| e.to_string())?;
    Ok((ctx, schema))
}

impl Retention {
    /// The retention the given rules need; `columns`, per rule, the
    /// columns it reads of each table (see `Prepared::columns`), or `None`
    /// to hold every column.
    pub fn for_rules(rules: &[Rule], columns: Option<&[ColumnsRead]>) -> Result<Retention, String> {
        let mut keepers: Vec<Keeper> = Vec::new();
        let mut inputs = Vec::with_capacity(rules.len());
        for (r, rule) in rules.iter().enumerate() {
            let mut reads = Vec::new();
            for kind in rule.reads() {
                let width = table_schema(kind).fields().len();
                let needed: Option<Vec<bool>> = columns.map(|columns| {
                    let read = columns[r]
                        .iter()
                        .find(|(k, _)| *k == kind)
                        .map_or(&[][..], |(_, c)| c.as_slice());
                    (0..width).map(|i| read.contains(&i)).collect()
                });
                let predicate = rule
                    .keep
                    .iter()
                    .find(|(k, _)| *k == kind)
                    .map(|(_, p)| p.trim().to_string());
                let lookback_ms = rule.lookback.as_millis() as i64;
                let at = match keepers
                    .iter()
                    .position(|k| k.kind == kind && k.predicate == predicate)
                {
                    Some(at) => {
                        let k = &mut keepers[at];
                        k.lookback_ms = k.lookback_ms.max(lookback_ms);
                        k.needed = either(k.needed.take(), needed);
                        at
                    }
                    None => {
                        let logical = predicate
                            .as_deref()
                            .map(|p| parse(kind, p))
                            .transpose()
                            .map_err(|e| format!("{}: {e}", rule.id))?;
                        let expr = logical
                            .clone()
                            .map(|e| physical(kind, e))
                            .transpose()
                            .map_err(|e| format!("{}: {e}", rule.id))?;
                        keepers.push(Keeper {
                            kind,
                            predicate,
                            conjuncts: logical.map(split_conjunction_owned).unwrap_or_default(),
                            expr,
                            rest: None,
                            lookback_ms,
                            needed,
                        });
                        keepers.len() - 1
                    }
                };
                reads.push((kind, at));
            }
            inputs.push(reads);
        }
        let decoded = EventKind::ALL
            .into_iter()
            .map(|kind| (kind, decoded_columns(kind, &keepers)))
            .collect();
        let mut prefilters = Vec::new();
        for kind in EventKind::ALL {
            if let Some(p) = prefilter(kind, &mut keepers)? {
                prefilters.push(p);
            }
        }
        Ok(Retention {
            keepers,
            prefilters,
            inputs,
            decoded,
        })
    }

    /// Split a table batch among the keepers of its kind.
    pub fn split(&self, kind: EventKind, batch: &RecordBatch) -> Result<Split, String> {
        let mut kept = Vec::new();
        let mut errors = Vec::new();
        let rows = batch.num_rows();
        let mine = || {
            self.keepers
                .iter()
                .enumerate()
                .filter(|(_, k)| k.kind == kind)
        };
        // the shared conjuncts first: the keepers see only the rows they pass
        let prefiltered;
        let mut base = batch;
        if let Some(pre) = self.prefilters.iter().find(|p| p.kind == kind) {
            match mask(&pre.expr, batch) {
                Ok(m) if m.true_count() == 0 => {
                    return Ok(Split {
                        kept,
                        rows_kept: 0,
                        errors,
                    })
                }
                Ok(m) if m.true_count() == rows => {}
                Ok(m) => {
                    prefiltered = columns::filter(kind, batch, &m, pre.carry.as_deref())?;
                    base = &prefiltered;
                }
                Err(e) => {
                    // better too much than an alert lost: every keeper keeps it all
                    for (i, keeper) in mine() {
                        errors.push((i, e.clone()));
                        kept.push((i, compact(kind, batch, keeper.needed.as_deref())));
                    }
                    return Ok(Split {
                        kept,
                        rows_kept: rows,
                        errors,
                    });
                }
            }
        }
        let rows = base.num_rows();
        let mut union: Option<BooleanArray> = None;
        for (i, keeper) in mine() {
            let needed = keeper.needed.as_deref();
            let Some(expr) = &keeper.rest else {
                if rows > 0 {
                    kept.push((i, compact(kind, base, needed)));
                }
                union = Some(BooleanArray::from(vec![true; rows]));
                continue;
            };
            let mask = mask(expr, base).unwrap_or_else(|e| {
                errors.push((i, e));
                BooleanArray::from(vec![true; rows])
            });
            union = Some(match union {
                None => mask.clone(),
                Some(u) => datafusion::arrow::compute::or(&u, &mask).map_err(|e| e.to_string())?,
            });
            match mask.true_count() {
                0 => {}
                n if n == rows => kept.push((i, compact(kind, base, needed))),
                _ => kept.push((i, columns::filter(kind, base, &mask, needed)?)),
            }
        }
        let rows_kept = union.map_or(0, |u| u.true_count());
        Ok(Split {
            kept,
            rows_kept,
            errors,
        })
    }

    /// The event columns of `kind` worth decoding (`None`: all).
    pub fn decoded(&self, kind: EventKind) -> Option<Vec<usize>> {
        self.decoded
            .iter()
            .find(|(k, _)| *k == kind)
            .and_then(|(_, c)| c.clone())
    }

    /// The keepers' predicates, for the log.
    pub fn described(&self) -> impl Iterator<Item = (EventKind, &str)> {
        self.keepers
            .iter()
            .map(|k| (k.kind, k.predicate.as_deref().unwrap_or("(every row)")))
    }
}

/// The conjuncts all keepers of `kind` share, compiled into its prefilter;
/// each keeper's `rest` is set to what remains of its predicate.
fn prefilter(kind: EventKind, keepers: &mut [Keeper]) -> Result<Option<Prefilter>, String> {
    let mine: Vec<&mut Keeper> = keepers.iter_mut().filter(|k| k.kind == kind).collect();
    let shared: Vec<Expr> = match mine.first() {
        // a keeper keeping every row: nothing is shared
        Some(first) if mine.iter().all(|k| !k.conjuncts.is_empty()) => first
            .conjuncts
            .iter()
            .filter(|c| mine.iter().all(|k| k.conjuncts.contains(c)))
            .cloned()
            .collect(),
        _ => Vec::new(),
    };
    // what the prefiltered rows must still hold: every keeper's columns and
    // those its remaining conjuncts read
    let mut carry = Some(vec![false; table_schema(kind).fields().len()]);
    for keeper in mine {
        let rest: Vec<Expr> = keeper
            .conjuncts
            .iter()
            .filter(|c| !shared.contains(c))
            .cloned()
            .collect();
        // `None`: no predicate at all, or nothing beyond the shared part
        keeper.rest = conjunction(rest).map(|e| physical(kind, e)).transpose()?;
        let mut reads = keeper.needed.clone();
        if let Some(reads) = &mut reads {
            for col in keeper.rest.iter().flat_map(collect_columns) {
                if let Some(slot) = reads.get_mut(col.index()) {
                    *slot = true;
                }
            }
        }
        carry = either(carry, reads);
    }
    let Some(shared) = conjunction(shared) else {
        return Ok(None);
    };
    Ok(Some(Prefilter {
        kind,
        expr: physical(kind, shared)?,
        carry,
    }))
}

/// Columns either of two readers needs (`None`: every column).
fn either(a: Option<Vec<bool>>, b: Option<Vec<bool>>) -> Option<Vec<bool>> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.iter().zip(&b).map(|(x, y)| *x || *y).collect()),
        _ => None,
    }
}

fn decoded_columns(kind: EventKind, keepers: &[Keeper]) -> Option<Vec<usize>> {
    let event = vigil_schema::arrow::schema_for(kind);
    // the time and non-nullable columns: `decode` always reads them
    let mut columns: Vec<usize> = Vec::new();
    for keeper in keepers.iter().filter(|k| k.kind == kind) {
        let needed = keeper.needed.as_ref()?;
        columns.extend((0..event.fields().len()).filter(|i| needed[*i]));
        if let Some(expr) = &keeper.expr {
            columns.extend(
                collect_columns(expr)
                    .iter()
                    .map(|c| c.index())
                    .filter(|i| *i < event.fields().len()),
            );
        }
    }
    columns.sort_unstable();
    columns.dedup();
    Some(columns)
}

/// Where `expr` is true (null counts as false).
fn mask(expr: &Arc<dyn PhysicalExpr>, batch: &RecordBatch) -> Result<BooleanArray, String> {
    let mask = expr
        .evaluate(batch)
        .and_then(|v| v.into_array(batch.num_rows()))
        .map_err(|e| e.to_string())?;
    let mask = mask
        .as_any()
        .downcast_ref::<BooleanArray>()
        .ok_or("a keep predicate is not boolean")?;
    // nulls as false, so that OR and true_count agree with the filter
    Ok(if mask.null_count() > 0 {
        datafusion::arrow::compute::prep_null_mask_filter(mask)
    } else {
        mask.clone()
    })
}

/// The rows where `mask` is true; `None` when there are none.
fn apply(batch: &RecordBatch, mask: &BooleanArray) -> Result<Option<RecordBatch>, String> {
    let kept = mask.true_count();
    if kept == 0 {
        return Ok(None);
    }
    if kept == batch.num_rows() {
        return Ok(Some(batch.clone()));
    }
    datafusion::arrow::compute::filter_record_batch(batch, mask)
        .map(Some)
        .map_err(|e| e.to_string())
}

/// The rows of `batch` for which `expr` is true (null counts as false).
pub fn filter(
    expr: &Arc<dyn PhysicalExpr>,
    batch: RecordBatch,
) -> Result<Option<RecordBatch>, String> {
    apply(&batch, &mask(expr, &batch)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::engine::table_batch;
    use crate::rules::model::load_dir;
    use vigil_schema::arrow::EventBatchBuilder;
    use vigil_schema::{Event, FileActivity, Process};

    #[test]
    fn builtin_rules_keep_only_the_file_rows_they_use() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../rules");
        let mut rules: Vec<Rule> = load_dir(&dir)
            .unwrap()
            .into_iter()
            .map(Result::unwrap)
            .collect();
        let mut twin = rules
            .iter()
            .find(|r| r.id == "cred.store_read")
            .unwrap()
            .clone();
        twin.id = "cred.store_read.twin".into();
        rules.push(twin);
        let retention = Retention::for_rules(&rules, None).unwrap();
        let keeper_of = |rule: &str| {
            let i = rules.iter().position(|r| r.id == rule).unwrap();
            retention.inputs[i]
                .iter()
                .find(|(k, _)| *k == EventKind::File)
                .map(|(_, keeper)| *keeper)
                .unwrap()
        };
        let mut b = EventBatchBuilder::new(EventKind::File);
        let events = [
            (None, "open", "/home/ana/.aws/credentials", None),
            (Some("a"), "open", "/home/ana/.aws/credentials", None),
            (None, "open", "/tmp/x", None),
            (Some("b"), "open", "/home/ana/src/main.rs", None),
        ];
        // rows for the other file keepers, after the four the split below counts
        let more = [
            (
                Some("b"),
                "rename",
                "/home/ana/.x.tmp",
                Some("/home/ana/.bashrc"),
            ),
            (Some("b"), "delete", "/home/ana/.bash_history", None),
            (None, "delete", "/home/ana/.bash_history", None),
            (Some("c"), "open", "/home/ana/.ssh/id_ed25519", None),
        ];
        let mut all = EventBatchBuilder::new(EventKind::File);
        for (i, (agent, activity, path, new_path)) in events.into_iter().chain(more).enumerate() {
            let mut e = Event::new(EventKind::File, 1001, 14, activity, i as i64, 0, "h", "h");
            e.agent_id = agent.map(str::to_string);
            e.process = Some(Process::default());
            e.file = Some(FileActivity {
                path: path.into(),
                new_path: new_path.map(str::to_string),
                ..Default::default()
            });
            if i < events.len() {
                b.append(&e, None);
            }
            all.append(&e, None);
        }
        let all = table_batch(EventKind::File, &all.finish(), 7).unwrap();
        let batch = table_batch(EventKind::File, &b.finish(), 7).unwrap();
        let split = retention.split(EventKind::File, &batch).unwrap();
        // only the agent's credential read is of use to any rule
        assert_eq!(split.rows_kept, 1);
        // rules with the same predicate share a keeper; others have their own
        assert_eq!(
            keeper_of("cred.store_read"),
            keeper_of("cred.store_read.twin")
        );
        assert_ne!(
            keeper_of("cred.store_read"),
            keeper_of("exfil.read_then_new_egress")
        );
        for rule in ["cred.store_read", "exfil.read_then_new_egress"] {
            let kept = &split
                .kept
                .iter()
                .find(|(k, _)| *k == keeper_of(rule))
                .unwrap()
                .1;
            // rows keep their place in the original batch, for event references
            let rows = kept
                .column_by_name("batch_row")
                .unwrap()
                .as_any()
                .downcast_ref::<arrow_array::UInt32Array>()
                .unwrap();
            assert_eq!(rows.values().to_vec(), vec![1], "{rule}");
        }
        assert!(!split
            .kept
            .iter()
            .any(|(k, _)| *k == keeper_of("persistence.write")));
        // the prefilter changes nothing: each keeper holds exactly the rows
        // its whole predicate selects
        let split = retention.split(EventKind::File, &all).unwrap();
        assert!(split.rows_kept >= 4, "{}", split.rows_kept);
        for (k, keeper) in retention.keepers.iter().enumerate() {
            if keeper.kind != EventKind::File {
                continue;
            }
            let direct = filter(keeper.expr.as_ref().unwrap(), all.clone()).unwrap();
            let held = split.kept.iter().find(|(i, _)| *i == k).map(|(_, b)| b);
            let rows = |b: Option<&RecordBatch>| {
                b.map(|b| {
                    b.column_by_name("batch_row")
                        .unwrap()
                        .as_any()
                        .downcast_ref::<arrow_array::UInt32Array>()
                        .unwrap()
                        .values()
                        .to_vec()
                })
                .unwrap_or_default()
            };
            assert_eq!(rows(held), rows(direct.as_ref()), "{:?}", keeper.predicate);
        }
        // no rule at all: nothing is kept
        let none = Retention::for_rules(&[], None).unwrap();
        let empty = table_batch(
            EventKind::File,
            &EventBatchBuilder::new(EventKind::File).finish(),
            1,
        )
        .unwrap();
        let split = none.split(EventKind::File, &empty).unwrap();
        assert!(split.kept.is_empty());
        assert_eq!(split.rows_kept, 0);
    }
}
