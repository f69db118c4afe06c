//! Kernel telemetry source: BPF loading ([`bpf`]) and the ring-buffer record
//! format ([`records`]).

pub mod bpf;
pub mod records;
