//! A line diff between two texts (two versions of a pipeline's YAML), from their longest common
//! subsequence of lines, as `diff` and git show it: unchanged lines, removed ones (`-`) and
//! added ones (`+`), with long unchanged stretches folded away.

use serde::Serialize;

/// What happened to a line between the old text and the new one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Change {
    Same,
    Removed,
    Added,
    /// Stands for unchanged lines left out; its `text` says how many.
    Folded,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Line {
    pub change: Change,
    pub text: String,
}

impl Line {
    fn new(change: Change, text: &str) -> Line {
        Line {
            change,
            text: text.to_owned(),
        }
    }
}

/// Past this many cells the LCS table (one `u32` each) is not worth its memory for a page:
/// the middle is then shown as all removed and all added, which is still a correct diff.
const MAX_CELLS: usize = 4_000_000;

/// Every line of `old` and `new` in order, each marked same, removed or added. Removed lines
/// come before the added ones that replace them.
pub fn lines(old: &str, new: &str) -> Vec<Line> {
    let old: Vec<&str> = old.lines().collect();
    let new: Vec<&str> = new.lines().collect();
    // The common head and tail are cheap to match and usually most of a pipeline file; only
    // the middle needs the quadratic table.
    let head = old.iter().zip(&new).take_while(|(a, b)| a == b).count();
    let tail = old[head..]
        .iter()
        .rev()
        .zip(new[head..].iter().rev())
        .take_while(|(a, b)| a == b)
        .count();
    let (a, b) = (&old[head..old.len() - tail], &new[head..new.len() - tail]);
    let mut out: Vec<Line> = old[..head]
        .iter()
        .map(|l| Line::new(Change::Same, l))
        .collect();
    if a.len().saturating_mul(b.len()) > MAX_CELLS {
        out.extend(a.iter().map(|l| Line::new(Change::Removed, l)));
        out.extend(b.iter().map(|l| Line::new(Change::Added, l)));
    } else {
        out.extend(middle(a, b));
    }
    out.extend(
        old[old.len() - tail..]
            .iter()
            .map(|l| Line::new(Change::Same, l)),
    );
    out
}

/// The LCS diff of `a` and `b`: `len[i][j]` is the length of the longest common subsequence
/// of `a[i..]` and `b[j..]`, walked from the front.
fn middle(a: &[&str], b: &[&str]) -> Vec<Line> {
    let width = b.len() + 1;
    let mut len = vec![0u32; (a.len() + 1) * width];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            len[i * width + j] = if a[i] == b[j] {
                len[(i + 1) * width + j + 1] + 1
            } else {
                len[(i + 1) * width + j].max(len[i * width + j + 1])
            };
        }
    }
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        if a[i] == b[j] {
            out.push(Line::new(Change::Same, a[i]));
            i += 1;
            j += 1;
        } else if len[(i + 1) * width + j] >= len[i * width + j + 1] {
            out.push(Line::new(Change::Removed, a[i]));
            i += 1;
        } else {
            out.push(Line::new(Change::Added, b[j]));
            j += 1;
        }
    }
    out.extend(a[i..].iter().map(|l| Line::new(Change::Removed, l)));
    out.extend(b[j..].iter().map(|l| Line::new(Change::Added, l)));
    out
}

/// `diff` with each unchanged stretch longer than `context` lines on both sides of a change
/// folded into one [`Change::Folded`] line, so a one-line change in a long file stays short.
pub fn folded(diff: Vec<Line>, context: usize) -> Vec<Line> {
    let changed: Vec<usize> = diff
        .iter()
        .enumerate()
        .filter(|(_, l)| l.change != Change::Same)
        .map(|(i, _)| i)
        .collect();
    let near_change = |i: usize| {
        // The nearest change at or after `i`, and the one before it.
        let at = changed.partition_point(|&c| c < i);
        let after = changed.get(at).is_some_and(|&c| c - i <= context);
        let before = at > 0 && i - changed[at - 1] <= context;
        after || before
    };
    let mut out = Vec::new();
    let mut hidden = 0;
    for (i, line) in diff.into_iter().enumerate() {
        if line.change == Change::Same && !near_change(i) {
            hidden += 1;
            continue;
        }
        if hidden > 0 {
            out.push(fold(hidden));
            hidden = 0;
        }
        out.push(line);
    }
    if hidden > 0 {
        out.push(fold(hidden));
    }
    out
}

