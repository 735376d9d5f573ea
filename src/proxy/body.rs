//! The bodies the proxy forwards: requests to the upstream, responses to the client.
//!
//! Owns: [`UpstreamBody`], a request body whose first frames may have been read already (to
//! observe a GenAI request before forwarding it) followed by the rest of the client's stream;
//! [`ProxyBody`], a response body that is the upstream's (tapped or not) or the proxy's own
//! error. Both yield frames exactly as received, with the original size hints. An upstream
//! that goes silent in the middle of a response body is cut off by [`IdleTimeout`].

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

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

/// How a body wrapped in [`IdleTimeout`] fails.
#[derive(Debug, thiserror::Error)]
pub enum IdleError<E> {
    #[error(transparent)]
    Inner(E),
    #[error("no data for {0:?} in the middle of a body")]
    Idle(Duration),
}

/// Why a response body stopped before its end.
pub type ResponseBodyError = IdleError<hyper::Error>;

/// The upstream's response body, cut off when it goes silent.
pub type UpstreamResponse = IdleTimeout<Incoming>;

pin_project! {
    /// Fails the body when `idle` passes without a frame while it is being waited for (the
    /// time a slow client takes to read does not count). Zero disables it. Arms one timer per
    /// silence, not per frame: a frame only clears the start of the wait.
    #[derive(Debug)]
    pub struct IdleTimeout<B> {
        #[pin]
        inner: B,
        idle: Duration,
        waiting_since: Option<Instant>,
        timer: Option<Pin<Box<Sleep>>>,
        // The task the armed timer wakes.
        wakes: Option<Waker>,
        timed_out: bool,
    }
}

impl<B> IdleTimeout<B> {
    pub fn new(inner: B, idle: Duration) -> Self {
        IdleTimeout {
            inner,
            idle,
            waiting_since: None,
            timer: None,
            wakes: None,
            timed_out: false,
        }
    }
}

