//! A response body relayed as it streams, with a copy of its first bytes
//! kept for the job record.
//!
//! When the client hangs up before the body is through, the rest is still
//! read from the upstream (in the background, bounded by the copy limit and
//! a deadline), so the record of a job the provider accepted carries its id.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::server::BoxError;

/// How long the rest of a response is read after the client left.
const ORPHAN_READ: Duration = Duration::from_secs(30);
/// Abandoned responses read at once (each holds up to its copy limit);
/// past it the record is made without the response.
static ORPHANS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(32);

/// Called once: with the body (when it ended within the limit) or `None`
/// (longer than the limit, failed, or not wanted).
pub type OnEnd = Box<dyn FnOnce(Option<&[u8]>) + Send + Sync>;

/// Over a response from the upstream (hyper's body, which can be read on
/// after the client left).
pub struct TeeBody {
    inner: Option<Incoming>,
    copy: Vec<u8>,
    limit: usize,
    overflow: bool,
    on_end: Option<OnEnd>,
}

impl TeeBody {
    pub fn new(inner: Incoming, limit: usize, on_end: OnEnd) -> Self {
        Self {
            inner: Some(inner),
            copy: Vec::new(),
            limit,
            overflow: false,
            on_end: Some(on_end),
        }
    }

    fn keep(&mut self, data: &[u8]) {
        if self.copy.len() + data.len() <= self.limit {
            self.copy.extend_from_slice(data);
        } else {
            self.overflow = true;
        }
    }

    fn finish(&mut self, complete: bool) {
        if let Some(f) = self.on_end.take() {
            f((complete && !self.overflow).then_some(self.copy.as_slice()));
        }
    }
}

impl Body for TeeBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let data = data.clone();
                    this.keep(&data);
                }
                // hyper stops polling once a sized body is complete
                if this.inner.as_ref().is_some_and(|b| b.is_end_stream()) {
                    this.finish(true);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.finish(false);
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Ready(None) => {
                this.finish(true);
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), |b| b.size_hint())
    }
}

impl Drop for TeeBody {
    fn drop(&mut self) {
        if self.on_end.is_none() {
            return;
        }
        // the client hung up mid-body, or an empty body was never polled
        let wanted = self.limit > 0 && !self.overflow;
        match (
            wanted,
            self.inner.take(),
            tokio::runtime::Handle::try_current(),
        ) {
            (true, Some(inner), Ok(runtime)) if ORPHANS.available_permits() > 0 => {
                let (copy, limit, on_end) = (
                    std::mem::take(&mut self.copy),
                    self.limit,
                    self.on_end.take(),
                );
                runtime.spawn(read_rest(inner, copy, limit, on_end));
            }
            _ => self.finish(false),
        }
    }
}

/// What an abandoned response still holds, read for the record.
async fn read_rest(inner: Incoming, mut copy: Vec<u8>, limit: usize, on_end: Option<OnEnd>) {
    let Some(on_end) = on_end else { return };
    let Ok(_slot) = ORPHANS.try_acquire() else {
        on_end(None);
        return;
    };
    let rest = tokio::time::timeout(ORPHAN_READ, async {
        let mut inner = inner;
        while let Some(frame) = inner.frame().await {
            let Ok(frame) = frame else { return false };
            if let Some(data) = frame.data_ref() {
                if copy.len() + data.len() > limit {
                    return false;
                }
                copy.extend_from_slice(data);
            }
        }
        true
    })
    .await;
    on_end(matches!(rest, Ok(true)).then_some(copy.as_slice()));
}
