//! Quantum job metadata for Vigil's job gateway.
//!
//! Reads what a job submission asks for out of the request body of each
//! supported provider ([`providers`]): backend, circuits, their width,
//! operations, depth and two-qubit gates ([`qasm`] for OpenQASM 2/3 source,
//! [`qpy`] headers for Qiskit's binary circuits), parameter sweeps ([`npy`]
//! headers for Qiskit's arrays), shots, tags and output location. The
//! result fills a [`vigil_schema::QuantumJob`].
//!
//! Everything here is pure: bytes in, metadata or a [`ParseError`] out,
//! with bounded work on hostile input (decompression is capped).

pub mod npy;
pub mod path;
pub mod providers;
pub mod qasm;
pub mod qpy;

mod encoded;

pub use providers::{Operation, Provider};

/// Why a body could not be read: the part (`ibm_runtime`, `qasm`, `npy`,
/// ...) and what was wrong, e.g. `qasm: line 4: expected a register name`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{part}: {message}")]
pub struct ParseError {
    pub part: &'static str,
    pub message: String,
}

impl ParseError {
    pub fn new(part: &'static str, message: impl Into<String>) -> Self {
        Self {
            part,
            message: message.into(),
        }
    }
}

/// SHA-256 of a circuit as submitted, lower-case hex.
pub fn circuit_hash(circuit: &[u8]) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(circuit);
    let mut hex = String::with_capacity(64);
    for b in digest {
        hex.push_str(&format!("{b:02x}"));
    }
    hex
}
