//! Token accounting on the response path: a scanner that reads `usage` from a JSON body or from
//! SSE events as they pass (dropping the usage-only chunk the gateway asked for on the client's
//! behalf), and the body wrapper that streams every chunk on at once and reports at the end.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::Bytes;
use http_body::{Body, Frame, SizeHint};
use serde::Deserialize;

use super::Shared;
use super::balance::Lease;

/// Tokens one request used, as the backend reported them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

/// One finished request, for the usage table.
#[derive(Debug, Clone, PartialEq)]
pub struct UsageEvent {
    pub at: chrono::DateTime<chrono::Utc>,
    pub user_id: i64,
    /// 0 for a session.
    pub api_key_id: i64,
    pub route_id: i64,
    pub route_name: String,
    pub model_name: String,
    pub operation: &'static str,
    pub usage: Usage,
}

#[derive(Deserialize)]
struct UsageJson {
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    total_tokens: Option<u64>,
}

impl UsageJson {
    fn usage(&self) -> Usage {
        let prompt = self.prompt_tokens.or(self.input_tokens).unwrap_or(0);
        let completion = self
            .completion_tokens
            .or(self.output_tokens)
            .unwrap_or_else(|| self.total_tokens.unwrap_or(0).saturating_sub(prompt));
        Usage { prompt_tokens: prompt, completion_tokens: completion }
    }
}

#[derive(Deserialize)]
struct WithUsage {
    usage: Option<UsageJson>,
    choices: Option<Vec<serde::de::IgnoredAny>>,
    /// `/v1/responses` streams carry usage inside `response`.
    response: Option<Box<WithUsage>>,
}

impl WithUsage {
    fn usage(&self) -> Option<Usage> {
        self.usage.as_ref().map(UsageJson::usage).or_else(|| self.response.as_ref().and_then(|r| r.usage()))
    }
}

/// Largest JSON body scanned for `usage` (bigger ones pass uncounted).
const MAX_JSON_SCAN: usize = 8 << 20;

/// Reads usage from a response body as it passes.
#[derive(Debug)]
pub enum Scanner {
    /// Not countable (binary audio, images, unknown types).
    Off,
    Json {
        buf: Vec<u8>,
        usage: Option<Usage>,
    },
    Sse {
        buf: Vec<u8>,
        strip: bool,
        usage: Option<Usage>,
        /// Chunks with a `delta` passed on: the completion tokens of a stream that ends before its
        /// usage chunk (the client left, the backend died), one token per chunk as engines stream.
        deltas: u64,
    },
}

/// The event a client receives when the backend dies in the middle of a stream (OpenAI's error
/// shape), instead of a connection that just stops.
pub const STREAM_ERROR_EVENT: &[u8] = b"data: {\"error\":{\"message\":\"the model's backend stopped in the middle of \
the response\",\"type\":\"server_error\",\"param\":null,\"code\":\"backend_stream_interrupted\"}}\n\n";

fn event_end(buf: &[u8]) -> Option<(usize, usize)> {
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|p| (p, 2));
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| (p, 4));
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
        (a, b) => a.or(b),
    }
}

/// Parses one SSE event: its usage, and whether it is a usage-only chunk (`choices: []`).
fn sse_event(event: &[u8]) -> (Option<Usage>, bool) {
    if !event.windows(7).any(|w| w == b"\"usage\"") {
        return (None, false);
    }
    for line in event.split(|b| *b == b'\n') {
        let Some(data) = line.strip_prefix(b"data:") else { continue };
        let data = data.trim_ascii();
        if let Ok(chunk) = serde_json::from_slice::<WithUsage>(data) {
            let usage = chunk.usage();
            let usage_only = usage.is_some() && chunk.choices.as_ref().is_some_and(|c| c.is_empty());
            return (usage, usage_only);
        }
    }
    (None, false)
}

impl Scanner {
    /// Picks the mode from the response's content type.
    pub fn for_content_type(content_type: &str, strip: bool) -> Scanner {
        let ct = content_type.to_ascii_lowercase();
        if ct.contains("text/event-stream") {
            Scanner::Sse { buf: Vec::new(), strip, usage: None, deltas: 0 }
        } else if ct.contains("json") {
            Scanner::Json { buf: Vec::new(), usage: None }
        } else {
            Scanner::Off
        }
    }

