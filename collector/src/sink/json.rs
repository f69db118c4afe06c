//! An event as one JSON object (schema/README.md), shared by the stdout sink
//! and the `json` batch encoding.

use crate::enrich::Output;

/// Append the event and its shared process context as one JSON object and a newline.
pub fn write_line(line: &mut Vec<u8>, output: &Output) -> std::io::Result<()> {
    serde_json::to_writer(&mut *line, &output.event)?;
    if let Some(context) = &output.context {
        // `{...}` + `,<context members>}`
        line.pop();
        line.push(b',');
        line.extend_from_slice(context.json_members().as_bytes());
        line.push(b'}');
    }
    line.push(b'\n');
    Ok(())
}
