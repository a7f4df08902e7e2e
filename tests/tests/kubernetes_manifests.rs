//! Every manifest Gantry ships or generates passes the official Kubernetes schemas in strict
//! mode (PyPI kubernetes-validate): `deploy/` and the Job snapshot. The Jobs and Deployment
//! patches made at run time are validated by the tests that make them.

use gantry_tests::kube::validate::{validate, validate_files};
use gantry_tests::workspace;

#[test]
fn deploy_manifests_and_the_job_snapshot_pass_strict_validation() {
    let yaml_in = |dir: &str| -> Vec<std::path::PathBuf> {
        let mut files: Vec<_> = std::fs::read_dir(workspace().join(dir))
            .unwrap_or_else(|e| panic!("{dir}: {e}"))
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
            .collect();
        files.sort();
        files
    };
    let mut files = yaml_in("deploy");
    assert!(files.len() >= 5, "deploy/ holds the manifests: {files:?}");
    // The namespace-scoped RBAC alternative.
    let namespaced = yaml_in("deploy/namespaced");
    assert!(!namespaced.is_empty(), "deploy/namespaced/ holds its RBAC");
    files.extend(namespaced);
    files.push(workspace().join("tests/fixtures/kubernetes/job-full.json"));
    validate_files(&files).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn strict_validation_rejects_a_misspelled_field() {
    let job: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(workspace().join("tests/fixtures/kubernetes/job-full.json"))
            .expect("the Job snapshot"),
    )
    .expect("JSON");
    let mut typo = job.clone();
    typo["spec"]["backofLimit"] = typo["spec"]["backoffLimit"].take();
    let error = validate(&[typo]).expect_err("a misspelled field fails");
    assert!(error.contains("backofLimit"), "{error}");
    validate(&[job]).expect("the snapshot itself passes");
}
