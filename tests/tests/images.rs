//! Image stages end to end: the example pipelines build and push to a real registry (Debian's
//! docker-registry) from base and builder images the test makes out of busybox-static, and
//! every result is checked with independent tools: skopeo (manifest, config, labels), umoci
//! (files, modes, owners, whiteouts), oci-image-tool (the spec) and buildah (the image runs).

use std::time::Duration;

use gantry::store::RunId;
use gantry_tests::image_tools::{
    Buildah, Unpacked, mode_and_owner, skopeo_config, skopeo_inspect, skopeo_manifest,
};
use gantry_tests::registry::Registry;
use gantry_tests::{StageStatus, TestEngine, assert_succeeded, stage_of, workspace};

const RUN_LIMIT: Duration = Duration::from_secs(180);

async fn engine_for(registry: &Registry) -> TestEngine {
    let host = registry.host.clone();
    TestEngine::start_with(move |c| c.insecure_registries = vec![host]).await
}

fn example(name: &str) -> String {
    let path = workspace().join("pipelines").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

async fn set_secret(engine: &TestEngine, name: &str, value: &str) {
    engine
        .client()
        .set_secret("test", name, value.to_owned())
        .await
        .unwrap_or_else(|e| panic!("storing secret {name}: {e}"));
}

/// Runs `pipeline` once with `params` and returns the run and the image stage's error.
async fn run_once(
    engine: &TestEngine,
    pipeline: &str,
    params: &[(&str, &str)],
) -> (RunId, Vec<gantry::store::stages::StageRunRow>) {
    let triggered = engine.trigger(pipeline, params).await;
    let (_, stages) = engine.wait_for_run(triggered.run_id, RUN_LIMIT).await;
    (triggered.run_id, stages)
}

#[tokio::test(flavor = "multi_thread")]
async fn b2i_example_pushes_an_image_that_runs_and_rebuilds_the_same_layer() {
    let registry = Registry::start().await;
    let buildah = Buildah::new();
    buildah.push_busybox_base(&registry, "base/busybox:1");
    let engine = engine_for(&registry).await;
    let name = engine.apply(&example("b2i.yaml")).await;

    let first = engine.trigger(&name, &[("registry", &registry.host)]).await;
    let (run, stages) = engine.wait_for_run(first.run_id, RUN_LIMIT).await;
    assert_succeeded(&run);
    let pinned = stage_of(&stages, "package")
        .image
        .clone()
        .expect("the b2i stage records its image");
    let prefix = format!("{}/demo/hello@sha256:", registry.host);
    assert!(pinned.starts_with(&prefix), "{pinned}");
    let smoke = engine.log_lines(first.run_id, "smoke").await;
    assert!(
        smoke
            .iter()
            .any(|l| l.ends_with(&format!("built {pinned}"))),
        "`${{{{ stages.package.image }}}}` reaches later stages: {smoke:?}"
    );

    let tag = registry.image(&format!("demo/hello:{}", first.number));
    let inspect = skopeo_inspect(&registry, &tag);
    assert_eq!(
        inspect["Digest"].as_str(),
        pinned.split_once('@').map(|(_, d)| d)
    );
    let base = skopeo_inspect(&registry, &registry.image("base/busybox:1"));
    let layers = inspect["Layers"].as_array().expect("layers");
    let base_layers = base["Layers"].as_array().expect("base layers");
    assert_eq!(layers.len(), base_layers.len() + 1, "one layer on top");
    assert_eq!(&layers[..base_layers.len()], &base_layers[..]);
    let labels = &inspect["Labels"];
    assert_eq!(labels["org.opencontainers.image.title"], "hello");
    assert_eq!(
        labels["org.opencontainers.image.created"],
        "1970-01-01T00:00:00Z"
    );
    assert!(
        labels.get("io.gantry.run").is_none(),
        "nothing of the run is in the image: {labels}"
    );

    let config = skopeo_config(&registry, &tag);
    assert_eq!(
        config["config"]["Entrypoint"],
        serde_json::json!(["/app/hello"])
    );
    assert!(
        config["config"].get("Cmd").is_none(),
        "the base's Cmd is dropped"
    );
    assert_eq!(config["config"]["WorkingDir"], "/app");
    assert_eq!(
        config["config"]["ExposedPorts"],
        serde_json::json!({"8080/tcp": {}})
    );
    assert_eq!(config["os"], "linux");
    let manifest = skopeo_manifest(&registry, &tag);
    assert_eq!(manifest["mediaType"], base_media_type(&registry));

    let unpacked = Unpacked::fetch(&registry, &tag);
    let hello = unpacked.rootfs().join("app/hello");
    assert_eq!(mode_and_owner(&hello), (0o755, 0, 0));
    assert_eq!(
        std::fs::read_to_string(&hello).expect("app/hello"),
        "#!/bin/sh\necho \"hello from b2i\"\n"
    );
    assert!(
        unpacked.rootfs().join("bin/busybox").is_file(),
        "the base is below"
    );
    assert_eq!(buildah.run_default(&registry, &tag), "hello from b2i");

    // The same artifact again: the same layer, byte for byte.
    let second = engine.trigger(&name, &[("registry", &registry.host)]).await;
    let (run, _) = engine.wait_for_run(second.run_id, RUN_LIMIT).await;
    assert_succeeded(&run);
    let again = skopeo_inspect(
        &registry,
        &registry.image(&format!("demo/hello:{}", second.number)),
    );
    assert_eq!(again["Layers"], inspect["Layers"]);
    assert_eq!(
        again["Digest"], inspect["Digest"],
        "another run of the same input pushes the same image"
    );
    engine.stop().await;
}

fn base_media_type(registry: &Registry) -> String {
    skopeo_manifest(registry, &registry.image("base/busybox:1"))["mediaType"]
        .as_str()
        .unwrap_or("application/vnd.oci.image.manifest.v1+json")
        .to_owned()
}

/// A b2i pipeline whose build stage keeps `out/` and writes `files` into it.
fn b2i_pipeline(name: &str, files: &str, base: &str, output: &str, secrets: &str) -> String {
    format!(
        r#"name: {name}
stages:
  - name: build
    steps:
      - run: mkdir -p out && {files}
    artifacts: [out/]
  - name: package
    {secrets}
    b2i:
      artifact: out/hello
      base: {base}
      output: {output}
"#
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn b2i_names_an_unknown_base_image() {
    let registry = Registry::start().await;
    let engine = engine_for(&registry).await;
    let base = registry.image("base/missing:1");
    let yaml = b2i_pipeline(
        "unknown-base",
        "printf x > out/hello",
        &base,
        &registry.image("demo/x:1"),
        "",
    );
    let name = engine.apply(&yaml).await;
    let (_, stages) = run_once(&engine, &name, &[]).await;
    let package = stage_of(&stages, "package");
    assert_eq!(package.status, StageStatus::Failed);
    let error = package.error.as_deref().unwrap_or_default();
    assert!(
        error.contains(&format!("base image `{base}` does not exist")),
        "{error}"
    );
    engine.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn b2i_names_a_missing_artifact() {
    let registry = Registry::start().await;
    let buildah = Buildah::new();
    buildah.push_busybox_base(&registry, "base/busybox:1");
    let engine = engine_for(&registry).await;
    let yaml = b2i_pipeline(
        "missing-artifact",
        "printf x > out/other",
        &registry.image("base/busybox:1"),
        &registry.image("demo/x:1"),
        "",
    );
    let name = engine.apply(&yaml).await;
    let (_, stages) = run_once(&engine, &name, &[]).await;
    let package = stage_of(&stages, "package");
    assert_eq!(package.status, StageStatus::Failed);
    let error = package.error.as_deref().unwrap_or_default();
    assert!(
        error.contains("the artifact `out/hello` is not in the workspace"),
        "{error}"
    );
    engine.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn b2i_reports_rejected_credentials_and_pushes_with_the_right_ones() {
    let registry = Registry::start_with_auth("ci", "right-password").await;
    let buildah = Buildah::new();
    buildah.push_busybox_base(&registry, "base/busybox:1");
    let engine = engine_for(&registry).await;
    let yaml = b2i_pipeline(
        "auth",
        "printf '#!/bin/sh\\necho authed\\n' > out/hello && chmod +x out/hello",
        &registry.image("base/busybox:1"),
        &registry.image("demo/authed:1"),
        "secrets: {REGISTRY_AUTH: registry-login}",
    );
    let name = engine.apply(&yaml).await;

    set_secret(
        &engine,
        "registry-login",
        &registry.docker_config(Some("wrong")),
    )
    .await;
    let (run_id, stages) = run_once(&engine, &name, &[]).await;
    let package = stage_of(&stages, "package");
    assert_eq!(package.status, StageStatus::Failed);
    let error = package.error.as_deref().unwrap_or_default();
    assert!(
        error.contains(&format!(
            "registry {} rejected the credentials of user `ci`",
            registry.host
        )),
        "{error}"
    );
    let log = engine.log_lines(run_id, "package").await.join("\n");
    assert!(!log.contains("wrong"), "the password is masked: {log}");

    set_secret(&engine, "registry-login", &registry.docker_config(None)).await;
    let (_, stages) = run_once(&engine, &name, &[]).await;
    let package = stage_of(&stages, "package");
    assert_eq!(
        package.status,
        StageStatus::Succeeded,
        "{:?}",
        package.error
    );
    assert_eq!(
        buildah.run_default(&registry, &registry.image("demo/authed:1")),
        "authed"
    );
    engine.stop().await;
}

const COMMIT: &str = "5e2f1c0ffee0123456789abcdef0123456789abc";

async fn engine_with_source(registry: &Registry, source: std::path::PathBuf) -> TestEngine {
    let host = registry.host.clone();
    TestEngine::start_with(move |c| {
        c.insecure_registries = vec![host];
        c.source_dir = Some(source);
    })
    .await
}

/// Starts a run as a push of [`COMMIT`] to `main` would.
async fn trigger_push(engine: &TestEngine, pipeline: &str, params: &[(&str, &str)]) -> RunId {
    let params = params
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    gantry::run::trigger(
        engine.engine(),
        "test",
        pipeline,
        "manual",
        gantry::run::TriggerRequest {
            params,
            context: Some(gantry::run::RunContext {
                event: "push".into(),
                branch: Some("main".into()),
                commit_sha: Some(COMMIT.into()),
                ..gantry::run::RunContext::default()
            }),
        },
    )
    .await
    .expect("run triggers")
    .run_id
}

#[tokio::test(flavor = "multi_thread")]
async fn s2i_example_assembles_the_source_into_an_image_that_runs() {
    let registry = Registry::start().await;
    let buildah = Buildah::new();
    buildah.push_s2i_builder(&registry, "builders/shell:1", true);
    let engine = engine_with_source(&registry, workspace().join("tests/fixtures/s2i-source")).await;
    let name = engine.apply(&example("s2i.yaml")).await;
    let run_id = trigger_push(&engine, &name, &[("registry", &registry.host)]).await;
    let (run, stages) = engine.wait_for_run(run_id, RUN_LIMIT).await;
    let log = engine.log_lines(run_id, "image").await;
    assert_succeeded(&run);
    assert!(
        log.iter()
            .any(|l| l
                .ends_with("assembled by 1001 with GREETING=hello from s2i APP_MODE=production")),
        "assemble ran as the assemble user with the build environment: {log:#?}"
    );
    let pinned = stage_of(&stages, "image")
        .image
        .clone()
        .expect("image recorded");
    assert!(
        pinned.starts_with(&format!("{}/demo/s2i-app@sha256:", registry.host)),
        "{pinned}"
    );
    let smoke = engine.log_lines(run_id, "smoke").await;
    assert!(
        smoke
            .iter()
            .any(|l| l.ends_with(&format!("built {pinned}"))),
        "{smoke:?}"
    );

    let tag = registry.image(&format!("demo/s2i-app:{}", &COMMIT[..7]));
    let builder = registry.image("builders/shell:1");
    let inspect = skopeo_inspect(&registry, &tag);
    let builder_layers = skopeo_inspect(&registry, &builder)["Layers"].clone();
    let layers = inspect["Layers"].as_array().expect("layers");
    let below = builder_layers.as_array().expect("builder layers");
    assert_eq!(layers.len(), below.len() + 1);
    assert_eq!(&layers[..below.len()], &below[..]);
    let labels = &inspect["Labels"];
    assert_eq!(labels["io.openshift.s2i.build.image"], builder);
    assert_eq!(labels["io.openshift.s2i.build.commit.id"], COMMIT);
    assert_eq!(labels["io.openshift.s2i.build.commit.ref"], "main");
    assert_eq!(labels["io.openshift.s2i.build.source-context-dir"], "app");
    assert_eq!(labels["org.opencontainers.image.revision"], COMMIT);
    assert_eq!(
        labels["io.openshift.s2i.scripts-url"],
        "image:///usr/libexec/s2i"
    );
    let config = skopeo_config(&registry, &tag);
    assert_eq!(
        config["config"]["Cmd"],
        serde_json::json!(["/usr/libexec/s2i/run"])
    );
    assert_eq!(config["config"]["User"], "1001");
    let env: Vec<&str> = config["config"]["Env"]
        .as_array()
        .expect("env")
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert!(env.contains(&"GREETING=hello from s2i"), "{env:?}");
    assert!(env.contains(&"APP_MODE=production"), "{env:?}");

    let unpacked = Unpacked::fetch(&registry, &tag);
    let rootfs = unpacked.rootfs();
    assert_eq!(
        mode_and_owner(&rootfs.join("opt/app/app.sh")),
        (0o755, 1001, 0)
    );
    assert_eq!(mode_and_owner(&rootfs.join("tmp/src/app.sh")).1, 1001);
    assert!(
        !rootfs.join("tmp/src/notes.tmp").exists() && !rootfs.join("opt/app/notes.tmp").exists(),
        ".s2iignore keeps notes.tmp out"
    );
    assert!(
        !rootfs.join("opt/app/placeholder").exists(),
        "assemble deleted it"
    );
    let entries = unpacked.last_layer_entries();
    assert!(
        entries
            .iter()
            .any(|e| e.ends_with("opt/app/.wh.placeholder")),
        "the deletion is a whiteout in the new layer: {entries:#?}"
    );
    assert!(
        !entries.iter().any(|e| e.contains("bin/busybox")),
        "unchanged builder files stay in the builder's layers: {entries:#?}"
    );
    assert_eq!(
        buildah.run_default(&registry, &tag),
        "hello from s2i (production)"
    );
    let first_log = log.join("\n");
    assert!(
        first_log.contains("incremental: no previous image"),
        "{first_log}"
    );
    assert_eq!(
        std::fs::read_to_string(rootfs.join("opt/app/builds")).expect("builds"),
        "1\n"
    );

    // The same commit again: `incremental: true` runs save-artifacts in the image just built
    // and assemble finds what it saved.
    let again = trigger_push(&engine, &name, &[("registry", &registry.host)]).await;
    let (run, _) = engine.wait_for_run(again, RUN_LIMIT).await;
    let log = engine.log_lines(again, "image").await.join("\n");
    assert_succeeded(&run);
    assert!(
        log.contains("restored 1 entries into /tmp/artifacts"),
        "{log}"
    );
    assert!(
        log.contains("restored the count of 1 earlier builds"),
        "{log}"
    );
    let rebuilt = Unpacked::fetch(&registry, &tag);
    assert_eq!(
        std::fs::read_to_string(rebuilt.rootfs().join("opt/app/builds")).expect("builds"),
        "2\n"
    );
    engine.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn s2i_with_a_builder_without_scripts_says_so() {
    let registry = Registry::start().await;
    let buildah = Buildah::new();
    buildah.push_s2i_builder(&registry, "builders/plain:1", false);
    let source = tempfile::tempdir().expect("source");
    std::fs::write(source.path().join("main.sh"), "echo hi\n").expect("source file");
    let engine = engine_with_source(&registry, source.path().to_owned()).await;
    let builder = registry.image("builders/plain:1");
    let yaml = format!(
        "name: no-scripts\nstages:\n  - name: image\n    s2i:\n      builder: {builder}\n      output: {}\n",
        registry.image("demo/none:1")
    );
    let name = engine.apply(&yaml).await;
    let (_, stages) = run_once(&engine, &name, &[]).await;
    let image = stage_of(&stages, "image");
    assert_eq!(image.status, StageStatus::Failed);
    let error = image.error.as_deref().unwrap_or_default();
    assert!(
        error.contains(&format!("builder `{builder}` has no S2I scripts"))
            && error.contains(".s2i/bin/assemble"),
        "{error}"
    );
    engine.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn b2i_follows_an_image_index_to_this_platform_or_says_what_it_offers() {
    let registry = Registry::start().await;
    let buildah = Buildah::new();
    buildah.push_busybox_index(&registry, "base/multi:1", true);
    buildah.push_busybox_index(&registry, "base/arm-only:1", false);
    let engine = engine_for(&registry).await;
    let yaml = b2i_pipeline(
        "index",
        "printf '#!/bin/sh\\necho from the index\\n' > out/hello && chmod +x out/hello",
        &registry.image("base/multi:1"),
        &registry.image("demo/indexed:1"),
        "",
    );
    let name = engine.apply(&yaml).await;
    let (run_id, stages) = run_once(&engine, &name, &[]).await;
    let package = stage_of(&stages, "package");
    assert_eq!(
        package.status,
        StageStatus::Succeeded,
        "{:?}",
        package.error
    );
    let log = engine.log_lines(run_id, "package").await.join("\n");
    assert!(
        log.contains("1 mounted from base/multi"),
        "base layers are mounted, not uploaded: {log}"
    );
    let output = registry.image("demo/indexed:1");
    assert_eq!(buildah.run_default(&registry, &output), "from the index");
    let unpacked = Unpacked::fetch(&registry, &output);
    assert!(
        !unpacked.rootfs().join("decoy").exists(),
        "the arm64 image was not used"
    );

    let yaml = b2i_pipeline(
        "arm-only",
        "printf x > out/hello",
        &registry.image("base/arm-only:1"),
        &registry.image("demo/never:1"),
        "",
    );
    let name = engine.apply(&yaml).await;
    let (_, stages) = run_once(&engine, &name, &[]).await;
    let package = stage_of(&stages, "package");
    assert_eq!(package.status, StageStatus::Failed);
    let error = package.error.as_deref().unwrap_or_default();
    assert!(
        error.contains(&format!(
            "base image `{}` exists, but not for linux/amd64 (the platform this runner builds \
             for): it is built for linux/arm64;",
            registry.image("base/arm-only:1")
        )),
        "{error}"
    );
    assert!(!error.contains("does not exist"), "{error}");
    engine.stop().await;
}

/// What the Kubernetes executor does (the runner inside the builder container, its filesystem
/// already there), shown on a builder filesystem unpacked by umoci: no layers are pulled,
/// `assemble` runs in it, and the snapshot diff of it becomes the image's new layer.
#[tokio::test(flavor = "multi_thread")]
async fn s2i_builds_in_a_builder_filesystem_that_is_already_there() {
    use gantry_runner::image::{RegistryAccess, S2iTask, s2i};
    let registry = Registry::start().await;
    let buildah = Buildah::new();
    let builder = registry.image("builders/shell:1");
    buildah.push_s2i_builder(&registry, "builders/shell:1", true);
    let unpacked = Unpacked::fetch(&registry, &builder);
    let scratch = tempfile::tempdir().expect("scratch");
    let output = registry.image("demo/in-place:1");
    let task = S2iTask {
        builder: builder.clone(),
        output: output.clone(),
        context_dir: Some("app".into()),
        env: vec![("GREETING".into(), "hello in place".into())],
        scripts_url: None,
        incremental: false,
        labels: vec![],
        created_epoch: 0,
        created_from_checkout: false,
        compression: Default::default(),
        registries: vec![RegistryAccess {
            host: registry.host.clone(),
            plain_http: true,
            ..RegistryAccess::default()
        }],
        rootfs: Some(unpacked.rootfs().display().to_string()),
        exclude: vec![],
    };
    let lines = std::sync::Mutex::new(Vec::new());
    let progress = |line: &str| lines.lock().expect("lines").push(line.to_owned());
    let workspace = workspace().join("tests/fixtures/s2i-source");
    let prepared = s2i::prepare(&task, &workspace, scratch.path(), &progress)
        .await
        .expect("prepare");
    let step = prepared.assemble_step();
    let assembled = std::process::Command::new("sh")
        .args(["-e", "-c", &step.run])
        .output()
        .expect("assemble runs");
    assert!(
        assembled.status.success(),
        "{}",
        String::from_utf8_lossy(&assembled.stderr)
    );
    let pushed = s2i::commit(prepared, &task, scratch.path(), &progress)
        .await
        .expect("commit");
    assert!(
        pushed
            .pinned
            .starts_with(&format!("{}/demo/in-place@sha256:", registry.host))
    );
    let log = lines.lock().expect("lines").join("\n");
    assert!(log.contains("using the builder's filesystem at"), "{log}");
    assert!(
        !log.contains("s2i: layer 1/"),
        "no builder layer was downloaded: {log}"
    );
    assert_eq!(
        buildah.run_default(&registry, &output),
        "hello in place (production)"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn b2i_says_when_the_registry_secret_is_not_a_docker_config() {
    let registry = Registry::start().await;
    let engine = engine_for(&registry).await;
    let yaml = b2i_pipeline(
        "bad-secret",
        "printf x > out/hello",
        &registry.image("base/busybox:1"),
        &registry.image("demo/x:1"),
        "secrets: {REGISTRY_AUTH: registry-login}",
    );
    let name = engine.apply(&yaml).await;
    set_secret(&engine, "registry-login", "user:password").await;
    let (_, stages) = run_once(&engine, &name, &[]).await;
    let package = stage_of(&stages, "package");
    assert_eq!(package.status, StageStatus::Failed);
    let error = package.error.as_deref().unwrap_or_default();
    assert!(
        error.contains("the REGISTRY_AUTH secret is not a usable docker config.json"),
        "{error}"
    );
    assert!(
        !error.contains("password"),
        "the secret's value is not repeated: {error}"
    );
    engine.stop().await;
}

/// Registers `clone_url` as repository `acme/NAME` of project `test`; returns its id.
async fn register_repository(engine: &TestEngine, name: &str, clone_url: &str) -> i64 {
    let full_name = format!("acme/{name}");
    let answer = engine
        .http()
        .post(format!(
            "{}/api/v1/projects/test/repositories",
            engine.url()
        ))
        .json(&serde_json::json!({
            "provider": "github", "full_name": full_name, "clone_url": clone_url,
            "webhook_secret": "not-used-here",
        }))
        .send()
        .await
        .expect("register the repository");
    let status = answer.status();
    assert!(
        status.is_success(),
        "registering: {status} {}",
        answer.text().await.unwrap_or_default()
    );
    sqlx::query_scalar("SELECT id FROM repositories WHERE full_name = $1")
        .bind(&full_name)
        .fetch_one(engine.pool())
        .await
        .expect("the repository's id")
}

/// Runs `pipeline` on `commit` of registered repository `repository` (checked out by every
/// stage, as a push would) and returns the image the `package` stage pushed.
async fn image_of_commit(
    engine: &TestEngine,
    pipeline: &str,
    repository: i64,
    commit: &str,
) -> String {
    let run_id = gantry::run::trigger(
        engine.engine(),
        "test",
        pipeline,
        "manual",
        gantry::run::TriggerRequest {
            params: Default::default(),
            context: Some(gantry::run::RunContext {
                event: "push".into(),
                branch: Some("main".into()),
                commit_sha: Some(commit.into()),
                git_ref: Some("refs/heads/main".into()),
                repository_id: Some(repository),
                repository: Some("acme/repro".into()),
                ..gantry::run::RunContext::default()
            }),
        },
    )
    .await
    .expect("run triggers")
    .run_id;
    let (run, stages) = engine.wait_for_run(run_id, RUN_LIMIT).await;
    assert_succeeded(&run);
    stage_of(&stages, "package")
        .image
        .clone()
        .expect("the b2i stage records its image")
}

/// `(mtime as YYYY-MM-DD HH:MM:SS UTC, path)` of every entry of a gzipped layer blob, by GNU
/// tar, which reads the headers independently of Gantry.
async fn layer_entry_times(registry: &Registry, repository: &str, digest: &str) -> Vec<String> {
    let bytes = reqwest::get(format!(
        "http://{}/v2/{repository}/blobs/{digest}",
        registry.host
    ))
    .await
    .expect("GET the layer")
    .bytes()
    .await
    .expect("the layer's bytes");
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("layer.tar.gz");
    std::fs::write(&file, &bytes).expect("write the layer");
    let out = std::process::Command::new("tar")
        .args(["--utc", "--full-time", "-tvzf"])
        .arg(&file)
        .output()
        .expect("tar");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            // `-rwxr-xr-x 0/0 26 2024-05-01 12:00:00 app/hello`
            let f: Vec<&str> = l.split_whitespace().collect();
            format!("{} {} {}", f[3], f[4], f[5])
        })
        .collect()
}

/// Digest-based promotion needs reproducible images: two runs of one commit push the same
/// digest (nothing of the run is in the image, and it is dated with the commit's time, not
/// the build's), and one changed byte of the input gives another.
#[tokio::test(flavor = "multi_thread")]
async fn b2i_of_the_same_commit_is_the_same_digest_and_one_changed_byte_is_another() {
    use gantry_tests::git::{BareRepo, GitDaemon, git};

    let registry = Registry::start().await;
    let buildah = Buildah::new();
    buildah.push_busybox_base(&registry, "base/busybox:1");
    let served = tempfile::tempdir().expect("served dir");
    let bare = BareRepo::create(served.path(), "repro");
    let daemon = GitDaemon::start(served.path());
    let work = bare.work_clone();
    work.write("hello.sh", "#!/bin/sh\necho reproducible\n", 0o755);
    let first = work.commit("first");
    work.push();
    let commit_time: i64 = git(work.path(), &["show", "-s", "--format=%ct", &first])
        .parse()
        .expect("commit time");

    let engine = engine_for(&registry).await;
    let repository = register_repository(&engine, "repro", &daemon.url("repro")).await;
    let yaml = format!(
        r#"name: repro
stages:
  - name: build
    steps:
      - run: mkdir -p out && cp hello.sh out/hello
    artifacts: [out/]
  - name: package
    b2i:
      artifact: out/hello
      base: {}
      output: {}
"#,
        registry.image("base/busybox:1"),
        registry.image("demo/repro:latest")
    );
    let name = engine.apply(&yaml).await;

    let one = image_of_commit(&engine, &name, repository, &first).await;
    let two = image_of_commit(&engine, &name, repository, &first).await;
    assert_eq!(one, two, "two runs of one commit, one image");

    // Dated with the commit: config, history, label and every entry of the new layer.
    let created = chrono::DateTime::from_timestamp(commit_time, 0).expect("a time");
    let rfc3339 = created.format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let config = skopeo_config(&registry, &one);
    assert_eq!(config["created"], rfc3339.as_str());
    let history = config["history"].as_array().expect("history");
    assert_eq!(
        history.last().map(|h| &h["created"]),
        Some(&serde_json::json!(rfc3339))
    );
    let labels = &config["config"]["Labels"];
    assert_eq!(labels["org.opencontainers.image.created"], rfc3339.as_str());
    assert_eq!(labels["org.opencontainers.image.revision"], first.as_str());
    assert!(labels.get("io.gantry.run").is_none(), "{labels}");
    let manifest = skopeo_manifest(&registry, &one);
    assert!(
        !manifest.to_string().contains("/runs/"),
        "nor in the manifest's annotations: {manifest}"
    );
    let layer = manifest["layers"]
        .as_array()
        .and_then(|l| l.last())
        .and_then(|l| l["digest"].as_str())
        .expect("the new layer")
        .to_owned();
    let entries = layer_entry_times(&registry, "demo/repro", &layer).await;
    let when = created.format("%Y-%m-%d %H:%M:%S").to_string();
    assert!(!entries.is_empty());
    assert!(
        entries.iter().all(|e| e.starts_with(&when)),
        "every entry dated {when}: {entries:?}"
    );
    assert!(
        entries.iter().any(|e| e.ends_with("app/hello")),
        "{entries:?}"
    );

    // One byte more in the artifact: another layer, another image.
    work.write("hello.sh", "#!/bin/sh\necho reproducible!\n", 0o755);
    let second = work.commit("one byte more");
    work.push();
    let three = image_of_commit(&engine, &name, repository, &second).await;
    assert_ne!(three, one, "a changed input, a new image");
    let changed = skopeo_manifest(&registry, &three);
    assert_ne!(
        changed["layers"]
            .as_array()
            .and_then(|l| l.last())
            .map(|l| &l["digest"]),
        Some(&serde_json::json!(layer)),
        "the artifact's layer changed"
    );
    drop(daemon);
    engine.stop().await;
}
