//! The local link between the quantum job gateway and the collector: one
//! unix stream socket, frames of a 4-byte big-endian length and a JSON
//! message, declared once here for both ends.
//!
//! The gateway (no privileges) asks the collector (which sees every
//! `connect` in the kernel) who is on the other end of a loopback
//! connection, and hands it the `quantum_job` records it makes. Each record
//! carries the gateway's sequence number; the collector acknowledges a
//! number once every record up to it is in its sinks, so the gateway can
//! keep, and send again after a reconnect, what was not acknowledged.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::{ProcessContext, QuantumJob};

/// Largest frame either end accepts: a job record with its process context
/// is a few KiB (the gateway trims larger ones to a quarter of this); the
/// bound keeps a broken or hostile peer from making the other allocate.
pub const MAX_FRAME_BYTES: usize = 256 << 10;

/// Gateway → collector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum ToCollector {
    /// Who holds the client end of the TCP connection `peer` → `local`?
    Lookup {
        id: u64,
        peer: SocketAddr,
        local: SocketAddr,
    },
    /// A job record, in the gateway's order.
    Job(Box<JobRecord>),
}

/// A `quantum_job` record as the gateway made it; the collector adds the
/// host and writes it as an event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobRecord {
    /// The gateway's sequence number: 1, 2, 3... from its start.
    pub seq: u64,
    /// Random per gateway start: tells a restarted gateway's numbers apart.
    pub instance: String,
    /// Wall clock of the record, ms since the Unix epoch.
    pub time_ms: i64,
    /// Boot-time clock of the record, ns (orders it among kernel events).
    pub ts_ns: u64,
    /// OCSF class and activity of the call (API Activity: create, read...).
    pub class_uid: u32,
    pub activity_id: u32,
    /// The activity's name: the provider operation (`submit`, `status`...).
    pub activity: String,
    /// The calling process when the collector could not describe it.
    pub pid: Option<u32>,
    pub context: Option<ProcessContext>,
    pub job: QuantumJob,
}

/// Collector → gateway.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum ToGateway {
    /// The answer to `Lookup { id }`: the process, if any was found.
    Caller {
        id: u64,
        pid: Option<u32>,
        context: Option<Box<ProcessContext>>,
        /// `bpf` (the kernel's connect record) or `proc` (the fallback).
        source: Option<String>,
    },
    /// Every job record of this gateway instance up to `seq` is in the
    /// collector's spool file (printed, when it only prints): the gateway
    /// may forget them. A record the collector could not write is never
    /// acknowledged; the collector closes the link and the gateway sends it
    /// again, so a record may arrive twice (same instance and `seq`).
    Ack { instance: String, seq: u64 },
}

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("link frame of {0} bytes is over the limit of {MAX_FRAME_BYTES}")]
    TooLarge(usize),
    #[error("link frame is not a valid message: {0}")]
    Malformed(#[from] serde_json::Error),
}

/// A message as one frame: length, then JSON.
pub fn encode<T: Serialize>(message: &T) -> Result<Vec<u8>, FrameError> {
    let mut frame = vec![0u8; 4];
    serde_json::to_writer(&mut frame, message)?;
    let len = frame.len() - 4;
    if len > MAX_FRAME_BYTES {
        return Err(FrameError::TooLarge(len));
    }
    frame[..4].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(frame)
}

/// The body length a frame header announces, checked against the limit
/// before anything is allocated for it.
pub fn frame_len(header: [u8; 4]) -> Result<usize, FrameError> {
    let len = u32::from_be_bytes(header) as usize;
    if len > MAX_FRAME_BYTES {
        return Err(FrameError::TooLarge(len));
    }
    Ok(len)
}

/// A frame's body as a message.
pub fn decode<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, FrameError> {
    Ok(serde_json::from_slice(body)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_through_frames() {
        let lookup = ToCollector::Lookup {
            id: 7,
            peer: "127.0.0.1:40000".parse().unwrap(),
            local: "127.0.0.1:8480".parse().unwrap(),
        };
        let frame = encode(&lookup).unwrap();
        let len = frame_len(frame[..4].try_into().unwrap()).unwrap();
        assert_eq!(len, frame.len() - 4);
        assert_eq!(decode::<ToCollector>(&frame[4..]).unwrap(), lookup);
        let ack = ToGateway::Ack {
            instance: "i".into(),
            seq: 9,
        };
        let frame = encode(&ack).unwrap();
        assert_eq!(decode::<ToGateway>(&frame[4..]).unwrap(), ack);
    }

    #[test]
    fn lying_lengths_and_garbage_are_errors() {
        assert!(matches!(
            frame_len(u32::MAX.to_be_bytes()),
            Err(FrameError::TooLarge(_))
        ));
        assert!(decode::<ToCollector>(b"{\"lookup\": 3}").is_err());
        assert!(decode::<ToCollector>(b"[[[[[[[[").is_err());
        assert!(
            decode::<ToGateway>(b"{\"ack\": {\"instance\": \"i\", \"seq\": 1, \"x\": 2}}").is_err()
        );
    }
}
