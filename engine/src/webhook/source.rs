//! The engine's side of a repository: a mirror in the data directory from which pipeline
//! files are read at an event's commit (no working tree), changed files computed, and branch
//! heads resolved. Git work is blocking (libgit2), so it runs on the blocking pool.

use std::path::PathBuf;

use gantry_runner::checkout::{CheckoutError, CommitInfo, Mirror, MirrorCache};

use gantry_runner::wire::GitAuth;

use super::cache::CachedFile;
use crate::engine::Engine;
use crate::store::{self, StoreError, repos::RepoRow};

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(transparent)]
    Git(#[from] CheckoutError),
    #[error("reading the repository's token secret: {0}")]
    Token(String),
    #[error(
        "repository `{repository}` names token secret `{secret}`, which does not exist in project `{project}`"
    )]
    NoTokenSecret {
        repository: String,
        secret: String,
        project: String,
    },
    #[error("branch `{branch}` does not exist in {url}")]
    NoBranch { branch: String, url: String },
    #[error("git work stopped unexpectedly: {0}")]
    Join(String),
    #[error("pipeline file pattern `{pattern}`: {why}")]
    Pattern { pattern: String, why: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A fetched mirror, shared by the steps of one delivery's processing (libgit2 handles are
/// not `Sync`, so one user at a time).
pub type SharedMirror = std::sync::Arc<std::sync::Mutex<Mirror>>;

fn lock(mirror: &SharedMirror) -> Result<std::sync::MutexGuard<'_, Mirror>, CheckoutError> {
    mirror.lock().map_err(|_| CheckoutError::Cache {
        path: String::new(),
        message: "a git task panicked while holding the mirror".into(),
    })
}

/// Where the engine keeps its repository mirrors.
pub fn cache_root(engine: &Engine) -> PathBuf {
    engine.config.data_dir.join("git")
}

/// The user name providers expect beside a token in an https clone.
fn token_user(provider: &str) -> &'static str {
    match provider {
        "github" => "x-access-token",
        "gitlab" => "oauth2",
        _ => "gantry",
    }
}

/// The repository's access token (a project secret named by the registration), if it has one.
pub async fn token(engine: &Engine, repo: &RepoRow) -> Result<Option<String>, SourceError> {
    let Some(name) = &repo.token_secret else {
        return Ok(None);
    };
    let stored = store::secrets::encrypted(
        &engine.store.pool,
        repo.project_id,
        std::slice::from_ref(name),
    )
    .await?;
    let Some((_, nonce, cipher)) = stored.first() else {
        return Err(SourceError::NoTokenSecret {
            repository: repo.full_name.clone(),
            secret: name.clone(),
            project: repo.project.clone(),
        });
    };
    let value = engine
        .secrets
        .decrypt(nonce, cipher)
        .map_err(|e| SourceError::Token(e.to_string()))?;
    Ok(Some(String::from_utf8_lossy(&value).into_owned()))
}

/// Credentials for cloning over http(s), from the repository's token.
pub async fn clone_auth(engine: &Engine, repo: &RepoRow) -> Result<Option<GitAuth>, SourceError> {
    Ok(token(engine, repo).await?.map(|password| GitAuth {
        username: token_user(&repo.provider).to_owned(),
        password,
    }))
}

/// Runs blocking git work off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, CheckoutError> + Send + 'static,
) -> Result<T, SourceError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| SourceError::Join(e.to_string()))?
        .map_err(SourceError::from)
}

/// Fetches `commit` (and `also`, e.g. the commit before a push, when given) into the mirror.
pub async fn fetch(
    engine: &Engine,
    url: &str,
    commit: &str,
    git_ref: Option<&str>,
    auth: Option<GitAuth>,
) -> Result<SharedMirror, SourceError> {
    let cache = MirrorCache::new(cache_root(engine));
    let (url, commit, git_ref) = (
        url.to_owned(),
        commit.to_owned(),
        git_ref.map(str::to_owned),
    );
    blocking(move || {
        cache
            .fetch(&url, &commit, git_ref.as_deref(), auth.as_ref(), 1)
            .map(|m| std::sync::Arc::new(std::sync::Mutex::new(m)))
    })
    .await
}

/// The commit `object` names in the mirror: itself, or an annotated tag's commit.
pub async fn peel(mirror: SharedMirror, object: &str) -> Result<String, SourceError> {
    let object = object.to_owned();
    blocking(move || lock(&mirror)?.peel(&object)).await
}

async fn read_commit(mirror: SharedMirror, commit: &str) -> Result<CommitInfo, SourceError> {
    let commit = commit.to_owned();
    blocking(move || lock(&mirror)?.describe(&commit)).await
}

/// What `commit` of `repo` says of itself (subject, author, time), from the cache or the
/// mirror (fetching the commit when the mirror does not have it yet).
pub async fn describe(
    engine: &Engine,
    repo: &RepoRow,
    commit: &str,
    git_ref: Option<&str>,
) -> Result<CommitInfo, SourceError> {
    if let Some(info) = engine.webhook_cache.commit(repo.id.0, commit) {
        return Ok(info);
    }
    let auth = clone_auth(engine, repo).await?;
    let mirror = fetch(engine, &repo.clone_url, commit, git_ref, auth).await?;
    let info = read_commit(mirror, commit).await?;
    engine
        .webhook_cache
        .keep_commit(repo.id.0, commit, info.clone());
    Ok(info)
}

