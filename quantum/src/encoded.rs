//! Qiskit Runtime's wire encoding of binary values: base64 of zlib.

use std::io::Read;

use base64::Engine;

use crate::ParseError;

/// At most this much of a decompressed value is read: headers sit at the
/// start, and a small compressed body must not expand without bound.
pub const HEAD_BYTES: u64 = 1 << 20;

/// The first [`HEAD_BYTES`] of a base64(zlib(...)) value.
pub fn b64_zlib_head(value: &str, part: &'static str) -> Result<Vec<u8>, ParseError> {
    let compressed = base64::engine::general_purpose::STANDARD
        .decode(value.trim())
        .map_err(|e| ParseError::new(part, format!("bad base64: {e}")))?;
    let mut out = Vec::new();
    flate2::read::ZlibDecoder::new(compressed.as_slice())
        .take(HEAD_BYTES)
        .read_to_end(&mut out)
        .or_else(|e| {
            // a value cut short still has its header
            if out.is_empty() {
                Err(ParseError::new(part, format!("bad zlib data: {e}")))
            } else {
                Ok(out.len())
            }
        })?;
    Ok(out)
}
