//! `gantry run FILE`, the real binary with its embedded PostgreSQL: every example pipeline that
//! needs no registry or cluster runs green, and a failing step makes it exit 1. Its output shows
//! stage headers and the steps' log lines.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use gantry::pipeline::StageKind;
use gantry_tests::proc::Reaper;
use gantry_tests::{gantry_bin, open_temp_dir, workspace};

/// Runs `gantry run FILE` in `cwd` with its data in `data_dir`.
async fn gantry_run(file: &Path, cwd: &Path, data_dir: &Path) -> Output {
    let child = tokio::process::Command::new(gantry_bin())
        .arg("run")
        .arg(file)
        .arg("--data-dir")
        .arg(data_dir)
        .env_remove("DATABASE_URL")
        .env_remove("GANTRY_LOG")
        .current_dir(cwd)
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(Duration::from_secs(180), child)
        .await
        .unwrap_or_else(|_| panic!("gantry run {} took over 3 minutes", file.display()))
        .expect("gantry run starts")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The examples whose stages are all plain `steps` (no image building, no cluster, no approval).
fn steps_only_examples() -> Vec<(String, PathBuf, Vec<String>)> {
    let dir = workspace().join("pipelines");
    let mut found = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("pipelines/") {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let yaml = std::fs::read_to_string(&path).expect("read");
        let plan = gantry::pipeline::load(&path.display().to_string(), &yaml)
            .unwrap_or_else(|r| panic!("{r}"));
        let steps_only = plan.stages.iter().all(|p| {
            let stage = plan.stage(p);
            matches!(stage.kind, StageKind::Steps(_)) && stage.approval.is_none()
        });
        if steps_only {
            let keys = plan.stages.iter().map(|p| p.key.clone()).collect();
            found.push((plan.pipeline.name.value.clone(), path, keys));
        }
    }
    found.sort();
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_steps_only_example_runs_green_with_gantry_run() {
    let examples = steps_only_examples();
    let names: Vec<&str> = examples.iter().map(|(n, _, _)| n.as_str()).collect();
    for required in ["dag", "hello", "matrix"] {
        assert!(
            names.contains(&required),
            "{required} missing from {names:?}"
        );
    }
    // One data directory for all: the embedded PostgreSQL is set up once and reused.
    let data = open_temp_dir();
    let _reaper = Reaper::new(data.path());
    let cwd = open_temp_dir();
    for (name, path, keys) in &examples {
        let out = gantry_run(path, cwd.path(), data.path()).await;
        let stdout = text(&out.stdout);
        assert!(
            out.status.success(),
            "gantry run {name} exited with {}:\n{stdout}\n{}",
            out.status,
            text(&out.stderr)
        );
        let lines: Vec<&str> = stdout.lines().collect();
        assert!(
            lines
                .first()
                .is_some_and(|l| l.starts_with(&format!("==> {name} run #"))),
            "{stdout}"
        );
        assert!(
            lines.last().is_some_and(|l| l.ends_with(" succeeded")),
            "{stdout}"
        );
        for key in keys {
            let header = format!("<-- {key} succeeded");
            assert!(
                lines.contains(&header.as_str()),
                "no `{header}` in:\n{stdout}"
            );
        }
        match name.as_str() {
            "hello" => assert!(
                lines
                    .iter()
                    .any(|l| l.starts_with("[greet] hello from hello on ")),
                "{stdout}"
            ),
            "dag" => {
                for line in [
                    "[lint] linting",
                    "[unit] testing",
                    "[report] both branches passed",
                ] {
                    assert!(lines.contains(&line), "no `{line}` in:\n{stdout}");
                }
            }
            "matrix" => {
                for line in [
                    "[test[os=debian,toolchain=1.80]] testing on debian with 1.80",
                    "[test[os=alpine,toolchain=1.95]] testing on alpine with 1.95",
                    "[summary] all combinations passed",
                ] {
                    assert!(lines.contains(&line), "no `{line}` in:\n{stdout}");
                }
            }
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gantry_run_exits_1_when_a_step_fails() {
    let data = open_temp_dir();
    let _reaper = Reaper::new(data.path());
    let cwd = open_temp_dir();
    let file = cwd.path().join("failing.yaml");
    std::fs::write(
        &file,
        "name: failing\nstages:\n  - name: broken\n    steps:\n      - echo about to fail; exit 7\n  - name: never\n    steps:\n      - echo never\n",
    )
    .expect("write the pipeline");
    let out = gantry_run(&file, cwd.path(), data.path()).await;
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{stdout}\n{}",
        text(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    for line in [
        "[broken] about to fail",
        "<-- broken failed: step \"echo about to fail; exit 7\" exited with 7",
        "<-- never skipped: needs `broken`, which failed",
        "==> run #1 failed (stage `broken` failed: step \"echo about to fail; exit 7\" exited with 7)",
    ] {
        assert!(lines.contains(&line), "no `{line}` in:\n{stdout}");
    }
    // `never` printed nothing: it never ran.
    assert!(!lines.iter().any(|l| l.contains("[never]")), "{stdout}");
}

/// With its data directory inside the directory it runs in (the embedded PostgreSQL's files,
/// earlier workspaces), `gantry run` gives each stage the project's files and never its own
/// data: every stage sees the same small tree, however many ran before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gantry_run_never_copies_its_own_data_directory_into_a_stage() {
    let cwd = open_temp_dir();
    let data = cwd.path().join(".gantry");
    let _reaper = Reaper::new(&data);
    std::fs::create_dir_all(cwd.path().join("src")).expect("src");
    std::fs::write(cwd.path().join("src/app.sh"), "echo app\n").expect("a source file");
    let file = cwd.path().join("count.yaml");
    let count = "find . -type f | sort | tr '\\n' ' '; echo";
    let mut yaml = "name: count\nstages:\n".to_owned();
    for stage in ["one", "two", "three"] {
        yaml.push_str(&format!(
            "  - name: {stage}\n    steps:\n      - {count:?}\n"
        ));
    }
    std::fs::write(&file, yaml).expect("write the pipeline");
    let out = gantry_run(&file, cwd.path(), &data).await;
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        text(&out.stderr)
    );
    for stage in ["one", "two", "three"] {
        let files = format!("[{stage}] ./count.yaml ./src/app.sh ");
        assert!(stdout.lines().any(|l| l == files), "{stage}: {stdout}");
    }
}

/// `gantry run` copies the source once per run and lays it under each stage as an overlay: a
/// stage may change, add and delete files, and neither a later stage nor the user's own
/// directory sees it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_stage_writes_to_its_own_layer_over_one_snapshot_of_the_source() {
    let cwd = open_temp_dir();
    let data = cwd.path().join(".gantry");
    let _reaper = Reaper::new(&data);
    std::fs::create_dir_all(cwd.path().join("src")).expect("src");
    std::fs::write(cwd.path().join("src/app.sh"), "echo app\n").expect("a source file");
    std::fs::write(cwd.path().join("notes.txt"), "original\n").expect("a text file");
    let file = cwd.path().join("layers.yaml");
    // The type of the file system mounted on the workspace, as the step sees it.
    let fs_type = r#"awk -v d="$PWD" '$5 == d { for (i = 7; i <= NF; i++) if ($i == "-") t = $(i + 1) } END { print "fs=" t }' /proc/self/mountinfo"#;
    let change = [
        fs_type,
        "echo appended >> notes.txt",
        "sed -i s/original/edited/ notes.txt",
        "rm src/app.sh",
        "echo new > made.txt",
        "printf 'changed: '; cat notes.txt | tr '\\n' ' '; echo",
    ];
    let after = [
        fs_type,
        "printf 'after: '; cat notes.txt src/app.sh | tr '\\n' ' '; ls made.txt 2>/dev/null || true; echo",
    ];
    let steps =
        |lines: &[&str]| -> String { lines.iter().map(|l| format!("      - {l:?}\n")).collect() };
    let yaml = format!(
        "name: layers\nstages:\n  - name: change\n    steps:\n{}  - name: after\n    needs: [change]\n    steps:\n{}",
        steps(&change),
        steps(&after)
    );
    std::fs::write(&file, yaml).expect("write the pipeline");
    let out = gantry_run(&file, cwd.path(), &data).await;
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        text(&out.stderr)
    );
    for stage in ["change", "after"] {
        let mounted = format!("[{stage}] fs=overlay");
        assert!(stdout.lines().any(|l| l == mounted), "{stage}: {stdout}");
    }
    assert!(
        stdout
            .lines()
            .any(|l| l == "[change] changed: edited appended "),
        "{stdout}"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l == "[after] after: original echo app "),
        "the later stage sees the source as it was: {stdout}"
    );
    // The user's directory is untouched.
    let read = |p: &str| std::fs::read_to_string(cwd.path().join(p)).expect(p);
    assert_eq!(read("notes.txt"), "original\n");
    assert_eq!(read("src/app.sh"), "echo app\n");
    assert!(!cwd.path().join("made.txt").exists());
}
