//! The JSON Schema kept in docs/ is what `gantry schema` prints, and it accepts every example
//! pipeline while rejecting misspelt keys, so editors flag what `gantry validate` would.

use std::path::{Path, PathBuf};

use gantry::pipeline::{schema::schema, yaml};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn as_json(text: &str) -> serde_json::Value {
    yaml::parse(text)
        .expect("YAML parses")
        .0
        .expect("a document")
        .to_json()
}

#[test]
fn docs_copy_of_the_schema_is_current() {
    let path = workspace().join("docs/pipeline.schema.json");
    let current = format!(
        "{}\n",
        serde_json::to_string_pretty(&schema()).expect("serialises")
    );
    if std::env::var_os("GANTRY_BLESS").is_some() {
        std::fs::write(&path, &current).expect("write schema");
    }
    let kept = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        kept == current,
        "docs/pipeline.schema.json is out of date: run `cargo run -p gantry -- schema > docs/pipeline.schema.json` \
         (or GANTRY_BLESS=1 cargo test -p gantry --test schema)"
    );
}

#[test]
fn schema_accepts_every_example_pipeline() {
    let validator = jsonschema::validator_for(&schema()).expect("schema compiles");
    let mut checked = 0;
    for entry in std::fs::read_dir(workspace().join("pipelines")).expect("pipelines/") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let doc = as_json(&std::fs::read_to_string(&path).expect("read"));
            let errors: Vec<String> = validator
                .iter_errors(&doc)
                .map(|e| format!("{} at {}", e, e.instance_path()))
                .collect();
            assert!(errors.is_empty(), "{}: {errors:#?}", path.display());
            checked += 1;
        }
    }
    assert!(checked >= 6, "only {checked} example pipelines found");
}

#[test]
fn schema_rejects_misspelt_keys_and_wrong_types() {
    let validator = jsonschema::validator_for(&schema()).expect("schema compiles");
    for (text, why) in [
        (
            "name: x\nstages:\n  - name: a\n    neds: [b]\n    steps: [echo]\n",
            "unknown stage key",
        ),
        (
            "name: x\nstages:\n  - name: a\n    retries: many\n    steps: [echo]\n",
            "retries type",
        ),
        (
            "name: x\nstages:\n  - name: a\n    timeout: 10\n    steps: [echo]\n",
            "duration without unit",
        ),
        (
            "name: x\non:\n  push:\n    branchs: [main]\nstages:\n  - name: a\n    steps: [echo]\n",
            "unknown push key",
        ),
        (
            "name: x\nenv:\n  GANTRY_BRANCH: x\nstages:\n  - name: a\n    steps: [echo]\n",
            "reserved env name",
        ),
        ("stages:\n  - name: a\n    steps: [echo]\n", "missing name"),
    ] {
        assert!(
            !validator.is_valid(&as_json(text)),
            "schema accepted: {why}"
        );
    }
}
