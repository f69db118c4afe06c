//! Reading a request body whole, within bounds: its size (`max_body_bytes`,
//! checked against Content-Length before anything is read), its time
//! (`body_timeout_ms`, so a slow sender cannot hold a slot forever) and the
//! memory all requests hold at once (`body_budget_bytes`, a semaphore of
//! KiB permits taken as bytes arrive: many large bodies wait for room
//! instead of taking the process past its memory limit).

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::HeaderValue;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("request body over the gateway's max_body_bytes of {max}")]
    TooLarge { max: usize },
    #[error("request body not received within body_timeout_ms ({ms} ms)")]
    TimedOut { ms: u128 },
    #[error("cannot read the request body: {0}")]
    Broken(String),
}

/// What a body holds of the shared budget, released when dropped.
pub struct Held(#[allow(dead_code, reason = "held for its drop")] Vec<OwnedSemaphorePermit>);

/// The whole body, and its share of the budget (drop it when the bytes go).
/// Bytes up to `free` are not counted against the budget: small bodies
/// (bounded in number by the connection cap) never wait behind large ones.
pub async fn read(
    body: Incoming,
    content_length: Option<&HeaderValue>,
    max: usize,
    free: usize,
    budget: &std::sync::Arc<Semaphore>,
    timeout: Duration,
) -> Result<(Bytes, Held), BodyError> {
    let declared = content_length
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(BodyError::TooLarge { max });
    }
    tokio::time::timeout(timeout, collect(body, max, free, budget))
        .await
        .unwrap_or(Err(BodyError::TimedOut {
            ms: timeout.as_millis(),
        }))
}

async fn collect(
    mut body: Incoming,
    max: usize,
    free: usize,
    budget: &std::sync::Arc<Semaphore>,
) -> Result<(Bytes, Held), BodyError> {
    let mut bytes = BytesMut::new();
    let mut held = Vec::new();
    let mut held_kib = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| BodyError::Broken(e.to_string()))?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        if bytes.len() + data.len() > max {
            return Err(BodyError::TooLarge { max });
        }
        let want_kib = (bytes.len() + data.len())
            .saturating_sub(free)
            .div_ceil(1024);
        if want_kib > held_kib {
            let more = (want_kib - held_kib) as u32;
            let permit = budget
                .clone()
                .acquire_many_owned(more)
                .await
                .map_err(|e| BodyError::Broken(e.to_string()))?;
            held.push(permit);
            held_kib = want_kib;
        }
        bytes.extend_from_slice(&data);
    }
    Ok((bytes.freeze(), Held(held)))
}
