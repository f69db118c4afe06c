//! Where events go. This version has one sink: JSON lines on stdout.

pub mod stdout;