    /// Takes a chunk from upstream; returns what to send on now (None: nothing yet).
    pub fn feed(&mut self, chunk: Bytes) -> Option<Bytes> {
        match self {
            Scanner::Off => Some(chunk),
            Scanner::Json { buf, .. } => {
                if buf.len() + chunk.len() <= MAX_JSON_SCAN {
                    buf.extend_from_slice(&chunk);
                }
                Some(chunk)
            }
            Scanner::Sse { buf, strip, usage, deltas } => {
                buf.extend_from_slice(&chunk);
                let mut out: Option<Vec<u8>> = if *strip { Some(Vec::with_capacity(buf.len())) } else { None };
                let mut consumed = 0;
                while let Some((pos, sep)) = event_end(&buf[consumed..]) {
                    let event = &buf[consumed..consumed + pos + sep];
                    let (found, usage_only) = sse_event(event);
                    if found.is_some() {
                        *usage = found;
                    }
                    if !usage_only && event.windows(8).any(|w| w == b"\"delta\":") {
                        *deltas += 1;
                    }
                    if let Some(out) = out.as_mut()
                        && !usage_only
                    {
                        out.extend_from_slice(event);
                    }
                    consumed += pos + sep;
                }
                buf.drain(..consumed);
                match out {
                    None => Some(chunk),
                    Some(out) if out.is_empty() => None,
                    Some(out) => Some(Bytes::from(out)),
                }
            }
        }
    }

    /// The end of the body: anything still held, and the usage found.
    pub fn finish(&mut self) -> (Option<Bytes>, Option<Usage>) {
        match self {
            Scanner::Off => (None, None),
            Scanner::Json { buf, usage } => {
                if usage.is_none() {
                    *usage = serde_json::from_slice::<WithUsage>(buf).ok().and_then(|w| w.usage());
                }
                buf.clear();
                (None, *usage)
            }
            Scanner::Sse { buf, strip, usage, deltas } => {
                let rest = std::mem::take(buf);
                let (found, usage_only) = sse_event(&rest);
                if found.is_some() {
                    *usage = found;
                }
                let rest = (*strip && !rest.is_empty() && !usage_only).then(|| Bytes::from(rest));
                // No usage chunk came: count what was streamed (the prompt is unknown then).
                let counted = (*deltas > 0).then_some(Usage { prompt_tokens: 0, completion_tokens: *deltas });
                (rest, usage.or(counted))
            }
        }
    }
}

/// What a finished request reports.
pub(crate) struct Accounting {
    pub shared: Arc<Shared>,
    pub event: UsageEvent,
    pub started: Instant,
    pub lease: Option<Lease>,
}

impl Accounting {
    fn first_byte(&self) {
        let route = &self.event.route_name;
        self.shared.metrics.ttfb.with_label_values(&[route.as_str()]).observe(self.started.elapsed().as_secs_f64());
    }

    fn finish(mut self, usage: Option<Usage>) {
        self.lease.take();
        let route = self.event.route_name.as_str();
        let m = &self.shared.metrics;
        m.duration.with_label_values(&[route]).observe(self.started.elapsed().as_secs_f64());
        if let Some(u) = usage {
            self.event.usage = u;
            m.tokens.with_label_values(&[route, "prompt"]).inc_by(u.prompt_tokens);
            m.tokens.with_label_values(&[route, "completion"]).inc_by(u.completion_tokens);
            if self.event.api_key_id != 0 {
                self.shared.limiter.spend(self.event.api_key_id, u.prompt_tokens + u.completion_tokens);
            }
        }
        if self.shared.usage_tx.try_send(self.event).is_err() {
            tracing::warn!("usage queue full or closed; a request's usage was not recorded");
        }
    }
}

/// The upstream body, streamed on chunk by chunk as it arrives, with usage read on the way.
pub(crate) struct MeteredBody<B> {
    inner: B,
    scanner: Scanner,
    accounting: Option<Accounting>,
    seen_first: bool,
    ended: bool,
}

impl<B> MeteredBody<B> {
    pub fn new(inner: B, scanner: Scanner, accounting: Accounting) -> Self {
        MeteredBody { inner, scanner, accounting: Some(accounting), seen_first: false, ended: false }
    }

    fn close(&mut self, usage: Option<Usage>) {
        if let Some(a) = self.accounting.take() {
            a.finish(usage);
        }
    }
}

