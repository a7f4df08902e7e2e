//! Binary to image: one deterministic layer holding the artifact, appended onto a base image
//! by editing the base's manifest and config. The base's layers are never downloaded when the
//! output is on the same registry: they are already there or mounted across repositories.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::layer::{ChunkSender, Layer, LayerWriter, Owner, parents};
use super::oci::{self, ConfigEdit, Descriptor, Family, Manifest};
use super::reference::Reference;
use super::registry::{Ensured, Registry, Resolved, scope, sha256_digest};
use super::task::{B2iTask, Preset, RegistryAccess};
use super::{ImageError, Progress, Pushed, host_architecture, source_date};

const DEFAULT_APP_DIR: &str = "/app";
const DEFAULT_WEBAPPS_DIR: &str = "/usr/local/tomcat/webapps";

/// Builds the image `task` describes from the artifact in `workspace` and pushes it. Temporary
/// files (the layer) go in `scratch`, which must exist.
pub async fn build(
    task: &B2iTask,
    workspace: &Path,
    scratch: &Path,
    progress: &dyn Progress,
) -> Result<Pushed, ImageError> {
    let base = parse("base image", &task.base)?;
    let output = parse("output image", &task.output)?;
    let artifact = workspace.join(&task.artifact);
    check_artifact(&task.artifact, &artifact)?;
    let epoch = source_date::effective(task.created_epoch, task.created_from_checkout, workspace);

    progress.say(&format!("b2i: resolving base image {base}"));
    let same_registry = base.registry == output.registry;
    let base_scopes = if same_registry {
        vec![
            scope(&base.repository, "pull"),
            scope(&output.repository, "pull,push"),
        ]
    } else {
        vec![scope(&base.repository, "pull")]
    };
    let base_registry = Registry::connect(&access(&task.registries, &base.registry), &base_scopes)
        .await
        .map_err(ImageError::registry("base image", &task.base))?;
    let resolved = base_registry
        .resolve(
            &base.repository,
            base.manifest_reference(),
            "linux",
            host_architecture(),
        )
        .await
        .map_err(ImageError::registry("base image", &task.base))?;
    let config_bytes = base_registry
        .blob_bytes(&base.repository, &resolved.manifest.config.digest)
        .await
        .map_err(ImageError::registry("base image", &task.base))?;
    let mut config: Value = serde_json::from_slice(&config_bytes)
        .map_err(|e| ImageError::BadDocument(format!("the base image's config: {e}")))?;

    let output_registry;
    let target = if same_registry {
        &base_registry
    } else {
        output_registry = Registry::connect(
            &access(&task.registries, &output.registry),
            &[scope(&output.repository, "pull,push")],
        )
        .await
        .map_err(ImageError::registry("output image", &task.output))?;
        &output_registry
    };

    // The layer is uploaded while it is written: compression and the upload overlap, and it
    // is never whole in memory nor on disk.
    let placed = placement(task);
    progress.say(&format!(
        "b2i: writing and uploading the layer ({} preset: {} -> {}, dated {}, compression {})",
        preset_name(task.preset),
        task.artifact,
        placed.destination,
        oci::rfc3339(epoch),
        task.compression.name()
    ));
    let location = target
        .begin_stream(&output.repository)
        .await
        .map_err(ImageError::registry("output image", &task.output))?;
    let (sink, chunks) = ChunkSender::channel();
    let writing = {
        let (artifact, scratch, placed) = (artifact.clone(), scratch.to_owned(), placed.clone());
        let (preset, mtime) = (task.preset, u64::try_from(epoch).unwrap_or(0));
        let compression = task.compression;
        tokio::task::spawn_blocking(move || {
            write_layer(
                LayerWriter::streaming_with(sink, mtime, compression),
                preset,
                &artifact,
                &placed,
                &scratch,
            )
        })
    };
    let sending = target.send_stream(&location, reqwest::Body::wrap_stream(chunks));
    let (written, sent) = tokio::join!(writing, sending);
    // A refused upload stops the writer too (its channel closes): report the registry's reason.
    let location = sent.map_err(ImageError::registry("output image", &task.output))?;
    let layer = written.map_err(|e| ImageError::Worker(e.to_string()))??;
    target
        .end_stream(&location, &layer.digest)
        .await
        .map_err(ImageError::registry("output image", &task.output))?;
    progress.say(&format!(
        "b2i: layer {} ({} bytes, {} entries) uploaded",
        layer.digest, layer.size, layer.entries
    ));

    let edit = config_edit(task, &placed, &layer, epoch);
    oci::apply(&mut config, &edit).map_err(ImageError::BadDocument)?;
    let new_config =
        serde_json::to_vec(&config).map_err(|e| ImageError::BadDocument(e.to_string()))?;
    let appended = Appended {
        base: &base,
        base_registry: &base_registry,
        resolved: &resolved,
        layer: &layer,
        layer_uploaded: true,
        config: new_config,
    };
    push(appended, &output, target, scratch, progress)
        .await
        .map_err(ImageError::registry("output image", &task.output))
}

