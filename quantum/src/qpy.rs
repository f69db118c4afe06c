//! Qiskit QPY headers: circuit count, and each circuit's width and
//! instruction count, without decoding the instructions.
//!
//! Layout (big-endian, qiskit/qpy/formats.py): `QISKIT`, QPY version, Qiskit
//! major/minor/patch, program count (u64), from version 10 a symbolic
//! encoding byte, from version 5 a type key (`q` = circuit); from version 16
//! a table of each program's byte offset. Each circuit starts with its
//! header: name size (u16), global phase type and size, qubits (u32), clbits
//! (u32), metadata size (u64), registers (u32), instructions (u64), then the
//! name. Version 1 stored the global phase as an f64 in place of its type
//! and size.

use crate::ParseError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QpyCircuit {
    /// The circuit's name, its first [`NAME_BYTES`] bytes at most.
    pub name: String,
    /// The name's full size in bytes.
    pub name_bytes: u64,
    pub qubits: u32,
    pub clbits: u32,
    /// Size of the circuit's free-form metadata (JSON) in bytes.
    pub metadata_bytes: u64,
    pub instructions: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QpyFile {
    pub version: u8,
    /// Qiskit version that wrote it, e.g. `2.6.2`.
    pub qiskit: String,
    pub programs: u64,
    /// Headers of the circuits that could be located: every one from QPY 16
    /// on (offset table), else the first.
    pub circuits: Vec<QpyCircuit>,
}

/// Bytes of a circuit name kept: offsets may point every one of 4096
/// circuits at the same 64 KiB name, which copied whole would take 256 MiB.
pub const NAME_BYTES: usize = 256;

struct Reader<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ParseError> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.data.len());
        let end = end.ok_or_else(|| ParseError::new("qpy", "truncated"))?;
        let s = &self.data[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, ParseError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, ParseError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, ParseError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, ParseError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }
}

/// Reads the file header and the circuit headers it can reach in `data`
/// (which may be only the start of the file).
pub fn parse(data: &[u8]) -> Result<QpyFile, ParseError> {
    let mut r = Reader { data, at: 0 };
    if r.take(6).ok() != Some(b"QISKIT".as_slice()) {
        return Err(ParseError::new("qpy", "not a QPY file (no QISKIT magic)"));
    }
    let version = r.u8()?;
    let (major, minor, patch) = (r.u8()?, r.u8()?, r.u8()?);
    let programs = r.u64()?;
    if version >= 10 {
        r.u8()?; // symbolic encoding
    }
    if version >= 5 {
        let key = r.u8()?;
        if key != b'q' {
            return Err(ParseError::new(
                "qpy",
                format!("program type {:?} is not a circuit", key as char),
            ));
        }
    }
    let mut offsets = Vec::new();
    if version >= 16 {
        for _ in 0..programs.min(4096) {
            offsets.push(r.u64()?);
        }
    } else {
        offsets.push(r.at as u64);
    }
    let mut circuits = Vec::with_capacity(offsets.len());
    for (i, offset) in offsets.into_iter().enumerate() {
        let at = usize::try_from(offset).map_err(|_| ParseError::new("qpy", "bad offset"))?;
        let mut c = Reader { data, at };
        match circuit_header(&mut c, version) {
            Ok(h) => circuits.push(h),
            // only the start of a large file may be at hand: keep what was read
            Err(_) if i > 0 => break,
            Err(e) => return Err(e),
        }
    }
    Ok(QpyFile {
        version,
        qiskit: format!("{major}.{minor}.{patch}"),
        programs,
        circuits,
    })
}

fn circuit_header(r: &mut Reader<'_>, version: u8) -> Result<QpyCircuit, ParseError> {
    let name_size = r.u16()?;
    if version >= 2 {
        r.u8()?; // global phase type
        r.u16()?; // global phase size
    } else {
        r.u64()?; // global phase (f64)
    }
    let qubits = r.u32()?;
    let clbits = r.u32()?;
    let metadata_bytes = r.u64()?;
    r.u32()?; // registers
    let instructions = r.u64()?;
    if version >= 12 {
        r.u32()?; // standalone variables
    }
    let name = r.take(usize::from(name_size))?;
    let name = String::from_utf8_lossy(&name[..name.len().min(NAME_BYTES)]).into_owned();
    Ok(QpyCircuit {
        name,
        name_bytes: u64::from(name_size),
        qubits,
        clbits,
        metadata_bytes,
        instructions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_sharing_one_long_name_keep_little_of_it() {
        // QPY 16: 4096 programs whose offsets all point at one circuit
        // header with a 65535-byte name
        let mut f = b"QISKIT".to_vec();
        f.extend([16, 2, 0, 0]);
        f.extend(4096u64.to_be_bytes());
        f.extend([b'p', b'q']);
        let header_at = (f.len() + 4096 * 8) as u64;
        for _ in 0..4096 {
            f.extend(header_at.to_be_bytes());
        }
        f.extend(u16::MAX.to_be_bytes());
        f.extend([b'p', 0, 0]);
        f.extend(2u32.to_be_bytes());
        f.extend(0u32.to_be_bytes());
        f.extend(0u64.to_be_bytes());
        f.extend(0u32.to_be_bytes());
        f.extend(7u64.to_be_bytes());
        f.extend(0u32.to_be_bytes());
        f.extend(vec![b'n'; usize::from(u16::MAX)]);
        let file = parse(&f).unwrap();
        assert_eq!(file.circuits.len(), 4096);
        let c = &file.circuits[4095];
        assert_eq!((c.name.len(), c.name_bytes), (NAME_BYTES, 65535));
        assert_eq!((c.qubits, c.instructions), (2, 7));
    }
}
