//! One batch as one self-contained Arrow IPC stream: the form of a batch in
//! the spool and in a Kafka message.
//!
//! The stream's schema carries the batch identity in its metadata
//! (`vigil.kind`, `vigil.schema_version`, `vigil.host_id`, `vigil.seq`) so a
//! consumer needs nothing but the bytes to place, deduplicate and decode it.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use arrow_array::{ArrayRef, RecordBatch};
use arrow_buffer::Buffer;
use arrow_ipc::writer::{IpcWriteOptions, StreamWriter};
use arrow_ipc::{CompressionType, MessageHeader};
use arrow_schema::{ArrowError, DataType, Field, Schema, SchemaRef};

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
    let p = decode_projected(bytes, |_| None)?;
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
/// kind (`None`: all); the others are neither decompressed nor validated,
/// and neither are the dictionaries only they use.
///
/// The stream is walked message by message here rather than by arrow's
/// `StreamReader`, which decodes every dictionary batch whatever the
/// projection: with most of a batch's string columns dictionary-encoded,
/// that was a fifth of the detector's time. The schema message comes
/// first, so the kind (and the projection) is known in one pass.
pub fn decode_projected(
    bytes: &[u8],
    projection: impl Fn(EventKind) -> Option<Vec<usize>>,
) -> Result<Projected, DecodeError> {
    // arrow's readers panic on some damaged input (an unknown type id in a
    // schema, for one); a message from the network must never stop us
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| walk(bytes, projection)))
        .unwrap_or_else(|panic| {
            let why = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("(no message)");
            Err(DecodeError::Arrow(ArrowError::IpcError(format!(
                "damaged stream: {why}"
            ))))
        })
}

fn walk(
    bytes: &[u8],
    projection: impl Fn(EventKind) -> Option<Vec<usize>>,
) -> Result<Projected, DecodeError> {
    let ipc = |problem: String| DecodeError::Arrow(ArrowError::IpcError(problem));
    let mut at = 0usize;
    let mut stream: Option<Header> = None;
    let mut dictionaries: HashMap<i64, ArrayRef> = HashMap::new();
    let mut batches = Vec::new();
    loop {
        // an encapsulated message: [0xFFFFFFFF] length, flatbuffer, body
        let mut word = read_u32(bytes, at)
            .ok_or_else(|| ipc(format!("stream ends at byte {at} without an end marker")))?;
        at += 4;
        if word == CONTINUATION {
            word = read_u32(bytes, at)
                .ok_or_else(|| ipc(format!("stream ends at byte {at} inside a message header")))?;
            at += 4;
        }
        if word == 0 {
            break; // end of stream
        }
        let meta_len = word as usize;
        let meta = bytes.get(at..at + meta_len).ok_or_else(|| {
            ipc(format!(
                "message at byte {at} claims {meta_len} bytes of metadata past the end"
            ))
        })?;
        let message = arrow_ipc::root_as_message(meta)
            .map_err(|e| ipc(format!("message at byte {at}: {e}")))?;
        at += meta_len;
        let body_len = usize::try_from(message.bodyLength())
            .map_err(|_| ipc(format!("message at byte {at}: negative body length")))?;
        if at.checked_add(body_len).is_none_or(|end| end > bytes.len()) {
            return Err(ipc(format!(
                "message body at byte {at} runs {body_len} bytes past the end"
            )));
        }
        // copied only when read, each body on its own: arrays that stay
        // slices of it (uncompressed buffers) keep only their message alive
        let (from, to) = (at, at + body_len);
        let body = || Buffer::from(&bytes[from..to]);
        at = to;
        let version = message.version();
        match message.header_type() {
            MessageHeader::Schema => {
                if stream.is_some() {
                    return Err(ipc("a second schema message".into()));
                }
                let fb = message
                    .header_as_schema()
                    .ok_or_else(|| ipc("unreadable schema message".into()))?;
                let schema: SchemaRef = Arc::new(arrow_ipc::convert::fb_to_schema(fb));
                let kind = batch_kind(&schema)?;
                let columns = projection(kind);
                if let Some(c) = &columns {
                    if let Some(bad) = c.iter().find(|i| **i >= schema.fields().len()) {
                        return Err(ipc(format!(
                            "projection column {bad} beyond the schema's {}",
                            schema.fields().len()
                        )));
                    }
                }
                let wanted = dictionary_ids(&schema, columns.as_deref());
                stream = Some(Header {
                    schema,
                    kind,
                    columns,
                    wanted,
                });
            }
            MessageHeader::DictionaryBatch => {
                let Header { schema, wanted, .. } = stream
                    .as_ref()
                    .ok_or_else(|| ipc("a dictionary before the schema".into()))?;
                let dict = message
                    .header_as_dictionary_batch()
                    .ok_or_else(|| ipc("unreadable dictionary message".into()))?;
                // the dictionaries of columns not read are skipped unread
                if wanted.contains(&dict.id()) {
                    if let Some(data) = dict.data() {
                        check_compressed(data, &bytes[from..to], from)?;
                    }
                    arrow_ipc::reader::read_dictionary(
                        &body(),
                        dict,
                        schema,
                        &mut dictionaries,
                        &version,
                    )?;
                }
            }
            MessageHeader::RecordBatch => {
                let Header {
                    schema, columns, ..
                } = stream
                    .as_ref()
                    .ok_or_else(|| ipc("a record batch before the schema".into()))?;
                let batch = message
                    .header_as_record_batch()
                    .ok_or_else(|| ipc("unreadable record batch message".into()))?;
                check_compressed(batch, &bytes[from..to], from)?;
                batches.push(arrow_ipc::reader::read_record_batch(
                    &body(),
                    batch,
                    schema.clone(),
                    &dictionaries,
                    columns.as_deref(),
                    &version,
                )?);
            }
            other => return Err(ipc(format!("unexpected {other:?} message in a stream"))),
        }
    }
    let Header {
        schema,
        kind,
        columns,
        ..
    } = stream.ok_or_else(|| ipc("stream has no schema".into()))?;
    let identity = identity(kind, &schema)?;
    Ok(Projected {
        identity,
        schema,
        columns,
        batches,
    })
}

