//! A response body relayed as it streams, with a copy of its first bytes
//! kept for the job record.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use crate::server::BoxError;

/// Called once: with the body (when it ended within the limit) or `None`
/// (longer than the limit, failed, or dropped by the client).
pub type OnEnd = Box<dyn FnOnce(Option<&[u8]>) + Send + Sync>;

pub struct TeeBody<B> {
    inner: B,
    copy: Vec<u8>,
    limit: usize,
    overflow: bool,
    on_end: Option<OnEnd>,
}

impl<B> TeeBody<B> {
    pub fn new(inner: B, limit: usize, on_end: OnEnd) -> Self {
        Self {
            inner,
            copy: Vec::new(),
            limit,
            overflow: false,
            on_end: Some(on_end),
        }
    }

    fn finish(&mut self, complete: bool) {
        if let Some(f) = self.on_end.take() {
            f((complete && !self.overflow).then_some(self.copy.as_slice()));
        }
    }
}

impl<B> Body for TeeBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    if this.copy.len() + data.len() <= this.limit {
                        this.copy.extend_from_slice(data);
                    } else {
                        this.overflow = true;
                    }
                }
                // hyper stops polling once a sized body is complete
                if this.inner.is_end_stream() {
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
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B> Drop for TeeBody<B> {
    fn drop(&mut self) {
        // the client hung up mid-body, or an empty body was never polled
        self.finish(false);
    }
}