impl<B: Body> Body for IdleTimeout<B> {
    type Data = B::Data;
    type Error = IdleError<B::Error>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, Self::Error>>> {
        let this = self.project();
        if *this.timed_out {
            return Poll::Ready(None);
        }
        if let Poll::Ready(frame) = this.inner.poll_frame(cx) {
            *this.waiting_since = None;
            return Poll::Ready(frame.map(|f| f.map_err(IdleError::Inner)));
        }
        if this.idle.is_zero() {
            return Poll::Pending;
        }
        let deadline = *this.waiting_since.get_or_insert_with(Instant::now) + *this.idle;
        // Armed, not yet fired, and registered with this task: it will wake this task (early,
        // when it was armed for an earlier wait) and be polled then. Polling it at every wait
        // only registered the same waker again (a stream waits twice a chunk, and tokio's
        // `Sleep::poll` took about 120 instructions each time).
        if let (Some(timer), Some(wakes)) = (this.timer.as_ref(), this.wakes.as_ref())
            && !timer.is_elapsed()
            && wakes.will_wake(cx.waker())
        {
            return Poll::Pending;
        }
        let timer = this
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        // An earlier wait may have armed the timer for an earlier deadline: when it fires,
        // move it to this wait's deadline.
        while timer.as_mut().poll(cx).is_ready() {
            if Instant::now() >= deadline {
                *this.timed_out = true;
                return Poll::Ready(Some(Err(IdleError::Idle(*this.idle))));
            }
            timer.as_mut().reset(deadline);
        }
        if !this.wakes.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            *this.wakes = Some(cx.waker().clone());
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.timed_out || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body on its way to the client.
#[derive(Debug)]
pub enum ProxyBody {
    /// An answer of the proxy's own (a refusal or a gateway error).
    Local(Option<Bytes>),
    /// The upstream's body, not observed.
    Upstream(UpstreamResponse),
    /// The upstream's body, copied to an observer on the way.
    Tapped(TapBody<UpstreamResponse>),
    /// A tapped stream whose usage the proxy asked for, with every trace of that removed.
    Stripped(StripBody),
}

/// An SSE body with the traces of usage injection removed (see [`UsageStripper`]). The tap
/// inside sees the upstream's stream as it was.
#[derive(Debug)]
pub struct StripBody {
    inner: TapBody<UpstreamResponse>,
    stripper: UsageStripper,
    ended: bool,
}

impl StripBody {
    pub fn new(inner: TapBody<UpstreamResponse>) -> Self {
        StripBody {
            inner,
            stripper: UsageStripper::new(1 << 20),
            ended: false,
        }
    }
}

impl Body for StripBody {
    type Data = Bytes;
    type Error = ResponseBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ResponseBodyError>>> {
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
    type Error = ResponseBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ResponseBodyError>>> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mock::ChannelBody;
    use tokio::sync::mpsc;

    fn idle_body(idle: Duration) -> (IdleTimeout<ChannelBody>, mpsc::Sender<Bytes>) {
        let (tx, rx) = mpsc::channel(4);
        (IdleTimeout::new(ChannelBody(rx), idle), tx)
    }

    #[tokio::test(start_paused = true)]
    async fn frames_within_the_idle_time_pass_and_a_longer_silence_fails_once() {
        let (mut body, tx) = idle_body(Duration::from_secs(10));
        tx.send(Bytes::from_static(b"a")).await.unwrap();
        let first = body.frame().await.unwrap().unwrap();
        assert_eq!(first.into_data().unwrap(), "a");
        let sender = tokio::spawn(async move {
            // Just inside the limit, twice: each wait counts on its own.
            tokio::time::sleep(Duration::from_secs(9)).await;
            tx.send(Bytes::from_static(b"b")).await.unwrap();
            tokio::time::sleep(Duration::from_secs(9)).await;
            tx.send(Bytes::from_static(b"c")).await.unwrap();
            tx
        });
        for want in ["b", "c"] {
            let frame = body.frame().await.unwrap().unwrap();
            assert_eq!(frame.into_data().unwrap(), want);
        }
        let _tx = sender.await.unwrap();
        let started = Instant::now();
        // Bounded: a timer armed for an earlier wait that fires early must be moved on, or
        // nothing wakes the body again.
        match tokio::time::timeout(Duration::from_secs(3600), body.frame())
            .await
            .expect("woken when the silence ran out")
        {
            Some(Err(IdleError::Idle(d))) => assert_eq!(d, Duration::from_secs(10)),
            other => panic!("expected an idle timeout, got {other:?}"),
        }
        assert_eq!(started.elapsed(), Duration::from_secs(10));
        assert!(
            body.frame().await.is_none(),
            "the body ends after the timeout"
        );
        assert!(body.is_end_stream());
    }

    #[tokio::test(start_paused = true)]
    async fn time_the_reader_spends_elsewhere_is_not_silence() {
        let (mut body, tx) = idle_body(Duration::from_secs(10));
        // The upstream sent; the client took a minute to come back for it.
        tx.send(Bytes::from_static(b"a")).await.unwrap();
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(body.frame().await.unwrap().is_ok());
        drop(tx);
        assert!(body.frame().await.is_none(), "a clean end passes through");
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_waited_for_by_another_task_still_times_out() {
        let (mut body, _tx) = idle_body(Duration::from_secs(10));
        // Armed while polled with a waker that wakes nothing, then waited for by this task.
        let mut elsewhere = Context::from_waker(Waker::noop());
        assert!(Pin::new(&mut body).poll_frame(&mut elsewhere).is_pending());
        let started = Instant::now();
        let waited = tokio::time::timeout(Duration::from_secs(3600), body.frame()).await;
        assert!(
            matches!(waited, Ok(Some(Err(IdleError::Idle(_))))),
            "the timer woke the task that waits: {waited:?}"
        );
        assert_eq!(started.elapsed(), Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn zero_disables_the_timeout() {
        let (mut body, _tx) = idle_body(Duration::ZERO);
        let waited = tokio::time::timeout(Duration::from_secs(3600), body.frame()).await;
        assert!(waited.is_err(), "still waiting after an hour");
    }
}