/// What the schema message said: the stream's schema and kind, the
/// columns to read and the dictionaries they use.
struct Header {
    schema: SchemaRef,
    kind: EventKind,
    columns: Option<Vec<usize>>,
    wanted: HashSet<i64>,
}

const CONTINUATION: u32 = 0xFFFF_FFFF;

/// Bytes the compressed buffers of one message may claim, together, to
/// decompress to. Arrow allocates what a buffer's length prefix claims
/// before decompressing it, and an allocation it cannot get aborts the
/// process: a damaged message (found by fuzzing) asked for 2^57 bytes.
/// Batches are about 4 MiB before compression (`batch.max_bytes`): this
/// is 64 times that.
pub const MAX_DECOMPRESSED: u64 = 256 << 20;

/// Refuse a message whose compressed buffers claim more than
/// [`MAX_DECOMPRESSED`] bytes. Each compressed buffer starts with its
/// uncompressed length (i64, little-endian; -1: stored uncompressed);
/// buffers outside the body are left for arrow to report.
fn check_compressed(
    batch: arrow_ipc::RecordBatch<'_>,
    body: &[u8],
    at: usize,
) -> Result<(), DecodeError> {
    if batch.compression().is_none() {
        return Ok(());
    }
    let mut claimed = 0u64;
    for buffer in batch.buffers().into_iter().flatten() {
        let (Ok(offset), Ok(length)) = (
            usize::try_from(buffer.offset()),
            usize::try_from(buffer.length()),
        ) else {
            continue;
        };
        let Some(prefix) = offset
            .checked_add(8)
            .filter(|_| length >= 8)
            .and_then(|end| body.get(offset..end))
        else {
            continue;
        };
        let n = i64::from_le_bytes(prefix.try_into().expect("8 bytes"));
        claimed = claimed.saturating_add(u64::try_from(n).unwrap_or(0));
        if claimed > MAX_DECOMPRESSED {
            return Err(DecodeError::Arrow(ArrowError::IpcError(format!(
                "message body at byte {at}: compressed buffers claim more than \
                 {MAX_DECOMPRESSED} bytes uncompressed"
            ))));
        }
    }
    Ok(())
}

fn read_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let word = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes(word.try_into().ok()?))
}

