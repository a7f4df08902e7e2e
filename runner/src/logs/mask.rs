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
    pub fn new(values: &[String]) -> Result<Masker, MaskError> {
        let mut patterns: Vec<&str> = Vec::new();
        for value in values {
            if !value.is_empty() {
                patterns.push(value);
            }
            if value.contains('\n') {
                patterns.extend(
                    value
                        .lines()
                        .map(|line| line.trim_end_matches('\r'))
                        .filter(|line| !line.is_empty()),
                );
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;

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
