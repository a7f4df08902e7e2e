//! Turns a step's raw output into encoded log lines: split at newlines (and at
//! [`MAX_LINE_BYTES`]), made safe to store, secrets masked, stamped with the time.
//!
//! This is the hot path for log throughput, so valid UTF-8 without control characters (nearly
//! all output) is neither copied nor allocated for until it is appended to the encoded block.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::logs::mask::Masker;
use crate::wire::{MAX_LINE_BYTES, Stream, encode_line, sanitize_line};

/// Calls `emit` for each complete line at the front of `data` (without its `\n`) and returns how
/// many bytes were used. Output without a newline for more than [`MAX_LINE_BYTES`] is emitted in
/// pieces, cut at a UTF-8 character boundary where one is near. At `eof` the rest is a line too.
pub fn split_lines(data: &[u8], eof: bool, mut emit: impl FnMut(&[u8])) -> usize {
    let mut start = 0;
    while start < data.len() {
        let rest = &data[start..];
        let window = &rest[..rest.len().min(MAX_LINE_BYTES + 1)];
        match memchr::memchr(b'\n', window) {
            Some(end) => {
                emit(&rest[..end]);
                start += end + 1;
            }
            None if rest.len() > MAX_LINE_BYTES => {
                let cut = char_boundary_before(rest, MAX_LINE_BYTES);
                emit(&rest[..cut]);
                start += cut;
            }
            None if eof => {
                emit(rest);
                start = data.len();
            }
            None => break,
        }
    }
    start
}

/// The largest cut `<= limit` that does not split a UTF-8 sequence, or `limit` when the bytes
/// there are not UTF-8 anyway.
fn char_boundary_before(bytes: &[u8], limit: usize) -> usize {
    // A continuation byte is 0b10xx_xxxx; a sequence has at most three of them.
    (limit.saturating_sub(3)..=limit)
        .rev()
        .find(|&i| i > 0 && bytes.get(i).is_none_or(|b| b & 0xC0 != 0x80))
        .unwrap_or(limit)
}

/// What [`sanitize_line`] makes of `raw`, borrowing when that changes nothing.
pub fn clean_text(raw: &[u8]) -> Cow<'_, str> {
    // `sanitize_line` keeps the last `\r` frame; a trailing `\r` (CRLF output) ends an empty
    // one, so dropping it first gives the same result on the fast path.
    let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
    if memchr::memchr2(b'\r', 0, raw).is_none()
        && let Ok(text) = std::str::from_utf8(raw)
    {
        return Cow::Borrowed(text);
    }
    Cow::Owned(sanitize_line(raw))
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Collects encoded lines into a block that is pushed to the queue in one go.
pub struct LineEncoder {
    masker: Arc<Masker>,
    masked: String,
    encoded: String,
    lines: u64,
    /// `<ts> <stream> ` of the last line: lines of one read share it, and formatting the
    /// timestamp anew for each was a tenth of the runner's time.
    prefix: String,
    prefix_of: Option<(i64, Stream)>,
}

impl LineEncoder {
    pub fn new(masker: Arc<Masker>) -> LineEncoder {
        LineEncoder {
            masker,
            masked: String::new(),
            encoded: String::new(),
            lines: 0,
            prefix: String::new(),
            prefix_of: None,
        }
    }

    /// Adds one line of raw output (without its newline).
    pub fn push_raw(&mut self, ts_ms: i64, stream: Stream, raw: &[u8]) {
        let text = clean_text(raw);
        self.push_text(ts_ms, stream, &text);
    }

    /// Adds one line of text; it becomes several lines if masking or replacement characters made
    /// it longer than [`MAX_LINE_BYTES`], so every stored line respects the limit.
    pub fn push_text(&mut self, ts_ms: i64, stream: Stream, text: &str) {
        if self.prefix_of != Some((ts_ms, stream)) {
            // The wire format's own encoder, for an empty line: exactly the prefix plus `\n`.
            self.prefix.clear();
            encode_line(&mut self.prefix, ts_ms, stream, "");
            self.prefix.pop();
            self.prefix_of = Some((ts_ms, stream));
        }
        let text = self.masker.mask(text, &mut self.masked);
        let mut rest = text;
        loop {
            let mut cut = rest.len();
            if cut > MAX_LINE_BYTES {
                cut = MAX_LINE_BYTES;
                while !rest.is_char_boundary(cut) {
                    cut -= 1;
                }
            }
            self.encoded.push_str(&self.prefix);
            self.encoded.push_str(&rest[..cut]);
            self.encoded.push('\n');
            self.lines += 1;
            rest = &rest[cut..];
            if rest.is_empty() {
                return;
            }
        }
    }

    pub fn encoded(&self) -> &str {
        &self.encoded
    }

    pub fn lines(&self) -> u64 {
        self.lines
    }

