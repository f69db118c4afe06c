//! Vigil's endpoint agent as a library: source (the BPF programs) → enrich
//! (process table, agents, redaction) → sinks (batches, spool, stdout) →
//! ship (Kafka), and the gateway link. `main.rs` wires them together.

pub mod bench;
pub mod config;
pub mod enrich;
pub mod link;
pub mod metrics;
pub mod pipeline;
pub mod ship;
pub mod sink;
pub mod source;
pub mod transport;
