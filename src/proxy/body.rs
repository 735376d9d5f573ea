//! The bodies the proxy forwards: requests to the upstream, responses to the client.
//!
//! Owns: [`UpstreamBody`], a request body whose first frames may have been read already (to
//! observe a GenAI request before forwarding it) followed by the rest of the client's stream;
//! [`ProxyBody`], a response body that is the upstream's (tapped or not) or the proxy's own
//! error. Both yield frames exactly as received, with the original size hints.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::genai::inject::UsageStripper;
use crate::tap::{RequestBody, TapBody};

/// A request body on its way to the upstream.
#[derive(Debug)]
pub struct UpstreamBody {
    /// Frames already read from the client, forwarded first.
    head: VecDeque<Frame<Bytes>>,
    head_len: u64,
    /// What the client has yet to send.
    rest: Option<Incoming>,
}

impl UpstreamBody {
    /// The client's body, forwarded as it arrives.
    pub fn streaming(body: Incoming) -> Self {
        UpstreamBody {
            head: VecDeque::new(),
            head_len: 0,
            rest: Some(body),
        }
    }

    /// A body the proxy holds whole (a request it rewrote, or resends).
    pub fn whole(bytes: Bytes) -> Self {
        let len = bytes.len() as u64;
        UpstreamBody {
            head: VecDeque::from([Frame::data(bytes)]),
            head_len: len,
            rest: None,
        }
    }

    /// Whether the whole body was read before forwarding.
    pub fn is_buffered(&self) -> bool {
        self.rest.is_none()
    }

    /// Reads the client's body up to `limit` bytes so it can be observed, then forwards it all.
    /// A larger body is forwarded unobserved: what was read, then the rest as it arrives.
    pub async fn read(
        mut body: Incoming,
        limit: usize,
    ) -> Result<(Self, RequestBody), hyper::Error> {
        let too_large = || {
            RequestBody::Unobserved(format!(
                "request body larger than the observation limit of {limit} bytes"
            ))
        };
        if body.size_hint().lower() > limit as u64 {
            return Ok((Self::streaming(body), too_large()));
        }
        let mut head = VecDeque::new();
        let mut head_len = 0u64;
        while let Some(frame) = body.frame().await {
            let frame = frame?;
            if let Some(data) = frame.data_ref() {
                head_len += data.len() as u64;
            }
            head.push_back(frame);
            if head_len > limit as u64 {
                let forward = UpstreamBody {
                    head,
                    head_len,
                    rest: Some(body),
                };
                return Ok((forward, too_large()));
            }
            if body.is_end_stream() {
                break;
            }
        }
        let mut data = head.iter().filter_map(Frame::data_ref);
        let observed = match (data.next(), data.next()) {
            (None, _) => Bytes::new(),
            // The usual case, one frame: shared, not copied.
            (Some(only), None) => only.clone(),
            _ => {
                let mut all = BytesMut::with_capacity(head_len as usize);
                for d in head.iter().filter_map(Frame::data_ref) {
                    all.extend_from_slice(d);
                }
                all.freeze()
            }
        };
        let forward = UpstreamBody {
            head,
            head_len,
            rest: None,
        };
        Ok((forward, RequestBody::Complete(observed)))
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        if let Some(frame) = this.head.pop_front() {
            if let Some(data) = frame.data_ref() {
                this.head_len -= data.len() as u64;
            }
            return Poll::Ready(Some(Ok(frame)));
        }
        match &mut this.rest {
            Some(rest) => Pin::new(rest).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.head.is_empty() && self.rest.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        match &self.rest {
            None => SizeHint::with_exact(self.head_len),
            Some(rest) => {
                let hint = rest.size_hint();
                let mut total = SizeHint::new();
                total.set_lower(hint.lower() + self.head_len);
                if let Some(upper) = hint.upper() {
                    total.set_upper(upper + self.head_len);
                }
                total
            }
        }
    }
}

/// A response body on its way to the client.
#[derive(Debug)]
pub enum ProxyBody {
    /// An answer of the proxy's own (a refusal or a gateway error).
    Local(Option<Bytes>),
    /// The upstream's body, not observed.
    Upstream(Incoming),
    /// The upstream's body, copied to an observer on the way.
    Tapped(TapBody<Incoming>),
    /// A tapped stream whose usage the proxy asked for, with every trace of that removed.
    Stripped(StripBody),
}

/// An SSE body with the traces of usage injection removed (see [`UsageStripper`]). The tap
/// inside sees the upstream's stream as it was.
#[derive(Debug)]
pub struct StripBody {
    inner: TapBody<Incoming>,
    stripper: UsageStripper,
    ended: bool,
}

impl StripBody {
    pub fn new(inner: TapBody<Incoming>) -> Self {
        StripBody {
            inner,
            stripper: UsageStripper::new(1 << 20),
            ended: false,
        }
    }
}

impl Body for StripBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        if this.ended {
            return Poll::Ready(None);
        }
        loop {
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        let out = this.stripper.push(data);
                        // A frame that held only a dropped chunk, or half an event: poll on.
                        if !out.is_empty() {
                            return Poll::Ready(Some(Ok(Frame::data(out))));
                        }
                    }
                    Err(trailers) => return Poll::Ready(Some(Ok(trailers))),
                },
                Poll::Ready(None) => {
                    this.ended = true;
                    let rest = this.stripper.finish();
                    return Poll::Ready((!rest.is_empty()).then(|| Ok(Frame::data(rest))));
                }
                other => return other,
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended
    }
}

impl ProxyBody {
    pub fn local(bytes: impl Into<Bytes>) -> Self {
        ProxyBody::Local(Some(bytes.into()))
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            ProxyBody::Local(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            ProxyBody::Upstream(body) => Pin::new(body).poll_frame(cx),
            ProxyBody::Tapped(body) => Pin::new(body).poll_frame(cx),
            ProxyBody::Stripped(body) => Pin::new(body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Local(data) => data.is_none(),
            ProxyBody::Upstream(body) => body.is_end_stream(),
            ProxyBody::Tapped(body) => body.is_end_stream(),
            ProxyBody::Stripped(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Local(data) => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            ProxyBody::Upstream(body) => body.size_hint(),
            ProxyBody::Tapped(body) => body.size_hint(),
            // Chunks may be removed: the length is not known ahead.
            ProxyBody::Stripped(_) => SizeHint::default(),
        }
    }
}
