//! Source to image, by the OpenShift S2I builder contract: the builder image's layers are
//! unpacked into a root filesystem, the source is placed at `<destination>/src`, the builder's
//! `assemble` runs there (chrooted, as the builder's assemble user), and what it changed becomes
//! one new layer on top of the builder, with the `run` script as the image's command.
//!
//! The three parts are separate so the runner can run `assemble` as an ordinary step (its log,
//! exit code, timeout and cancellation handled like any step's): [`prepare`], then the
//! [`Prepared::assemble_step`], then [`commit`].

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::b2i::{Appended, access, parse, push};
use super::layer::Layer;
use super::oci::{self, ConfigEdit};
use super::reference::Reference;
use super::registry::{Registry, Resolved, scope};
use super::snapshot::{self, Snapshot};
use super::task::S2iTask;
use super::{ImageError, Progress, Pushed, host_architecture, rootfs, source_date};
use crate::wire::StepSpec;

const SCRIPTS_URL_LABELS: [&str; 2] = ["io.openshift.s2i.scripts-url", "io.s2i.scripts-url"];
const DESTINATION_LABELS: [&str; 2] = ["io.openshift.s2i.destination", "io.s2i.destination"];
const ASSEMBLE_USER_LABEL: &str = "io.openshift.s2i.assemble-user";
/// What the running system, not the build, puts in a root filesystem.
const NOT_BUILT: [&str; 5] = ["dev", "proc", "sys", "run/secrets", "var/run/secrets"];

/// A builder unpacked and ready for `assemble`.
pub struct Prepared {
    builder: Reference,
    registry: Registry,
    resolved: Resolved,
    config: Value,
    root: PathBuf,
    before: Snapshot,
    /// Paths (relative to `root`) the snapshots leave out.
    excluded: Vec<String>,
    /// `assemble` and `run` as paths inside the image.
    assemble: String,
    run: String,
    workdir: String,
    uid: u32,
    gid: u32,
    /// The whole environment `assemble` gets: the builder's, then the build's.
    assemble_env: Vec<(String, String)>,
    /// What the build adds to the image's environment (`.s2i/environment`, then `env`).
    build_env: Vec<(String, String)>,
    /// What the image is dated with (seconds): see [`super::source_date`].
    epoch: i64,
}

/// Where the S2I scripts may be, in s2i's lookup order for each script: the stage's
/// `scripts_url`, the source's `.s2i/bin`, the builder's label. So a source may override only
/// `assemble` and keep the builder's `run`.
#[derive(Debug)]
struct Scripts {
    /// The stage's `scripts_url`: a directory inside the builder image.
    explicit: Option<String>,
    /// The source's `.s2i/bin`, copied into `<destination>/scripts`.
    source: Option<PathBuf>,
    /// The builder's `io.openshift.s2i.scripts-url`: a directory inside the image.
    label: Option<String>,
}

impl Scripts {
    /// Where script `name` is inside the image whose filesystem is at `root` (the source's
    /// scripts counted as copied in), if anywhere.
    fn find(&self, root: &Path, destination: &str, name: &str) -> Option<String> {
        let in_image = |dir: &String| {
            let path = format!("{dir}/{name}");
            inside(root, &path).is_file().then_some(path)
        };
        self.explicit
            .as_ref()
            .and_then(in_image)
            .or_else(|| {
                self.source
                    .as_ref()
                    .filter(|bin| bin.join(name).is_file())
                    .map(|_| format!("{destination}/scripts/{name}"))
            })
            .or_else(|| self.label.as_ref().and_then(in_image))
    }

    /// Where it looked, for an error message.
    fn places(&self) -> String {
        let mut places = Vec::new();
        if let Some(dir) = &self.explicit {
            places.push(format!("the stage's scripts_url image://{dir}"));
        }
        if self.source.is_some() {
            places.push("the source's .s2i/bin".to_owned());
        }
        if let Some(dir) = &self.label {
            places.push(format!("the builder's scripts-url image://{dir}"));
        }
        places.join(", ")
    }
}

