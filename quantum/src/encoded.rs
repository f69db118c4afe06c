//! Qiskit Runtime's wire encoding of binary values: base64 of zlib.
//!
//! The one place anything is decompressed: each value is inflated only up
//! to [`HEAD_BYTES`], and all values of a body together only up to
//! `max_decompressed_bytes`, so a zlib bomb costs bounded memory and time.

use std::io::Read;

use base64::Engine;

use crate::budget::{Budget, Hit};
use crate::ParseError;

/// At most this much of a decompressed value is read: headers sit at the
/// start, and a small compressed body must not expand without bound.
pub const HEAD_BYTES: u64 = 1 << 20;

/// The first [`HEAD_BYTES`] of a base64(zlib(...)) value, charged to `budget`.
pub(crate) fn b64_zlib_head(
    value: &str,
    part: &'static str,
    budget: &mut Budget<'_>,
) -> Result<Vec<u8>, ParseError> {
    budget.deadline().map_err(|h| h.error(part, ""))?;
    let compressed = base64::engine::general_purpose::STANDARD
        .decode(value.trim())
        .map_err(|e| ParseError::new(part, format!("bad base64: {e}")))?;
    let room = budget.inflate_room();
    // one byte past the room tells a value cut by the body's budget
    let cap = HEAD_BYTES.min(room.saturating_add(1));
    let mut out = Vec::new();
    flate2::read::ZlibDecoder::new(compressed.as_slice())
        .take(cap)
        .read_to_end(&mut out)
        .or_else(|e| {
            // a value cut short still has its header
            if out.is_empty() {
                Err(ParseError::new(part, format!("bad zlib data: {e}")))
            } else {
                Ok(out.len())
            }
        })?;
    if out.len() as u64 > room {
        let max = budget.limits.max_decompressed_bytes;
        return Err(Hit {
            limit: "max_decompressed_bytes",
            message: format!("more than {max} bytes decompressed"),
        }
        .error(part, ""));
    }
    budget.inflated(out.len() as u64);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ParseLimits;
    use std::io::Write;

    fn encode(data: &[u8]) -> String {
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
        z.write_all(data).unwrap();
        base64::engine::general_purpose::STANDARD.encode(z.finish().unwrap())
    }

    #[test]
    fn zlib_bombs_are_cut_per_value_and_per_body() {
        // 4 MiB of zeros in about 4 KiB
        let bomb = encode(&vec![0u8; 4 << 20]);
        let limits = ParseLimits {
            max_decompressed_bytes: 3 << 20,
            ..ParseLimits::default()
        };
        let mut budget = Budget::new(&limits);
        for _ in 0..3 {
            let head = b64_zlib_head(&bomb, "qpy", &mut budget).unwrap();
            assert_eq!(head.len() as u64, HEAD_BYTES);
        }
        let e = b64_zlib_head(&bomb, "qpy", &mut budget).unwrap_err();
        assert_eq!(e.limit, Some("max_decompressed_bytes"));
        assert_eq!(
            e.to_string(),
            format!("qpy: more than {} bytes decompressed", 3 << 20)
        );
    }
}