impl<B> Body for MeteredBody<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = &mut *self;
        if this.ended {
            return Poll::Ready(None);
        }
        loop {
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(frame))) => {
                    let frame = match frame.into_data() {
                        Ok(data) => {
                            if !this.seen_first {
                                this.seen_first = true;
                                if let Some(a) = &this.accounting {
                                    a.first_byte();
                                }
                            }
                            match this.scanner.feed(data) {
                                Some(out) => Frame::data(out),
                                None => continue,
                            }
                        }
                        Err(other) => other,
                    };
                    return Poll::Ready(Some(Ok(frame)));
                }
                Poll::Ready(Some(Err(e))) => {
                    this.ended = true;
                    // A half-sent event (passed on byte for byte) is closed before the error event.
                    let mid_event = matches!(&this.scanner, Scanner::Sse { buf, strip: false, .. } if !buf.is_empty());
                    let (_, usage) = this.scanner.finish();
                    this.close(usage);
                    // A stream gets an error event and a clean end; other bodies are cut short.
                    if matches!(this.scanner, Scanner::Sse { .. }) {
                        let event = if mid_event {
                            Bytes::from([b"\n\n".as_slice(), STREAM_ERROR_EVENT].concat())
                        } else {
                            Bytes::from_static(STREAM_ERROR_EVENT)
                        };
                        return Poll::Ready(Some(Ok(Frame::data(event))));
                    }
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(None) => {
                    this.ended = true;
                    let (rest, usage) = this.scanner.finish();
                    this.close(usage);
                    return Poll::Ready(rest.map(|b| Ok(Frame::data(b))));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended
    }

    fn size_hint(&self) -> SizeHint {
        match self.scanner {
            Scanner::Sse { strip: true, .. } => SizeHint::default(),
            _ => self.inner.size_hint(),
        }
    }
}

impl<B> Drop for MeteredBody<B> {
    fn drop(&mut self) {
        // The client went away mid-body: record what was seen.
        let (_, usage) = self.scanner.finish();
        self.close(usage);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_usage_is_read_at_the_end() {
        let mut s = Scanner::for_content_type("application/json", false);
        let body = br#"{"choices":[],"usage":{"prompt_tokens":7,"completion_tokens":3,"total_tokens":10}}"#;
        let (a, b) = body.split_at(20);
        assert_eq!(s.feed(Bytes::from_static(a)).as_deref(), Some(a));
        assert_eq!(s.feed(Bytes::from_static(b)).as_deref(), Some(b));
        assert_eq!(s.finish().1, Some(Usage { prompt_tokens: 7, completion_tokens: 3 }));
        let mut e = Scanner::for_content_type("application/json", false);
        e.feed(Bytes::from_static(br#"{"data":[],"usage":{"prompt_tokens":5,"total_tokens":5}}"#));
        assert_eq!(e.finish().1, Some(Usage { prompt_tokens: 5, completion_tokens: 0 }));
    }

    const STREAM: &[u8] = b"data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n\n\
data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n\
data: {\"choices\":[],\"usage\":{\"prompt_tokens\":4,\"completion_tokens\":2}}\n\n\
data: [DONE]\n\n";

    fn run(strip: bool, split: usize) -> (Vec<u8>, Option<Usage>) {
        let mut s = Scanner::for_content_type("text/event-stream; charset=utf-8", strip);
        let mut out = Vec::new();
        for part in STREAM.chunks(split) {
            if let Some(b) = s.feed(Bytes::copy_from_slice(part)) {
                out.extend_from_slice(&b);
            }
        }
        let (rest, usage) = s.finish();
        out.extend_from_slice(&rest.unwrap_or_default());
        (out, usage)
    }

    #[test]
    fn a_stream_cut_short_counts_what_was_streamed() {
        let cut = &STREAM[..STREAM.windows(7).position(|w| w == b"\"usage\"").expect("usage")];
        let mut s = Scanner::for_content_type("text/event-stream", true);
        s.feed(Bytes::copy_from_slice(cut));
        assert_eq!(s.finish().1, Some(Usage { prompt_tokens: 0, completion_tokens: 2 }));
        let text = std::str::from_utf8(STREAM_ERROR_EVENT).expect("utf8");
        let json: serde_json::Value = serde_json::from_str(text.trim().trim_start_matches("data: ")).expect("json");
        assert_eq!(json["error"]["type"], "server_error");
    }

    #[test]
    fn sse_passes_byte_for_byte_unless_stripping() {
        let want = Some(Usage { prompt_tokens: 4, completion_tokens: 2 });
        for split in [1, 7, 64, STREAM.len()] {
            assert_eq!(run(false, split), (STREAM.to_vec(), want), "split {split}");
            let (stripped, usage) = run(true, split);
            assert_eq!(usage, want);
            let text = String::from_utf8(stripped).expect("utf8");
            assert!(
                !text.contains("usage") && text.contains("finish_reason") && text.ends_with("[DONE]\n\n"),
                "{text}"
            );
        }
    }
}
