//! From a message to table batches: Arrow IPC straight through (checked
//! against the kind's schema), JSON events through the schema's builder.
//! Anything else is an error whose text is the dead-letter reason.

use arrow_array::RecordBatch;
use vigil_schema::arrow::{schema_for, DecodeError, EventBatchBuilder};
use vigil_schema::{Event, EventKind, SCHEMA_VERSION};
use vigil_spool::Encoding;

use crate::columns::shared_null;
use crate::rules::check::max_time;
use crate::rules::engine::table_batch;
use crate::source::Message;

/// A message ready for the window.
#[derive(Debug)]
pub struct Decoded {
    pub kind: EventKind,
    pub host_id: String,
    pub seq: u64,
    /// JSON messages: the event's place in its batch.
    pub index: Option<u32>,
    pub batch: RecordBatch,
    pub min_time: i64,
    pub max_time: i64,
}

/// Decode a message. Of an Arrow message only the event columns
/// `columns(kind)` names are decompressed (`None`: all); the others become
/// nulls, which is what a window that never reads them holds anyway.
pub fn decode(
    message: &Message,
    columns: impl Fn(EventKind) -> Option<Vec<usize>>,
) -> Result<Decoded, String> {
    match message.encoding {
        Encoding::Arrow => decode_arrow(message, columns),
        Encoding::Json => decode_json(message),
    }
}

fn decode_arrow(
    message: &Message,
    columns: impl Fn(EventKind) -> Option<Vec<usize>>,
) -> Result<Decoded, String> {
    // what the caller wants read, plus the time and every non-nullable column
    let pick = |kind: EventKind| columns_with_required(kind, &columns);
    let p = vigil_schema::ipc::decode_projected(&message.payload, pick).map_err(|e| match e {
        DecodeError::Version { found } => format!(
            "unknown schema version {} (this detector reads {SCHEMA_VERSION})",
            found.as_deref().unwrap_or("(none)")
        ),
        other => format!("not a Vigil Arrow batch: {other}"),
    })?;
    let kind = p.identity.kind;
    let expected = schema_for(kind);
    // the stream must have the kind's schema, column for column (also
    // the columns not read)
    if p.schema.fields().len() != expected.fields().len() {
        return Err(format!(
            "{} batch has {} columns, the {} schema has {}",
            kind.as_str(),
            p.schema.fields().len(),
            kind.as_str(),
            expected.fields().len()
        ));
    }
    if let Some((got, want)) = p
        .schema
        .fields()
        .iter()
        .zip(expected.fields())
        .find(|(got, want)| got.name() != want.name() || got.data_type() != want.data_type())
    {
        return Err(format!(
            "{} batch column {} is {}, the schema has {} {}",
            kind.as_str(),
            got.name(),
            got.data_type(),
            want.name(),
            want.data_type()
        ));
    }
    let batch = match p.batches.len() {
        1 => p.batches.into_iter().next().expect("one"),
        0 => return Err("Arrow stream holds no batch".into()),
        _ => {
            let schema = p.batches[0].schema();
            datafusion::arrow::compute::concat_batches(&schema, &p.batches)
                .map_err(|e| e.to_string())?
        }
    };
    let batch = match p.columns {
        None => batch,
        Some(picked) => {
            let rows = batch.num_rows();
            let mut read = batch.columns().iter();
            let columns = (0..expected.fields().len())
                .map(|i| match picked.contains(&i) {
                    true => read.next().cloned().expect("one column per picked index"),
                    false => shared_null(kind, i, expected.field(i).data_type(), rows),
                })
                .collect();
            let schema = std::sync::Arc::new(
                expected
                    .as_ref()
                    .clone()
                    .with_metadata(p.schema.metadata().clone()),
            );
            RecordBatch::try_new(schema, columns).map_err(|e| e.to_string())?
        }
    };
    finish(kind, p.identity.host_id, p.identity.seq, None, &batch)
}

/// `columns(kind)` with the time and the non-nullable columns added.
fn columns_with_required(
    kind: EventKind,
    columns: impl Fn(EventKind) -> Option<Vec<usize>>,
) -> Option<Vec<usize>> {
    let schema = schema_for(kind);
    columns(kind).map(|mut c| {
        c.push(0);
        c.extend((0..schema.fields().len()).filter(|i| !schema.field(*i).is_nullable()));
        c.retain(|i| *i < schema.fields().len());
        c.sort_unstable();
        c.dedup();
        c
    })
}