/// An image made of a base image and one new layer, ready to push.
pub struct Appended<'a> {
    pub base: &'a Reference,
    pub base_registry: &'a Registry,
    pub resolved: &'a Resolved,
    pub layer: &'a Layer,
    /// Already uploaded while it was written (else it is uploaded from its file).
    pub layer_uploaded: bool,
    pub config: Vec<u8>,
}

/// Pushes the base's layers (skipped, mounted or copied), the new layer, the config and the
/// manifest to `output` on `target`.
pub async fn push(
    image: Appended<'_>,
    output: &Reference,
    target: &Registry,
    scratch: &Path,
    progress: &dyn Progress,
) -> Result<Pushed, super::registry::RegistryError> {
    let family = Family::of(&image.resolved.media_type);
    let mut uploaded = 0;
    let (mut present, mut mounted, mut copied) = (0, 0, 0);
    for blob in &image.resolved.manifest.layers {
        match target
            .ensure_blob(
                &output.repository,
                blob,
                image.base_registry,
                &image.base.repository,
                scratch,
            )
            .await?
        {
            Ensured::Present => present += 1,
            Ensured::Mounted => mounted += 1,
            Ensured::Copied(bytes) => {
                copied += 1;
                uploaded += bytes;
            }
        }
    }
    progress.say(&format!(
        "base layers in {}: {present} already there, {mounted} mounted from {}, {copied} copied",
        output.repository, image.base.repository
    ));
    let layer = image.layer;
    if image.layer_uploaded {
        uploaded += layer.size;
    } else if !target.has_blob(&output.repository, &layer.digest).await? {
        let path =
            layer
                .path
                .as_deref()
                .ok_or_else(|| super::registry::RegistryError::Protocol {
                    host: target.host().to_owned(),
                    why: "the layer was neither uploaded nor written to a file".into(),
                })?;
        progress.say(&format!("uploading layer {}", layer.digest));
        target
            .upload_file(&output.repository, &layer.digest, path, layer.size)
            .await?;
        uploaded += layer.size;
    }
    let config_digest = sha256_digest(&image.config);
    let config_size = image.config.len() as u64;
    if !target.has_blob(&output.repository, &config_digest).await? {
        uploaded += config_size;
        target
            .upload_bytes(&output.repository, &config_digest, image.config)
            .await?;
    }
    let mut layers = image.resolved.manifest.layers.clone();
    layers.push(Descriptor {
        media_type: family.layer.to_owned(),
        digest: layer.digest.clone(),
        size: layer.size,
        platform: None,
        annotations: None,
    });
    let annotations = (family.manifest == oci::OCI_MANIFEST).then(|| {
        let mut a = serde_json::Map::new();
        a.insert(
            "org.opencontainers.image.base.name".into(),
            Value::String(image.base.to_string()),
        );
        a.insert(
            "org.opencontainers.image.base.digest".into(),
            Value::String(image.resolved.digest.clone()),
        );
        a
    });
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(family.manifest.to_owned()),
        config: Descriptor {
            media_type: family.config.to_owned(),
            digest: config_digest,
            size: config_size,
            platform: None,
            annotations: None,
        },
        layers,
        annotations,
    };
    let bytes =
        serde_json::to_vec(&manifest).map_err(|e| super::registry::RegistryError::Protocol {
            host: target.host().to_owned(),
            why: format!("cannot write the manifest: {e}"),
        })?;
    let digest = target
        .put_manifest(
            &output.repository,
            output.push_tag(),
            family.manifest,
            bytes,
        )
        .await?;
    let pinned = output.pinned(&digest);
    progress.say(&format!("pushed {output} as {pinned}"));
    Ok(Pushed {
        pinned,
        digest,
        layer_digest: layer.digest.clone(),
        uploaded_bytes: uploaded,
    })
}

