//! A Server-Sent Events parser (the `text/event-stream` format of the WHATWG HTML standard),
//! fed with bytes as they arrive: events may be split across reads anywhere, even inside a
//! UTF-8 character or between the `\r` and `\n` of a line end.

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

#[derive(Debug, Default)]
pub struct Parser {
    /// Bytes of an unfinished line.
    partial: Vec<u8>,
    /// The previous read ended with `\r`: a `\n` starting the next one belongs to it.
    after_cr: bool,
    event: Option<String>,
    data: Option<String>,
    id: Option<String>,
}

impl Parser {
    /// Takes the next bytes of the stream and returns the events they complete.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<Event> {
        let mut events = Vec::new();
        let mut rest = bytes;
        if self.after_cr {
            self.after_cr = false;
            if let Some(tail) = rest.strip_prefix(b"\n") {
                rest = tail;
            }
        }
        while let Some(end) = rest.iter().position(|&b| b == b'\n' || b == b'\r') {
            self.partial.extend_from_slice(&rest[..end]);
            let line = std::mem::take(&mut self.partial);
            if let Some(event) = self.line(&String::from_utf8_lossy(&line)) {
                events.push(event);
            }
            if rest[end] == b'\r' {
                match rest.get(end + 1) {
                    Some(b'\n') => rest = &rest[end + 2..],
                    Some(_) => rest = &rest[end + 1..],
                    None => {
                        self.after_cr = true;
                        rest = &[];
                    }
                }
            } else {
                rest = &rest[end + 1..];
            }
        }
        self.partial.extend_from_slice(rest);
        events
    }

    fn line(&mut self, line: &str) -> Option<Event> {
        if line.is_empty() {
            // A blank line dispatches the event (if it had data).
            let event = self.event.take();
            let id = self.id.take();
            let data = self.data.take()?;
            return Some(Event {
                event: event.unwrap_or_else(|| "message".into()),
                data,
                id,
            });
        }
        if line.starts_with(':') {
            return None; // a comment (keep-alive)
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field {
            "event" => self.event = Some(value.to_owned()),
            "data" => match &mut self.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => self.data = Some(value.to_owned()),
            },
            "id" if !value.contains('\0') => self.id = Some(value.to_owned()),
            _ => {} // `retry` and unknown fields
        }
        None
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
    }
}
