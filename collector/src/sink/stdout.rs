//! JSON lines on stdout: one object per event, as documented in schema/README.md.

use std::io::{self, BufWriter, Write};

use vigil_schema::Event;

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

    /// An event and its pre-rendered process context, as one JSON object.
    pub fn write(&mut self, output: &Output) -> io::Result<()> {
        let Some(context) = &output.context else {
            return self.write_event(&output.event);
        };
        self.line.clear();
        serde_json::to_writer(&mut self.line, &output.event)?;
        // `{...}` + `,<context members>}`
        self.line.pop();
        self.line.push(b',');
        self.line.extend_from_slice(context.as_bytes());
        self.line.extend_from_slice(b"}\n");
        self.out.write_all(&self.line)
    }

    pub fn write_event(&mut self, event: &Event) -> io::Result<()> {
        serde_json::to_writer(&mut self.out, event)?;
        self.out.write_all(b"\n")
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}
