//! Source checkout: puts one commit of a repository into the stage's workspace before the first
//! step, and lets the engine read pipeline files of a commit without a working tree.
//!
//! Everything goes through a cache of bare mirrors on the machine ([`MirrorCache`], one per
//! clone URL): a stage fetches only what the mirror lacks, and the workspace's repository borrows
//! the mirror's objects (`objects/info/alternates`) instead of copying them.
//!
//! Transports are libgit2's own: `https://` (through an OpenSSL built into the binary, so the
//! runner needs no system OpenSSL; certificates from the system store or `SSL_CERT_FILE`),
//! `http://`, `git://` and local paths. SSH is not supported: such URLs fail with
//! [`CheckoutError::UnsupportedUrl`] before any network traffic.

mod mirror;
mod remote;
pub mod url;
mod worktree;

pub use mirror::{CommitInfo, Fetched, Mirror, MirrorCache, subject_line};
pub use worktree::{CheckedOut, checkout};

/// What went wrong, in words a pipeline author can act on. URLs in messages never carry a
/// password (see [`url::redact`]).
#[derive(Debug, thiserror::Error)]
pub enum CheckoutError {
    #[error("{url}: {why}")]
    UnsupportedUrl { url: String, why: String },
    #[error("{0:?} is not a full commit id (40 hexadecimal digits)")]
    InvalidCommit(String),
    #[error("commit {commit} is not in {url} (fetched {fetched})")]
    CommitNotFound {
        commit: String,
        url: String,
        fetched: String,
    },
    #[error("commit {commit} is not in the git cache's mirror of {url}; fetch it first")]
    NotInMirror { commit: String, url: String },
    #[error("{url} asks for credentials, and the checkout has none")]
    AuthRequired { url: String },
    #[error("{url} refused the credentials of user {username:?}: check the token and its access")]
    AuthRejected { url: String, username: String },
    #[error("cannot {action} {url}: {message}")]
    Remote {
        action: &'static str,
        url: String,
        message: String,
    },
    #[error("git cache {path}: {message}")]
    Cache { path: String, message: String },
    #[error("cannot check out into {path}: {message}")]
    Workspace { path: String, message: String },
    #[error("submodule {path}: {source}")]
    Submodule {
        path: String,
        #[source]
        source: Box<CheckoutError>,
    },
}

/// A commit id from the spec, which must be a full one: an abbreviation is ambiguous and cannot
/// be fetched by id.
fn parse_commit(commit: &str) -> Result<git2::Oid, CheckoutError> {
    if commit.len() != 40 || !commit.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(CheckoutError::InvalidCommit(commit.to_owned()));
    }
    git2::Oid::from_str(commit).map_err(|_| CheckoutError::InvalidCommit(commit.to_owned()))
}

/// The first seven digits, as git prints commits.
fn short(commit: &str) -> &str {
    commit.get(..7).unwrap_or(commit)
}
