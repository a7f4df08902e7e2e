//! `gantry validate` as users run it: the real binary, from the workspace root.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the engine package lives inside the workspace")
        .to_path_buf()
}

/// Runs `gantry validate ARGS...` in the workspace root.
fn validate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gantry"))
        .arg("validate")
        .args(args)
        .current_dir(workspace_root())
        .output()
        .expect("the gantry binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).expect("gantry prints UTF-8")
}

fn expected(fixture: &str) -> String {
    let path = workspace_root().join(format!("tests/fixtures/invalid/{fixture}.expected"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

#[test]
fn example_pipelines_are_valid_and_print_nothing() {
    let mut files: Vec<String> = std::fs::read_dir(workspace_root().join("pipelines"))
        .expect("pipelines/ can be listed")
        .map(|entry| entry.expect("readable directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .map(|p| {
            format!(
                "pipelines/{}",
                p.file_name().expect("a file name").to_string_lossy()
            )
        })
        .collect();
    files.sort();
    assert!(
        files.len() >= 6,
        "expected the example pipelines, found {files:?}"
    );
    let args: Vec<&str> = files.iter().map(String::as_str).collect();
    let out = validate(&args);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout:\n{}\nstderr:\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert_eq!(text(&out.stdout), "", "a valid file prints nothing");
    assert_eq!(text(&out.stderr), "");
}

#[test]
fn every_problem_of_every_file_is_printed() {
    let out = validate(&[
        "tests/fixtures/invalid/several-problems.yaml",
        "tests/fixtures/invalid/unknown-pull-request-type.yaml",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    let first = expected("several-problems");
    let second = expected("unknown-pull-request-type");
    // Both files, in the order given, each with all of its problems.
    assert!(
        first.lines().count() >= 5 && second.lines().count() >= 2,
        "the fixtures chosen here should have several problems each"
    );
    // Each FILE:LINE:COL line is followed by the source line and a caret (three lines).
    let problems: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("tests/fixtures/invalid/"))
        .collect();
    assert_eq!(
        problems.join("\n") + "\n",
        format!("{first}{second}"),
        "{stdout}"
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 4 * problems.len(), "{stdout}");
    for group in lines.chunks(4) {
        let number = group[0].split(':').nth(1).expect("FILE:LINE:COL");
        let gutter = " ".repeat(number.len());
        assert_eq!(group[1], format!("{gutter} |"), "{stdout}");
        assert!(group[2].starts_with(&format!("{number} | ")), "{stdout}");
        assert!(
            group[3].starts_with(&format!("{gutter} | ")) && group[3].ends_with('^'),
            "{stdout}"
        );
    }
}

/// Writes `text` to a temporary pipeline file and validates it.
fn validate_text(text: &str) -> (String, Output) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("p.yaml");
    std::fs::write(&path, text).expect("write the file");
    let file = path.display().to_string();
    let out = validate(&[&file]);
    (file, out)
}

#[test]
fn every_yaml_syntax_error_is_shown_with_its_line_and_a_caret() {
    // Two independent mistakes: a value holding `: ` unquoted, and a tab for indentation.
    let (file, out) = validate_text(
        "name: broken\ndescription: one: two\nstages:\n  - name: a\n    steps: [echo]\n  - name: b\n\tsteps: [x]\n",
    );
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    let problems: Vec<&str> = stdout.lines().filter(|l| l.starts_with(&file)).collect();
    assert_eq!(problems.len(), 2, "both syntax errors: {stdout}");
    assert!(
        problems[0].starts_with(&format!("{file}:2:"))
            && problems[0].contains("YAML syntax error")
            && problems[0].contains("must be quoted"),
        "{stdout}"
    );
    assert!(
        problems[1].starts_with(&format!("{file}:7:1:")) && problems[1].contains("tab"),
        "{stdout}"
    );
    assert!(
        stdout.contains("2 | description: one: two\n  |                 ^\n"),
        "{stdout}"
    );
    assert!(stdout.contains("7 | \tsteps: [x]\n  | ^\n"), "{stdout}");
}

#[test]
fn a_syntax_error_the_parser_cannot_get_past_says_so() {
    let (file, out) = validate_text("name: \"unclosed\nstages:\n  - name: a\n    steps: [echo]\n");
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    let problems: Vec<&str> = stdout.lines().filter(|l| l.starts_with(&file)).collect();
    assert_eq!(problems.len(), 1, "{stdout}");
    assert!(
        problems[0].contains("cannot continue past this error"),
        "{stdout}"
    );
}

#[test]
fn a_missing_file_is_an_error_that_names_it() {
    let missing = "pipelines/does-not-exist.yaml";
    let out = validate(&[missing]);
    assert_eq!(out.status.code(), Some(1));
    let printed = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(
        printed.contains(missing),
        "the message should name the file: {printed:?}"
    );

    // A missing file fails the run even when the other files are valid.
    let out = validate(&["pipelines/hello.yaml", missing]);
    assert_eq!(out.status.code(), Some(1));
    let printed = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert_eq!(
        printed.lines().count(),
        1,
        "only the missing file: {printed:?}"
    );
    assert!(printed.contains(missing));
}