/// Pulls and unpacks the builder, places the source and the scripts, and snapshots the
/// filesystem as `assemble` will find it.
pub async fn prepare(
    task: &S2iTask,
    workspace: &Path,
    scratch: &Path,
    progress: &dyn Progress,
) -> Result<Prepared, ImageError> {
    let builder = parse("builder image", &task.builder)?;
    let output = parse("output image", &task.output)?;
    let source = match &task.context_dir {
        Some(dir) => workspace.join(dir),
        None => workspace.to_owned(),
    };
    if !source.is_dir() {
        return Err(ImageError::MissingSource(
            task.context_dir.clone().unwrap_or_else(|| ".".into()),
        ));
    }
    let in_place = task.rootfs.as_deref() == Some("/");
    if !in_place && !nix::unistd::geteuid().is_root() {
        return Err(ImageError::Unsupported(
            "s2i in the local executor needs the runner to run as root, to chroot into the \
             builder's filesystem"
                .into(),
        ));
    }
    if !in_place && chroot_program().is_none() {
        return Err(ImageError::Unsupported(
            "s2i needs `chroot` (coreutils) on the runner's machine".into(),
        ));
    }

    progress.say(&format!("s2i: resolving builder image {builder}"));
    let mut scopes = vec![scope(&builder.repository, "pull")];
    if output.registry == builder.registry {
        scopes.push(scope(&output.repository, "pull,push"));
    }
    let registry = Registry::connect(&access(&task.registries, &builder.registry), &scopes)
        .await
        .map_err(ImageError::registry("builder image", &task.builder))?;
    let resolved = registry
        .resolve(
            &builder.repository,
            builder.manifest_reference(),
            "linux",
            host_architecture(),
        )
        .await
        .map_err(ImageError::registry("builder image", &task.builder))?;
    let config_bytes = registry
        .blob_bytes(&builder.repository, &resolved.manifest.config.digest)
        .await
        .map_err(ImageError::registry("builder image", &task.builder))?;
    let config: Value = serde_json::from_slice(&config_bytes)
        .map_err(|e| ImageError::BadDocument(format!("the builder image's config: {e}")))?;

    let destination = DESTINATION_LABELS
        .iter()
        .find_map(|l| oci::label(&config, l))
        .unwrap_or("/tmp")
        .trim_end_matches('/')
        .to_owned();
    let scripts = choose_scripts(task, &config, &source)?;

    let root = match &task.rootfs {
        Some(root) => PathBuf::from(root),
        None => scratch.join("rootfs"),
    };
    let layers = if task.rootfs.is_some() {
        progress.say(&format!(
            "s2i: using the builder's filesystem at {}",
            root.display()
        ));
        Vec::new()
    } else {
        std::fs::create_dir_all(&root).map_err(ImageError::io("creating the root filesystem"))?;
        resolved.manifest.layers.clone()
    };
    for (i, layer) in layers.iter().enumerate() {
        progress.say(&format!(
            "s2i: layer {}/{} {} ({} bytes)",
            i + 1,
            layers.len(),
            layer.digest,
            layer.size
        ));
        // Named as `ensure_blob` expects, so a push elsewhere reuses the download.
        let file = scratch.join(layer.digest.replace(':', "-"));
        registry
            .blob_to_file(&builder.repository, &layer.digest, &file)
            .await
            .map_err(ImageError::registry("builder image", &task.builder))?;
        let (file, root) = (file.clone(), root.clone());
        tokio::task::spawn_blocking(move || rootfs::unpack_layer(&file, &root))
            .await
            .map_err(|e| ImageError::Worker(e.to_string()))?
            .map_err(ImageError::io(format!("unpacking layer {}", layer.digest)))?;
    }
    if task.rootfs.is_none() {
        rootfs::make_devices(&root)
            .map_err(ImageError::io("creating /dev in the root filesystem"))?;
    }
    let excluded = excluded_paths(task, &root, &[workspace, scratch]);

    let required = |name: &str| {
        scripts
            .find(&root, &destination, name)
            .ok_or_else(|| ImageError::NoScripts {
                builder: task.builder.clone(),
                why: format!("no `{name}` script in {}", scripts.places()),
            })
    };
    let (assemble, run) = (required("assemble")?, required("run")?);

    let user = oci::label(&config, ASSEMBLE_USER_LABEL)
        .or_else(|| oci::run_field(&config, "User"))
        .filter(|u| !u.is_empty())
        .unwrap_or("0")
        .to_owned();
    let (uid, gid) = resolve_user(&root, &user)?;
    let workdir = oci::run_field(&config, "WorkingDir")
        .filter(|w| !w.is_empty() && inside(&root, w).is_dir())
        .unwrap_or("/")
        .to_owned();

    let before = {
        let (root, excluded) = (root.clone(), excluded.clone());
        tokio::task::spawn_blocking(move || snapshot::take(&root, &excluded))
            .await
            .map_err(|e| ImageError::Worker(e.to_string()))?
            .map_err(ImageError::io("snapshotting the builder's filesystem"))?
    };

    // The source, owned by the user `assemble` runs as, as if streamed in by that user.
    let src = inside(&root, &format!("{destination}/src"));
    progress.say(&format!("s2i: copying the source into {destination}/src"));
    {
        let (source, src) = (source.clone(), src.clone());
        let ignore = Ignore::read(&source)?;
        tokio::task::spawn_blocking(move || copy_tree(&source, &src, uid, gid, &ignore))
            .await
            .map_err(|e| ImageError::Worker(e.to_string()))??;
    }
    if let Some(bin) = &scripts.source {
        let target = inside(&root, &format!("{destination}/scripts"));
        copy_tree(bin, &target, uid, gid, &Ignore::none())?;
        for name in ["assemble", "run", "save-artifacts", "usage"] {
            let script = target.join(name);
            if script.is_file() {
                std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))
                    .map_err(ImageError::io(script.display().to_string()))?;
            }
        }
    }
    let mut build_env = read_environment(&source.join(".s2i/environment"))?;
    build_env.extend(task.env.iter().cloned());
    let mut assemble_env = oci::env_of(&config);
    for (key, value) in &build_env {
        assemble_env.retain(|(k, _)| k != key);
        assemble_env.push((key.clone(), value.clone()));
    }
    if !assemble_env.iter().any(|(k, _)| k == "PATH") {
        assemble_env.insert(
            0,
            (
                "PATH".into(),
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
            ),
        );
    }
    if task.incremental {
        let previous = Previous {
            task,
            registry: &registry,
            builder: &resolved,
            output: &output,
            scripts: &scripts,
            destination: &destination,
            scratch,
        };
        let restored = previous
            .restore(&root, &workdir, uid, gid, &assemble_env, progress)
            .await?;
        progress.say(&restored);
    }
    Ok(Prepared {
        builder,
        registry,
        resolved,
        config,
        root,
        before,
        excluded,
        assemble,
        run,
        workdir,
        uid,
        gid,
        assemble_env,
        build_env,
        epoch: source_date::effective(task.created_epoch, task.created_from_checkout, workspace),
    })
}

