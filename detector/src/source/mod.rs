//! Where events come from: the collector's spool directory on this host
//! (the embedded default) or Kafka topics (a consumer group, for many hosts).
//!
//! A source yields messages — one encoded batch (Arrow) or one event (JSON)
//! each — with their [`Origin`], keeps what does not decode in its
//! dead-letter place, and commits positions the detector hands it: for each
//! stream (the spool, or a topic partition), the oldest origin the window
//! still holds, so that a restart replays exactly the window.

pub mod kafka;
pub mod spool;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use vigil_spool::{Encoding, Position};

/// Where a message is in its source.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Origin {
    Spool(Position),
    Kafka {
        topic: Arc<str>,
        partition: i32,
        offset: i64,
    },
}

/// An ordered stream of a source: offsets compare within it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stream {
    Spool,
    Kafka { topic: Arc<str>, partition: i32 },
}

impl Origin {
    pub fn stream(&self) -> Stream {
        match self {
            Origin::Spool(_) => Stream::Spool,
            Origin::Kafka {
                topic, partition, ..
            } => Stream::Kafka {
                topic: topic.clone(),
                partition: *partition,
            },
        }
    }

    /// Order within the stream.
    pub fn offset(&self) -> (u64, u64) {
        match self {
            Origin::Spool(p) => (p.segment, p.offset),
            Origin::Kafka { offset, .. } => (0, *offset as u64),
        }
    }
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Spool(p) => write!(f, "spool segment {} offset {}", p.segment, p.offset),
            Origin::Kafka {
                topic,
                partition,
                offset,
            } => write!(f, "{topic}[{partition}]@{offset}"),
        }
    }
}

/// What the message says about itself outside the payload (spool record
/// header, Kafka headers); the payload's own identity wins for Arrow.
#[derive(Debug, Clone, Default)]
pub struct Envelope {
    pub kind: Option<String>,
    pub host_id: Option<String>,
    pub seq: Option<u64>,
    /// JSON messages: the event's place in its batch.
    pub index: Option<u32>,
    pub schema_version: Option<String>,
}

#[derive(Debug)]
pub struct Message {
    pub payload: Vec<u8>,
    pub encoding: Encoding,
    pub envelope: Envelope,
    pub origin: Origin,
}

/// What a poll returns besides messages: problems in the source itself.
#[derive(Debug)]
pub enum Polled {
    Message(Message),
    /// Records that failed their checksum (spool): skipped, counted.
    Corrupt {
        at: String,
        reason: String,
    },
    /// Spool segments deleted before they were read.
    Skipped {
        from: String,
        to: String,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("spool {dir}: {source}")]
    Spool {
        dir: String,
        #[source]
        source: std::io::Error,
    },
    #[error("kafka: {0}")]
    Kafka(String),
    #[error("dead-letter {place}: {message}")]
    DeadLetter { place: String, message: String },
    #[error("state file {path}: {message}")]
    State { path: String, message: String },
}

pub trait Source {
    /// Up to `max` messages; waits at most `wait` when there are none.
    fn poll(&mut self, max: usize, wait: Duration) -> Result<Vec<Polled>, SourceError>;

    /// Keep a message that cannot be used, with the reason, in the
    /// dead-letter place; durable when this returns.
    fn dead_letter(&mut self, message: &Message, reason: &str) -> Result<(), SourceError>;

    /// Commit: for each stream, resume at `oldest[stream]` (held by the
    /// window) or, for streams the window holds nothing of, after the last
    /// message polled. Called only once the alerts from every polled
    /// message are durable.
    fn commit(&mut self, oldest: &BTreeMap<Stream, Origin>) -> Result<(), SourceError>;

    /// Where dead letters go, for logs.
    fn dead_letter_place(&self) -> String;
}