pub fn parse(what: &'static str, name: &str) -> Result<Reference, ImageError> {
    Reference::parse(name).map_err(|source| ImageError::BadReference {
        what,
        name: name.to_owned(),
        source,
    })
}

/// How `host` is reached: its entry in `registries`, else anonymous HTTPS.
pub fn access(registries: &[RegistryAccess], host: &str) -> RegistryAccess {
    registries
        .iter()
        .find(|r| r.host == host)
        .cloned()
        .unwrap_or_else(|| RegistryAccess {
            host: host.to_owned(),
            ..RegistryAccess::default()
        })
}

fn check_artifact(name: &str, path: &Path) -> Result<(), ImageError> {
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_file() => Ok(()),
        Ok(_) => Err(ImageError::MissingArtifact {
            path: name.to_owned(),
            why: "it is a directory; b2i takes one file (a tarball preset for many)".into(),
        }),
        Err(e) => Err(ImageError::MissingArtifact {
            path: name.to_owned(),
            why: format!(
                "{e}; the stage that builds it must keep it under `artifacts` and succeed"
            ),
        }),
    }
}

fn preset_name(preset: Preset) -> &'static str {
    match preset {
        Preset::Binary => "binary",
        Preset::Jar => "jar",
        Preset::War => "war",
        Preset::Tarball => "tarball",
    }
}

/// Where the artifact lands in the image.
#[derive(Clone, Debug)]
struct Placement {
    /// The directory it goes into, absolute.
    dir: String,
    /// The file's absolute path (for `tarball`: the directory the archive unpacks into).
    destination: String,
}

fn placement(task: &B2iTask) -> Placement {
    let file_name = Path::new(&task.artifact)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "artifact".into());
    let dir = match task.preset {
        Preset::War => task.webapps_dir.as_deref().unwrap_or(DEFAULT_WEBAPPS_DIR),
        _ => task.workdir.as_deref().unwrap_or(DEFAULT_APP_DIR),
    };
    let dir = format!("/{}", dir.trim_matches('/'));
    let destination = match task.preset {
        Preset::Tarball => dir.clone(),
        _ if dir == "/" => format!("/{file_name}"),
        _ => format!("{dir}/{file_name}"),
    };
    Placement { dir, destination }
}

/// The config changes of a B2I build dated `epoch`. The command follows a Dockerfile's rules:
/// the preset's entrypoint (when it has one) is an `ENTRYPOINT` written before the stage's
/// own `entrypoint`/`cmd`, so
///
/// - `cmd` alone keeps the entrypoint (the preset's, else the base's) and gives it arguments;
/// - `entrypoint` alone replaces it and drops the base's `Cmd`;
/// - both set both.
fn config_edit(task: &B2iTask, placed: &Placement, layer: &Layer, epoch: i64) -> ConfigEdit {
    let default_entrypoint = match task.preset {
        Preset::Binary => Some(vec![placed.destination.clone()]),
        Preset::Jar => Some(vec![
            "java".to_owned(),
            "-jar".to_owned(),
            placed.destination.clone(),
        ]),
        Preset::War | Preset::Tarball => None,
    };
    // An entrypoint of the stage wins; else the preset's (None: the base's stays).
    let entrypoint = task.entrypoint.clone().or(default_entrypoint);
    let created = oci::rfc3339(epoch);
    ConfigEdit {
        created_by: task.created_by.clone().unwrap_or_else(|| {
            format!(
                "gantry b2i ({}): {} -> {}",
                preset_name(task.preset),
                task.artifact,
                placed.destination
            )
        }),
        created,
        diff_id: layer.diff_id.clone(),
        entrypoint,
        cmd: task.cmd.clone(),
        env: task.env.clone(),
        workdir: task.workdir.clone(),
        user: task.user.clone(),
        ports: task.ports.clone(),
        labels: source_date::with_created_label(&task.labels, epoch),
    }
}

