//! One batch as one self-contained Arrow IPC stream: the form of a batch in
//! the spool and in a Kafka message.
//!
//! The stream's schema carries the batch identity in its metadata
//! (`vigil.kind`, `vigil.schema_version`, `vigil.host_id`, `vigil.seq`) so a
//! consumer needs nothing but the bytes to place, deduplicate and decode it.

use std::collections::HashMap;
use std::io::Cursor;
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_ipc::reader::StreamReader;
use arrow_ipc::writer::{IpcWriteOptions, StreamWriter};
use arrow_ipc::CompressionType;
use arrow_schema::{ArrowError, SchemaRef};

use crate::arrow::{batch_kind, DecodeError, META_HOST_ID, META_SEQ};
use crate::EventKind;

/// Where a batch comes from and its place in its (host, kind) sequence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchIdentity {
    pub kind: EventKind,
    pub host_id: String,
    pub seq: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Lz4,
    Zstd,
}

/// Encode a batch with its identity as one IPC stream.
pub fn encode(
    batch: &RecordBatch,
    host_id: &str,
    seq: u64,
    compression: Compression,
) -> Result<Vec<u8>, ArrowError> {
    let mut metadata: HashMap<String, String> = batch.schema().metadata().clone();
    metadata.insert(META_HOST_ID.into(), host_id.into());
    metadata.insert(META_SEQ.into(), seq.to_string());
    let schema = Arc::new(batch.schema().as_ref().clone().with_metadata(metadata));
    // not with_schema: a batch decoded from another stream carries that
    // stream's host and seq, which the new ones must replace
    let batch = RecordBatch::try_new(schema.clone(), batch.columns().to_vec())?;
    let options = IpcWriteOptions::default().try_with_compression(match compression {
        Compression::None => None,
        Compression::Lz4 => Some(CompressionType::LZ4_FRAME),
        Compression::Zstd => Some(CompressionType::ZSTD),
    })?;
    let mut out = Vec::with_capacity(1 << 16);
    let mut writer = StreamWriter::try_new_with_options(&mut out, &schema, options)?;
    writer.write(&batch)?;
    writer.finish()?;
    drop(writer);
    Ok(out)
}

/// Decode an IPC stream made by [`encode`]: its identity and record batches.
pub fn decode(bytes: &[u8]) -> Result<(BatchIdentity, Vec<RecordBatch>), DecodeError> {
    let p = decode_projected(bytes, None, |_| None)?;
    Ok((p.identity, p.batches))
}

/// A stream decoded by [`decode_projected`].
pub struct Projected {
    pub identity: BatchIdentity,
    /// The stream's whole schema (also when only `columns` were read).
    pub schema: SchemaRef,
    /// The columns read (`None`: all), in order.
    pub columns: Option<Vec<usize>>,
    pub batches: Vec<RecordBatch>,
}

/// [`decode`] reading only the columns `projection` picks for the batch's
/// kind (`None`: all); the others are neither decompressed nor validated.
/// With the kind known beforehand (`kind_hint`, from a spool record or a
/// Kafka header), the stream is read once; otherwise, or when the hint is
/// wrong, its schema is read first to learn the kind.
pub fn decode_projected(
    bytes: &[u8],
    kind_hint: Option<EventKind>,
    projection: impl Fn(EventKind) -> Option<Vec<usize>>,
) -> Result<Projected, DecodeError> {
    if let Some(kind) = kind_hint {
        if let Some(columns) = projection(kind) {
            if let Ok(reader) = StreamReader::try_new(Cursor::new(bytes), Some(columns.clone())) {
                let schema = reader.schema();
                if batch_kind(&schema).ok() == Some(kind) {
                    let identity = identity(kind, &schema)?;
                    return Ok(Projected {
                        identity,
                        schema,
                        columns: Some(columns),
                        batches: reader.collect::<Result<Vec<_>, _>>()?,
                    });
                }
            }
        }
    }
    let reader = StreamReader::try_new(Cursor::new(bytes), None)?;
    let schema = reader.schema();
    let kind = batch_kind(&schema)?;
    let identity = identity(kind, &schema)?;
    let columns = projection(kind);
    let batches = match &columns {
        None => reader.collect::<Result<Vec<_>, _>>()?,
        // the schema message is read again, now with the projection
        Some(columns) => StreamReader::try_new(Cursor::new(bytes), Some(columns.clone()))?
            .collect::<Result<Vec<_>, _>>()?,
    };
    Ok(Projected {
        identity,
        schema,
        columns,
        batches,
    })
}

fn identity(kind: EventKind, schema: &SchemaRef) -> Result<BatchIdentity, DecodeError> {
    let meta = schema.metadata();
    let host_id = meta.get(META_HOST_ID).cloned().ok_or(DecodeError::Column {
        column: "vigil.host_id",
        problem: "missing from the schema metadata".into(),
    })?;
    let seq = meta
        .get(META_SEQ)
        .and_then(|s| s.parse().ok())
        .ok_or(DecodeError::Column {
            column: "vigil.seq",
            problem: "missing or not a number in the schema metadata".into(),
        })?;
    Ok(BatchIdentity { kind, host_id, seq })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arrow::{decode_batch, EventBatchBuilder};
    use crate::Event;

    #[test]
    fn identity_and_events_survive_every_compression() {
        let mut b = EventBatchBuilder::new(EventKind::Network);
        let ev = Event::new(EventKind::Network, 4001, 1, "connect", 1, 2, "h", "n");
        b.append(&ev, None);
        let batch = b.finish();
        for c in [Compression::None, Compression::Lz4, Compression::Zstd] {
            let bytes = encode(&batch, "host-9", 77, c).unwrap();
            let (id, batches) = decode(&bytes).unwrap();
            assert_eq!(
                id,
                BatchIdentity {
                    kind: EventKind::Network,
                    host_id: "host-9".into(),
                    seq: 77
                }
            );
            assert_eq!(decode_batch(&batches[0]).unwrap(), vec![ev.clone()]);
        }
        assert!(decode(b"not arrow").is_err());
    }
}
