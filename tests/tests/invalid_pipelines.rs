//! Golden tests for broken pipelines.
//!
//! Every `tests/fixtures/invalid/NAME.yaml` is loaded with [`gantry::pipeline::load`] and the
//! report's lines (`FILE:LINE:COL: message`, exactly what `gantry validate` prints) are compared
//! with `NAME.expected` next to it. The file is named by its path relative to the workspace
//! root, as `gantry validate` run from there would name it.
//!
//! `GANTRY_BLESS=1 cargo test -p gantry-tests --test invalid_pipelines` rewrites the `.expected`
//! files from the current output instead of comparing. `GANTRY_FIXTURE=TEXT` limits the run (and
//! the rewrite) to fixtures whose name contains TEXT, so one fixed rule can be blessed without
//! touching the others.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

/// Fewer fixtures than this means they were lost (a bad glob, a moved directory).
const MIN_FIXTURES: usize = 25;
const FIXTURES: &str = "tests/fixtures/invalid";

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the gantry-tests package lives inside the workspace")
        .to_path_buf()
}

/// Every file in the fixture directory, sorted by name.
fn fixture_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|entry| entry.expect("readable directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

fn has_extension(path: &Path, ext: &str) -> bool {
    path.extension().is_some_and(|e| e == ext)
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .expect("a fixture path has a file name")
        .to_string_lossy()
        .into_owned()
}

/// What `gantry validate` would print for the fixture, one entry per line.
fn actual_lines(relative: &str, text: &str) -> Vec<String> {
    match gantry::pipeline::load(relative, text) {
        Ok(_) => Vec::new(),
        Err(report) => report.lines().collect(),
    }
}

/// A line diff (longest common subsequence): `-` lines are only expected, `+` only printed.
fn diff(expected: &[String], actual: &[String]) -> String {
    let (n, m) = (expected.len(), actual.len());
    // lcs[i][j]: length of the longest common subsequence of expected[i..] and actual[j..].
    let mut lcs = vec![vec![0usize; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if expected[i] == actual[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let mut out = String::new();
    let (mut i, mut j) = (0, 0);
    while i < n || j < m {
        if i < n && j < m && expected[i] == actual[j] {
            let _ = writeln!(out, "    {}", expected[i]);
            i += 1;
            j += 1;
        } else if i < n && (j == m || lcs[i + 1][j] >= lcs[i][j + 1]) {
            let _ = writeln!(out, "  - {}", expected[i]);
            i += 1;
        } else {
            let _ = writeln!(out, "  + {}", actual[j]);
            j += 1;
        }
    }
    out
}

#[test]
fn invalid_pipelines_match_their_expected_output() {
    let root = workspace_root();
    let dir = root.join(FIXTURES);
    let bless = std::env::var_os("GANTRY_BLESS").is_some_and(|v| v == "1");
    let only = std::env::var("GANTRY_FIXTURE")
        .ok()
        .filter(|s| !s.is_empty());

    let files = fixture_files(&dir);
    let fixtures: Vec<&PathBuf> = files.iter().filter(|p| has_extension(p, "yaml")).collect();
    assert!(
        fixtures.len() >= MIN_FIXTURES,
        "found {} fixtures in {}; expected at least {MIN_FIXTURES}",
        fixtures.len(),
        dir.display()
    );

    let mut failures: Vec<String> = Vec::new();

    // An `.expected` file without its fixture is a leftover from a rename.
    for expected in files.iter().filter(|p| has_extension(p, "expected")) {
        if !expected.with_extension("yaml").is_file() {
            failures.push(format!(
                "{}: no fixture `{}` for this expected output",
                file_name(expected),
                file_name(&expected.with_extension("yaml"))
            ));
        }
    }

    let mut checked = 0;
    for fixture in fixtures {
        let name = file_name(fixture);
        if only.as_deref().is_some_and(|o| !name.contains(o)) {
            continue;
        }
        checked += 1;
        let relative = format!("{FIXTURES}/{name}");
        let text = fs::read_to_string(fixture)
            .unwrap_or_else(|e| panic!("cannot read fixture {relative}: {e}"));
        let actual = actual_lines(&relative, &text);
        let expected_path = fixture.with_extension("expected");

        // Problems with this fixture, reported together under its name.
        let mut problems: Vec<String> = Vec::new();
        if actual.is_empty() {
            problems.push(
                "the pipeline was accepted, but every fixture here must yield at least one diagnostic"
                    .to_owned(),
            );
        }

        if bless {
            let mut content = actual.join("\n");
            if !content.is_empty() {
                content.push('\n');
            }
            fs::write(&expected_path, content)
                .unwrap_or_else(|e| panic!("cannot write {}: {e}", expected_path.display()));
        } else {
            match fs::read_to_string(&expected_path) {
                Ok(expected_text) => {
                    let expected: Vec<String> =
                        expected_text.lines().map(str::to_owned).collect();
                    if expected != actual {
                        problems.push(format!(
                            "output differs from {} (- expected, + printed):\n{}",
                            file_name(&expected_path),
                            diff(&expected, &actual)
                        ));
                    }
                }
                Err(e) => problems.push(format!(
                    "cannot read {} ({e}); create it with GANTRY_BLESS=1 and check every line by hand",
                    file_name(&expected_path)
                )),
            }
        }
        if !problems.is_empty() {
            failures.push(format!("{name}: {}", problems.join("\n")));
        }
    }

    if only.is_some() {
        assert!(checked > 0, "GANTRY_FIXTURE matched no fixture");
    }
    assert!(
        failures.is_empty(),
        "{} failure(s) among {checked} invalid-pipeline fixtures:\n\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn diff_marks_missing_and_extra_lines() {
    let lines = |s: &[&str]| s.iter().map(|l| (*l).to_owned()).collect::<Vec<_>>();
    let d = diff(&lines(&["a", "b", "c"]), &lines(&["a", "x", "c", "d"]));
    assert_eq!(d, "    a\n  - b\n  + x\n    c\n  + d\n");
}
