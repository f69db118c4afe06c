//! Where alerts go besides the Parquet store.

pub mod kafka;
