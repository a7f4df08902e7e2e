//! Problems found in a pipeline file, each tied to a line and column.
//!
//! Parsing and validation collect every problem they can find instead of stopping at the
//! first, so `gantry validate` and a failed pipeline-as-code run show the whole list at once.

use std::fmt;

use super::yaml::Pos;

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Diagnostic {
    pub pos: Pos,
    pub message: String,
}

/// Every problem found in one file, sorted by position.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    pub file: String,
    pub diagnostics: Vec<Diagnostic>,
}

impl Report {
    pub fn new(file: impl Into<String>, mut diagnostics: Vec<Diagnostic>) -> Self {
        diagnostics.sort();
        diagnostics.dedup();
        Report {
            file: file.into(),
            diagnostics,
        }
    }

    /// One `FILE:LINE:COL: message` line per problem.
    pub fn lines(&self) -> impl Iterator<Item = String> + '_ {
        self.diagnostics
            .iter()
            .map(|d| format!("{}:{}:{}: {}", self.file, d.pos.line, d.pos.col, d.message))
    }
}

impl Report {
    /// Every problem as `FILE:LINE:COL: message` followed by the source line it points at
    /// and a caret under the column, as rustc shows them (`source` is the file's text).
    pub fn render(&self, source: &str) -> String {
        let mut out = String::new();
        for (line, diagnostic) in self.lines().zip(&self.diagnostics) {
            out.push_str(&line);
            out.push('\n');
            if let Some(snippet) = snippet(source, diagnostic.pos) {
                out.push_str(&snippet);
            }
        }
        out
    }
}

/// The source line at `pos` with a caret under its column, in rustc's gutter:
///
/// ```text
///   |
/// 4 |     stepz: []
///   |     ^
/// ```
///
/// `None` when the file has no such line. A column past the line's end points just after it.
pub fn snippet(source: &str, pos: Pos) -> Option<String> {
    let index = usize::try_from(pos.line).ok()?.checked_sub(1)?;
    let text = source.split('\n').nth(index)?.trim_end_matches('\r');
    let number = pos.line.to_string();
    let gutter = " ".repeat(number.len());
    // The same whitespace as the line up to the column (a tab stays a tab), so the caret lines
    // up however the terminal shows tabs.
    let before: String = text
        .chars()
        .take(usize::try_from(pos.col).unwrap_or(1).saturating_sub(1))
        .map(|c| if c == '\t' { '\t' } else { ' ' })
        .collect();
    Some(format!(
        "{gutter} |\n{number} | {text}\n{gutter} | {before}^\n"
    ))
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, line) in self.lines().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            f.write_str(&line)?;
        }
        Ok(())
    }
}

impl std::error::Error for Report {}

/// How many "did you mean" searches one file may cost. Each compares a name with every
/// candidate, so a hostile file with thousands of unknown names among thousands of stages
/// would otherwise take quadratic time; past the budget, messages just omit the hint.
pub const SUGGESTION_BUDGET: usize = 200;

/// Collects diagnostics while a file is decoded and checked.
#[derive(Debug)]
pub struct Sink {
    diagnostics: Vec<Diagnostic>,
    suggestions_left: usize,
}

impl Default for Sink {
    fn default() -> Self {
        Sink {
            diagnostics: Vec::new(),
            suggestions_left: SUGGESTION_BUDGET,
        }
    }
}

impl Sink {
    /// [`suggestion`], within the file's budget.
    pub fn suggest<'a>(
        &mut self,
        word: &str,
        candidates: impl IntoIterator<Item = &'a str>,
    ) -> Option<&'a str> {
        if self.suggestions_left == 0 {
            return None;
        }
        self.suggestions_left -= 1;
        suggestion(word, candidates)
    }

    pub fn error(&mut self, pos: Pos, message: impl Into<String>) {
        self.diagnostics.push(Diagnostic {
            pos,
            message: message.into(),
        });
    }

    pub fn is_empty(&self) -> bool {
        self.diagnostics.is_empty()
    }

    pub fn into_report(self, file: &str) -> Report {
        Report::new(file, self.diagnostics)
    }
}

/// "did you mean `x`?" for a misspelt name, when one of the candidates is close enough.
pub fn suggestion<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::damerau_levenshtein(word, c), c))
        .filter(|(distance, c)| {
            // About a third of the length may differ. Short words only match when the letters
            // are the same but swapped (`sah` for `sha`): `gpu` is not a typo of `cpu`.
            let allowed = (c.len().max(word.len()) - 1) / 3;
            *distance <= allowed || (*distance == 1 && same_letters(word, c))
        })
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, c)| c)
}

fn same_letters(a: &str, b: &str) -> bool {
    let mut a: Vec<char> = a.chars().collect();
    let mut b: Vec<char> = b.chars().collect();
    a.sort_unstable();
    b.sort_unstable();
    a == b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_names_only() {
        let keys = ["needs", "name", "timeout", "retries"];
        assert_eq!(suggestion("neds", keys), Some("needs"));
        assert_eq!(suggestion("timout", keys), Some("timeout"));
        assert_eq!(suggestion("retrys", keys), Some("retries"));
        assert_eq!(suggestion("completely", keys), None);
        assert_eq!(suggestion("gpu", ["cpu", "memory"]), None);
    }

    #[test]
    fn rendered_problems_show_the_line_with_a_caret_under_the_column() {
        let source = "name: x\nstages:\n  - name: a\n    stepz: []\n\tbad: 1\n";
        let report = Report::new(
            "p.yaml",
            vec![
                Diagnostic {
                    pos: Pos::new(4, 5),
                    message: "unknown key `stepz`".into(),
                },
                Diagnostic {
                    pos: Pos::new(5, 2),
                    message: "a tab".into(),
                },
                Diagnostic {
                    pos: Pos::new(40, 1),
                    message: "past the end".into(),
                },
            ],
        );
        assert_eq!(
            report.render(source),
            "p.yaml:4:5: unknown key `stepz`\n  |\n4 |     stepz: []\n  |     ^\n\
             p.yaml:5:2: a tab\n  |\n5 | \tbad: 1\n  | \t^\n\
             p.yaml:40:1: past the end\n"
        );
    }

    #[test]
    fn report_lines_are_sorted_and_formatted() {
        let report = Report::new(
            "p.yaml",
            vec![
                Diagnostic {
                    pos: Pos::new(9, 3),
                    message: "b".into(),
                },
                Diagnostic {
                    pos: Pos::new(2, 5),
                    message: "a".into(),
                },
            ],
        );
        assert_eq!(report.to_string(), "p.yaml:2:5: a\np.yaml:9:3: b");
    }
}
