//! Container images without a Docker daemon: B2I (append an artifact as one layer onto a base
//! image) and S2I (run a builder image's `assemble` and commit what it changed), pushed to an
//! OCI registry.
//!
//! It lives in the runner because S2I must run where the builder's filesystem is (a root
//! filesystem the runner unpacks locally, or the builder container itself in Kubernetes), and
//! both executors run `gantry-runner`. The engine calls the same code directly (for example to
//! build the runner's own image), so every entry point here is a plain async function of a
//! [`task`] description, a workspace and a scratch directory.
//!
//! | module | what |
//! |---|---|
//! | [`task`] | what the engine asks for (part of the stage spec) |
//! | [`reference`] | `registry/repository:tag@digest` names |
//! | [`auth`] | credentials (docker `config.json`) and the registry's auth challenges |
//! | [`registry`] | the distribution API: manifests, blobs, mounts, uploads, all streamed |
//! | [`oci`] | manifest, index and config documents, media types |
//! | [`layer`] | deterministic layer tarballs with their digests |
//! | [`source_date`] | the commit time images are dated with (`SOURCE_DATE_EPOCH`) |
//! | [`b2i`] | binary to image |
//! | [`rootfs`], [`snapshot`], [`s2i`] | source to image |

pub mod auth;
pub mod b2i;
pub mod layer;
pub mod oci;
pub mod reference;
pub mod registry;
pub mod rootfs;
pub mod s2i;
pub mod snapshot;
pub mod source_date;
pub mod task;

pub use task::{B2iTask, Compression, ImageTask, Preset, RegistryAccess, S2iTask};

use reference::ReferenceError;
use registry::RegistryError;

/// Why an image build failed. Messages name the image and say what to fix.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{what} `{name}`: {source}")]
    BadReference {
        what: &'static str,
        name: String,
        source: ReferenceError,
    },
    #[error("{what} `{name}` does not exist in its registry ({detail})")]
    UnknownImage {
        what: &'static str,
        name: String,
        detail: String,
    },
    /// The image exists, but not for the platform being built for (an index without it).
    #[error(
        "{what} `{name}` exists, but not for {wanted} (the platform this runner builds for): it is built for {}; choose an image with a {wanted} variant, or run the stage on a {wanted} runner",
        registry::offered_list(.offered)
    )]
    NoPlatform {
        what: &'static str,
        name: String,
        wanted: String,
        offered: Vec<String>,
    },
    #[error("{what} `{name}`: {source}")]
    Registry {
        what: &'static str,
        name: String,
        source: RegistryError,
    },
    #[error("the artifact `{path}` is not in the workspace: {why}")]
    MissingArtifact { path: String, why: String },
    #[error("the source directory `{0}` does not exist in the workspace")]
    MissingSource(String),
    #[error("builder `{builder}` has no S2I scripts: {why}")]
    NoScripts { builder: String, why: String },
    #[error("{0}")]
    Unsupported(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("the image document is not valid: {0}")]
    BadDocument(String),
    #[error("the build worker stopped unexpectedly: {0}")]
    Worker(String),
}

impl ImageError {
    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ImageError {
        let what = what.into();
        move |source| ImageError::Io { what, source }
    }

    /// Wraps a registry error about image `name`, turning "not found" into [`UnknownImage`].
    ///
    /// [`UnknownImage`]: ImageError::UnknownImage
    pub fn registry(what: &'static str, name: &str) -> impl FnOnce(RegistryError) -> ImageError {
        let name = name.to_owned();
        move |source| match source {
            RegistryError::NotFound(detail) => ImageError::UnknownImage { what, name, detail },
            RegistryError::NoPlatform { wanted, offered } => ImageError::NoPlatform {
                what,
                name,
                wanted,
                offered,
            },
            source => ImageError::Registry { what, name, source },
        }
    }
}

/// A pushed image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pushed {
    /// `registry/repository@sha256:...`: what `${{ stages.NAME.image }}` gives.
    pub pinned: String,
    /// The manifest digest.
    pub digest: String,
    /// Digest of the layer the build added.
    pub layer_digest: String,
    /// Bytes uploaded (blobs that were already there or were mounted do not count).
    pub uploaded_bytes: u64,
}

/// Where progress lines go (the stage log, or stderr for a command-line build).
pub trait Progress: Send + Sync {
    fn say(&self, line: &str);
}

impl<F: Fn(&str) + Send + Sync> Progress for F {
    fn say(&self, line: &str) {
        self(line)
    }
}

/// The platform images are built for: this machine's, as Go names it (`amd64`, `arm64`).
pub fn host_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}
