//! Checks manifests against the official Kubernetes schemas in strict mode with PyPI's
//! `kubernetes-validate` (through `scripts/kubernetes-validate`, which installs it), so a
//! misspelled or misplaced field fails a test instead of a real cluster's admission.

use std::process::Command;

use serde_json::Value;

/// Validates every document; the error names each rejected one with the validator's words.
pub fn validate(docs: &[Value]) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut files = Vec::new();
    for (i, doc) in docs.iter().enumerate() {
        let path = dir.path().join(format!(
            "{i:03}-{}-{}.json",
            doc["kind"].as_str().unwrap_or("unknown"),
            doc["metadata"]["name"].as_str().unwrap_or("unnamed")
        ));
        std::fs::write(&path, serde_json::to_string_pretty(doc).unwrap_or_default())
            .map_err(|e| e.to_string())?;
        files.push(path);
    }
    validate_files(&files)
}

pub fn validate_files(files: &[std::path::PathBuf]) -> Result<(), String> {
    let script = crate::workspace().join("scripts/kubernetes-validate");
    let out = Command::new(script)
        .arg("--quiet")
        .args(files)
        .output()
        .map_err(|e| format!("running scripts/kubernetes-validate: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}
