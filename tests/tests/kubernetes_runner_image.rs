//! `gantry images build-runner`: the runner image Jobs copy gantry-runner from, built with
//! Gantry's B2I and pushed to a real registry, checked with skopeo and umoci.

use std::process::Command;

use gantry_tests::image_tools::{Buildah, Unpacked, mode_and_owner, skopeo_config};
use gantry_tests::registry::Registry;

fn build_runner(registry: &Registry) -> String {
    let out = Command::new(gantry_tests::gantry_bin())
        .args(["images", "build-runner"])
        .args(["--base", &registry.image("base/busybox:1")])
        .args(["--output", &registry.image("gantry/gantry-runner:dev")])
        .args(["--insecure-registry", &registry.host])
        .arg("--runner")
        .arg(gantry_tests::runner_bin())
        .output()
        .expect("run gantry images build-runner");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn build_runner_puts_the_runner_where_jobs_copy_it_from() {
    let registry = Registry::start().await;
    Buildah::new().push_busybox_base(&registry, "base/busybox:1");
    let pinned = build_runner(&registry);
    let prefix = format!("{}/gantry/gantry-runner@sha256:", registry.host);
    assert!(pinned.starts_with(&prefix), "{pinned}");

    let config = skopeo_config(&registry, &pinned);
    assert_eq!(
        config["config"]["Entrypoint"],
        serde_json::json!([gantry::executor::kubernetes::job::RUNNER_IN_IMAGE])
    );
    assert_eq!(
        config["config"]["Labels"]["org.opencontainers.image.title"],
        "gantry-runner"
    );
    let unpacked = Unpacked::fetch(&registry, &pinned);
    let copied = unpacked.rootfs().join("usr/local/bin/gantry-runner");
    assert_eq!(
        std::fs::read(&copied).expect("the runner is in the image"),
        std::fs::read(gantry_tests::runner_bin()).expect("the runner binary"),
        "the image holds exactly the runner binary"
    );
    let (mode, _, _) = mode_and_owner(&copied);
    assert_eq!(mode & 0o777, 0o755);
    // The same binary gives the same image.
    assert_eq!(build_runner(&registry), pinned);
}