impl Prepared {
    /// `assemble` as a step: the host's `sh` runs `chroot` into the root filesystem with the
    /// builder's environment only (nothing of the stage's leaks in), as the assemble user.
    pub fn assemble_step(&self) -> StepSpec {
        let env = ["/usr/bin/env", "/bin/env"]
            .into_iter()
            .find(|p| Path::new(p).is_file())
            .unwrap_or("env");
        let mut script = format!("exec {env} -i");
        for (key, value) in &self.assemble_env {
            script.push(' ');
            script.push_str(&quote(&format!("{key}={value}")));
        }
        // Inside the builder's own container (root `/`) as the assemble user already, no
        // chroot is needed (nor, as that user, possible).
        let current = nix::unistd::geteuid().as_raw();
        if self.root != Path::new("/") || (current == 0 && self.uid != 0) {
            let chroot = chroot_program().unwrap_or("chroot");
            script.push_str(&format!(
                " {chroot} --userspec={}:{} {}",
                self.uid,
                self.gid,
                quote(&self.root.display().to_string())
            ));
        }
        script.push_str(&format!(
            " /bin/sh -c 'cd \"$0\" && exec \"$1\"' {} {}",
            quote(&self.workdir),
            quote(&self.assemble),
        ));
        StepSpec {
            name: "assemble".into(),
            run: script,
            env: Vec::new(),
            timeout_secs: None,
        }
    }
}

/// Snapshots what `assemble` changed into a layer and pushes builder + layer as `output`.
pub async fn commit(
    prepared: Prepared,
    task: &S2iTask,
    scratch: &Path,
    progress: &dyn Progress,
) -> Result<Pushed, ImageError> {
    let output = parse("output image", &task.output)?;
    let epoch = prepared.epoch;
    let mtime = u64::try_from(epoch).unwrap_or(0);
    let compression = task.compression;
    let layer: Layer = {
        let root = prepared.root.clone();
        let before = prepared.before.clone();
        let excluded = prepared.excluded.clone();
        let path = scratch.join("s2i-layer.tar.gz");
        let (layer, changes) = tokio::task::spawn_blocking(move || {
            let after = snapshot::take(&root, &excluded)?;
            let changes = snapshot::diff(&before, &after);
            snapshot::write_layer(&root, &after, &changes, &path, mtime, compression)
                .map(|l| (l, changes))
        })
        .await
        .map_err(|e| ImageError::Worker(e.to_string()))?
        .map_err(ImageError::io("writing the layer of what assemble changed"))?;
        progress.say(&format!(
            "s2i: layer {} ({} bytes): {} paths added or changed, {} deleted",
            layer.digest,
            layer.size,
            changes.changed.len(),
            changes.deleted.len()
        ));
        layer
    };

    let mut config = prepared.config.clone();
    let edit = ConfigEdit {
        created: oci::rfc3339(epoch),
        created_by: format!("gantry s2i: {} (assemble)", prepared.assemble),
        diff_id: layer.diff_id.clone(),
        cmd: Some(vec![prepared.run.clone()]),
        env: prepared.build_env.clone(),
        labels: source_date::with_created_label(&task.labels, epoch),
        ..ConfigEdit::default()
    };
    oci::apply(&mut config, &edit).map_err(ImageError::BadDocument)?;
    let config_bytes =
        serde_json::to_vec(&config).map_err(|e| ImageError::BadDocument(e.to_string()))?;

    let other;
    let target = if output.registry == prepared.builder.registry {
        &prepared.registry
    } else {
        other = Registry::connect(
            &access(&task.registries, &output.registry),
            &[scope(&output.repository, "pull,push")],
        )
        .await
        .map_err(ImageError::registry("output image", &task.output))?;
        &other
    };
    let image = Appended {
        base: &prepared.builder,
        base_registry: &prepared.registry,
        resolved: &prepared.resolved,
        layer: &layer,
        layer_uploaded: false,
        config: config_bytes,
    };
    push(image, &output, target, scratch, progress)
        .await
        .map_err(ImageError::registry("output image", &task.output))
}

