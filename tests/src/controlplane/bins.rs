//! Where the control plane's binaries are: `GANTRY_CONTROLPLANE_BIN` (which `scripts/test`
//! exports), else whatever `scripts/controlplane` builds (idempotent: a fraction of a second
//! when they are built already; a cold build takes minutes and its progress goes to stderr).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The binaries a control plane needs, all in one directory.
pub const COMPONENTS: [&str; 5] = [
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubectl",
];

/// The directory holding [`COMPONENTS`], found once per test process.
pub fn dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(find)
}

fn find() -> PathBuf {
    let dir = match std::env::var_os("GANTRY_CONTROLPLANE_BIN") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => build(),
    };
    for component in COMPONENTS {
        let path = dir.join(component);
        assert!(
            path.is_file(),
            "{} is missing: run scripts/controlplane (or unset GANTRY_CONTROLPLANE_BIN)",
            path.display()
        );
    }
    dir
}

/// Runs `scripts/controlplane` and reads `GANTRY_CONTROLPLANE_BIN=<dir>` off its last line.
fn build() -> PathBuf {
    let script = crate::workspace().join("scripts/controlplane");
    let out = std::process::Command::new(&script)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{} failed ({}): {stdout}",
        script.display(),
        out.status
    );
    stdout
        .lines()
        .last()
        .and_then(|line| line.strip_prefix("GANTRY_CONTROLPLANE_BIN="))
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            panic!(
                "{} did not end with GANTRY_CONTROLPLANE_BIN=<dir>: {stdout}",
                script.display()
            )
        })
}
