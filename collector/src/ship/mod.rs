//! Shipping spooled batches off the host.

pub mod kafka;