fn write_layer<W: std::io::Write>(
    mut layer: LayerWriter<W>,
    preset: Preset,
    artifact: &Path,
    placed: &Placement,
    scratch: &Path,
) -> Result<Layer, ImageError> {
    let failed = |what: &str| ImageError::io(format!("writing the layer ({what})"));
    let root = Owner::default();
    let dir = placed.dir.trim_start_matches('/');
    if !dir.is_empty() {
        for parent in parents(dir).into_iter().chain([dir.to_owned()]) {
            layer.dir(&parent, 0o755, root).map_err(failed(&parent))?;
        }
    }
    match preset {
        Preset::Tarball => {
            let tree = scratch.join("b2i-tarball");
            unpack_tarball(artifact, &tree)?;
            add_tree(&mut layer, &tree, dir)?;
        }
        _ => {
            let mode = std::fs::metadata(artifact)
                .map_err(ImageError::io(artifact.display().to_string()))?
                .permissions()
                .mode();
            let destination = placed.destination.trim_start_matches('/');
            layer
                .file_from(destination, artifact, mode, root)
                .map_err(failed(destination))?;
        }
    }
    layer.finish().map_err(failed("finish"))
}

/// Unpacks a `.tar` or `.tar.gz` into `tree` (ownership and times are not kept: the layer
/// sets its own).
fn unpack_tarball(artifact: &Path, tree: &Path) -> Result<(), ImageError> {
    use std::io::Read;
    let what = format!("unpacking the tarball {}", artifact.display());
    let mut file = std::fs::File::open(artifact).map_err(ImageError::io(&what))?;
    let mut magic = [0u8; 2];
    let gzipped = file.read_exact(&mut magic).is_ok() && magic == [0x1f, 0x8b];
    let file = std::fs::File::open(artifact).map_err(ImageError::io(&what))?;
    std::fs::create_dir_all(tree).map_err(ImageError::io(&what))?;
    let reader: Box<dyn Read> = if gzipped {
        Box::new(flate2::read::GzDecoder::new(file))
    } else {
        Box::new(file)
    };
    let mut archive = tar::Archive::new(reader);
    archive.set_preserve_permissions(true);
    archive.unpack(tree).map_err(ImageError::io(&what))
}

/// Adds everything under `tree` below `prefix`, sorted, directories before their contents.
fn add_tree<W: std::io::Write>(
    layer: &mut LayerWriter<W>,
    tree: &Path,
    prefix: &str,
) -> Result<(), ImageError> {
    let mut entries = Vec::new();
    collect(tree, PathBuf::new(), &mut entries)?;
    entries.sort();
    let root = Owner::default();
    for relative in entries {
        let source = tree.join(&relative);
        let name = if prefix.is_empty() {
            relative.to_string_lossy().into_owned()
        } else {
            format!("{prefix}/{}", relative.to_string_lossy())
        };
        let failed = ImageError::io(format!("adding {name} to the layer"));
        let meta = std::fs::symlink_metadata(&source).map_err(ImageError::io(name.clone()))?;
        let mode = meta.permissions().mode();
        let added = if meta.file_type().is_symlink() {
            std::fs::read_link(&source).and_then(|target| layer.symlink(&name, &target, root))
        } else if meta.is_dir() {
            layer.dir(&name, mode, root)
        } else if meta.is_file() {
            layer.file_from(&name, &source, mode, root)
        } else {
            Ok(())
        };
        added.map_err(failed)?;
    }
    Ok(())
}

