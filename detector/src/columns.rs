//! Holding only what rules read. In the window, a column that no rule of
//! its keeper reads, or whose values are all null, is a slice of one shared
//! null array (per table and column) rather than buffers of its own: the
//! tables keep their full schema for the planner, and a held event costs
//! only the columns its rules use.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use arrow_array::{new_null_array, Array, ArrayRef, RecordBatch};
use arrow_schema::DataType;
use vigil_schema::EventKind;

/// Per (table, column), the longest null array handed out so far.
pub fn shared_null(kind: EventKind, column: usize, data_type: &DataType, len: usize) -> ArrayRef {
    static NULLS: OnceLock<Mutex<HashMap<(EventKind, usize), ArrayRef>>> = OnceLock::new();
    let mut nulls = NULLS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let held = nulls
        .entry((kind, column))
        .or_insert_with(|| new_null_array(data_type, 0));
    if held.len() < len {
        *held = new_null_array(data_type, len.max(held.len() * 2));
    }
    held.slice(0, len)
}

/// Whether a column can be shared: all null, and not a struct (whose
/// children DataFusion may read past the struct's own nulls).
fn all_null(array: &dyn Array) -> bool {
    array.null_count() == array.len() && !matches!(array.data_type(), DataType::Struct(_))
}

/// A table batch with unread (`needed[i]` false) and all-null nullable
/// columns replaced by shared nulls.
pub fn compact(kind: EventKind, batch: &RecordBatch, needed: Option<&[bool]>) -> RecordBatch {
    rebuild(kind, batch, needed, batch.num_rows(), |a| Ok(a.clone()))
        .expect("same schema, same length")
}

/// The rows of a table batch where `mask` is true, compacted as by
/// [`compact`]; columns that end up shared nulls are not filtered at all.
pub fn filter(
    kind: EventKind,
    batch: &RecordBatch,
    mask: &arrow_array::BooleanArray,
    needed: Option<&[bool]>,
) -> Result<RecordBatch, String> {
    let predicate = datafusion::arrow::compute::FilterBuilder::new(mask)
        .optimize()
        .build();
    rebuild(kind, batch, needed, mask.true_count(), |a| {
        predicate.filter(a).map_err(|e| e.to_string())
    })
}

/// A batch of `rows` rows whose columns are shared nulls where unread or
/// all null (and nullable), and `keep(column)` otherwise.
fn rebuild(
    kind: EventKind,
    batch: &RecordBatch,
    needed: Option<&[bool]>,
    rows: usize,
    keep: impl Fn(&ArrayRef) -> Result<ArrayRef, String>,
) -> Result<RecordBatch, String> {
    let schema = batch.schema();
    let columns = batch
        .columns()
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let read = needed.is_none_or(|needed| needed.get(i).copied().unwrap_or(true));
            // non-nullable columns (times, sequence numbers) stay: a few bytes
            if (!read || all_null(a.as_ref())) && schema.field(i).is_nullable() {
                Ok(shared_null(kind, i, a.data_type(), rows))
            } else {
                keep(a)
            }
        })
        .collect::<Result<Vec<ArrayRef>, String>>()?;
    RecordBatch::try_new(schema, columns).map_err(|e| e.to_string())
}

/// Batches of one table concatenated, shared nulls staying shared.
pub fn concat(kind: EventKind, batches: &[&RecordBatch]) -> Result<RecordBatch, String> {
    let schema = batches.first().ok_or("nothing to concatenate")?.schema();
    let n: usize = batches.iter().map(|b| b.num_rows()).sum();
    let columns = (0..schema.fields().len())
        .map(|i| {
            let parts: Vec<&dyn Array> = batches.iter().map(|b| b.column(i).as_ref()).collect();
            if parts.iter().all(|a| all_null(*a)) {
                Ok(shared_null(kind, i, schema.field(i).data_type(), n))
            } else {
                datafusion::arrow::compute::concat(&parts).map_err(|e| e.to_string())
            }
        })
        .collect::<Result<Vec<ArrayRef>, String>>()?;
    RecordBatch::try_new(schema, columns).map_err(|e| e.to_string())
}

/// The memory a batch holds of its own (shared nulls not counted).
pub fn held_bytes(batch: &RecordBatch) -> usize {
    batch
        .columns()
        .iter()
        .filter(|a| !all_null(a.as_ref()))
        .map(|a| a.get_array_memory_size())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::engine::table_batch;
    use vigil_schema::arrow::EventBatchBuilder;
    use vigil_schema::{Event, FileActivity};

    #[test]
    fn unread_and_null_columns_cost_nothing_and_stay_null() {
        let mut b = EventBatchBuilder::new(EventKind::File);
        for i in 0..100 {
            let mut e = Event::new(EventKind::File, 1001, 14, "open", i, 0, "h", "h");
            e.file = Some(FileActivity {
                path: format!("/home/ana/{i}"),
                ..Default::default()
            });
            b.append(&e, None);
        }
        let batch = table_batch(EventKind::File, &b.finish(), 1).unwrap();
        let schema = batch.schema();
        let path = schema.index_of("file_path").unwrap();
        let time = schema.index_of("time").unwrap();
        let needed: Vec<bool> = (0..batch.num_columns())
            .map(|i| i == path || i == time)
            .collect();
        let small = compact(EventKind::File, &batch, Some(&needed));
        assert_eq!(small.schema(), batch.schema());
        assert_eq!(small.column(path), batch.column(path));
        assert!(held_bytes(&small) < held_bytes(&batch) / 4);
        for (i, field) in schema.fields().iter().enumerate() {
            if !needed[i] && field.is_nullable() {
                assert_eq!(small.column(i).null_count(), 100, "{}", field.name());
            }
        }
        // concatenated, the shared nulls stay shared and the rest is whole
        let both = concat(EventKind::File, &[&small, &small]).unwrap();
        assert_eq!(both.num_rows(), 200);
        assert_eq!(both.column(path).len(), 200);
        assert!(held_bytes(&both) < held_bytes(&batch) / 2);
    }
}
