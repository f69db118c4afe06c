//! The on-disk record format (documented in `spool/README.md`).
//!
//! Every record is a 32-byte little-endian header followed by its payload:
//!
//! ```text
//!  0  magic     4  b"VGLR"
//!  4  crc32     4  CRC-32 (IEEE) of header bytes 8..32 and the payload
//!  8  len       4  payload bytes
//! 12  type      1  1 segment header, 2 batch
//! 13  encoding  1  0 JSON (segment header), 1 Arrow IPC stream, 2 JSON lines
//! 14  kind      1  event kind code (schema: 1 process, 2 file, 3 network, 4 collector)
//! 15  reserved  1  0
//! 16  seq       8  the batch's sequence number within (host, kind), from 1
//! 24  events    4  events in the batch
//! 28  reserved  4  0
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use vigil_schema::EventKind;

pub const MAGIC: [u8; 4] = *b"VGLR";
pub const HEADER_LEN: usize = 32;
/// Larger payloads are refused by the writer and treated as corruption by readers.
pub const MAX_PAYLOAD: u32 = 256 << 20;
/// Version of the segment layout, in every segment header.
pub const FORMAT_VERSION: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordType {
    SegmentHeader = 1,
    Batch = 2,
}

/// How a batch's payload is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    /// One Arrow IPC stream (schema message, one record batch).
    Arrow = 1,
    /// One JSON object per line, as the collector's stdout output.
    Json = 2,
}

impl Encoding {
    pub fn as_str(self) -> &'static str {
        match self {
            Encoding::Arrow => "arrow",
            Encoding::Json => "json",
        }
    }
}

/// The fixed part of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader {
    pub crc: u32,
    pub len: u32,
    pub rtype: u8,
    pub encoding: u8,
    pub kind: u8,
    pub seq: u64,
    pub events: u32,
}

impl RecordHeader {
    pub fn batch(kind: EventKind, encoding: Encoding, seq: u64, events: u32) -> Self {
        Self {
            crc: 0,
            len: 0,
            rtype: RecordType::Batch as u8,
            encoding: encoding as u8,
            kind: kind.code(),
            seq,
            events,
        }
    }

    pub fn is_batch(&self) -> bool {
        self.rtype == RecordType::Batch as u8
    }

    pub fn kind(&self) -> Option<EventKind> {
        EventKind::from_code(self.kind)
    }

    pub fn encoding(&self) -> Option<Encoding> {
        match self.encoding {
            1 => Some(Encoding::Arrow),
            2 => Some(Encoding::Json),
            _ => None,
        }
    }

    /// Header bytes 8..32, the part the checksum covers with the payload.
    fn tail(&self) -> [u8; HEADER_LEN - 8] {
        let mut b = [0u8; HEADER_LEN - 8];
        b[0..4].copy_from_slice(&self.len.to_le_bytes());
        b[4] = self.rtype;
        b[5] = self.encoding;
        b[6] = self.kind;
        b[8..16].copy_from_slice(&self.seq.to_le_bytes());
        b[16..20].copy_from_slice(&self.events.to_le_bytes());
        b
    }

    /// The record's bytes: header (with length and checksum filled in) and payload.
    pub fn encode(mut self, payload: &[u8]) -> Vec<u8> {
        self.len = payload.len() as u32;
        let tail = self.tail();
        let mut crc = crc32fast::Hasher::new();
        crc.update(&tail);
        crc.update(payload);
        let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&crc.finalize().to_le_bytes());
        out.extend_from_slice(&tail);
        out.extend_from_slice(payload);
        out
    }

    /// Parse a header; `None` when the magic is wrong or the length absurd.
    pub fn parse(b: &[u8; HEADER_LEN]) -> Option<Self> {
        if b[0..4] != MAGIC {
            return None;
        }
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes"));
        let h = Self {
            crc: u32_at(4),
            len: u32_at(8),
            rtype: b[12],
            encoding: b[13],
            kind: b[14],
            seq: u64::from_le_bytes(b[16..24].try_into().expect("8 bytes")),
            events: u32_at(24),
        };
        (h.len <= MAX_PAYLOAD).then_some(h)
    }

    /// Whether `payload` is what this header's checksum covers.
    pub fn verify(&self, payload: &[u8]) -> bool {
        let mut crc = crc32fast::Hasher::new();
        crc.update(&self.tail());
        crc.update(payload);
        crc.finalize() == self.crc
    }
}

/// The first record of every segment (JSON payload): who wrote it and where
/// each kind's sequence stood, so numbering survives restarts even when
/// older segments are gone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentHeader {
    pub format: u32,
    pub host_id: String,
    /// Next sequence number per kind name at the segment's start.
    pub next_seq: BTreeMap<String, u64>,
    pub created_ms: i64,
}

impl SegmentHeader {
    pub fn encode(&self) -> Vec<u8> {
        let payload = serde_json::to_vec(self).expect("segment header serialises");
        RecordHeader {
            crc: 0,
            len: 0,
            rtype: RecordType::SegmentHeader as u8,
            encoding: 0,
            kind: 0,
            seq: 0,
            events: 0,
        }
        .encode(&payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_checksum_catches_a_flipped_bit() {
        let bytes = RecordHeader::batch(EventKind::File, Encoding::Arrow, 42, 7).encode(b"hello");
        assert_eq!(bytes.len(), HEADER_LEN + 5);
        let h = RecordHeader::parse(bytes[..HEADER_LEN].try_into().unwrap()).unwrap();
        assert_eq!(
            (h.seq, h.events, h.len, h.kind()),
            (42, 7, 5, Some(EventKind::File))
        );
        assert!(h.verify(b"hello"));
        assert!(!h.verify(b"hellp"));
    }
}
