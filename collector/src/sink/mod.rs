//! Where events go: JSON lines on stdout, and batches through the spool
//! (from which `ship` sends them to Kafka).

pub mod batch;
pub mod json;
pub mod spool;
pub mod stdout;
