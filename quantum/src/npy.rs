//! NumPy `.npy` headers: the shape of a parameter array without reading it.
//!
//! Format: magic `\x93NUMPY`, major and minor version bytes, a little-endian
//! header length (u16 in version 1, u32 in 2 and 3), then a Python dict
//! literal such as `{'descr': '<f8', 'fortran_order': False, 'shape': (64, 4), }`.

use crate::ParseError;

const MAGIC: &[u8] = b"\x93NUMPY";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NpyHeader {
    /// Element type, e.g. `<f8`.
    pub descr: String,
    pub shape: Vec<u64>,
}

impl NpyHeader {
    /// Parameter sets in a parameter-value array: every axis but the last
    /// (saturating: a header may state any shape).
    pub fn bindings(&self) -> u64 {
        match self.shape.split_last() {
            Some((_, outer)) => outer.iter().fold(1u64, |a, &d| a.saturating_mul(d)),
            None => 1,
        }
    }

    /// Parameters per set: the last axis (0 for a scalar).
    pub fn parameters(&self) -> u64 {
        self.shape.last().copied().unwrap_or(0)
    }
}

/// Reads the header at the start of `data` (the array itself may be cut off).
pub fn parse_header(data: &[u8]) -> Result<NpyHeader, ParseError> {
    let bad = |why: &str| ParseError::new("npy", why);
    if data.len() < 10 || &data[..6] != MAGIC {
        return Err(bad("not an .npy array (no \\x93NUMPY magic)"));
    }
    let (len, start): (usize, usize) = match data[6] {
        1 => (usize::from(u16::from_le_bytes([data[8], data[9]])), 10),
        2 | 3 => {
            let b = data
                .get(8..12)
                .ok_or_else(|| bad("truncated header length"))?;
            (u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize, 12)
        }
        v => return Err(bad(&format!("unsupported .npy version {v}"))),
    };
    let header = data
        .get(start..start.saturating_add(len))
        .ok_or_else(|| bad("header longer than the data"))?;
    let header = std::str::from_utf8(header).map_err(|_| bad("header is not text"))?;
    let descr = dict_value(header, "descr")
        .map(|v| v.trim_matches(|c| c == '\'' || c == '"').to_string())
        .ok_or_else(|| bad("header has no 'descr'"))?;
    let shape = dict_value(header, "shape").ok_or_else(|| bad("header has no 'shape'"))?;
    let inner = shape
        .strip_prefix('(')
        .and_then(|s| s.strip_suffix(')'))
        .ok_or_else(|| bad("'shape' is not a tuple"))?;
    let shape = inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.trim_end_matches('L').parse::<u64>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| bad("'shape' holds a non-integer"))?;
    Ok(NpyHeader { descr, shape })
}

/// The text of `key`'s value in a flat Python dict literal (tuples allowed).
fn dict_value<'a>(dict: &'a str, key: &str) -> Option<&'a str> {
    let at = dict
        .find(&format!("'{key}'"))
        .or_else(|| dict.find(&format!("\"{key}\"")))?;
    let rest = &dict[at + key.len() + 2..];
    let rest = rest.trim_start().strip_prefix(':')?.trim_start();
    let end = if rest.starts_with('(') {
        rest.find(')')? + 1
    } else {
        rest.find([',', '}']).unwrap_or(rest.len())
    };
    Some(rest[..end].trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn npy(header: &str) -> Vec<u8> {
        let mut v = MAGIC.to_vec();
        v.extend([1, 0]);
        v.extend((header.len() as u16).to_le_bytes());
        v.extend(header.as_bytes());
        v
    }

    #[test]
    fn reads_shape_and_type() {
        let h = parse_header(&npy(
            "{'descr': '<f8', 'fortran_order': False, 'shape': (64, 4), }   \n",
        ))
        .unwrap();
        assert_eq!(h.descr, "<f8");
        assert_eq!(h.shape, vec![64, 4]);
        assert_eq!((h.bindings(), h.parameters()), (64, 4));
        let h = parse_header(&npy(
            "{'descr': '<f8', 'fortran_order': False, 'shape': (5,), }",
        ))
        .unwrap();
        assert_eq!((h.bindings(), h.parameters()), (1, 5));
        let h = parse_header(&npy(
            "{'descr': '<f8', 'fortran_order': False, 'shape': (), }",
        ))
        .unwrap();
        assert_eq!((h.bindings(), h.parameters()), (1, 0));
        let h = parse_header(&npy(
            "{'descr': '<f8', 'shape': (2, 3, 2), 'fortran_order': False}",
        ))
        .unwrap();
        assert_eq!((h.bindings(), h.parameters()), (6, 2));
    }

    #[test]
    fn bad_headers_are_errors() {
        assert!(parse_header(b"").is_err());
        assert!(parse_header(b"\x93NUMPY\x01\x00\xff\xff{").is_err());
        assert!(parse_header(&npy("{'descr': '<f8', 'shape': (a, 4)}")).is_err());
        assert!(parse_header(&npy("{'descr': '<f8'}")).is_err());
    }

    #[test]
    fn huge_shapes_saturate() {
        let h = parse_header(&npy(
            "{'descr': '<f8', 'shape': (18446744073709551615, 3, 2), }",
        ))
        .unwrap();
        assert_eq!((h.bindings(), h.parameters()), (u64::MAX, 2));
    }
}