/// A pipeline file found at a commit: its path and its text (or why it is not text).
pub struct PipelineFile {
    pub path: String,
    pub text: Result<String, String>,
}

/// Reads the pipeline files at `commit`: each pattern is a path (`.gantry.yaml`) or a
/// directory and a file-name glob (`.gantry/*.yaml`). Sorted by path, each file once.
pub async fn pipeline_files(
    mirror: SharedMirror,
    commit: &str,
    patterns: &[String],
) -> Result<Vec<PipelineFile>, SourceError> {
    // Each pattern: a plain path, or a directory and a compiled file-name glob.
    let mut wanted: Vec<(String, Option<globset::GlobMatcher>)> = Vec::new();
    for pattern in patterns {
        match pattern.rsplit_once('/') {
            Some((dir, name)) if name.contains(['*', '?', '[']) => {
                let glob = globset::Glob::new(name).map_err(|e| SourceError::Pattern {
                    pattern: pattern.clone(),
                    why: e.to_string(),
                })?;
                wanted.push((dir.to_owned(), Some(glob.compile_matcher())));
            }
            _ => wanted.push((pattern.clone(), None)),
        }
    }
    let commit = commit.to_owned();
    blocking(move || {
        let mirror = lock(&mirror)?;
        let mut found: Vec<(String, Vec<u8>)> = Vec::new();
        // A symbolic link is not followed (it could point anywhere, outside the repository
        // included), but it is not ignored in silence either: it becomes a file with a problem.
        let mut links: Vec<String> = Vec::new();
        for (path, glob) in &wanted {
            match glob {
                Some(glob) => {
                    for (file, bytes) in mirror.list_dir(&commit, path)? {
                        if glob.is_match(&file) {
                            found.push((format!("{path}/{file}"), bytes));
                        }
                    }
                    for link in mirror.symlinks_in(&commit, path)? {
                        if glob.is_match(&link) {
                            links.push(format!("{path}/{link}"));
                        }
                    }
                }
                None => {
                    if let Some(bytes) = mirror.read_file(&commit, path)? {
                        found.push((path.clone(), bytes));
                    } else if mirror.is_symlink(&commit, path)? {
                        links.push(path.clone());
                    }
                }
            }
        }
        let mut files: Vec<PipelineFile> = found
            .into_iter()
            .map(|(path, bytes)| PipelineFile {
                text: String::from_utf8(bytes)
                    .map_err(|_| format!("{path}: the file is not UTF-8 text")),
                path,
            })
            .chain(links.into_iter().map(|path| PipelineFile {
                text: Err(format!(
                    "{path} is a symbolic link: pipeline files must be regular files (a link is not followed, as it could point outside the repository)"
                )),
                path,
            }))
            .collect();
        files.sort_by(|a, b| a.path.cmp(&b.path));
        files.dedup_by(|a, b| a.path == b.path);
        Ok(files)
    })
    .await
}

/// Files changed between two commits (both fetched into the mirror first).
pub async fn changed_files(
    mirror: SharedMirror,
    from: Option<String>,
    to: &str,
) -> Result<Vec<String>, SourceError> {
    let to = to.to_owned();
    blocking(move || lock(&mirror)?.changed_files(from.as_deref(), &to)).await
}

/// The commit a branch of the repository points at now (for scheduled and manual runs).
pub async fn branch_head(
    engine: &Engine,
    repo: &RepoRow,
    branch: &str,
) -> Result<Option<String>, SourceError> {
    let auth = clone_auth(engine, repo).await?;
    let (url, refname) = (repo.clone_url.clone(), format!("refs/heads/{branch}"));
    blocking(move || MirrorCache::ls_remote(&url, auth.as_ref(), &refname)).await
}

/// The pipeline files of `repo` at `commit`, each parsed (or the problems that make it
/// invalid). A commit never changes, so they are read from git once and then kept in the cache.
pub async fn files_at(
    engine: &Engine,
    repo: &RepoRow,
    commit: &str,
    git_ref: Option<&str>,
) -> Result<std::sync::Arc<Vec<CachedFile>>, SourceError> {
    if let Some(files) = engine
        .webhook_cache
        .files(repo.id.0, commit, &repo.pipeline_files)
    {
        return Ok(files);
    }
    // The token is read only when git is reached: a cached commit needs neither.
    let auth = clone_auth(engine, repo).await?;
    let mirror = fetch(engine, &repo.clone_url, commit, git_ref, auth).await?;
    // The commit's message and author come along while the mirror is open (run lists show
    // them); a run of this commit then needs no git work for them.
    if let Ok(info) = read_commit(std::sync::Arc::clone(&mirror), commit).await {
        engine.webhook_cache.keep_commit(repo.id.0, commit, info);
    }
    let found = pipeline_files(mirror, commit, &repo.pipeline_files).await?;
    let files: std::sync::Arc<Vec<CachedFile>> = std::sync::Arc::new(
        found
            .into_iter()
            .map(|file| {
                let text = file.text.clone().unwrap_or_default();
                let plan = file.text.and_then(|text| {
                    crate::pipeline::load(&file.path, &text)
                        .map(std::sync::Arc::new)
                        .map_err(|report| report.to_string())
                });
                CachedFile {
                    path: file.path,
                    text,
                    plan,
                }
            })
            .collect(),
    );
    engine.webhook_cache.keep_files(
        repo.id.0,
        commit,
        &repo.pipeline_files,
        std::sync::Arc::clone(&files),
    );
    Ok(files)
}
