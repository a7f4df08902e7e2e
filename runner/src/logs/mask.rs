//! Hides secret values in log text before it leaves the runner.
//!
//! The engine never sees a secret in a log line: every value of the stage's `mask` list becomes
//! `***`. Matches are found overlapping and merged, so of two secrets that overlap (`abc`,
//! `bcdef` in `abcdef`) no part of either survives, which "longest first" alone would not give.

use aho_corasick::AhoCorasick;

pub const MASK: &str = "***";

#[derive(Debug, Default)]
pub struct Masker {
    finder: Option<AhoCorasick>,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot build the secret masker: {0}")]
pub struct MaskError(#[from] aho_corasick::BuildError);

impl Masker {
    /// A masker for `values`. Empty values are ignored; a multi-line value is also masked line by
    /// line, because output reaches the masker one line at a time.
    ///
    /// Each value is also masked in the forms a step commonly prints it in: base64 (standard
    /// and URL-safe, as a whole and inside longer base64 text), hex (either case) and
    /// percent-encoded.
    pub fn new(values: &[String]) -> Result<Masker, MaskError> {
        let mut owned: Vec<String> = Vec::new();
        for value in values {
            if !value.is_empty() {
                owned.push(value.clone());
                owned.extend(encodings(value));
            }
            if value.contains('\n') {
                owned.extend(
                    value
                        .lines()
                        .map(|line| line.trim_end_matches('\r'))
                        .filter(|line| !line.is_empty())
                        .map(str::to_owned),
                );
            }
        }
        let mut patterns: Vec<&str> = owned.iter().map(String::as_str).collect();
        // Longest first: with equal starts the longest value wins even before merging.
        patterns.sort_by(|a, b| b.len().cmp(&a.len()).then(a.cmp(b)));
        patterns.dedup();
        if patterns.is_empty() {
            return Ok(Masker { finder: None });
        }
        Ok(Masker {
            finder: Some(AhoCorasick::new(&patterns)?),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.finder.is_none()
    }

    /// `text` with every secret replaced by [`MASK`]: `text` itself when nothing matches (the
    /// common case, no copy), otherwise the masked text written into `scratch`.
    pub fn mask<'t>(&self, text: &'t str, scratch: &'t mut String) -> &'t str {
        let Some(finder) = &self.finder else {
            return text;
        };
        // The plain search is much faster than the overlapping one; most lines match nothing.
        if !finder.is_match(text) {
            return text;
        }
        let mut spans: Vec<(usize, usize)> = finder
            .find_overlapping_iter(text)
            .map(|m| (m.start(), m.end()))
            .collect();
        spans.sort_unstable();
        scratch.clear();
        let mut copied = 0;
        let mut spans = spans.into_iter().peekable();
        while let Some((start, mut end)) = spans.next() {
            while let Some(&(next_start, next_end)) = spans.peek() {
                if next_start >= end {
                    break;
                }
                end = end.max(next_end);
                spans.next();
            }
            scratch.push_str(&text[copied..start]);
            scratch.push_str(MASK);
            copied = end;
        }
        scratch.push_str(&text[copied..]);
        scratch
    }
}

/// Encoded forms of a secret shorter than this are not masked: they would hide ordinary text.
const MIN_ENCODED: usize = 6;

/// The forms `value` takes when a step encodes it: base64 of it (and of it with the newline
/// `echo` adds), the part of its base64 that is the same wherever it sits inside longer base64
/// text (one for each of the three alignments), hex and percent-encoding.
fn encodings(value: &str) -> Vec<String> {
    use base64::Engine as _;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
    let bytes = value.as_bytes();
    let mut forms = Vec::new();
    let with_newline = [bytes, b"\n"].concat();
    for whole in [bytes, &with_newline[..]] {
        let standard = STANDARD.encode(whole);
        forms.push(standard.trim_end_matches('=').to_owned());
        forms.push(URL_SAFE_NO_PAD.encode(whole));
        forms.push(standard);
    }
    // Inside longer text the value starts 0, 1 or 2 bytes into a base64 group: the characters
    // made only of its own bits are the same whatever surrounds it.
    for shift in 0..3usize {
        let padded = [&vec![0u8; shift][..], bytes].concat();
        let encoded = STANDARD.encode(&padded);
        let first = (shift * 8).div_ceil(6);
        let last = (padded.len() * 8) / 6;
        if let Some(stable) = encoded.get(first..last) {
            forms.push(stable.to_owned());
            forms.push(stable.replace('+', "-").replace('/', "_"));
        }
    }
    forms.push(hex::encode(bytes));
    forms.push(hex::encode_upper(bytes));
    for upper in [true, false] {
        let percent: String = bytes
            .iter()
            .map(|&b| {
                if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                    char::from(b).to_string()
                } else if upper {
                    format!("%{b:02X}")
                } else {
                    format!("%{b:02x}")
                }
            })
            .collect();
        forms.push(percent);
    }
    forms.retain(|f| f.len() >= MIN_ENCODED && f != value);
    forms.sort();
    forms.dedup();
    forms
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_is_masked_in_its_common_encodings_too() {
        use base64::Engine as _;
        let secret = "p@ss w0rd/+secret";
        let b64 = base64::engine::general_purpose::STANDARD;
        for shown in [
            b64.encode(secret),
            b64.encode(format!("{secret}\n")),
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret),
            hex::encode(secret),
            hex::encode_upper(secret),
            "p%40ss%20w0rd%2F%2Bsecret".to_owned(),
        ] {
            let text = format!("value: {shown} end");
            let out = masked(&[secret], &text);
            assert!(!out.contains(&shown), "{shown} shown in {out}");
            assert!(out.contains("***"), "{out}");
        }
        // Inside longer base64 (a Basic auth header, say) at each alignment.
        for prefix in ["user:", "us:", "u:"] {
            let header = b64.encode(format!("{prefix}{secret}"));
            let out = masked(&[secret], &header);
            assert!(out.contains("***"), "{prefix}: {header} → {out}");
        }
    }

    fn masked(values: &[&str], text: &str) -> String {
        let values: Vec<String> = values.iter().map(|v| v.to_string()).collect();
        let masker = Masker::new(&values).expect("masker");
        let mut scratch = String::new();
        masker.mask(text, &mut scratch).to_owned()
    }

    #[test]
    fn every_occurrence_of_every_secret_is_hidden() {
        assert_eq!(
            masked(
                &["hunter2", "s3cr3t"],
                "pw=hunter2 key=s3cr3t again hunter2"
            ),
            "pw=*** key=*** again ***"
        );
    }

    #[test]
    fn text_without_secrets_is_returned_as_is() {
        assert_eq!(masked(&["hunter2"], "nothing here"), "nothing here");
        assert_eq!(masked(&[], "no secrets at all"), "no secrets at all");
        assert!(Masker::new(&[String::new()]).expect("masker").is_empty());
    }

    #[test]
    fn the_longer_of_two_secrets_with_a_common_start_is_hidden_whole() {
        assert_eq!(masked(&["abc", "abcdef"], "x abcdef y"), "x *** y");
    }

    #[test]
    fn overlapping_secrets_leave_no_part_visible() {
        assert_eq!(masked(&["abc", "bcdef"], "abcdefg"), "***g");
        assert_eq!(masked(&["abc", "bcdef"], "zabcz"), "z***z");
    }

    #[test]
    fn lines_of_a_multi_line_secret_are_hidden_one_by_one() {
        let key = "-----BEGIN KEY-----\r\nMIIsecretbody\n-----END KEY-----";
        assert_eq!(masked(&[key], "MIIsecretbody"), "***");
        assert_eq!(masked(&[key], "-----END KEY-----"), "***");
    }
}
