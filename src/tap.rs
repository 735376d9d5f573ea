//! The tap: copies of an exchange's frames, handed to its observer without touching the
//! forwarded stream.
//!
//! Owns: [`Tap`], the sending end of one exchange's observation channel, and [`TapBody`], a body
//! wrapper that yields every frame unchanged and puts a cheap `Bytes` clone on the tap. Events
//! are handed over in batches (at the end, every few dozen frames of a burst, and when the body
//! waits for the upstream with more pending than a few small frames, which are copied and held
//! instead), and the observer is only started by the first hand-over, so a small exchange wakes
//! its observer once and a stream once every few chunks, rather than once per event. The tap
//! ends exactly once: at the end of the body, on a body error, or, when it is dropped first (the
//! client went away), as cancelled. Does not: parse anything, block, or wait for the observer: a full
//! channel loses observation data (and says so at the end), never forwarding time.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::sync::mpsc;

use crate::exchange::TransportError;

/// What the proxy learned about the request body before forwarding it.
#[derive(Debug)]
pub enum RequestBody {
    /// The whole body, as forwarded.
    Complete(Bytes),
    /// The body could not be kept for observation (too large, unreadable); why.
    Unobserved(String),
}

/// How the exchange ended, from the forwarding side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// The response body was delivered in full.
    Complete,
    /// The upstream failed: no response, or a broken body.
    Failed(TransportError),
    /// The client went away first.
    Cancelled,
}

/// When the proxy handled the upstream call: forwarded the request, got the upstream's
/// response head, handed the client its response head.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub sent: Instant,
    pub received: Instant,
    pub returned: Instant,
}

/// The response head, as far as observation needs it. Values are shared, not parsed, here.
#[derive(Debug, Clone, Default)]
pub struct ResponseHead {
    pub status: u16,
    pub timing: Option<Timing>,
    pub content_type: Option<HeaderValue>,
    pub content_encoding: Option<HeaderValue>,
    pub request_id: Option<HeaderValue>,
    pub apim_request_id: Option<HeaderValue>,
    pub region: Option<HeaderValue>,
    pub ratelimit_remaining_tokens: Option<HeaderValue>,
    pub ratelimit_remaining_requests: Option<HeaderValue>,
}

/// Response headers observation keeps, named once rather than parsed on every response.
const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const APIM_REQUEST_ID: HeaderName = HeaderName::from_static("apim-request-id");
const X_MS_REGION: HeaderName = HeaderName::from_static("x-ms-region");
const RATELIMIT_TOKENS: HeaderName = HeaderName::from_static("x-ratelimit-remaining-tokens");
const RATELIMIT_REQUESTS: HeaderName = HeaderName::from_static("x-ratelimit-remaining-requests");

impl ResponseHead {
    /// Each kept header's first value, as `HeaderMap::get` gives it, found in one pass over the
    /// names present: seven lookups hashed each name (a custom one byte by byte) whether the
    /// response had it or not.
    pub fn boxed(status: u16, headers: &HeaderMap) -> Box<ResponseHead> {
        // Filled where it is allocated: built on the stack, its 336 bytes were copied three
        // times on the way into the box.
        let mut head = Box::<ResponseHead>::default();
        head.status = status;
        for (name, value) in headers {
            // The length tells the candidates apart before any byte is compared.
            let slot = match name.as_str().len() {
                12 if name == http::header::CONTENT_TYPE => &mut head.content_type,
                12 if name == X_REQUEST_ID => &mut head.request_id,
                16 if name == http::header::CONTENT_ENCODING => &mut head.content_encoding,
                15 if name == APIM_REQUEST_ID => &mut head.apim_request_id,
                11 if name == X_MS_REGION => &mut head.region,
                28 if name == RATELIMIT_TOKENS => &mut head.ratelimit_remaining_tokens,
                30 if name == RATELIMIT_REQUESTS => &mut head.ratelimit_remaining_requests,
                _ => continue,
            };
            if slot.is_none() {
                *slot = Some(value.clone());
            }
        }
        head
    }
}