fn fold(hidden: usize) -> Line {
    let text = if hidden == 1 {
        "1 unchanged line".to_owned()
    } else {
        format!("{hidden} unchanged lines")
    };
    Line {
        change: Change::Folded,
        text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The diff as `diff -u` marks it: ` same`, `-removed`, `+added`, `~folded`.
    fn marked(diff: &[Line]) -> Vec<String> {
        diff.iter()
            .map(|l| {
                let mark = match l.change {
                    Change::Same => ' ',
                    Change::Removed => '-',
                    Change::Added => '+',
                    Change::Folded => '~',
                };
                format!("{mark}{}", l.text)
            })
            .collect()
    }

    #[test]
    fn identical_texts_have_only_unchanged_lines() {
        let text = "a\nb\nc\n";
        assert_eq!(marked(&lines(text, text)), [" a", " b", " c"]);
    }

    #[test]
    fn a_changed_line_is_removed_then_added_between_unchanged_ones() {
        let old = "name: app\nstages:\n  - name: build\n    steps: [make]\n";
        let new = "name: app\nstages:\n  - name: build\n    steps: [make all]\n";
        assert_eq!(
            marked(&lines(old, new)),
            [
                " name: app",
                " stages:",
                "   - name: build",
                "-    steps: [make]",
                "+    steps: [make all]",
            ]
        );
    }

    #[test]
    fn inserted_and_deleted_lines_keep_the_longest_common_run_unchanged() {
        // LCS of (a b c d e) and (b c x d e f) is b c d e: a goes, x and f arrive.
        assert_eq!(
            marked(&lines("a\nb\nc\nd\ne", "b\nc\nx\nd\ne\nf")),
            ["-a", " b", " c", "+x", " d", " e", "+f"]
        );
    }

    #[test]
    fn reordered_lines_show_as_moves_not_as_a_whole_rewrite() {
        assert_eq!(
            marked(&lines("one\ntwo\nthree", "two\nthree\none")),
            ["-one", " two", " three", "+one"]
        );
    }

    #[test]
    fn from_or_to_an_empty_text_every_line_is_added_or_removed() {
        assert_eq!(marked(&lines("", "x\ny")), ["+x", "+y"]);
        assert_eq!(marked(&lines("x\ny", "")), ["-x", "-y"]);
        assert!(lines("", "").is_empty());
    }

    #[test]
    fn a_huge_middle_falls_back_to_all_removed_then_all_added() {
        let old: String = (0..2100).map(|i| format!("old {i}\n")).collect();
        let new: String = (0..2100).map(|i| format!("new {i}\n")).collect();
        let diff = lines(&format!("top\n{old}end"), &format!("top\n{new}end"));
        assert_eq!(diff.len(), 2 + 2100 * 2);
        assert_eq!(diff[0].change, Change::Same);
        assert!(diff[1..=2100].iter().all(|l| l.change == Change::Removed));
        assert!(diff[2101..=4200].iter().all(|l| l.change == Change::Added));
        assert_eq!(diff[4201].text, "end");
    }

    #[test]
    fn long_unchanged_stretches_fold_leaving_context_around_changes() {
        let old: String = (1..=20).map(|i| format!("{i}\n")).collect();
        let new = old.replace("10\n", "ten\n");
        assert_eq!(
            marked(&folded(lines(&old, &new), 2)),
            [
                "~7 unchanged lines",
                " 8",
                " 9",
                "-10",
                "+ten",
                " 11",
                " 12",
                "~8 unchanged lines"
            ]
        );
    }

    #[test]
    fn a_stretch_between_close_changes_is_not_folded() {
        let diff = folded(lines("a\nb\nc\nd\ne", "A\nb\nc\nd\nE"), 2);
        assert!(diff.iter().all(|l| l.change != Change::Folded), "{diff:?}");
    }
}