fn choose_scripts(task: &S2iTask, config: &Value, source: &Path) -> Result<Scripts, ImageError> {
    let label = SCRIPTS_URL_LABELS
        .iter()
        .find_map(|l| oci::label(config, l))
        .map(str::to_owned)
        .or_else(|| {
            oci::env_of(config)
                .into_iter()
                .find(|(k, _)| k == "STI_SCRIPTS_URL")
                .map(|(_, v)| v)
        })
        .filter(|url| !url.is_empty());
    let bin = source.join(".s2i/bin");
    let scripts = Scripts {
        explicit: task.scripts_url.as_deref().map(image_dir).transpose()?,
        source: bin.is_dir().then_some(bin),
        label: label.as_deref().map(image_dir).transpose()?,
    };
    if scripts.explicit.is_none() && scripts.label.is_none() && scripts.source.is_none() {
        return Err(ImageError::NoScripts {
            builder: task.builder.clone(),
            why: "the image has no io.openshift.s2i.scripts-url label, the stage sets no \
                  `scripts_url`, and the source has no .s2i/bin/assemble"
                .into(),
        });
    }
    Ok(scripts)
}

/// `image:///usr/libexec/s2i` → `/usr/libexec/s2i`.
fn image_dir(url: &str) -> Result<String, ImageError> {
    match url.strip_prefix("image://") {
        Some(path) if path.starts_with('/') => Ok(path.trim_end_matches('/').to_owned()),
        _ => Err(ImageError::Unsupported(format!(
            "S2I scripts URL `{url}`: only image:///PATH (scripts inside the builder) and the \
             source's .s2i/bin are supported"
        ))),
    }
}

/// An incremental build's look at the image it replaces: `save-artifacts` runs in it, and what
/// it writes (a tar on stdout) lands in `<destination>/artifacts` for `assemble`.
struct Previous<'a> {
    task: &'a S2iTask,
    registry: &'a Registry,
    builder: &'a Resolved,
    output: &'a Reference,
    scripts: &'a Scripts,
    destination: &'a str,
    scratch: &'a Path,
}