/// One observation, in the order the proxy saw it.
#[derive(Debug)]
pub enum TapEvent {
    Request {
        body: RequestBody,
        /// The proxy added `stream_options.include_usage` to what it forwarded.
        usage_injected: bool,
    },
    ResponseHead(Box<ResponseHead>),
    Data(Bytes, Instant),
    End {
        ending: Ending,
        /// Some events were dropped because the observer fell behind.
        lost: bool,
        at: Instant,
    },
}

/// Events handed to the observer in one go.
pub type Batch = Vec<TapEvent>;

/// Most events the tap holds before handing them over. Each hand-over wakes the observer task: a
/// small exchange hands over once, at its end, and a burst of frames once every this many,
/// rather than once per frame.
const BATCH: usize = 32;

/// While the body waits, the tap holds at most this many events and this many bytes of frames
/// (copies) rather than handing them over: a stream's chunks reach the observer a few at a
/// time, not one wake-up of its task each (about 1.2k instructions a hand-over).
const HOLD_EVENTS: usize = 16;
const HOLD_BYTES: usize = 1024;

/// Starts the exchange's observer; called on the first hand-over, so an exchange that ends
/// quickly costs its observer one wake-up in all.
pub type Launch = Box<dyn FnOnce() + Send>;

/// The sending half of one exchange's observation channel.
pub struct Tap {
    tx: mpsc::Sender<Batch>,
    /// A slot reserved at creation for the final batch, so a full channel cannot lose the ending.
    last: Option<mpsc::OwnedPermit<Batch>>,
    launch: Option<Launch>,
    pending: Batch,
    /// How many pending events, from the first, may be held across a wait (frames copied).
    held: usize,
    /// The bytes of the frames among them.
    held_bytes: usize,
    batch: usize,
    lost: bool,
}

impl std::fmt::Debug for Tap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tap")
            .field("pending", &self.pending.len())
            .field("ended", &self.last.is_none())
            .field("lost", &self.lost)
            .finish_non_exhaustive()
    }
}

impl Tap {
    /// A tap and the receiver its observer reads. `capacity` bounds the events in flight.
    pub fn channel(capacity: usize) -> (Tap, mpsc::Receiver<Batch>) {
        let batch = capacity.clamp(1, BATCH);
        let (tx, rx) = mpsc::channel(capacity.div_ceil(batch).max(1) + 1);
        let last = tx.clone().try_reserve_owned().ok();
        (
            Tap {
                tx,
                last,
                launch: None,
                pending: Vec::new(),
                held: 0,
                held_bytes: 0,
                batch,
                lost: false,
            },
            rx,
        )
    }

    /// Runs `launch` at the first hand-over: set it before any event is sent.
    pub fn on_first_batch(&mut self, launch: Launch) {
        self.launch = Some(launch);
    }

    fn started(&mut self) {
        if let Some(launch) = self.launch.take() {
            launch();
        }
    }

    pub fn send(&mut self, event: TapEvent) {
        if self.lost {
            return;
        }
        self.pending.push(event);
        if self.pending.len() >= self.batch {
            self.flush();
        }
    }

    /// The body waits for the upstream: hands over what is pending, unless all of it may be
    /// held. A frame is a slice of the connection's read buffer, and held across a wait it would
    /// keep that whole buffer alive for as long as the stream idles; so a small frame is copied
    /// out of it instead, and held with the others until [`HOLD_EVENTS`] or [`HOLD_BYTES`]. The
    /// request's body is never held (it may be large): the first wait hands it over.
    pub fn wait(&mut self) {
        // Nothing pending (the usual second wait of a wake-up) holds trivially.
        if self.lost || self.pending.len() < HOLD_EVENTS && self.hold() {
            return;
        }
        self.flush();
    }

    /// Makes the pending events holdable (small frames copied), or says they are not.
    fn hold(&mut self) -> bool {
        for event in &mut self.pending[self.held..] {
            match event {
                TapEvent::ResponseHead(_) => {}
                TapEvent::Data(bytes, _) if self.held_bytes + bytes.len() <= HOLD_BYTES => {
                    self.held_bytes += bytes.len();
                    let copy = Bytes::copy_from_slice(bytes);
                    *bytes = copy;
                }
                _ => return false,
            }
            self.held += 1;
        }
        true
    }