/// The dictionary ids the picked columns (`None`: all) use, nested ones too.
fn dictionary_ids(schema: &Schema, columns: Option<&[usize]>) -> HashSet<i64> {
    fn walk(field: &Field, ids: &mut HashSet<i64>) {
        #[allow(deprecated)] // the reader's schema still carries the stream's ids
        if let Some(id) = field.dict_id() {
            ids.insert(id);
        }
        match field.data_type() {
            DataType::List(f)
            | DataType::LargeList(f)
            | DataType::FixedSizeList(f, _)
            | DataType::Map(f, _) => walk(f, ids),
            DataType::Struct(fields) => fields.iter().for_each(|f| walk(f, ids)),
            _ => {}
        }
    }
    let mut ids = HashSet::new();
    for (i, field) in schema.fields().iter().enumerate() {
        if columns.is_none_or(|c| c.contains(&i)) {
            walk(field, &mut ids);
        }
    }
    ids
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

    /// Where the body of the first record batch message starts, and its
    /// buffers (offset, length) in it.
    fn first_batch_buffers(bytes: &[u8]) -> (usize, Vec<(usize, usize)>) {
        let mut at = 0;
        loop {
            let mut word = read_u32(bytes, at).unwrap();
            at += 4;
            if word == CONTINUATION {
                word = read_u32(bytes, at).unwrap();
                at += 4;
            }
            let meta = &bytes[at..at + word as usize];
            let message = arrow_ipc::root_as_message(meta).unwrap();
            at += word as usize;
            if let Some(batch) = message.header_as_record_batch() {
                let buffers = batch.buffers().unwrap().iter();
                let buffers = buffers.map(|b| (b.offset() as usize, b.length() as usize));
                return (at, buffers.collect());
            }
            at += message.bodyLength() as usize;
        }
    }

    #[test]
    fn compressed_buffers_claiming_huge_sizes_are_refused_not_allocated() {
        // fuzz finding (ipc_decode): a zstd buffer whose length prefix
        // claimed 2^57 bytes made arrow allocate that, aborting the process
        let mut b = EventBatchBuilder::new(EventKind::Network);
        b.append(
            &Event::new(EventKind::Network, 4001, 1, "connect", 1, 2, "h", "n"),
            None,
        );
        let batch = b.finish();
        for c in [Compression::Zstd, Compression::Lz4] {
            let mut bytes = encode(&batch, "h", 1, c).unwrap();
            let (body, buffers) = first_batch_buffers(&bytes);
            let (offset, _) = *buffers.iter().find(|(_, len)| *len >= 8).unwrap();
            bytes[body + offset..body + offset + 8].copy_from_slice(&(1i64 << 57).to_le_bytes());
            let e = decode(&bytes).unwrap_err().to_string();
            assert!(e.contains("claim more than 268435456 bytes"), "{e}");
        }
    }

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

    #[test]
    fn a_projection_reads_its_dictionary_columns_whole() {
        let mut b = EventBatchBuilder::new(EventKind::File);
        for i in 0..50 {
            let mut ev = Event::new(EventKind::File, 1001, 14, "open", i, 0, "h", "n");
            ev.agent_id = (i % 3 == 0).then(|| format!("agent-{}", i % 2));
            b.append(&ev, None);
        }
        let batch = b.finish();
        let schema = batch.schema();
        let agent = schema.index_of("agent_id").unwrap();
        let time = schema.index_of("time").unwrap();
        let bytes = encode(&batch, "host-1", 5, Compression::Zstd).unwrap();
        let p = decode_projected(&bytes, |kind| {
            assert_eq!(kind, EventKind::File);
            Some(vec![time, agent])
        })
        .unwrap();
        assert_eq!(p.identity.seq, 5);
        assert_eq!(p.schema.fields().len(), schema.fields().len());
        let read = &p.batches[0];
        assert_eq!(read.num_columns(), 2);
        // a dictionary column comes back whole, values and nulls
        assert_eq!(read.column(1), batch.column(agent));
        assert_eq!(read.column(0), batch.column(time));
        // a projection beyond the schema is an error, not a panic
        assert!(decode_projected(&bytes, |_| Some(vec![999])).is_err());
    }

    #[test]
    fn truncated_or_damaged_streams_are_errors() {
        let mut b = EventBatchBuilder::new(EventKind::Process);
        b.append(
            &Event::new(EventKind::Process, 1001, 1, "launch", 1, 2, "h", "n"),
            None,
        );
        let bytes = encode(&b.finish(), "host-1", 1, Compression::Zstd).unwrap();
        for cut in 0..bytes.len() - 1 {
            assert!(decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        // a byte changed (every third one): an error or a batch, never a panic
        for at in (0..bytes.len()).step_by(3) {
            let mut damaged = bytes.clone();
            damaged[at] ^= 0x5a;
            let _ = decode(&damaged);
        }
    }
}