impl Previous<'_> {
    /// Restores the previous image's artifacts into `root`; returns what to log. A missing or
    /// unsuitable previous image means a full build, not a failure.
    async fn restore(
        &self,
        root: &Path,
        workdir: &str,
        uid: u32,
        gid: u32,
        env: &[(String, String)],
        progress: &dyn Progress,
    ) -> Result<String, ImageError> {
        if self.task.rootfs.is_some() {
            return Ok("s2i: incremental: not in a builder's own filesystem; a full build".into());
        }
        if self.output.registry != self.builder_registry_host() {
            return Ok("s2i: incremental: the output is on another registry than the builder; a full build".into());
        }
        let previous = match self
            .registry
            .resolve(
                &self.output.repository,
                self.output.push_tag(),
                "linux",
                host_architecture(),
            )
            .await
        {
            Ok(previous) => previous,
            Err(super::registry::RegistryError::NotFound(_)) => {
                return Ok(format!(
                    "s2i: incremental: no previous image {}; a full build",
                    self.output
                ));
            }
            Err(super::registry::RegistryError::NoPlatform { wanted, .. }) => {
                return Ok(format!(
                    "s2i: incremental: the previous image {} has no {wanted} entry; a full build",
                    self.output
                ));
            }
            Err(e) => return Err(ImageError::registry("output image", &self.task.output)(e)),
        };
        let below = &self.builder.manifest.layers;
        if previous.manifest.layers.len() < below.len()
            || previous.manifest.layers[..below.len()] != below[..]
        {
            return Ok(
                "s2i: incremental: the previous image was not built on this builder; a full build"
                    .into(),
            );
        }
        let save = match self.scripts.find(root, self.destination, "save-artifacts") {
            Some(save) => save,
            None => {
                return Ok(format!(
                    "s2i: incremental: no save-artifacts script in {}; a full build",
                    self.scripts.places()
                ));
            }
        };
        progress.say(&format!(
            "s2i: incremental: running {save} in the previous image {}",
            previous.digest
        ));
        let old_root = self.scratch.join("previous");
        std::fs::create_dir_all(&old_root)
            .map_err(ImageError::io("creating the previous image's filesystem"))?;
        for layer in &previous.manifest.layers {
            let file = self.scratch.join(layer.digest.replace(':', "-"));
            if !file.exists() {
                self.registry
                    .blob_to_file(&self.output.repository, &layer.digest, &file)
                    .await
                    .map_err(ImageError::registry("output image", &self.task.output))?;
            }
            let (file, old_root) = (file.clone(), old_root.clone());
            tokio::task::spawn_blocking(move || rootfs::unpack_layer(&file, &old_root))
                .await
                .map_err(|e| ImageError::Worker(e.to_string()))?
                .map_err(ImageError::io(format!("unpacking layer {}", layer.digest)))?;
        }
        if !inside(&old_root, &save).is_file() {
            let _ = std::fs::remove_dir_all(&old_root);
            return Ok(format!(
                "s2i: incremental: the previous image has no {save}; a full build"
            ));
        }
        rootfs::make_devices(&old_root).map_err(ImageError::io(
            "creating /dev in the previous image's filesystem",
        ))?;
        let tar = self.scratch.join("artifacts.tar");
        let command = RootCommand {
            root: &old_root,
            uid,
            gid,
            workdir,
            script: &save,
            env,
        };
        let saved = {
            let (mut command, tar) = (command.build(), tar.clone());
            tokio::task::spawn_blocking(move || -> std::io::Result<std::process::Output> {
                command
                    .stdin(std::process::Stdio::null())
                    .stdout(std::fs::File::create(&tar)?)
                    .stderr(std::process::Stdio::piped())
                    .output()
            })
            .await
            .map_err(|e| ImageError::Worker(e.to_string()))?
            .map_err(ImageError::io(format!("running {save}")))?
        };
        let _ = std::fs::remove_dir_all(&old_root);
        for line in String::from_utf8_lossy(&saved.stderr).lines() {
            progress.say(line);
        }
        if !saved.status.success() {
            return Ok(format!(
                "s2i: incremental: {save} failed ({}); a full build",
                saved.status
            ));
        }
        let artifacts = inside(root, &format!("{}/artifacts", self.destination));
        let entries = {
            let (tar, artifacts) = (tar.clone(), artifacts.clone());
            tokio::task::spawn_blocking(move || unpack_owned(&tar, &artifacts, uid, gid))
                .await
                .map_err(|e| ImageError::Worker(e.to_string()))??
        };
        Ok(format!(
            "s2i: incremental: restored {entries} entries into {}/artifacts",
            self.destination
        ))
    }

    fn builder_registry_host(&self) -> &str {
        self.registry.host()
    }
}

/// A script run with `env -i` in a chroot as a user (what `save-artifacts` needs; `assemble`
/// runs as a step through [`Prepared::assemble_step`]).
struct RootCommand<'a> {
    root: &'a Path,
    uid: u32,
    gid: u32,
    workdir: &'a str,
    script: &'a str,
    env: &'a [(String, String)],
}

impl RootCommand<'_> {
    fn build(&self) -> std::process::Command {
        let mut command = std::process::Command::new(chroot_program().unwrap_or("chroot"));
        command
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .arg(format!("--userspec={}:{}", self.uid, self.gid))
            .arg(self.root)
            .args([
                "/bin/sh",
                "-c",
                "cd \"$0\" && exec \"$1\"",
                self.workdir,
                self.script,
            ]);
        command
    }
}

/// Unpacks the tar at `tar` into `dir`, everything owned by `uid:gid`; returns the entries.
fn unpack_owned(tar: &Path, dir: &Path, uid: u32, gid: u32) -> Result<u64, ImageError> {
    let what = || format!("unpacking the saved artifacts into {}", dir.display());
    std::fs::create_dir_all(dir).map_err(ImageError::io(what()))?;
    let file = std::fs::File::open(tar).map_err(ImageError::io(what()))?;
    let mut archive = tar::Archive::new(std::io::BufReader::new(file));
    archive.set_preserve_permissions(true);
    let mut entries = 0;
    for entry in archive.entries().map_err(ImageError::io(what()))? {
        let mut entry = entry.map_err(ImageError::io(what()))?;
        if entry.unpack_in(dir).map_err(ImageError::io(what()))? {
            entries += 1;
        }
    }
    chown_tree(dir, uid, gid).map_err(ImageError::io(what()))?;
    Ok(entries)
}