    /// Hands over what is pending.
    fn flush(&mut self) {
        if self.lost || self.pending.is_empty() {
            return;
        }
        self.held = 0;
        self.held_bytes = 0;
        let batch = std::mem::take(&mut self.pending);
        if self.tx.try_send(batch).is_err() {
            // From here on the observer's picture has a gap: stop sending rather than deliver a
            // stream with holes, and report it with the ending.
            self.lost = true;
        }
        self.started();
    }

    /// `call` times the upstream call (forwarded, answered); the hand-over to the client is now.
    pub fn response_head(
        &mut self,
        status: u16,
        headers: &HeaderMap,
        call: Option<(Instant, Instant)>,
    ) {
        let mut head = ResponseHead::boxed(status, headers);
        head.timing = call.map(|(sent, received)| Timing {
            sent,
            received,
            returned: Instant::now(),
        });
        self.send(TapEvent::ResponseHead(head));
    }

    pub fn data(&mut self, data: &Bytes) {
        if !self.lost && !data.is_empty() {
            self.send(TapEvent::Data(data.clone(), Instant::now()));
        }
    }

    /// Ends the exchange, handing over what is pending. Later calls, and the drop, do nothing.
    pub fn end(&mut self, ending: Ending) {
        if let Some(permit) = self.last.take() {
            let mut batch = std::mem::take(&mut self.pending);
            batch.push(TapEvent::End {
                ending,
                lost: self.lost,
                at: Instant::now(),
            });
            permit.send(batch);
            self.started();
        }
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        self.end(Ending::Cancelled);
    }
}

pin_project! {
    /// A response body that copies each data frame onto a [`Tap`].
    pub struct TapBody<B: Body> {
        #[pin]
        inner: B,
        tap: Option<Tap>,
        classify: fn(&B::Error) -> TransportError,
    }
}

impl<B: Body> std::fmt::Debug for TapBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TapBody")
            .field("tapping", &self.tap.is_some())
            .finish_non_exhaustive()
    }
}

impl<B: Body<Data = Bytes>> TapBody<B> {
    pub fn new(inner: B, mut tap: Tap, classify: fn(&B::Error) -> TransportError) -> Self {
        // A body that is already over is never polled: end the exchange now, not at drop.
        let tap = if inner.is_end_stream() {
            tap.end(Ending::Complete);
            None
        } else {
            Some(tap)
        };
        TapBody {
            inner,
            tap,
            classify,
        }
    }
}

