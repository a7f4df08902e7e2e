//! What the engine asks a runner to build: an additive part of the stage spec
//! ([`crate::wire::StageSpec::image`]). Templates are already rendered by the engine; the
//! runner only builds and pushes.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ImageTask {
    B2i(B2iTask),
    S2i(S2iTask),
}

impl ImageTask {
    pub fn registries(&self) -> &[RegistryAccess] {
        match self {
            ImageTask::B2i(t) => &t.registries,
            ImageTask::S2i(t) => &t.registries,
        }
    }
}

/// How one registry is reached.
#[derive(Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct RegistryAccess {
    /// `host[:port]` as written in image names (`docker.io` for Docker Hub).
    pub host: String,
    /// Plain HTTP instead of HTTPS: only for registries configured as such.
    #[serde(default)]
    pub plain_http: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// An identity or registry token (docker `config.json`'s `identitytoken`/`registrytoken`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

// By hand so credentials never reach a log line.
impl std::fmt::Debug for RegistryAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryAccess")
            .field("host", &self.host)
            .field("plain_http", &self.plain_http)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// How hard a new layer is compressed (gzip). The level is part of the layer's bytes, so it is
/// one of the inputs that decide the image digest.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    /// gzip level 1: the fastest, the largest layers.
    #[default]
    Fast,
    /// gzip level 6, zlib's default (what docker and buildah use).
    Default,
    /// gzip level 9: the smallest layers, the slowest.
    Best,
}

impl Compression {
    pub fn gzip_level(self) -> u32 {
        match self {
            Compression::Fast => 1,
            Compression::Default => 6,
            Compression::Best => 9,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Compression::Fast => "fast",
            Compression::Default => "default",
            Compression::Best => "best",
        }
    }
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Preset {
    Binary,
    Jar,
    War,
    Tarball,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct B2iTask {
    /// The artifact, relative to the workspace (where the needed stages' artifacts are).
    pub artifact: String,
    pub preset: Preset,
    pub base: String,
    pub output: String,
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default)]
    pub cmd: Option<Vec<String>>,
    /// Where `binary`, `jar` and `tarball` artifacts go (default `/app`); the image's
    /// working directory.
    #[serde(default)]
    pub workdir: Option<String>,
    /// `war` only: where the `.war` goes (default `/usr/local/tomcat/webapps`).
    #[serde(default)]
    pub webapps_dir: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
    /// `8080/tcp`, `53/udp`.
    #[serde(default)]
    pub ports: Vec<String>,
    #[serde(default)]
    pub env: Vec<(String, String)>,
    #[serde(default)]
    pub labels: Vec<(String, String)>,
    /// Seconds since the epoch for file times and `created` (the commit time): the same
    /// input then gives the same digest.
    #[serde(default)]
    pub created_epoch: i64,
    /// The engine did not know the commit time: take it from the git checkout in the
    /// workspace when there is one (see [`super::source_date`]), else keep `created_epoch`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub created_from_checkout: bool,
    #[serde(default)]
    pub compression: Compression,
    /// What `history` says made the layer.
    #[serde(default)]
    pub created_by: Option<String>,
    #[serde(default)]
    pub registries: Vec<RegistryAccess>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct S2iTask {
    pub builder: String,
    pub output: String,
    /// The source sub-directory of the workspace (default: the whole workspace).
    #[serde(default)]
    pub context_dir: Option<String>,
    /// Build environment: for `assemble` and baked into the image (after `.s2i/environment`).
    #[serde(default)]
    pub env: Vec<(String, String)>,
    /// Overrides the builder's `io.openshift.s2i.scripts-url` label.
    #[serde(default)]
    pub scripts_url: Option<String>,
    /// Restore artifacts saved by `save-artifacts` from the previous image at `output`.
    #[serde(default)]
    pub incremental: bool,
    #[serde(default)]
    pub labels: Vec<(String, String)>,
    /// As [`B2iTask::created_epoch`].
    #[serde(default)]
    pub created_epoch: i64,
    /// As [`B2iTask::created_from_checkout`].
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub created_from_checkout: bool,
    #[serde(default)]
    pub compression: Compression,
    #[serde(default)]
    pub registries: Vec<RegistryAccess>,
    /// The builder's filesystem is already here (in Kubernetes: `/`, the runner runs inside
    /// the builder container): its layers are not pulled and `assemble` runs in place
    /// (chrooted only when the root is not `/` or the user must change). Default: unpack the
    /// builder into a scratch directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rootfs: Option<String>,
    /// Paths inside the root the snapshots leave out besides `/dev`, `/proc`, `/sys`,
    /// `/run/secrets` and the runner's workspace and scratch (e.g. where the runner binary was
    /// mounted).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
}