fn chown_tree(path: &Path, uid: u32, gid: u32) -> std::io::Result<()> {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))?;
    if std::fs::symlink_metadata(path)?.is_dir() {
        for entry in std::fs::read_dir(path)? {
            chown_tree(&entry?.path(), uid, gid)?;
        }
    }
    Ok(())
}

/// What the snapshots leave out, relative to `root`: what the running system puts there, the
/// task's own exclusions, and the runner's workspace and scratch directory when they are inside
/// `root` (in a builder container they are).
fn excluded_paths(task: &S2iTask, root: &Path, own: &[&Path]) -> Vec<String> {
    let mut out: Vec<String> = NOT_BUILT.iter().map(|p| (*p).to_owned()).collect();
    out.extend(
        task.exclude
            .iter()
            .map(|p| p.trim_matches('/').to_owned())
            .filter(|p| !p.is_empty()),
    );
    for dir in own {
        if let Ok(inside) = dir.strip_prefix(root)
            && !inside.as_os_str().is_empty()
        {
            out.push(inside.to_string_lossy().into_owned());
        }
    }
    out
}

/// coreutils' `chroot`, found by absolute path: `env -i` leaves no PATH to search.
fn chroot_program() -> Option<&'static str> {
    ["/usr/sbin/chroot", "/usr/bin/chroot", "/sbin/chroot"]
        .into_iter()
        .find(|p| Path::new(p).is_file())
}

/// `path` (absolute, inside the image) under `root`.
fn inside(root: &Path, path: &str) -> PathBuf {
    root.join(path.trim_start_matches('/'))
}

/// `1001`, `1001:0`, `app` or `app:staff`, resolved with the image's own passwd and group.
fn resolve_user(root: &Path, user: &str) -> Result<(u32, u32), ImageError> {
    let (name, group) = match user.split_once(':') {
        Some((name, group)) => (name, Some(group)),
        None => (user, None),
    };
    let passwd = std::fs::read_to_string(inside(root, "/etc/passwd")).unwrap_or_default();
    let lookup = |file: &str, key: &str, field: usize| -> Option<u32> {
        file.lines()
            .map(|l| l.split(':').collect::<Vec<_>>())
            .find(|f| f.first() == Some(&key))
            .and_then(|f| f.get(field)?.parse().ok())
    };
    let (uid, default_gid) = match name.parse::<u32>() {
        Ok(uid) => {
            let gid = passwd
                .lines()
                .map(|l| l.split(':').collect::<Vec<_>>())
                .find(|f| f.get(2).and_then(|u| u.parse().ok()) == Some(uid))
                .and_then(|f| f.get(3)?.parse().ok())
                .unwrap_or(0);
            (uid, gid)
        }
        Err(_) => match (lookup(&passwd, name, 2), lookup(&passwd, name, 3)) {
            (Some(uid), gid) => (uid, gid.unwrap_or(0)),
            _ => {
                return Err(ImageError::Unsupported(format!(
                    "the assemble user `{name}` is not in the builder's /etc/passwd"
                )));
            }
        },
    };
    let gid = match group {
        None => default_gid,
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => {
                let groups =
                    std::fs::read_to_string(inside(root, "/etc/group")).unwrap_or_default();
                lookup(&groups, g, 2).ok_or_else(|| {
                    ImageError::Unsupported(format!(
                        "the assemble group `{g}` is not in the builder's /etc/group"
                    ))
                })?
            }
        },
    };
    Ok((uid, gid))
}

/// `.s2iignore`: glob patterns relative to the source root, one per line (`#` comments), as
/// s2i applies them: `*.log` is only the top level's, `logs/*.log` those in `logs/`. A matching
/// file or directory is not copied.
pub struct Ignore(globset::GlobSet);

impl Ignore {
    fn none() -> Ignore {
        Ignore(globset::GlobSet::empty())
    }

    fn read(source: &Path) -> Result<Ignore, ImageError> {
        let path = source.join(".s2iignore");
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Ignore::none()),
            Err(e) => return Err(ImageError::io(path.display().to_string())(e)),
        };
        let mut set = globset::GlobSetBuilder::new();
        for (n, line) in text.lines().enumerate() {
            let pattern = line.trim();
            if pattern.is_empty() || pattern.starts_with('#') {
                continue;
            }
            let pattern = pattern.trim_start_matches("./").trim_end_matches('/');
            let glob = globset::GlobBuilder::new(pattern)
                .literal_separator(true)
                .build()
                .map_err(|e| {
                    ImageError::Unsupported(format!(
                        ".s2iignore line {}: `{pattern}` is not a valid pattern: {e}",
                        n + 1
                    ))
                })?;
            set.add(glob);
        }
        set.build()
            .map(Ignore)
            .map_err(|e| ImageError::Unsupported(format!(".s2iignore: {e}")))
    }
}