impl<B: Body<Data = Bytes>> Body for TapBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let mut this = self.project();
        let polled = this.inner.as_mut().poll_frame(cx);
        let Some(tap) = this.tap else {
            return polled;
        };
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    tap.data(data);
                }
                // hyper stops polling a body that reports its end: take that as the end.
                if this.inner.is_end_stream() {
                    tap.end(Ending::Complete);
                    *this.tap = None;
                }
            }
            Poll::Ready(Some(Err(e))) => {
                tap.end(Ending::Failed((this.classify)(e)));
                *this.tap = None;
            }
            Poll::Ready(None) => {
                tap.end(Ending::Complete);
                *this.tap = None;
            }
            Poll::Pending => tap.wait(),
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full, StreamBody};

    /// Each kept header as `HeaderMap::get` reads it, for comparing readings.
    fn kept(head: &ResponseHead) -> [Option<HeaderValue>; 7] {
        [
            head.content_type.clone(),
            head.content_encoding.clone(),
            head.request_id.clone(),
            head.apim_request_id.clone(),
            head.region.clone(),
            head.ratelimit_remaining_tokens.clone(),
            head.ratelimit_remaining_requests.clone(),
        ]
    }

    proptest::proptest! {
        #[test]
        fn the_response_head_keeps_what_lookups_by_name_find(
            lines in proptest::collection::vec(
                (proptest::sample::select(&[
                    "content-type",
                    "content-encoding",
                    "x-request-id",
                    "apim-request-id",
                    "x-ms-region",
                    "x-ratelimit-remaining-tokens",
                    "x-ratelimit-remaining-requests",
                    // The same lengths, other names.
                    "x-request-ix",
                    "content-encodinz",
                    "apim-request-ie",
                    "x-ms-regiom",
                    "x-ratelimit-remaining-tokenz",
                    "x-ratelimit-remaining-requestz",
                    "content-length",
                ][..]), 0u8..4),
                0..12,
            ),
        ) {
            let mut headers = HeaderMap::new();
            for (name, value) in &lines {
                headers.append(
                    HeaderName::from_static(name),
                    HeaderValue::from(u16::from(*value)),
                );
            }
            let get = |name: &HeaderName| headers.get(name).cloned();
            let want = [
                get(&http::header::CONTENT_TYPE),
                get(&http::header::CONTENT_ENCODING),
                get(&X_REQUEST_ID),
                get(&APIM_REQUEST_ID),
                get(&X_MS_REGION),
                get(&RATELIMIT_TOKENS),
                get(&RATELIMIT_REQUESTS),
            ];
            proptest::prop_assert_eq!(kept(&ResponseHead::boxed(200, &headers)), want);
        }
    }

    fn drain(rx: &mut mpsc::Receiver<Batch>) -> Vec<TapEvent> {
        let mut out = Vec::new();
        while let Ok(batch) = rx.try_recv() {
            out.extend(batch);
        }
        out
    }

    fn endings(events: &[TapEvent]) -> Vec<(Ending, bool)> {
        events
            .iter()
            .filter_map(|e| match e {
                TapEvent::End { ending, lost, .. } => Some((*ending, *lost)),
                _ => None,
            })
            .collect()
    }

    fn data(events: &[TapEvent]) -> Vec<u8> {
        events
            .iter()
            .filter_map(|e| match e {
                TapEvent::Data(b, _) => Some(b.to_vec()),
                _ => None,
            })
            .flatten()
            .collect()
    }

    type Chunks =
        StreamBody<futures_stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, std::io::Error>>>>;

    mod futures_stream {
        //! A minimal `Stream` over an iterator, so these tests need no extra crate.
        use std::pin::Pin;
        use std::task::{Context, Poll};
        pub struct Iter<I>(pub I);
        impl<I: Iterator + Unpin> futures_core::Stream for Iter<I> {
            type Item = I::Item;
            fn poll_next(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<I::Item>> {
                Poll::Ready(self.0.next())
            }
        }
    }

    fn chunks(items: Vec<Result<&'static [u8], std::io::ErrorKind>>) -> Chunks {
        StreamBody::new(futures_stream::Iter(
            items
                .into_iter()
                .map(|r| {
                    r.map(|b| Frame::data(Bytes::from_static(b)))
                        .map_err(std::io::Error::from)
                })
                .collect::<Vec<_>>()
                .into_iter(),
        ))
    }

    fn io_kind(_: &std::io::Error) -> TransportError {
        TransportError::ConnectionReset
    }

    #[tokio::test]
    async fn frames_pass_unchanged_and_the_tap_sees_a_copy_then_one_end() {
        let (tap, mut rx) = Tap::channel(16);
        let body = TapBody::new(chunks(vec![Ok(b"ab"), Ok(b"c")]), tap, io_kind);
        let out = body.collect().await.unwrap().to_bytes();
        assert_eq!(&out[..], b"abc");
        let events = drain(&mut rx);
        assert_eq!(data(&events), b"abc");
        assert_eq!(endings(&events), vec![(Ending::Complete, false)]);
        assert!(rx.recv().await.is_none(), "every sender is gone once ended");
    }

    #[tokio::test]
    async fn a_short_exchange_is_handed_over_once_at_its_end() {
        let (mut tap, mut rx) = Tap::channel(1024);
        let launched = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = launched.clone();
        tap.on_first_batch(Box::new(move || {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }));
        let body = TapBody::new(chunks(vec![Ok(b"ab"), Ok(b"c")]), tap, io_kind);
        let mut body = std::pin::pin!(body);
        let first = body.frame().await.unwrap().unwrap();
        assert_eq!(first.into_data().unwrap(), Bytes::from_static(b"ab"));
        assert!(
            rx.try_recv().is_err(),
            "nothing is handed over mid-exchange"
        );
        assert_eq!(launched.load(std::sync::atomic::Ordering::SeqCst), 0);
        while body.frame().await.is_some() {}
        let batch = rx.try_recv().expect("one batch at the end");
        assert_eq!(data(&batch), b"abc");
        assert_eq!(endings(&batch), vec![(Ending::Complete, false)]);
        assert_eq!(launched.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_long_stream_is_handed_over_in_batches_as_it_goes() {
        let (tap, mut rx) = Tap::channel(1024);
        let items: Vec<Result<&'static [u8], _>> = (0..BATCH + 1).map(|_| Ok(&b"x"[..])).collect();
        let mut body = TapBody::new(chunks(items), tap, io_kind);
        for _ in 0..BATCH {
            body.frame().await.unwrap().unwrap();
        }
        let batch = rx
            .try_recv()
            .expect("a full batch is handed over before the end");
        assert_eq!(batch.len(), BATCH);
        assert_eq!(endings(&batch), vec![]);
        while body.frame().await.is_some() {}
        let rest = drain(&mut rx);
        assert_eq!(data(&rest), b"x");
        assert_eq!(endings(&rest), vec![(Ending::Complete, false)]);
    }

    type Feed = tokio::sync::mpsc::Sender<Result<Frame<Bytes>, std::io::Error>>;
    type Fed = TapBody<StreamBody<ReceiverStream<Result<Frame<Bytes>, std::io::Error>>>>;

    /// A tapped body whose upstream sends what the test feeds it.
    fn fed(tap: Tap) -> (Feed, Fed) {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let upstream = StreamBody::new(ReceiverStream(rx));
        (tx, TapBody::new(upstream, tap, io_kind))
    }

    /// Forwards one frame, then polls the body once more, as hyper does: it must wait.
    async fn forward(tx: &Feed, body: &mut Fed, frame: Bytes) {
        tx.send(Ok(Frame::data(frame))).await.unwrap();
        body.frame().await.unwrap().unwrap();
        let waiting = futures_core::Stream::poll_next(
            std::pin::Pin::new(&mut BodyStream(body)),
            &mut std::task::Context::from_waker(std::task::Waker::noop()),
        );
        assert!(waiting.is_pending());
    }

    /// Ends the upstream's body; the tap then ends once, complete.
    async fn finish(tx: Feed, mut body: Fed, taps: &mut mpsc::Receiver<Batch>) {
        drop(tx);
        while body.frame().await.is_some() {}
        assert_eq!(endings(&drain(taps)), vec![(Ending::Complete, false)]);
    }

    #[tokio::test]
    async fn small_frames_are_copied_and_held_across_waits_until_enough_are() {
        let (tap, mut taps) = Tap::channel(1024);
        let (tx, mut body) = fed(tap);
        let chunk = Bytes::from(vec![b'x'; HOLD_BYTES / 4]);
        for _ in 0..4 {
            forward(&tx, &mut body, chunk.clone()).await;
        }
        assert!(taps.try_recv().is_err(), "{HOLD_BYTES} bytes are held");
        forward(&tx, &mut body, Bytes::from_static(b"y")).await;
        let batch = taps.try_recv().expect("handed over past the bytes held");
        assert_eq!(batch.len(), 5);
        for event in &batch {
            let TapEvent::Data(data, _) = event else {
                panic!("only frames here: {event:?}");
            };
            // A slice held across a wait would pin the buffer the upstream's frame lies in.
            let upstream = chunk.as_ptr_range();
            assert!(!upstream.contains(&data.as_ptr()), "held frames are copies");
        }
        finish(tx, body, &mut taps).await;
    }

    #[tokio::test]
    async fn no_more_than_so_many_events_are_held() {
        let (tap, mut taps) = Tap::channel(1024);
        let (tx, mut body) = fed(tap);
        for i in 1..=HOLD_EVENTS {
            forward(&tx, &mut body, Bytes::from_static(b"z")).await;
            assert_eq!(
                taps.try_recv().is_ok(),
                i == HOLD_EVENTS,
                "after {i} frames"
            );
        }
    }

    #[tokio::test]
    async fn a_wait_hands_over_the_request_and_frames_too_large_to_hold() {
        let (mut tap, mut taps) = Tap::channel(1024);
        tap.send(TapEvent::Request {
            body: RequestBody::Complete(Bytes::from_static(b"{}")),
            usage_injected: false,
        });
        let (tx, mut body) = fed(tap);
        forward(&tx, &mut body, Bytes::from_static(b"a")).await;
        let batch = taps.try_recv().expect("the request is not held");
        assert_eq!(batch.len(), 2);
        let large = Bytes::from(vec![b'x'; HOLD_BYTES + 1]);
        forward(&tx, &mut body, large.clone()).await;
        let batch = taps
            .try_recv()
            .expect("a large frame is not copied to be held");
        assert!(matches!(&batch[..], [TapEvent::Data(d, _)] if d.as_ptr() == large.as_ptr()));
        finish(tx, body, &mut taps).await;
    }

    /// Polls a body once, as hyper does.
    struct BodyStream<'a, B>(&'a mut B);
    impl<B: Body + Unpin> futures_core::Stream for BodyStream<'_, B> {
        type Item = ();
        fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<()>> {
            Pin::new(&mut *self.0).poll_frame(cx).map(|f| f.map(|_| ()))
        }
    }

    struct ReceiverStream<T>(tokio::sync::mpsc::Receiver<T>);
    impl<T> futures_core::Stream for ReceiverStream<T> {
        type Item = T;
        fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
            self.0.poll_recv(cx)
        }
    }

    #[tokio::test]
    async fn body_error_passes_through_and_ends_as_failed() {
        let (tap, mut rx) = Tap::channel(16);
        let body = TapBody::new(
            chunks(vec![Ok(b"ab"), Err(std::io::ErrorKind::ConnectionReset)]),
            tap,
            io_kind,
        );
        assert!(body.collect().await.is_err());
        assert_eq!(
            endings(&drain(&mut rx)),
            vec![(Ending::Failed(TransportError::ConnectionReset), false)]
        );
    }

    #[tokio::test]
    async fn dropped_before_the_end_is_cancelled_exactly_once() {
        let (tap, mut rx) = Tap::channel(16);
        let mut body = TapBody::new(chunks(vec![Ok(b"ab"), Ok(b"c")]), tap, io_kind);
        let first = body.frame().await.unwrap().unwrap();
        assert_eq!(first.into_data().unwrap(), Bytes::from_static(b"ab"));
        drop(body);
        let events = drain(&mut rx);
        assert_eq!(endings(&events), vec![(Ending::Cancelled, false)]);
    }

    #[tokio::test]
    async fn a_body_that_reports_its_end_is_ended_without_being_polled_to_none() {
        let (tap, mut rx) = Tap::channel(16);
        let mut body = TapBody::new(Full::new(Bytes::from_static(b"{}")), tap, |_| {
            TransportError::Other
        });
        let _ = body.frame().await;
        // hyper would now drop the body without another poll.
        drop(body);
        assert_eq!(endings(&drain(&mut rx)), vec![(Ending::Complete, false)]);
    }

    #[tokio::test]
    async fn empty_body_is_complete_at_once() {
        let (tap, mut rx) = Tap::channel(16);
        let body = TapBody::new(http_body_util::Empty::<Bytes>::new(), tap, |_| {
            TransportError::Other
        });
        drop(body);
        assert_eq!(endings(&drain(&mut rx)), vec![(Ending::Complete, false)]);
    }

    #[tokio::test]
    async fn a_full_channel_loses_data_not_frames_and_the_end_says_so() {
        let (tap, mut rx) = Tap::channel(2);
        let items: Vec<Result<&'static [u8], _>> = vec![Ok(b"1"), Ok(b"2"), Ok(b"3"), Ok(b"4")];
        let body = TapBody::new(chunks(items), tap, io_kind);
        let out = body.collect().await.unwrap().to_bytes();
        assert_eq!(&out[..], b"1234", "forwarding never waits for the observer");
        let events = drain(&mut rx);
        assert_eq!(endings(&events), vec![(Ending::Complete, true)]);
        assert_eq!(data(&events), b"12");
    }
}
