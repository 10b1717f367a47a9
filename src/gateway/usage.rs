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
    /// `None`: the engine reported no usage (a native route that does not count, a binary
    /// answer, an error): the request is counted as unmetered.
    pub usage: Option<Usage>,
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
struct Timings {
    prompt_n: Option<u64>,
    predicted_n: Option<u64>,
}

#[derive(Deserialize)]
struct WithUsage {
    usage: Option<UsageJson>,
    choices: Option<Vec<serde::de::IgnoredAny>>,
    /// `/v1/responses` streams carry usage inside `response`.
    response: Option<Box<WithUsage>>,
    /// llama.cpp's native `/completion`: the whole prompt and the tokens generated.
    tokens_evaluated: Option<u64>,
    tokens_predicted: Option<u64>,
    /// llama.cpp's timings: tokens processed (a prompt's cached part not counted) and generated.
    timings: Option<Timings>,
}

impl WithUsage {
    fn usage(&self) -> Option<Usage> {
        self.usage
            .as_ref()
            .map(UsageJson::usage)
            .or_else(|| self.response.as_ref().and_then(|r| r.usage()))
            .or_else(|| self.native())
    }

    fn native(&self) -> Option<Usage> {
        let timings = self.timings.as_ref();
        let prompt = self.tokens_evaluated.or_else(|| timings.and_then(|t| t.prompt_n));
        let completion = self.tokens_predicted.or_else(|| timings.and_then(|t| t.predicted_n));
        (prompt.is_some() || completion.is_some())
            .then(|| Usage { prompt_tokens: prompt.unwrap_or(0), completion_tokens: completion.unwrap_or(0) })
    }

    /// A usage-only stream chunk: OpenAI's `usage` with `choices: []`.
    fn usage_only(&self) -> bool {
        self.usage.is_some() && self.choices.as_ref().is_some_and(|c| c.is_empty())
    }
}

/// The usage a JSON answer reports: an object's, or the sum over an array of them (llama.cpp
/// answers a `/completion` with several prompts with one result each).
fn json_usage(body: &[u8]) -> Option<Usage> {
    if let Ok(one) = serde_json::from_slice::<WithUsage>(body) {
        return one.usage();
    }
    let many = serde_json::from_slice::<Vec<WithUsage>>(body).ok()?;
    many.iter().filter_map(WithUsage::usage).reduce(|a, b| Usage {
        prompt_tokens: a.prompt_tokens.saturating_add(b.prompt_tokens),
        completion_tokens: a.completion_tokens.saturating_add(b.completion_tokens),
    })
}