/// Copies the tree at `from` to `to` (without `.git` and what `ignore` names), owned by
/// `uid:gid`, modes kept.
fn copy_tree(
    from: &Path,
    to: &Path,
    uid: u32,
    gid: u32,
    ignore: &Ignore,
) -> Result<(), ImageError> {
    copy_dir(from, to, Path::new(""), uid, gid, ignore)
}

fn copy_dir(
    from: &Path,
    to: &Path,
    relative: &Path,
    uid: u32,
    gid: u32,
    ignore: &Ignore,
) -> Result<(), ImageError> {
    let failed = |p: &Path| ImageError::io(format!("copying {}", p.display()));
    std::fs::create_dir_all(to).map_err(failed(to))?;
    std::os::unix::fs::chown(to, Some(uid), Some(gid)).map_err(failed(to))?;
    let listing = std::fs::read_dir(from).map_err(failed(from))?;
    for entry in listing {
        let entry = entry.map_err(failed(from))?;
        let name = entry.file_name();
        let inner = relative.join(&name);
        if name == ".git" || ignore.0.is_match(&inner) {
            continue;
        }
        let (source, target) = (entry.path(), to.join(&name));
        let meta = std::fs::symlink_metadata(&source).map_err(failed(&source))?;
        if meta.file_type().is_symlink() {
            let link = std::fs::read_link(&source).map_err(failed(&source))?;
            let _ = std::fs::remove_file(&target);
            std::os::unix::fs::symlink(link, &target).map_err(failed(&target))?;
            std::os::unix::fs::lchown(&target, Some(uid), Some(gid)).map_err(failed(&target))?;
        } else if meta.is_dir() {
            copy_dir(&source, &target, &inner, uid, gid, ignore)?;
            std::fs::set_permissions(
                &target,
                std::fs::Permissions::from_mode(meta.mode() & 0o7777),
            )
            .map_err(failed(&target))?;
        } else if meta.is_file() {
            std::fs::copy(&source, &target).map_err(failed(&source))?;
            std::os::unix::fs::chown(&target, Some(uid), Some(gid)).map_err(failed(&target))?;
        }
    }
    Ok(())
}

/// `.s2i/environment`: `KEY=VALUE` lines, `#` comments and blank lines ignored.
fn read_environment(path: &Path) -> Result<Vec<(String, String)>, ImageError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(ImageError::io(path.display().to_string())(e)),
    };
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(ImageError::Unsupported(format!(
                ".s2i/environment line {}: `{line}` is not KEY=VALUE",
                n + 1
            )));
        };
        out.push((key.trim().to_owned(), value.to_owned()));
    }
    Ok(out)
}