fn decode_json(message: &Message) -> Result<Decoded, String> {
    if let Some(v) = &message.envelope.schema_version {
        if v != &SCHEMA_VERSION.to_string() {
            return Err(format!(
                "unknown schema version {v} (this detector reads {SCHEMA_VERSION})"
            ));
        }
    }
    let mut builder: Option<EventBatchBuilder> = None;
    let mut host = None;
    for (i, line) in message.payload.split(|b| *b == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let ev: Event =
            serde_json::from_slice(line).map_err(|e| format!("JSON event {}: {e}", i + 1))?;
        let b = builder.get_or_insert_with(|| EventBatchBuilder::new(ev.kind));
        if b.kind() != ev.kind {
            return Err(format!(
                "JSON event {}: kind {} in a {} message",
                i + 1,
                ev.kind.as_str(),
                b.kind().as_str()
            ));
        }
        host.get_or_insert_with(|| ev.host_id.clone());
        b.append(&ev, None);
    }
    let mut builder = builder.ok_or("JSON message holds no event")?;
    let kind = builder.kind();
    if let Some(k) = &message.envelope.kind {
        if k != kind.as_str() {
            return Err(format!(
                "header says kind {k}, the event is {}",
                kind.as_str()
            ));
        }
    }
    let host_id = message
        .envelope
        .host_id
        .clone()
        .or(host)
        .unwrap_or_default();
    let seq = message
        .envelope
        .seq
        .ok_or("JSON message without a batch sequence number")?;
    finish(
        kind,
        host_id,
        seq,
        message.envelope.index,
        &builder.finish(),
    )
}

fn finish(
    kind: EventKind,
    host_id: String,
    seq: u64,
    index: Option<u32>,
    batch: &RecordBatch,
) -> Result<Decoded, String> {
    let batch = table_batch(kind, batch, seq)?;
    let (min_time, max_time) = match (
        max_time(&batch),
        batch
            .column(0)
            .as_any()
            .downcast_ref::<arrow_array::TimestampMillisecondArray>()
            .and_then(datafusion::arrow::compute::min),
    ) {
        (Some(max), Some(min)) => (min, max),
        _ => return Err(format!("{} batch has no event time", kind.as_str())),
    };
    Ok(Decoded {
        kind,
        host_id,
        seq,
        index,
        batch,
        min_time,
        max_time,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::{Envelope, Origin};
    use vigil_schema::ipc::{encode, Compression};
    use vigil_schema::{FileActivity, Process};
    use vigil_spool::Position;

    fn message(payload: Vec<u8>) -> Message {
        Message {
            payload,
            encoding: Encoding::Arrow,
            envelope: Envelope::default(),
            origin: Origin::Spool(Position {
                segment: 1,
                offset: 0,
            }),
        }
    }

    #[test]
    fn only_the_picked_columns_are_decoded() {
        let mut b = EventBatchBuilder::new(EventKind::File);
        let mut e = Event::new(EventKind::File, 1001, 14, "open", 5_000, 0, "h", "h");
        e.process = Some(Process {
            exe: "/usr/bin/cat".into(),
            ..Default::default()
        });
        e.file = Some(FileActivity {
            path: "/home/ana/.aws/credentials".into(),
            ..Default::default()
        });
        b.append(&e, None);
        let payload = encode(&b.finish(), "h", 3, Compression::Zstd).unwrap();
        let schema = schema_for(EventKind::File);
        let path = schema.index_of("file_path").unwrap();
        let exe = schema.index_of("process_exe").unwrap();
        let d = decode(&message(payload.clone()), |_| Some(vec![0, path])).unwrap();
        assert_eq!((d.min_time, d.max_time, d.seq), (5_000, 5_000, 3));
        let full = decode(&message(payload), |_| None).unwrap();
        assert_eq!(d.batch.schema(), full.batch.schema());
        assert_eq!(d.batch.column(path), full.batch.column(path));
        assert_eq!(full.batch.column(exe).null_count(), 0);
        assert_eq!(d.batch.column(exe).null_count(), 1);
    }

    #[test]
    fn a_batch_of_another_shape_is_refused_by_name() {
        let mut b = EventBatchBuilder::new(EventKind::Network);
        b.append(
            &Event::new(EventKind::Network, 4001, 1, "connect", 1, 2, "h", "n"),
            None,
        );
        let batch = b.finish();
        // the file schema's metadata on network columns: a producer bug
        let file_meta = schema_for(EventKind::File).metadata().clone();
        let schema = std::sync::Arc::new(batch.schema().as_ref().clone().with_metadata(file_meta));
        let lying = RecordBatch::try_new(schema, batch.columns().to_vec()).unwrap();
        let payload = encode(&lying, "h", 1, Compression::None).unwrap();
        let e = decode(&message(payload), |_| Some(vec![0])).unwrap_err();
        assert!(e.contains("file batch"), "{e}");
    }
}
