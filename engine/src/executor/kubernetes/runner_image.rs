//! `gantry images build-runner`: the image Kubernetes Jobs copy `gantry-runner` out of, made
//! with Gantry's own B2I (one layer with the binary on a base image, pushed without a Docker
//! daemon). The binary lands at [`RUNNER_IN_IMAGE`], where the Job's init container expects it.

use std::path::{Path, PathBuf};

use gantry_runner::image::task::{B2iTask, Preset};
use gantry_runner::image::{ImageError, Pushed};

use super::job::RUNNER_IN_IMAGE;

#[derive(Debug, thiserror::Error)]
pub enum RunnerImageError {
    #[error("the runner binary {path}: {source}")]
    Binary {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Registries(#[from] crate::images::ImagesError),
    #[error(transparent)]
    Build(#[from] ImageError),
}

/// What to build: `runner` onto `base`, pushed as `output`.
#[derive(Clone, Debug)]
pub struct RunnerImage {
    pub runner: PathBuf,
    pub base: String,
    pub output: String,
    /// Registries reached over plain HTTP.
    pub insecure_registries: Vec<String>,
    /// A docker `config.json` with credentials.
    pub registry_auth: Option<PathBuf>,
}

/// The B2I task for the runner image: the binary as `gantry-runner` in its directory, as the
/// entrypoint, with a fixed time so the same binary always gives the same digest.
pub fn task(
    image: &RunnerImage,
    registries: Vec<gantry_runner::image::task::RegistryAccess>,
) -> B2iTask {
    let dir = Path::new(RUNNER_IN_IMAGE)
        .parent()
        .map_or_else(|| "/".to_owned(), |p| p.display().to_string());
    B2iTask {
        artifact: "gantry-runner".into(),
        preset: Preset::Binary,
        base: image.base.clone(),
        output: image.output.clone(),
        entrypoint: Some(vec![RUNNER_IN_IMAGE.to_owned()]),
        cmd: None,
        workdir: Some(dir),
        webapps_dir: None,
        user: None,
        ports: Vec::new(),
        env: Vec::new(),
        labels: vec![
            (
                "org.opencontainers.image.title".into(),
                "gantry-runner".into(),
            ),
            (
                "org.opencontainers.image.version".into(),
                env!("CARGO_PKG_VERSION").into(),
            ),
            (
                "org.opencontainers.image.description".into(),
                "Gantry's stage runner; Jobs copy it into their stage container".into(),
            ),
        ],
        created_epoch: 0,
        created_from_checkout: false,
        compression: Default::default(),
        created_by: Some("gantry images build-runner".into()),
        registries,
    }
}

/// Builds and pushes the runner image; `say` gets the progress lines.
pub async fn build(
    image: &RunnerImage,
    say: &(dyn Fn(&str) + Send + Sync),
) -> Result<Pushed, RunnerImageError> {
    let registries = crate::images::registries(
        &[&image.base, &image.output],
        &image.insecure_registries,
        image.registry_auth.as_deref(),
        None,
    )?;
    let task = task(image, registries);
    let workspace = tempfile::tempdir().map_err(|source| RunnerImageError::Binary {
        path: image.runner.display().to_string(),
        source,
    })?;
    std::fs::copy(&image.runner, workspace.path().join("gantry-runner")).map_err(|source| {
        RunnerImageError::Binary {
            path: image.runner.display().to_string(),
            source,
        }
    })?;
    let scratch = workspace.path().join(".scratch");
    std::fs::create_dir_all(&scratch).map_err(|source| RunnerImageError::Binary {
        path: scratch.display().to_string(),
        source,
    })?;
    let progress = |line: &str| say(line);
    Ok(gantry_runner::image::b2i::build(&task, workspace.path(), &scratch, &progress).await?)
}
