//! The spool source: reads the collector's spool directory on this host
//! with [`SpoolTail`] (no broker), keeps its replay position in
//! `<data_dir>/state/spool-position.json`, and its dead letters in
//! `<data_dir>/deadletter/` (the payload as a file, the reason in
//! `index.jsonl`).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use vigil_spool::{Position, SpoolTail, Tailed};

use super::{Envelope, Message, Origin, Polled, Source, SourceError, Stream};

pub struct SpoolSource {
    dir: PathBuf,
    tail: SpoolTail,
    state_file: PathBuf,
    dead_dir: PathBuf,
    committed: Option<Position>,
}

#[derive(Serialize, Deserialize)]
struct SavedPosition {
    spool: PathBuf,
    segment: u64,
    offset: u64,
}

impl SpoolSource {
    /// Tail `spool_dir`, resuming where the last run committed.
    pub fn open(spool_dir: &Path, data_dir: &Path) -> Result<SpoolSource, SourceError> {
        let state_dir = data_dir.join("state");
        let dead_dir = data_dir.join("deadletter");
        for d in [&state_dir, &dead_dir] {
            std::fs::create_dir_all(d).map_err(|e| SourceError::State {
                path: d.display().to_string(),
                message: e.to_string(),
            })?;
        }
        let state_file = state_dir.join("spool-position.json");
        let saved = match std::fs::read(&state_file) {
            Ok(b) => {
                let s: SavedPosition =
                    serde_json::from_slice(&b).map_err(|e| SourceError::State {
                        path: state_file.display().to_string(),
                        message: e.to_string(),
                    })?;
                // a position in another spool means nothing here
                (s.spool == spool_dir).then_some(Position {
                    segment: s.segment,
                    offset: s.offset,
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                return Err(SourceError::State {
                    path: state_file.display().to_string(),
                    message: e.to_string(),
                })
            }
        };
        Ok(SpoolSource {
            dir: spool_dir.to_path_buf(),
            tail: SpoolTail::open(spool_dir, saved.unwrap_or_default()),
            state_file,
            dead_dir,
            committed: saved,
        })
    }

    pub fn position(&self) -> Position {
        self.tail.position()
    }
}

impl Source for SpoolSource {
    fn poll(&mut self, max: usize, wait: Duration) -> Result<Vec<Polled>, SourceError> {
        let deadline = Instant::now() + wait;
        let mut out = Vec::new();
        while out.len() < max {
            let next = self
                .tail
                .next_batch()
                .map_err(|source| SourceError::Spool {
                    dir: self.dir.display().to_string(),
                    source,
                })?;
            match next {
                Tailed::Batch { record, end } => {
                    let Some(encoding) = record.header.encoding() else {
                        continue;
                    };
                    let h = &record.header;
                    out.push(Polled::Message(Message {
                        envelope: Envelope {
                            kind: h.kind().map(|k| k.as_str().to_string()),
                            host_id: None,
                            seq: Some(h.seq),
                            index: None,
                            schema_version: None,
                        },
                        encoding,
                        payload: record.payload,
                        origin: Origin::Spool(Position {
                            segment: end.segment,
                            offset: record.offset,
                        }),
                    }));
                }
                Tailed::Corrupt {
                    segment,
                    offset,
                    reason,
                } => out.push(Polled::Corrupt {
                    at: format!("segment {segment} offset {offset}"),
                    reason: reason.to_string(),
                }),
                Tailed::Skipped { from, to } => out.push(Polled::Skipped {
                    from: format!("segment {} offset {}", from.segment, from.offset),
                    to: format!("segment {} offset {}", to.segment, to.offset),
                }),
                Tailed::Idle => {
                    if !out.is_empty() || Instant::now() >= deadline {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(20).min(wait));
                }
            }
        }
        Ok(out)
    }

    fn dead_letter(&mut self, message: &Message, reason: &str) -> Result<(), SourceError> {
        let err = |e: std::io::Error| SourceError::DeadLetter {
            place: self.dead_dir.display().to_string(),
            message: e.to_string(),
        };
        let Origin::Spool(p) = &message.origin else {
            unreachable!("spool messages have spool origins")
        };
        let name = format!("{:020}-{:020}.bin", p.segment, p.offset);
        let mut f = std::fs::File::create(self.dead_dir.join(&name)).map_err(err)?;
        f.write_all(&message.payload).map_err(err)?;
        f.sync_all().map_err(err)?;
        let line = serde_json::json!({
            "time": crate::wall_ms(),
            "origin": message.origin.to_string(),
            "kind": message.envelope.kind,
            "seq": message.envelope.seq,
            "reason": reason,
            "file": name,
        });
        let mut index = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dead_dir.join("index.jsonl"))
            .map_err(err)?;
        writeln!(index, "{line}").map_err(err)?;
        index.sync_all().map_err(err)
    }

    fn commit(&mut self, oldest: &BTreeMap<Stream, Origin>) -> Result<(), SourceError> {
        let position = match oldest.get(&Stream::Spool) {
            Some(Origin::Spool(p)) => *p,
            _ => self.tail.position(),
        };
        if self.committed == Some(position) {
            return Ok(());
        }
        let saved = SavedPosition {
            spool: self.dir.clone(),
            segment: position.segment,
            offset: position.offset,
        };
        crate::write_atomically(
            &self.state_file,
            &serde_json::to_vec(&saved).expect("serializable"),
        )
        .map_err(|e| SourceError::State {
            path: self.state_file.display().to_string(),
            message: e.to_string(),
        })?;
        self.committed = Some(position);
        Ok(())
    }

    fn dead_letter_place(&self) -> String {
        self.dead_dir.display().to_string()
    }
}