    pub fn clear(&mut self) {
        self.encoded.clear();
        self.lines = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{count_batch_lines, decode_line};

    fn split_all(data: &[u8], eof: bool) -> (Vec<Vec<u8>>, usize) {
        let mut lines = Vec::new();
        let used = split_lines(data, eof, |l| lines.push(l.to_vec()));
        (lines, used)
    }

    #[test]
    fn complete_lines_are_split_and_the_partial_rest_kept() {
        let (lines, used) = split_all(b"one\ntwo\n\nthr", false);
        assert_eq!(lines, vec![b"one".to_vec(), b"two".to_vec(), b"".to_vec()]);
        assert_eq!(used, 9);
        let (lines, used) = split_all(b"thr", true);
        assert_eq!(lines, vec![b"thr".to_vec()]);
        assert_eq!(used, 3);
    }

    #[test]
    fn overlong_output_is_cut_into_lines_of_at_most_the_limit() {
        let data = vec![b'x'; MAX_LINE_BYTES * 2 + 10];
        let (lines, used) = split_all(&data, false);
        assert_eq!(lines.len(), 2);
        assert!(lines.iter().all(|l| l.len() == MAX_LINE_BYTES));
        assert_eq!(used, MAX_LINE_BYTES * 2, "the last 10 bytes wait for more");
        // Exactly the limit followed by a newline is one whole line.
        let mut exact = vec![b'y'; MAX_LINE_BYTES];
        exact.push(b'\n');
        let (lines, used) = split_all(&exact, false);
        assert_eq!(lines.len(), 1);
        assert_eq!(used, MAX_LINE_BYTES + 1);
    }

    #[test]
    fn cuts_do_not_split_a_character() {
        let mut data = vec![b'a'; MAX_LINE_BYTES - 1];
        data.extend_from_slice("é and more".as_bytes());
        data.extend(std::iter::repeat_n(b'b', MAX_LINE_BYTES));
        let (lines, _) = split_all(&data, true);
        assert_eq!(lines[0].len(), MAX_LINE_BYTES - 1);
        assert!(
            std::str::from_utf8(&lines[1])
                .expect("utf-8")
                .starts_with('é')
        );
    }

    #[test]
    fn clean_text_agrees_with_sanitize_line() {
        let samples: [&[u8]; 8] = [
            b"plain",
            b"crlf\r",
            b"50%\r100%",
            b"a\0b",
            b"\r",
            b"",
            &[0x66, 0xff, 0x6f],
            b"x\r\r",
        ];
        for raw in samples {
            assert_eq!(clean_text(raw), sanitize_line(raw), "{raw:?}");
        }
        assert!(matches!(clean_text(b"plain"), Cow::Borrowed(_)));
        assert!(matches!(clean_text(b"crlf\r"), Cow::Borrowed(_)));
    }

    #[test]
    fn encoded_lines_are_masked_and_decodable() {
        let masker = Arc::new(Masker::new(&["s3cr3t".to_string()]).expect("masker"));
        let mut encoder = LineEncoder::new(masker);
        encoder.push_raw(5, Stream::Stdout, b"token s3cr3t\r");
        encoder.push_text(6, Stream::System, "$ build");
        assert_eq!(encoder.lines(), 2);
        assert_eq!(encoder.encoded(), "5 o token ***\n6 s $ build\n");
        assert_eq!(count_batch_lines(encoder.encoded()), Ok(2));
        encoder.clear();
        assert_eq!(encoder.encoded(), "");
    }

    #[test]
    fn encoding_matches_the_wire_encoder() {
        let mut encoder = LineEncoder::new(Arc::new(Masker::default()));
        let mut expected = String::new();
        for (ts, stream, text) in [
            (1_700_000_000_000, Stream::Stdout, "a"),
            (1_700_000_000_000, Stream::Stdout, ""),
            (1_700_000_000_000, Stream::Stderr, "b c"),
            (1_700_000_000_001, Stream::Stderr, "d"),
            (-5, Stream::System, "$ x"),
        ] {
            encoder.push_text(ts, stream, text);
            encode_line(&mut expected, ts, stream, text);
        }
        assert_eq!(encoder.encoded(), expected);
    }

    #[test]
    fn text_grown_past_the_limit_is_split_again() {
        let mut encoder = LineEncoder::new(Arc::new(Masker::default()));
        // Invalid bytes become U+FFFD (three bytes each): 16 KiB of them triple in size.
        encoder.push_raw(1, Stream::Stderr, &vec![0xff; MAX_LINE_BYTES]);
        let mut total = 0;
        for raw in encoder.encoded().split_terminator('\n') {
            let line = decode_line(raw).expect("valid");
            assert!(line.text.len() <= MAX_LINE_BYTES);
            total += line.text.len();
        }
        assert_eq!(total, 3 * MAX_LINE_BYTES, "nothing lost");
        assert_eq!(
            encoder.lines(),
            4,
            "16383 bytes (5461 whole characters) per line"
        );
    }
}