/// Whether an event may carry usage (what [`WithUsage`] reads), checked before parsing it.
fn mentions_usage(event: &[u8]) -> bool {
    const KEYS: [&[u8]; 3] = [b"\"usage\"", b"\"tokens_evaluated\"", b"\"timings\""];
    KEYS.iter().any(|k| event.windows(k.len()).any(|w| w == *k))
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
    if !mentions_usage(event) {
        return (None, false);
    }
    for line in event.split(|b| *b == b'\n') {
        let Some(data) = line.strip_prefix(b"data:") else { continue };
        let data = data.trim_ascii();
        if let Ok(chunk) = serde_json::from_slice::<WithUsage>(data) {
            return (chunk.usage(), chunk.usage_only());
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
                    *usage = json_usage(buf);
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
        self.event.usage = usage;
        if let Some(u) = usage {
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

    fn u(prompt_tokens: u64, completion_tokens: u64) -> Option<Usage> {
        Some(Usage { prompt_tokens, completion_tokens })
    }

    #[test]
    fn usage_is_read_from_what_engines_answer() {
        let table: &[(&str, Option<Usage>)] = &[
            (r#"{"choices":[],"usage":{"prompt_tokens":7,"completion_tokens":3}}"#, u(7, 3)),
            (r#"{"data":[],"usage":{"prompt_tokens":5,"total_tokens":5}}"#, u(5, 0)),
            (r#"{"usage":{"input_tokens":9,"output_tokens":2}}"#, u(9, 2)),
            (r#"{"response":{"usage":{"input_tokens":9,"output_tokens":2}}}"#, u(9, 2)),
            // llama.cpp's /completion: the whole prompt, not just its uncached part.
            (
                r#"{"content":"x","tokens_evaluated":12,"tokens_predicted":4,"timings":{"prompt_n":2,"predicted_n":4}}"#,
                u(12, 4),
            ),
            (r#"{"content":"x","timings":{"prompt_n":3,"predicted_n":5}}"#, u(3, 5)),
            (r#"{"tokens_predicted":6}"#, u(0, 6)),
            (
                r#"[{"tokens_evaluated":2,"tokens_predicted":1},{"content":"?"},{"tokens_evaluated":3,"tokens_predicted":4}]"#,
                u(5, 5),
            ),
            // OpenAI's usage wins over llama.cpp's timings on its OpenAI routes.
            (
                r#"{"usage":{"prompt_tokens":7,"completion_tokens":3},"timings":{"prompt_n":1,"predicted_n":3}}"#,
                u(7, 3),
            ),
            // Nothing reported: unmetered.
            (r#"{"content":"x","stop":true}"#, None),
            (r#"{"error":{"message":"bad"}}"#, None),
            ("[]", None),
            ("not json", None),
        ];
        for (body, want) in table {
            let mut s = Scanner::for_content_type("application/json", false);
            s.feed(Bytes::copy_from_slice(body.as_bytes()));
            assert_eq!(s.finish().1, *want, "{body}");
        }
        let mut off = Scanner::for_content_type("audio/mpeg", false);
        assert_eq!(off.feed(Bytes::from_static(b"ID3")).as_deref(), Some(&b"ID3"[..]));
        assert_eq!(off.finish().1, None, "a binary answer is unmetered");
    }

    #[test]
    fn only_the_usage_only_chunk_is_stripped() {
        const LLAMA_FINAL: &str = "data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}],\
\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":1}}\n\n";
        const NATIVE: &str = "data: {\"content\":\"Hi\",\"stop\":false}\n\n\
data: {\"content\":\"\",\"stop\":true,\"tokens_evaluated\":11,\"tokens_predicted\":1,\"timings\":{\"prompt_n\":1}}\n\n";
        const USAGE_ONLY: &str = "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":4,\"completion_tokens\":2}}\n\n";
        const DELTA: &str = "data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n\n";
        const DONE: &str = "data: [DONE]\n\n";
        // (events, strip, what the client sees, usage)
        type Case<'a> = (Vec<&'a str>, bool, Vec<&'a str>, Option<Usage>);
        let table: Vec<Case> = vec![
            (vec![DELTA, USAGE_ONLY, DONE], true, vec![DELTA, DONE], u(4, 2)),
            (vec![DELTA, USAGE_ONLY, DONE], false, vec![DELTA, USAGE_ONLY, DONE], u(4, 2)),
            (vec![DELTA, LLAMA_FINAL, DONE], true, vec![DELTA, LLAMA_FINAL, DONE], u(9, 1)),
            (vec![NATIVE], false, vec![NATIVE], u(11, 1)),
            (vec![NATIVE], true, vec![NATIVE], u(11, 1)),
            (vec![DELTA, DELTA, DONE], true, vec![DELTA, DELTA, DONE], u(0, 2)),
            (vec!["data: {\"content\":\"x\"}\n\n", DONE], false, vec!["data: {\"content\":\"x\"}\n\n", DONE], None),
        ];
        for (events, strip, seen, usage) in table {
            let stream = events.concat();
            for split in [1, 5, stream.len()] {
                let mut s = Scanner::for_content_type("text/event-stream", strip);
                let mut out = Vec::new();
                for part in stream.as_bytes().chunks(split) {
                    out.extend_from_slice(&s.feed(Bytes::copy_from_slice(part)).unwrap_or_default());
                }
                let (rest, got) = s.finish();
                out.extend_from_slice(&rest.unwrap_or_default());
                assert_eq!(
                    String::from_utf8(out).expect("utf8"),
                    seen.concat(),
                    "{stream} strip {strip} split {split}"
                );
                assert_eq!(got, usage, "{stream}");
            }
        }
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
