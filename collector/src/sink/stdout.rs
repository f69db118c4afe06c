//! JSON lines on stdout: one object per event, as documented in schema/README.md.

use std::io::{self, BufWriter, Write};

use crate::enrich::Output;

pub struct StdoutSink {
    out: BufWriter<io::Stdout>,
    line: Vec<u8>,
}

impl Default for StdoutSink {
    fn default() -> Self {
        Self::new()
    }
}

impl StdoutSink {
    pub fn new() -> Self {
        Self {
            out: BufWriter::with_capacity(1 << 16, io::stdout()),
            line: Vec::with_capacity(4096),
        }
    }

    pub fn write(&mut self, output: &Output) -> io::Result<()> {
        self.line.clear();
        super::json::write_line(&mut self.line, output)?;
        self.out.write_all(&self.line)
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}
