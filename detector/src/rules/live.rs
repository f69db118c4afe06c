//! A rule's tables as providers that read the window when a plan runs, not
//! when it is planned: the physical plan is made once per rule and re-run
//! after `reset_plan_states` (DataFusion's way of re-executing a plan, as
//! recursive queries do), so an evaluation costs execution only.

use std::any::Any;
use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::Result;
use datafusion::datasource::TableType;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::memory::{LazyBatchGenerator, LazyMemoryExec};
use datafusion::physical_plan::ExecutionPlan;
use parking_lot::{Mutex, RwLock};

/// The batches a table holds for the next run.
pub type Shared = Arc<Mutex<Vec<RecordBatch>>>;

/// A table whose scans read `batches` as they are when executed.
#[derive(Debug)]
pub struct LiveTable {
    schema: SchemaRef,
    pub batches: Shared,
}

impl LiveTable {
    pub fn new(schema: SchemaRef) -> LiveTable {
        LiveTable {
            schema,
            batches: Shared::default(),
        }
    }
}

#[async_trait]
impl TableProvider for LiveTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let schema = match projection {
            Some(p) => Arc::new(self.schema.project(p)?),
            None => self.schema.clone(),
        };
        let generator = LiveBatches {
            batches: self.batches.clone(),
            projection: projection.cloned(),
            left: None,
        };
        Ok(Arc::new(LazyMemoryExec::try_new(
            schema,
            vec![Arc::new(RwLock::new(generator))],
        )?))
    }
}

/// One execution's pass over a table's batches (taken at its first batch).
#[derive(Debug)]
struct LiveBatches {
    batches: Shared,
    projection: Option<Vec<usize>>,
    left: Option<VecDeque<RecordBatch>>,
}

impl fmt::Display for LiveBatches {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "window batches")
    }
}

impl LazyBatchGenerator for LiveBatches {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn generate_next_batch(&mut self) -> Result<Option<RecordBatch>> {
        if self.left.is_none() {
            let taken = self.batches.lock().clone();
            let projected = match &self.projection {
                None => taken,
                Some(p) => taken
                    .iter()
                    .map(|b| b.project(p))
                    .collect::<std::result::Result<Vec<_>, _>>()?,
            };
            self.left = Some(projected.into());
        }
        Ok(self.left.as_mut().and_then(VecDeque::pop_front))
    }

    fn reset_state(&self) -> Arc<RwLock<dyn LazyBatchGenerator>> {
        Arc::new(RwLock::new(LiveBatches {
            batches: self.batches.clone(),
            projection: self.projection.clone(),
            left: None,
        }))
    }
}

#[cfg(test)]
mod tests {
    use crate::rules::engine::{table_batch, Engine};
    use crate::rules::examples::{batches, EXAMPLE_EPOCH_MS, EXAMPLE_HOST};
    use crate::rules::model::load_dir;

    /// A prepared plan (a join, a group, an anti-join) run again and again
    /// over changing tables gives what a fresh plan would.
    #[test]
    fn a_plan_run_again_sees_the_new_rows_only() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../rules");
        let rules: Vec<_> = load_dir(&dir)
            .unwrap()
            .into_iter()
            .map(Result::unwrap)
            .collect();
        let engine = Engine::new();
        for id in ["exfil.read_then_new_egress", "exec.download_pipe_shell"] {
            let rule = rules.iter().find(|r| r.id == id).unwrap();
            let prepared = engine.prepare(rule).unwrap();
            for round in 0..3 {
                for ex in &rule.examples {
                    let tables = batches(&ex.events, EXAMPLE_EPOCH_MS, EXAMPLE_HOST)
                        .unwrap()
                        .into_iter()
                        .map(|(kind, b)| (kind, vec![table_batch(kind, &b, 1).unwrap()]))
                        .collect();
                    let found = engine
                        .run_prepared(&prepared, rule, tables, EXAMPLE_EPOCH_MS + 600_000)
                        .unwrap();
                    assert_eq!(
                        !found.is_empty(),
                        ex.fires,
                        "{id} / {} (round {round})",
                        ex.name
                    );
                }
                let none = engine
                    .run_prepared(&prepared, rule, Vec::new(), EXAMPLE_EPOCH_MS)
                    .unwrap();
                assert!(none.is_empty(), "{id}: empty tables, round {round}");
            }
        }
    }
}
