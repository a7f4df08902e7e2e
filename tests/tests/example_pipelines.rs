//! The example pipelines in `pipelines/` are documentation users copy from: every one must
//! parse, validate and plan, and the plans must mean what the comments in them say.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use gantry::pipeline::{Plan, StageKind};

fn pipelines_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the gantry-tests package lives inside the workspace")
        .join("pipelines")
}

/// Every `.yaml` / `.yml` file in `pipelines/`, by file stem, sorted.
fn example_files() -> Vec<(String, PathBuf)> {
    let dir = pipelines_dir();
    let mut files: Vec<(String, PathBuf)> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|entry| entry.expect("readable directory entry").path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .map(|p| {
            let stem = p
                .file_stem()
                .expect("a pipeline file has a name")
                .to_string_lossy()
                .into_owned();
            (stem, p)
        })
        .collect();
    files.sort();
    files
}

fn load(stem: &str) -> Plan {
    let path = pipelines_dir().join(format!("{stem}.yaml"));
    let text =
        fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let file = format!("pipelines/{stem}.yaml");
    gantry::pipeline::load(&file, &text)
        .unwrap_or_else(|report| panic!("{file} should be valid, but:\n{report}"))
}

/// The plan keys of what the instance `key` needs, as a set.
fn needs_of(plan: &Plan, key: &str) -> BTreeSet<String> {
    let index = plan
        .find(key)
        .unwrap_or_else(|| panic!("the plan has no stage instance `{key}`"));
    plan.stages[index]
        .needs
        .iter()
        .map(|&n| plan.stages[n].key.clone())
        .collect()
}

fn set(keys: &[&str]) -> BTreeSet<String> {
    keys.iter().map(|k| (*k).to_owned()).collect()
}

#[test]
fn every_example_parses_and_plans() {
    let files = example_files();
    let stems: BTreeSet<&str> = files.iter().map(|(s, _)| s.as_str()).collect();
    for required in ["hello", "dag", "matrix", "s2i", "b2i", "deploy"] {
        assert!(
            stems.contains(required),
            "pipelines/{required}.yaml is missing (found: {stems:?})"
        );
    }
    for (_, path) in &files {
        let text = fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        let file = format!(
            "pipelines/{}",
            path.file_name()
                .expect("a pipeline file has a name")
                .to_string_lossy()
        );
        let plan = gantry::pipeline::load(&file, &text)
            .unwrap_or_else(|report| panic!("{file} should be valid, but:\n{report}"));
        assert!(!plan.stages.is_empty(), "{file}: the plan has no stages");
        let mut keys = BTreeSet::new();
        for (i, stage) in plan.stages.iter().enumerate() {
            assert!(
                keys.insert(stage.key.as_str()),
                "{file}: stage key `{}` appears twice in the plan",
                stage.key
            );
            assert!(
                stage.needs.iter().all(|&n| n < i),
                "{file}: `{}` comes before something it needs; the plan must be in dependency order",
                stage.key
            );
        }
    }
}

#[test]
fn dag_fans_out_and_in_with_a_finally_stage() {
    let plan = load("dag");
    assert_eq!(needs_of(&plan, "checkout"), set(&[]));
    assert_eq!(needs_of(&plan, "lint"), set(&["checkout"]));
    assert_eq!(needs_of(&plan, "unit"), set(&["checkout"]));
    assert_eq!(needs_of(&plan, "report"), set(&["lint", "unit"]));

    let cleanup = &plan.stages[plan
        .find("cleanup")
        .expect("dag.yaml has a `cleanup` stage")];
    assert!(cleanup.finally, "`cleanup` should be a finally stage");
    assert_eq!(plan.stage(cleanup).name.value, "cleanup");
    assert_eq!(
        needs_of(&plan, "cleanup"),
        set(&["checkout", "lint", "unit", "report"]),
        "a finally stage waits for every regular stage"
    );
    assert!(
        plan.stages
            .iter()
            .filter(|s| s.key != "cleanup")
            .all(|s| !s.finally),
        "only `cleanup` is a finally stage"
    );
    let unit = plan.stage(&plan.stages[plan.find("unit").expect("unit")]);
    assert_eq!(unit.retries, 1);
    assert_eq!(
        unit.timeout.as_ref().map(|t| t.value),
        Some(std::time::Duration::from_secs(300))
    );
}

#[test]
fn matrix_expands_minus_the_exclusion_and_summary_waits_for_all() {
    let plan = load("matrix");
    let tests: Vec<&str> = plan
        .stages
        .iter()
        .filter(|s| plan.stage(s).name.value == "test")
        .map(|s| s.key.as_str())
        .collect();
    assert_eq!(
        tests,
        [
            "test[os=debian,toolchain=1.80]",
            "test[os=debian,toolchain=1.95]",
            "test[os=alpine,toolchain=1.95]",
        ],
        "2 x 2 combinations minus the excluded alpine/1.80"
    );
    let excluded = plan.stages.iter().find(|s| {
        s.matrix.contains(&("os".to_owned(), "alpine".to_owned()))
            && s.matrix
                .contains(&("toolchain".to_owned(), "1.80".to_owned()))
    });
    assert!(excluded.is_none(), "alpine/1.80 is excluded");
    for key in &tests {
        assert!(needs_of(&plan, key).is_empty(), "`{key}` needs nothing");
    }
    assert_eq!(needs_of(&plan, "summary"), set(&tests));
    assert_eq!(plan.stages.len(), 4);
}

#[test]
fn deploy_rollout_is_approved_then_deployed() {
    let plan = load("deploy");
    let rollout =
        plan.stage(&plan.stages[plan.find("rollout").expect("deploy.yaml has `rollout`")]);
    let approval = rollout
        .approval
        .as_ref()
        .expect("`rollout` asks for an approval");
    assert_eq!(approval.approvers, ["role:maintainer"]);
    assert_eq!(
        approval.timeout.as_ref().map(|t| t.value),
        Some(std::time::Duration::from_secs(24 * 3600))
    );
    let StageKind::Deploy(deploy) = &rollout.kind else {
        panic!(
            "`rollout` should be a deploy stage, found {}",
            rollout.kind.label()
        );
    };
    assert_eq!(deploy.namespace, "demo");
    assert_eq!(deploy.deployment, "web");
    assert_eq!(deploy.container.as_deref(), Some("web"));
    assert!(deploy.rollback_on_failure);
    assert_eq!(deploy.image.raw.value, "${{ stages.package.image }}");
    assert!(rollout.when.is_some(), "`rollout` has a `when` condition");
    // `rollout` follows `package`, whose image it rolls out.
    assert_eq!(needs_of(&plan, "rollout"), set(&["package"]));
}