/// Single-quotes `text` for `sh`.
fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn task() -> S2iTask {
        S2iTask {
            builder: "r.io/builders/shell:1".into(),
            output: "r.io/app:1".into(),
            context_dir: None,
            env: vec![],
            scripts_url: None,
            incremental: false,
            labels: vec![],
            created_epoch: 0,
            created_from_checkout: false,
            compression: Default::default(),
            registries: vec![],
            rootfs: None,
            exclude: vec![],
        }
    }

    #[test]
    fn each_script_comes_from_the_stage_then_the_source_then_the_label() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (root, source) = (dir.path().join("root"), dir.path().join("src"));
        for (d, names) in [
            (
                "root/usr/libexec/s2i",
                &["assemble", "run", "save-artifacts"][..],
            ),
            ("root/opt/s2i", &["run"][..]),
            ("src/.s2i/bin", &["assemble"][..]),
        ] {
            std::fs::create_dir_all(dir.path().join(d)).expect("dirs");
            for name in names {
                std::fs::write(dir.path().join(d).join(name), "#!/bin/sh\n").expect("script");
            }
        }
        let labelled = json!({"config": {"Labels": {"io.openshift.s2i.scripts-url": "image:///usr/libexec/s2i"}}});
        let mut explicit = task();
        explicit.scripts_url = Some("image:///opt/s2i/".into());
        let scripts = choose_scripts(&explicit, &labelled, &source).expect("scripts");
        let find = |name| scripts.find(&root, "/tmp", name);
        assert_eq!(
            find("run").as_deref(),
            Some("/opt/s2i/run"),
            "the stage's first"
        );
        assert_eq!(
            find("assemble").as_deref(),
            Some("/tmp/scripts/assemble"),
            "then the source"
        );
        assert_eq!(
            find("save-artifacts").as_deref(),
            Some("/usr/libexec/s2i/save-artifacts"),
            "then the builder's label"
        );
        assert_eq!(find("usage"), None);

        let bare = json!({"config": {}});
        let empty = dir.path().join("empty");
        let err = choose_scripts(&task(), &bare, &empty).expect_err("no scripts anywhere");
        assert!(err.to_string().contains("has no S2I scripts"), "{err}");
        explicit.scripts_url = Some("https://example.com/s2i".into());
        assert!(matches!(
            choose_scripts(&explicit, &labelled, &source),
            Err(ImageError::Unsupported(_))
        ));
    }

    #[test]
    fn environment_files_and_users_are_read_like_s2i() {
        let dir = tempfile::tempdir().expect("temp dir");
        let env = dir.path().join("environment");
        std::fs::write(&env, "# comment\nGREETING=hello = world\n\nMODE=prod\n").expect("env");
        assert_eq!(
            read_environment(&env).expect("valid"),
            [
                ("GREETING".to_owned(), "hello = world".to_owned()),
                ("MODE".to_owned(), "prod".to_owned())
            ]
        );
        std::fs::write(&env, "oops\n").expect("env");
        assert!(read_environment(&env).is_err());

        std::fs::create_dir_all(dir.path().join("etc")).expect("etc");
        std::fs::write(
            dir.path().join("etc/passwd"),
            "root:x:0:0::/:/bin/sh\napp:x:1001:5::/:/bin/sh\n",
        )
        .expect("passwd");
        std::fs::write(dir.path().join("etc/group"), "staff:x:50:\n").expect("group");
        assert_eq!(resolve_user(dir.path(), "app").expect("app"), (1001, 5));
        assert_eq!(resolve_user(dir.path(), "1001").expect("uid"), (1001, 5));
        assert_eq!(
            resolve_user(dir.path(), "app:staff").expect("group"),
            (1001, 50)
        );
        assert_eq!(
            resolve_user(dir.path(), "2000:3").expect("numeric"),
            (2000, 3)
        );
        assert!(resolve_user(dir.path(), "nobody").is_err());
    }

    #[test]
    fn snapshots_leave_out_the_runners_own_directories_inside_the_root() {
        let mut t = task();
        t.exclude = vec!["/gantry/".into()];
        let excluded = excluded_paths(
            &t,
            Path::new("/"),
            &[
                Path::new("/workspace/ws-1"),
                Path::new("/tmp/gantry-image-1"),
            ],
        );
        assert_eq!(
            excluded,
            [
                "dev",
                "proc",
                "sys",
                "run/secrets",
                "var/run/secrets",
                "gantry",
                "workspace/ws-1",
                "tmp/gantry-image-1"
            ]
        );
        let elsewhere = excluded_paths(&task(), Path::new("/tmp/x/rootfs"), &[Path::new("/work")]);
        assert_eq!(elsewhere.len(), NOT_BUILT.len());
    }

    #[test]
    fn s2iignore_leaves_files_out_of_the_source_copy() {
        let dir = tempfile::tempdir().expect("temp dir");
        let source = dir.path().join("src");
        std::fs::create_dir_all(source.join("logs/old")).expect("dirs");
        for file in [
            "app.sh",
            "debug.log",
            "logs/run.log",
            "logs/old/x",
            "keep.txt",
        ] {
            std::fs::write(source.join(file), "x").expect("file");
        }
        std::fs::write(
            source.join(".s2iignore"),
            "# not needed in the image\n*.log\nlogs/old/\n",
        )
        .expect("ignore");
        let ignore = Ignore::read(&source).expect("valid");
        let target = dir.path().join("dst");
        let (uid, gid) = (
            nix::unistd::getuid().as_raw(),
            nix::unistd::getgid().as_raw(),
        );
        copy_tree(&source, &target, uid, gid, &ignore).expect("copy");
        assert!(target.join("app.sh").is_file() && target.join("keep.txt").is_file());
        assert!(!target.join("debug.log").exists(), "*.log: the top level's");
        assert!(
            target.join("logs/run.log").is_file(),
            "*.log does not reach into logs/"
        );
        assert!(
            !target.join("logs/old").exists(),
            "a directory pattern drops it whole"
        );
        std::fs::write(source.join(".s2iignore"), "[oops\n").expect("ignore");
        assert!(Ignore::read(&source).is_err());
    }

    #[test]
    fn the_assemble_step_quotes_everything() {
        assert_eq!(quote("it's"), r"'it'\''s'");
    }
}
