//! From a message to table batches: Arrow IPC straight through (checked
//! against the kind's schema), JSON events through the schema's builder.
//! Anything else is an error whose text is the dead-letter reason.

use arrow_array::RecordBatch;
use vigil_schema::arrow::{DecodeError, EventBatchBuilder};
use vigil_schema::{Event, EventKind, SCHEMA_VERSION};
use vigil_spool::Encoding;

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

pub fn decode(message: &Message) -> Result<Decoded, String> {
    match message.encoding {
        Encoding::Arrow => decode_arrow(message),
        Encoding::Json => decode_json(message),
    }
}

fn decode_arrow(message: &Message) -> Result<Decoded, String> {
    let (identity, batches) = vigil_schema::ipc::decode(&message.payload).map_err(|e| match e {
        DecodeError::Version { found } => format!(
            "unknown schema version {} (this detector reads {SCHEMA_VERSION})",
            found.as_deref().unwrap_or("(none)")
        ),
        other => format!("not a Vigil Arrow batch: {other}"),
    })?;
    let batch = match batches.len() {
        1 => batches.into_iter().next().expect("one"),
        0 => return Err("Arrow stream holds no batch".into()),
        _ => {
            let schema = batches[0].schema();
            datafusion::arrow::compute::concat_batches(&schema, &batches)
                .map_err(|e| e.to_string())?
        }
    };
    finish(identity.kind, identity.host_id, identity.seq, None, &batch)
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
