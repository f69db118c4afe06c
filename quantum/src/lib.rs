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
//! with bounded work on hostile input: [`ParseLimits`] caps JSON elements
//! and nesting, OpenQASM tokens and work, decompressed bytes and wall time
//! per body, and a limit hit is an error naming it ([`ParseError::limit`]).

mod budget;
pub mod npy;
pub mod path;
pub mod providers;
pub mod qasm;
pub mod qpy;

mod encoded;

pub use budget::OBJECT_WEIGHT;
pub use providers::{Operation, Provider};

/// Why a body could not be read: the part (`ibm_runtime`, `qasm`, `npy`,
/// ...) and what was wrong, e.g. `qasm: line 4: expected a register name`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{part}: {message}")]
pub struct ParseError {
    pub part: &'static str,
    pub message: String,
    /// The [`ParseLimits`] field that stopped the parse (`max_depth`,
    /// `max_work`, `deadline`, ...), `None` when the body was malformed:
    /// the gateway records which limit a hostile body ran into.
    pub limit: Option<&'static str>,
}

impl ParseError {
    pub fn new(part: &'static str, message: impl Into<String>) -> Self {
        Self {
            part,
            message: message.into(),
            limit: None,
        }
    }

    /// The body ran into `limit` (a [`ParseLimits`] field name); the
    /// message says where, e.g. `line 812: blocks nested deeper than 64`.
    pub fn limit(part: &'static str, limit: &'static str, message: impl Into<String>) -> Self {
        Self {
            part,
            message: message.into(),
            limit: Some(limit),
        }
    }
}

/// Bounds on the work one body may cost, whatever it holds. The defaults
/// admit every real SDK submission seen (../shared/quantum/requests, the
/// QASMBench circuits up to 3.3 MB) and keep an 8 MiB hostile body to well
/// under a second of CPU and about 64 MiB of memory (FUZZING.md has the
/// measurements). Every count is per body: the circuits of a program set
/// share one budget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseLimits {
    /// JSON values and object keys in the body (and in JSON carried inside
    /// it as a string, such as Braket's `action`); an object holding keys
    /// counts [`OBJECT_WEIGHT`] more, for the map node serde_json allocates
    /// for it. Default 500,000: at most about 30 MiB of `serde_json::Value`
    /// (45,000 small objects; 490,000 scalars take 15 MiB); the captured
    /// SDK bodies hold a few hundred.
    pub max_json_elements: usize,
    /// Nesting: JSON arrays and objects, OpenQASM blocks and control-flow
    /// bodies. Default 64 (SDK bodies nest under 10; serde_json stops at 128).
    pub max_depth: usize,
    /// OpenQASM tokens over all circuits of the body. Default 4,000,000:
    /// 8 bytes each, 32 MB at most; QASMBench's largest circuit (3.3 MB)
    /// has 2.0 M.
    pub max_tokens: usize,
    /// OpenQASM work units over all circuits of the body: one per wire an
    /// operation, barrier or condition touches after broadcast (about 60 ns
    /// each in release). Default 4,000,000; every QASMBench circuit needs
    /// under 262,144. A circuit may also touch at most `max_work / 16`
    /// distinct qubits and bits (250,000), each an entry in the depth map.
    pub max_work: u64,
    /// Bytes inflated from base64(zlib) values over the body (each value is
    /// read only up to its first MiB: the headers). Default 16 MiB.
    pub max_decompressed_bytes: u64,
    /// Give up once this instant passes, checked about every 4096 units of
    /// work: a cap on CPU per body should a budget above be wrong.
    pub deadline: Option<std::time::Instant>,
}

impl Default for ParseLimits {
    fn default() -> Self {
        Self {
            max_json_elements: 500_000,
            max_depth: 64,
            max_tokens: 4_000_000,
            max_work: 4_000_000,
            max_decompressed_bytes: 16 << 20,
            deadline: None,
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
