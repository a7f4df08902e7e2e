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
    assert_eq!(stdout, format!("{first}{second}"));
    for line in stdout.lines() {
        assert!(
            line.starts_with("tests/fixtures/invalid/several-problems.yaml:")
                || line.starts_with("tests/fixtures/invalid/unknown-pull-request-type.yaml:"),
            "not a FILE:LINE:COL line: {line}"
        );
    }
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
