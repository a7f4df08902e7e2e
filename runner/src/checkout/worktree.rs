//! The workspace's repository: a non-bare repository whose objects come from the mirror
//! (`objects/info/alternates`), with HEAD detached at the commit, so steps can run `git log`,
//! `git describe` or `git diff` as in a clone, without a second copy of the history.

use std::io::Write;
use std::path::{Path, PathBuf};

use git2::Repository;
use git2::build::CheckoutBuilder;

use super::mirror::{Fetched, Mirror, MirrorCache};
use super::{CheckoutError, parse_commit, short, url};
use crate::wire::Checkout;

/// What a checkout did.
#[derive(Clone, Debug)]
pub struct CheckedOut {
    pub commit: String,
    /// Files in the commit's tree (the index), submodules' not counted.
    pub files: usize,
    /// The fetches it took (none when the mirror had the commit).
    pub fetched: Vec<Fetched>,
    /// The mirror the objects come from.
    pub mirror: PathBuf,
    /// Submodules checked out, by path (recursively, `a/b` for b inside a).
    pub submodules: Vec<String>,
}

/// Fetches `spec.commit` into its mirror in `cache`, then checks it out into `workspace`
/// (files already there stay unless the commit has a file of the same name), and its
/// submodules when `spec.submodules`. `progress` gets a few short lines for the stage's log.
pub fn checkout(
    cache: &MirrorCache,
    spec: &Checkout,
    workspace: &Path,
    progress: &mut dyn FnMut(&str),
) -> Result<CheckedOut, CheckoutError> {
    let mirror = cache.fetch_with_progress(
        &spec.url,
        &spec.commit,
        spec.git_ref.as_deref(),
        spec.auth.as_ref(),
        spec.depth,
        progress,
    )?;
    if mirror.fetched.is_empty() {
        progress(&format!(
            "{} of {} is in the git cache already",
            short(&spec.commit),
            url::redact(&spec.url)
        ));
    }
    let repo = materialise(&mirror, &spec.commit, &spec.url, workspace)?;
    let files = repo.index().map(|i| i.len()).unwrap_or(0);
    progress(&format!(
        "checked out {} ({files} files)",
        short(&spec.commit)
    ));
    let mut done = CheckedOut {
        commit: spec.commit.clone(),
        files,
        fetched: mirror.fetched.clone(),
        mirror: mirror.path().to_path_buf(),
        submodules: Vec::new(),
    };
    if spec.submodules {
        done.submodules = check_out_submodules(cache, spec, &repo, workspace, progress)?;
    }
    Ok(done)
}

/// Makes `workspace` a repository borrowing `mirror`'s objects, at `commit`.
fn materialise(
    mirror: &Mirror,
    commit: &str,
    raw_url: &str,
    workspace: &Path,
) -> Result<Repository, CheckoutError> {
    let oid = parse_commit(commit)?;
    let fail = |message: String| CheckoutError::Workspace {
        path: workspace.display().to_string(),
        message,
    };
    let git_err = |e: git2::Error| fail(e.message().to_owned());
    std::fs::create_dir_all(workspace).map_err(|e| fail(e.to_string()))?;
    // A workspace that is a repository already (a retried attempt's leftovers, or inputs that
    // carried one) is reused; otherwise a fresh one, next to whatever files are there.
    let repo = if workspace.join(".git").exists() {
        Repository::open(workspace).map_err(git_err)?
    } else {
        Repository::init(workspace).map_err(git_err)?
    };
    let git_dir = repo.path().to_path_buf();
    borrow_objects(&git_dir, mirror.path()).map_err(|e| fail(e.to_string()))?;
    // A shallow mirror's commits have parents it lacks: the workspace must know where history
    // stops too, or `git log` fails on the missing parent.
    let shallow = mirror.path().join("shallow");
    if shallow.exists() {
        std::fs::copy(&shallow, git_dir.join("shallow")).map_err(|e| fail(e.to_string()))?;
    }
    // Reopened so libgit2 sees the objects the alternates file just added.
    drop(repo);
    let repo = Repository::open(workspace).map_err(git_err)?;
    {
        let target = repo.find_commit(oid).map_err(git_err)?;
        let mut options = CheckoutBuilder::new();
        // Overwrites files the commit has (artifacts of the same name lose), keeps the rest.
        options.force();
        repo.checkout_tree(target.as_object(), Some(&mut options))
            .map_err(git_err)?;
        repo.set_head_detached(oid).map_err(git_err)?;
    }
    // `origin` for steps that look at it; never with the credentials in it.
    let origin = url::without_credentials(raw_url);
    let set = match repo.find_remote("origin") {
        Ok(_) => repo.remote_set_url("origin", &origin),
        Err(_) => repo.remote("origin", &origin).map(|_| ()),
    };
    set.map_err(git_err)?;
    Ok(repo)
}

/// Adds the mirror's object directory to the repository's alternates (once).
fn borrow_objects(git_dir: &Path, mirror: &Path) -> std::io::Result<()> {
    let objects = std::fs::canonicalize(mirror.join("objects"))?;
    let info = git_dir.join("objects/info");
    std::fs::create_dir_all(&info)?;
    let alternates = info.join("alternates");
    let existing = std::fs::read_to_string(&alternates).unwrap_or_default();
    let line = objects.to_string_lossy().into_owned();
    if existing.lines().any(|l| l == line) {
        return Ok(());
    }
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&alternates)?;
    writeln!(file, "{line}")
}

/// Checks out every submodule of `repo` at the commit its superproject records, each through
/// its own mirror (so submodules are cached too), recursively.
fn check_out_submodules(
    cache: &MirrorCache,
    spec: &Checkout,
    repo: &Repository,
    workspace: &Path,
    progress: &mut dyn FnMut(&str),
) -> Result<Vec<String>, CheckoutError> {
    let mut done = Vec::new();
    let submodules = repo.submodules().map_err(|e| CheckoutError::Workspace {
        path: workspace.display().to_string(),
        message: format!("cannot read .gitmodules: {}", e.message()),
    })?;
    for mut sub in submodules {
        let path = sub.path().to_string_lossy().into_owned();
        let wrap = |source: CheckoutError| CheckoutError::Submodule {
            path: path.clone(),
            source: Box::new(source),
        };
        let Some(commit) = sub.index_id().or_else(|| sub.head_id()) else {
            continue;
        };
        let Some(raw) = sub.url().map(str::to_owned) else {
            return Err(wrap(CheckoutError::Workspace {
                path: path.clone(),
                message: "no URL in .gitmodules".into(),
            }));
        };
        let sub_url = url::join_submodule(&url::without_credentials(&spec.url), &raw);
        // Registers the submodule in .git/config, as `git submodule init` would, so
        // `git submodule status` in a step shows it. Only for display, so a failure is ignored.
        let _ = sub.init(false);
        // The parent's credentials go only to the same server.
        let auth = spec.auth.clone().filter(|_| {
            url::origin(&sub_url).is_some() && url::origin(&sub_url) == url::origin(&spec.url)
        });
        let sub_spec = Checkout {
            url: sub_url,
            commit: commit.to_string(),
            git_ref: None,
            depth: spec.depth,
            submodules: true,
            auth,
        };
        let checked = checkout(cache, &sub_spec, &workspace.join(&path), progress).map_err(wrap)?;
        done.push(path.clone());
        done.extend(checked.submodules.iter().map(|s| format!("{path}/{s}")));
    }
    Ok(done)
}
