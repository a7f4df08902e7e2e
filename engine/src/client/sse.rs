//! The live log's Server-Sent Events (`text/event-stream`), decoded from the response's bytes
//! by the `sse-stream` crate; events may be split across reads anywhere, even inside a UTF-8
//! character or between the `\r` and `\n` of a line end.
//!
//! Why `sse-stream`: it is maintained (0.3.0, September 2026; what `rmcp` decodes with), it
//! takes a byte stream such as reqwest's, and it leaves the connection to us, which resumes
//! from the number of the last line written rather than from an event's `id`.
//! `eventsource-stream` has had no release since February 2022, and `reqwest-eventsource`,
//! built on it, opens and retries the request itself.
//!
//! The crate hands over raw event blocks; `Parser` adds what a browser's `EventSource` does
//! with them (a block without `data` is not an event, one without a type is a `message`) and
//! takes the bytes pushed as `follow` reads them.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::{FutureExt, Stream, StreamExt};
use sse_stream::SseByteStream;

/// One dispatched event.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Event {
    /// The `event:` field; `message` when the event named none.
    pub event: String,
    /// The `data:` lines, joined with `\n`.
    pub data: String,
    /// The `id:` field of this event, if it had one.
    pub id: Option<String>,
}

/// The chunks pushed and not decoded yet, as the `Stream` the crate decodes: pending while
/// empty. It wakes no one, as only `Parser::push` polls it, right after queueing a chunk.
#[derive(Clone, Default)]
struct Pushed(Arc<Mutex<VecDeque<Bytes>>>);

impl Stream for Pushed {
    type Item = Result<Bytes, Infallible>;

    fn poll_next(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.0.lock().ok().and_then(|mut queue| queue.pop_front()) {
            Some(chunk) => Poll::Ready(Some(Ok(chunk))),
            None => Poll::Pending,
        }
    }
}

/// Takes a stream's bytes as they are read and returns the events they complete.
pub struct Parser {
    pushed: Pushed,
    decoder: SseByteStream<Pushed>,
    /// Why decoding stopped: the bytes were not an event stream (invalid UTF-8 in a field).
    error: Option<String>,
}

impl Default for Parser {
    fn default() -> Self {
        let pushed = Pushed::default();
        Parser {
            decoder: SseByteStream::new(pushed.clone()),
            pushed,
            error: None,
        }
    }
}

impl Parser {
    /// Takes the next bytes of the stream and returns the events they complete.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<Event> {
        let mut events = Vec::new();
        if self.error.is_some() {
            return events;
        }
        if let Ok(mut queue) = self.pushed.0.lock() {
            queue.push_back(Bytes::copy_from_slice(bytes));
        }
        while let Some(Some(block)) = self.decoder.next().now_or_never() {
            match block {
                // A block without data is not an event, one without a type is a `message`.
                Ok(block) => events.extend(block.data.map(|data| {
                    Event {
                        event: block
                            .event
                            .filter(|e| !e.is_empty())
                            .unwrap_or_else(|| "message".into()),
                        data,
                        id: block.id,
                    }
                })),
                Err(e) => self.error = Some(e.to_string()),
            }
        }
        events
    }

    /// Why the bytes pushed so far are not an event stream, if they are not; no events come
    /// after that.
    pub fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STREAM: &str = ": keep-alive\n\nid: 1\ndata: {\"n\":1,\"text\":\"héllo\"}\n\n\
                          id:2\ndata:a\ndata: b\n\nevent: end\ndata: {}\n\n";

    fn expected() -> Vec<Event> {
        vec![
            Event {
                event: "message".into(),
                data: "{\"n\":1,\"text\":\"héllo\"}".into(),
                id: Some("1".into()),
            },
            Event {
                event: "message".into(),
                data: "a\nb".into(),
                id: Some("2".into()),
            },
            Event {
                event: "end".into(),
                data: "{}".into(),
                id: None,
            },
        ]
    }

    #[test]
    fn parses_a_whole_stream() {
        assert_eq!(Parser::default().push(STREAM.as_bytes()), expected());
    }

    #[test]
    fn events_split_at_every_byte_come_out_the_same() {
        let bytes = STREAM.as_bytes();
        for split in 0..bytes.len() {
            let mut parser = Parser::default();
            let mut events = parser.push(&bytes[..split]);
            events.extend(parser.push(&bytes[split..]));
            assert_eq!(events, expected(), "split at {split}");
        }
        let mut parser = Parser::default();
        let events: Vec<Event> = bytes.iter().flat_map(|b| parser.push(&[*b])).collect();
        assert_eq!(events, expected(), "byte by byte");
    }

    #[test]
    fn crlf_and_cr_line_ends_work_even_when_split() {
        let crlf = STREAM.replace('\n', "\r\n");
        let cr = STREAM.replace('\n', "\r");
        for stream in [crlf, cr] {
            let bytes = stream.as_bytes();
            for split in 0..bytes.len() {
                let mut parser = Parser::default();
                let mut events = parser.push(&bytes[..split]);
                events.extend(parser.push(&bytes[split..]));
                assert_eq!(events, expected(), "split at {split} of {stream:?}");
            }
        }
    }

    #[test]
    fn an_event_without_data_is_not_dispatched() {
        let mut parser = Parser::default();
        assert!(parser.push(b"event: ping\n\n").is_empty());
        assert!(parser.push(b"id: 3\n\n").is_empty());
        assert!(parser.push(b"retry: 10\n\n").is_empty());
    }

    #[test]
    fn bytes_that_are_not_utf8_stop_the_events_with_an_error() {
        let mut parser = Parser::default();
        assert_eq!(parser.push(b"data: 1\n\n").len(), 1);
        assert_eq!(parser.error(), None);
        assert!(parser.push(b"data: \xff\n\ndata: 2\n\n").is_empty());
        assert!(parser.error().is_some());
        assert!(parser.push(b"data: 3\n\n").is_empty());
    }
}