fn collect(tree: &Path, relative: PathBuf, out: &mut Vec<PathBuf>) -> Result<(), ImageError> {
    let dir = tree.join(&relative);
    let listing = std::fs::read_dir(&dir).map_err(ImageError::io(dir.display().to_string()))?;
    for entry in listing {
        let entry = entry.map_err(ImageError::io(dir.display().to_string()))?;
        let path = relative.join(entry.file_name());
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        out.push(path.clone());
        if is_dir {
            collect(tree, path, out)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(preset: Preset, artifact: &str) -> B2iTask {
        B2iTask {
            artifact: artifact.into(),
            preset,
            base: "r.io/base:1".into(),
            output: "r.io/out:1".into(),
            entrypoint: None,
            cmd: None,
            workdir: None,
            webapps_dir: None,
            user: None,
            ports: vec![],
            env: vec![],
            labels: vec![],
            created_epoch: 0,
            created_from_checkout: false,
            compression: Default::default(),
            created_by: None,
            registries: vec![],
        }
    }

    #[test]
    fn presets_place_the_artifact_and_choose_the_command() {
        let binary = task(Preset::Binary, "out/hello");
        let placed = placement(&binary);
        assert_eq!(placed.destination, "/app/hello");
        let layer = Layer {
            path: None,
            diff_id: "sha256:d".into(),
            digest: "sha256:g".into(),
            size: 1,
            entries: 1,
        };
        assert_eq!(
            config_edit(&binary, &placed, &layer, 0).entrypoint,
            Some(vec!["/app/hello".to_owned()])
        );
        let jar = task(Preset::Jar, "target/app.jar");
        assert_eq!(
            config_edit(&jar, &placement(&jar), &layer, 0).entrypoint,
            Some(vec!["java".into(), "-jar".into(), "/app/app.jar".into()])
        );
        let mut war = task(Preset::War, "target/shop.war");
        assert_eq!(
            placement(&war).destination,
            "/usr/local/tomcat/webapps/shop.war"
        );
        war.webapps_dir = Some("/opt/jetty/webapps/".into());
        assert_eq!(placement(&war).destination, "/opt/jetty/webapps/shop.war");
        assert_eq!(
            config_edit(&war, &placement(&war), &layer, 0).entrypoint,
            None
        );
    }

    /// The config a build gives on top of a base with `ENTRYPOINT ["/base-entry"]` and
    /// `CMD ["base-arg"]`: (Entrypoint, Cmd).
    fn command_of(task: &B2iTask) -> (Value, Value) {
        let layer = Layer {
            path: None,
            diff_id: "sha256:d".into(),
            digest: "sha256:g".into(),
            size: 1,
            entries: 1,
        };
        let mut config = serde_json::json!({"config": {
            "Entrypoint": ["/base-entry"], "Cmd": ["base-arg"]}});
        oci::apply(&mut config, &config_edit(task, &placement(task), &layer, 0)).expect("apply");
        let run = &config["config"];
        (
            run.get("Entrypoint").cloned().unwrap_or(Value::Null),
            run.get("Cmd").cloned().unwrap_or(Value::Null),
        )
    }

    #[test]
    fn cmd_and_entrypoint_follow_dockerfile_rules() {
        use serde_json::json;
        let args = Some(vec!["--serve".to_owned()]);
        let entry = Some(vec!["/app/hello".to_owned(), "-v".to_owned()]);

        // `cmd` alone: arguments to the preset's entrypoint (the binary), not a program.
        let mut binary = task(Preset::Binary, "out/hello");
        binary.cmd = args.clone();
        assert_eq!(
            command_of(&binary),
            (json!(["/app/hello"]), json!(["--serve"]))
        );
        let mut jar = task(Preset::Jar, "target/app.jar");
        jar.cmd = args.clone();
        assert_eq!(
            command_of(&jar),
            (json!(["java", "-jar", "/app/app.jar"]), json!(["--serve"]))
        );
        // A preset without an entrypoint: `cmd` alone keeps the base's, as `CMD` does.
        let mut war = task(Preset::War, "target/shop.war");
        war.cmd = args.clone();
        assert_eq!(
            command_of(&war),
            (json!(["/base-entry"]), json!(["--serve"]))
        );
        // Nothing given: the preset's entrypoint resets the base's Cmd; a war keeps the base's
        // command whole.
        assert_eq!(
            command_of(&task(Preset::Binary, "out/hello")),
            (json!(["/app/hello"]), Value::Null)
        );
        assert_eq!(
            command_of(&task(Preset::War, "target/shop.war")),
            (json!(["/base-entry"]), json!(["base-arg"]))
        );
        // `entrypoint` alone: replaces it and drops the base's Cmd; both: both.
        let mut own = task(Preset::Tarball, "site.tar");
        own.entrypoint = entry.clone();
        assert_eq!(command_of(&own), (json!(["/app/hello", "-v"]), Value::Null));
        own.cmd = args;
        assert_eq!(
            command_of(&own),
            (json!(["/app/hello", "-v"]), json!(["--serve"]))
        );
    }

    #[test]
    fn the_image_is_dated_with_the_commit_time_unless_the_stage_says_otherwise() {
        let layer = Layer {
            path: None,
            diff_id: "sha256:d".into(),
            digest: "sha256:g".into(),
            size: 1,
            entries: 1,
        };
        let t = task(Preset::Binary, "out/hello");
        let edit = config_edit(&t, &placement(&t), &layer, 1_714_564_800);
        assert_eq!(edit.created, "2024-05-01T12:00:00Z");
        assert_eq!(
            edit.labels,
            [(
                source_date::CREATED_LABEL.to_owned(),
                "2024-05-01T12:00:00Z".to_owned()
            )]
        );
    }

    #[test]
    fn a_missing_artifact_is_named() {
        let dir = tempfile::tempdir().expect("temp dir");
        let err = check_artifact("out/hello", &dir.path().join("out/hello")).expect_err("missing");
        assert!(
            err.to_string()
                .contains("`out/hello` is not in the workspace"),
            "{err}"
        );
        let err = check_artifact("out", dir.path()).expect_err("a directory");
        assert!(err.to_string().contains("directory"), "{err}");
    }

    #[test]
    fn tarballs_are_relaid_sorted_with_root_owners() {
        let dir = tempfile::tempdir().expect("temp dir");
        let src = dir.path().join("src");
        std::fs::create_dir_all(src.join("b/c")).expect("dirs");
        std::fs::write(src.join("b/c/z.txt"), "z").expect("file");
        std::fs::write(src.join("a.txt"), "a").expect("file");
        let tarball = dir.path().join("site.tar");
        let mut builder = tar::Builder::new(std::fs::File::create(&tarball).expect("tar"));
        builder.append_dir_all(".", &src).expect("pack");
        builder.finish().expect("finish");
        drop(builder);
        let scratch = dir.path().join("scratch");
        std::fs::create_dir_all(&scratch).expect("scratch");
        let mut t = task(Preset::Tarball, "site.tar");
        t.workdir = Some("/srv/site".into());
        let placed = placement(&t);
        let file = LayerWriter::create(&scratch.join("layer.tar.gz"), 1).expect("create");
        let layer = write_layer(file, Preset::Tarball, &tarball, &placed, &scratch).expect("layer");
        let bytes = std::fs::read(layer.path.as_ref().expect("a file")).expect("read");
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(&bytes[..]));
        let entries: Vec<(String, u64)> = archive
            .entries()
            .expect("entries")
            .map(|e| {
                let e = e.expect("entry");
                (
                    e.path().expect("path").display().to_string(),
                    e.header().uid().expect("uid"),
                )
            })
            .collect();
        let names: Vec<&str> = entries.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "srv/",
                "srv/site/",
                "srv/site/a.txt",
                "srv/site/b/",
                "srv/site/b/c/",
                "srv/site/b/c/z.txt"
            ]
        );
        assert!(entries.iter().all(|(_, uid)| *uid == 0));
    }
}
