//! The machine's cache of bare mirrors, one per clone URL, so a repository's history crosses the
//! network once per machine rather than once per stage, and the engine can read a commit's files
//! without a working tree.
//!
//! Fetches into one mirror are serialised with an exclusive `flock` on a lock file beside it:
//! runners of one machine and the engine's tasks share the cache, and two libgit2 fetches
//! writing the same refs at once would lose one's updates. Reads take no lock: git objects are
//! immutable once written, and a pack becomes visible only when complete.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Instant;

use git2::{AutotagOption, FetchOptions, ObjectType, Oid, Repository};
use nix::fcntl::{Flock, FlockArg};
use sha2::{Digest, Sha256};

use super::remote::{self, AuthTrace};
use super::{CheckoutError, parse_commit, short, url};
use crate::wire::GitAuth;

/// libgit2's `GIT_FETCH_DEPTH_UNSHALLOW`: fetch the history a shallow mirror lacks.
const DEPTH_UNSHALLOW: i32 = i32::MAX;

/// A directory of bare mirrors.
#[derive(Clone, Debug)]
pub struct MirrorCache {
    root: PathBuf,
}

/// One fetch that brought objects into a mirror.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fetched {
    /// What was asked for (`<sha>`, `refs/heads/main`, `refs/heads/*, refs/tags/*`).
    pub what: String,
    pub objects: usize,
    pub bytes: usize,
    pub millis: u64,
}

/// A bare mirror that holds (at least) the commit it was fetched for.
pub struct Mirror {
    repo: Repository,
    path: PathBuf,
    /// The clone URL, password masked, for messages.
    url: String,
    /// The fetches this call made, in order; empty when the commit was already there.
    pub fetched: Vec<Fetched>,
}

impl MirrorCache {
    pub fn new(root: impl Into<PathBuf>) -> MirrorCache {
        MirrorCache { root: root.into() }
    }

    /// `GANTRY_GIT_CACHE`, else `$XDG_CACHE_HOME/gantry/git`, else `$HOME/.cache/gantry/git`,
    /// else `/tmp/gantry-git-cache` (a container without a home directory).
    pub fn default_root() -> PathBuf {
        root_from(|name| std::env::var_os(name))
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the mirror of `url` lives: named by the SHA-256 of the URL without credentials, so
    /// a new token still finds the same mirror and no secret ends up in a file name.
    pub fn mirror_path(&self, url: &str) -> PathBuf {
        self.root.join(format!("{}.git", name_of(url)))
    }

    /// The mirror of `url` as it is, without fetching (`None` when nothing was fetched yet).
    pub fn open(&self, url: &str) -> Result<Option<Mirror>, CheckoutError> {
        let path = self.mirror_path(url);
        if !path.exists() {
            return Ok(None);
        }
        let repo = Repository::open_bare(&path).map_err(|e| cache_error(&path, &e))?;
        Ok(Some(Mirror::new(repo, path, url)))
    }

    /// Makes sure the mirror of `url` has `commit`: nothing is fetched when it does; otherwise
    /// the commit by id (`depth` commits deep, 0 = all), then, for servers that refuse ids they
    /// do not advertise (git daemon without `uploadpack.allowReachableSHA1InWant`), `git_ref`
    /// in full, then every branch and tag.
    pub fn fetch(
        &self,
        url: &str,
        commit: &str,
        git_ref: Option<&str>,
        auth: Option<&GitAuth>,
        depth: u32,
    ) -> Result<Mirror, CheckoutError> {
        self.fetch_with_progress(url, commit, git_ref, auth, depth, &mut |_| {})
    }

    /// [`MirrorCache::fetch`], telling `progress` what it fetches.
    pub fn fetch_with_progress(
        &self,
        url: &str,
        commit: &str,
        git_ref: Option<&str>,
        auth: Option<&GitAuth>,
        depth: u32,
        progress: &mut dyn FnMut(&str),
    ) -> Result<Mirror, CheckoutError> {
        remote::check_url(url)?;
        let oid = parse_commit(commit)?;
        let path = self.mirror_path(url);
        // The common case of a commit fetched before needs no lock: objects are never removed.
        if let Ok(repo) = Repository::open_bare(&path)
            && has_commit(&repo, oid)
        {
            return Ok(Mirror::new(repo, path, url));
        }
        std::fs::create_dir_all(&self.root).map_err(|e| cache_io(&self.root, &e))?;
        let _lock = lock(&path.with_extension("lock"))?;
        // Opened only now: whoever held the lock may have created the mirror or fetched the
        // commit meanwhile.
        let repo = open_or_init(&path, url)?;
        let mut mirror = Mirror::new(repo, path, url);
        if has_commit(&mirror.repo, oid) {
            return Ok(mirror);
        }
        let shown = url::redact(url);
        progress(&format!("fetching {} from {shown}", short(commit)));

        let depth = i32::try_from(depth).unwrap_or(DEPTH_UNSHALLOW - 1);
        // libgit2 asks for an id only from servers that advertise fetching by id, which plain
        // git daemon and git-http-backend do not; but the commit is usually a branch tip (a
        // push event's), and a tip can be fetched by its ref name, as shallow as asked.
        let heads = list_remote(url, auth)?;
        let tip = heads
            .iter()
            .find(|(name, id)| *id == oid && name.starts_with("refs/"))
            .map(|(name, _)| name.trim_end_matches("^{}").to_owned());
        let first = match &tip {
            Some(name) => (format!("+{name}:{name}"), name.clone()),
            None => (format!("+{commit}:refs/gantry/{commit}"), commit.to_owned()),
        };
        // Any failure here (a server that refuses ids) leads to the fallbacks below; a real
        // network or credential problem shows up again there and is reported then.
        match mirror.fetch_refspecs(url, auth, &[first.0.as_str()], depth, &first.1) {
            Ok(()) if has_commit(&mirror.repo, oid) => return mirror.keep(oid, commit, progress),
            Ok(()) => {}
            Err(
                err @ (CheckoutError::AuthRequired { .. } | CheckoutError::AuthRejected { .. }),
            ) => {
                return Err(err);
            }
            Err(_) => progress(&format!(
                "{shown} does not hand out {} by id; fetching refs instead",
                short(commit)
            )),
        }
        // The commit may lie below the mirror's shallow boundary: fetch the rest of history.
        let full = if mirror.repo.is_shallow() {
            DEPTH_UNSHALLOW
        } else {
            0
        };
        let mut tried = Vec::new();
        if let Some(git_ref) = git_ref {
            let git_ref = full_ref(git_ref);
            let spec = format!("+{git_ref}:{git_ref}");
            mirror.fetch_refspecs(url, auth, &[spec.as_str()], full, &git_ref)?;
            tried.push(git_ref);
        }
        if !has_commit(&mirror.repo, oid) {
            let all = ["+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"];
            let full = if mirror.repo.is_shallow() {
                DEPTH_UNSHALLOW
            } else {
                0
            };
            mirror.fetch_refspecs(url, auth, &all, full, "refs/heads/*, refs/tags/*")?;
            tried.push("refs/heads/*, refs/tags/*".to_owned());
        }
        if !has_commit(&mirror.repo, oid) {
            return Err(CheckoutError::CommitNotFound {
                commit: commit.to_owned(),
                url: shown,
                fetched: tried.join(", "),
            });
        }
        mirror.keep(oid, commit, progress)
    }

    /// The commit `refname` (`refs/heads/main`, or a short `main`) points at on the remote, or
    /// `None` when the remote has no such ref; tags are peeled to their commit.
    pub fn ls_remote(
        url: &str,
        auth: Option<&GitAuth>,
        refname: &str,
    ) -> Result<Option<String>, CheckoutError> {
        remote::check_url(url)?;
        let heads = list_remote(url, auth)?;
        let candidates = if refname.starts_with("refs/") {
            vec![refname.to_owned()]
        } else {
            vec![
                refname.to_owned(),
                format!("refs/heads/{refname}"),
                format!("refs/tags/{refname}"),
            ]
        };
        for name in candidates {
            let peeled = format!("{name}^{{}}");
            let found = heads
                .iter()
                .find(|(n, _)| *n == peeled)
                .or_else(|| heads.iter().find(|(n, _)| *n == name));
            if let Some((_, id)) = found {
                return Ok(Some(id.to_string()));
            }
        }
        Ok(None)
    }
}

impl Mirror {
    fn new(repo: Repository, path: PathBuf, url: &str) -> Mirror {
        Mirror {
            repo,
            path,
            url: url::redact(url),
            fetched: Vec::new(),
        }
    }

    /// The bare repository's directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn is_shallow(&self) -> bool {
        self.repo.is_shallow()
    }

    pub fn has_commit(&self, commit: &str) -> bool {
        parse_commit(commit).is_ok_and(|oid| has_commit(&self.repo, oid))
    }

    /// The commit `object` names: itself for a commit, the tagged commit for an annotated tag
    /// object (peeled through tags of tags). An error when the mirror does not hold it.
    pub fn peel(&self, object: &str) -> Result<String, CheckoutError> {
        let oid = parse_commit(object)?;
        commit_of(&self.repo, oid)
            .map(|commit| commit.to_string())
            .ok_or_else(|| CheckoutError::NotInMirror {
                commit: object.to_owned(),
                url: self.url.clone(),
            })
    }

    /// Who wrote `commit`, when it was committed and its subject line: what run lists show
    /// beside the short id (GitLab's and Woodpecker's lists do the same).
    pub fn describe(&self, commit: &str) -> Result<CommitInfo, CheckoutError> {
        let found = self.find_commit(commit)?;
        let author = found.author();
        Ok(CommitInfo {
            summary: subject_line(&String::from_utf8_lossy(found.message_bytes())),
            author: String::from_utf8_lossy(author.name_bytes())
                .trim()
                .to_owned(),
            time: found.committer().when().seconds(),
        })
    }

    /// The contents of the file at `path` (`/`-separated, from the repository root) in
    /// `commit`, or `None` when there is no file there (a directory is not a file).
    pub fn read_file(&self, commit: &str, path: &str) -> Result<Option<Vec<u8>>, CheckoutError> {
        let tree = self.tree(commit)?;
        let entry = match tree.get_path(Path::new(path.trim_start_matches('/'))) {
            Ok(entry) => entry,
            Err(e) if e.code() == git2::ErrorCode::NotFound => return Ok(None),
            Err(e) => return Err(cache_error(&self.path, &e)),
        };
        if entry.kind() != Some(ObjectType::Blob) || !is_regular(entry.filemode()) {
            return Ok(None);
        }
        let blob = self
            .repo
            .find_blob(entry.id())
            .map_err(|e| cache_error(&self.path, &e))?;
        Ok(Some(blob.content().to_vec()))
    }

    /// Whether `path` in `commit` is a symbolic link (which [`Mirror::read_file`] does not
    /// follow: a link could point anywhere, outside the repository included).
    pub fn is_symlink(&self, commit: &str, path: &str) -> Result<bool, CheckoutError> {
        let tree = self.tree(commit)?;
        match tree.get_path(Path::new(path.trim_start_matches('/'))) {
            Ok(entry) => Ok(entry.filemode() == SYMLINK_MODE),
            Err(e) if e.code() == git2::ErrorCode::NotFound => Ok(false),
            Err(e) => Err(cache_error(&self.path, &e)),
        }
    }

    /// The names of the symbolic links directly in `dir` of `commit`, sorted.
    pub fn symlinks_in(&self, commit: &str, dir: &str) -> Result<Vec<String>, CheckoutError> {
        let root = self.tree(commit)?;
        let dir = dir.trim_matches('/');
        let tree = if dir.is_empty() || dir == "." {
            root
        } else {
            let entry = match root.get_path(Path::new(dir)) {
                Ok(entry) => entry,
                Err(e) if e.code() == git2::ErrorCode::NotFound => return Ok(Vec::new()),
                Err(e) => return Err(cache_error(&self.path, &e)),
            };
            match self.repo.find_tree(entry.id()) {
                Ok(tree) => tree,
                Err(_) => return Ok(Vec::new()),
            }
        };
        let mut links: Vec<String> = tree
            .iter()
            .filter(|e| e.filemode() == SYMLINK_MODE)
            .filter_map(|e| e.name().map(str::to_owned))
            .collect();
        links.sort();
        Ok(links)
    }

    /// The regular files directly in `dir` (`""` for the root) of `commit`, with their
    /// contents, sorted by name; empty when there is no such directory. Symlinks and
    /// subdirectories are left out.
    pub fn list_dir(
        &self,
        commit: &str,
        dir: &str,
    ) -> Result<Vec<(String, Vec<u8>)>, CheckoutError> {
        let root = self.tree(commit)?;
        let dir = dir.trim_matches('/');
        let tree = if dir.is_empty() || dir == "." {
            root
        } else {
            let entry = match root.get_path(Path::new(dir)) {
                Ok(entry) => entry,
                Err(e) if e.code() == git2::ErrorCode::NotFound => return Ok(Vec::new()),
                Err(e) => return Err(cache_error(&self.path, &e)),
            };
            match self.repo.find_tree(entry.id()) {
                Ok(tree) => tree,
                // A file where a directory was asked for: no such directory.
                Err(_) => return Ok(Vec::new()),
            }
        };
        let mut files = Vec::new();
        for entry in tree.iter() {
            if entry.kind() != Some(ObjectType::Blob) || !is_regular(entry.filemode()) {
                continue;
            }
            let Some(name) = entry.name() else { continue };
            let blob = self
                .repo
                .find_blob(entry.id())
                .map_err(|e| cache_error(&self.path, &e))?;
            files.push((name.to_owned(), blob.content().to_vec()));
        }
        files.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(files)
    }

    /// The paths of files added, changed or removed between `from` and `to` (both paths of a
    /// rename), sorted. With no `from`, or git's all-zero id for a new branch, every file of
    /// `to` counts as changed.
    pub fn changed_files(
        &self,
        from: Option<&str>,
        to: &str,
    ) -> Result<Vec<String>, CheckoutError> {
        let to_tree = self.tree(to)?;
        let from_tree = match from.filter(|f| !f.bytes().all(|b| b == b'0')) {
            Some(from) => Some(self.tree(from)?),
            None => None,
        };
        let diff = self
            .repo
            .diff_tree_to_tree(from_tree.as_ref(), Some(&to_tree), None)
            .map_err(|e| cache_error(&self.path, &e))?;
        let mut paths: Vec<String> = diff
            .deltas()
            .flat_map(|d| [d.old_file().path(), d.new_file().path()])
            .flatten()
            .map(|p| p.to_string_lossy().into_owned())
            .collect();
        paths.sort();
        paths.dedup();
        Ok(paths)
    }

    /// The commit a ref of the mirror points at (`refs/heads/main` or a short `main`), or
    /// `None` when the mirror has no such ref.
    pub fn resolve(&self, refname: &str) -> Result<Option<String>, CheckoutError> {
        let found = self
            .repo
            .find_reference(refname)
            .or_else(|_| self.repo.resolve_reference_from_short_name(refname));
        match found {
            Ok(reference) => reference
                .peel_to_commit()
                .map(|c| Some(c.id().to_string()))
                .map_err(|e| cache_error(&self.path, &e)),
            Err(e) if e.code() == git2::ErrorCode::NotFound => Ok(None),
            Err(e) if e.code() == git2::ErrorCode::InvalidSpec => Ok(None),
            Err(e) => Err(cache_error(&self.path, &e)),
        }
    }

    fn tree(&self, commit: &str) -> Result<git2::Tree<'_>, CheckoutError> {
        self.find_commit(commit)?
            .tree()
            .map_err(|e| cache_error(&self.path, &e))
    }

    /// The commit `commit` names, or that it is not in this mirror.
    fn find_commit(&self, commit: &str) -> Result<git2::Commit<'_>, CheckoutError> {
        let oid = parse_commit(commit)?;
        self.repo
            .find_commit(oid)
            .map_err(|_| CheckoutError::NotInMirror {
                commit: commit.to_owned(),
                url: self.url.clone(),
            })
    }

    /// Fetches `refspecs` from `url`, recording what came.
    fn fetch_refspecs(
        &mut self,
        url: &str,
        auth: Option<&GitAuth>,
        refspecs: &[&str],
        depth: i32,
        what: &str,
    ) -> Result<(), CheckoutError> {
        let started = Instant::now();
        let trace = AuthTrace::default();
        let fail = |e: &git2::Error| remote::error("fetch from", url, auth, &trace, e);
        let mut remote = self.repo.remote_anonymous(url).map_err(|e| fail(&e))?;
        let mut options = FetchOptions::new();
        options
            .remote_callbacks(remote::callbacks(auth, &trace))
            .download_tags(AutotagOption::None)
            .depth(depth);
        remote
            .fetch(refspecs, Some(&mut options), Some("gantry fetch"))
            .map_err(|e| fail(&e))?;
        let stats = remote.stats();
        self.fetched.push(Fetched {
            what: what.to_owned(),
            objects: stats.received_objects(),
            bytes: stats.received_bytes(),
            millis: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        });
        Ok(())
    }

    /// Points `refs/gantry/<commit>` at the fetched commit, so it stays reachable (and is
    /// named as common history in later fetches) after its branch moves on, and reports the
    /// fetches.
    fn keep(
        self,
        oid: Oid,
        commit: &str,
        progress: &mut dyn FnMut(&str),
    ) -> Result<Mirror, CheckoutError> {
        self.repo
            .reference(
                &format!("refs/gantry/{commit}"),
                oid,
                true,
                "gantry checkout",
            )
            .map_err(|e| cache_error(&self.path, &e))?;
        for f in &self.fetched {
            // libgit2 counts bytes over HTTP only; a size of 0 would mislead.
            let size = if f.bytes > 0 {
                format!(" ({} KiB)", f.bytes.div_ceil(1024))
            } else {
                String::new()
            };
            progress(&format!(
                "fetched {} objects{size} in {} ms",
                f.objects, f.millis
            ));
        }
        Ok(self)
    }
}

/// [`MirrorCache::default_root`] with the environment as a function, so it can be tested.
fn root_from(env: impl Fn(&str) -> Option<std::ffi::OsString>) -> PathBuf {
    let var = |name: &str| env(name).filter(|v| !v.is_empty());
    if let Some(dir) = var("GANTRY_GIT_CACHE") {
        return PathBuf::from(dir);
    }
    if let Some(dir) = var("XDG_CACHE_HOME") {
        return PathBuf::from(dir).join("gantry/git");
    }
    if let Some(dir) = var("HOME") {
        return PathBuf::from(dir).join(".cache/gantry/git");
    }
    PathBuf::from("/tmp/gantry-git-cache")
}

/// The refs the remote advertises, with their ids (`refs/tags/x^{}` entries peel tags).
fn list_remote(url: &str, auth: Option<&GitAuth>) -> Result<Vec<(String, Oid)>, CheckoutError> {
    let trace = AuthTrace::default();
    let fail = |e: &git2::Error| remote::error("list the refs of", url, auth, &trace, e);
    let mut remote = git2::Remote::create_detached(url).map_err(|e| fail(&e))?;
    let connection = remote
        .connect_auth(
            git2::Direction::Fetch,
            Some(remote::callbacks(auth, &trace)),
            None,
        )
        .map_err(|e| fail(&e))?;
    let heads = connection.list().map_err(|e| fail(&e))?;
    Ok(heads
        .iter()
        .map(|h| (h.name().to_owned(), h.oid()))
        .collect())
}

fn name_of(url: &str) -> String {
    hex::encode(Sha256::digest(url::without_credentials(url).as_bytes()))
}

/// Whether the mirror holds `oid` as a commit, or as an annotated tag whose commit it also
/// holds (a tag push names the tag object; what is built is its commit).
fn has_commit(repo: &Repository, oid: Oid) -> bool {
    commit_of(repo, oid).is_some()
}

/// What a run list says of a commit ([`Mirror::describe`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CommitInfo {
    /// The message's first line, at most [`SUBJECT_MAX`] characters.
    pub summary: String,
    /// The author's name.
    pub author: String,
    /// The committer time, seconds since the epoch (what images are dated with).
    pub time: i64,
}

/// Longest subject kept: a list row, not the whole message (some messages are one long line).
pub const SUBJECT_MAX: usize = 200;

/// The first non-empty line of a commit message, trimmed and cut at [`SUBJECT_MAX`] characters
/// (with an ellipsis when cut).
pub fn subject_line(message: &str) -> String {
    let line = message
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or_default();
    if line.chars().count() <= SUBJECT_MAX {
        return line.to_owned();
    }
    let mut cut: String = line.chars().take(SUBJECT_MAX - 1).collect();
    cut.push('…');
    cut
}

/// The commit `oid` is, or that the annotated tag `oid` (or a chain of them) points at.
fn commit_of(repo: &Repository, oid: Oid) -> Option<Oid> {
    let object = repo.find_object(oid, None).ok()?;
    object.peel_to_commit().ok().map(|commit| commit.id())
}

/// The mode git gives a symbolic link.
const SYMLINK_MODE: i32 = 0o120000;

/// Blob modes git uses for files: `100644` and `100755` (not symlinks, `120000`).
fn is_regular(mode: i32) -> bool {
    mode == 0o100644 || mode == 0o100755
}

fn full_ref(git_ref: &str) -> String {
    if git_ref.starts_with("refs/") {
        git_ref.to_owned()
    } else {
        format!("refs/heads/{git_ref}")
    }
}

fn open_or_init(path: &Path, url: &str) -> Result<Repository, CheckoutError> {
    if let Ok(repo) = Repository::open_bare(path) {
        return Ok(repo);
    }
    let repo = Repository::init_bare(path).map_err(|e| cache_error(path, &e))?;
    // For whoever looks into the cache directory: which repository this is.
    if let Ok(mut config) = repo.config() {
        let _ = config.set_str("gantry.url", &url::without_credentials(url));
    }
    Ok(repo)
}

/// Holds an exclusive lock on `path` (created if needed) until dropped; waits for it.
fn lock(path: &Path) -> Result<Flock<File>, CheckoutError> {
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| cache_io(path, &e))?;
    Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, errno)| CheckoutError::Cache {
        path: path.display().to_string(),
        message: format!("cannot lock: {errno}"),
    })
}

fn cache_error(path: &Path, err: &git2::Error) -> CheckoutError {
    CheckoutError::Cache {
        path: path.display().to_string(),
        message: err.message().to_owned(),
    }
}

fn cache_io(path: &Path, err: &std::io::Error) -> CheckoutError {
    CheckoutError::Cache {
        path: path.display().to_string(),
        message: err.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirror_names_ignore_credentials() {
        let cache = MirrorCache::new("/c");
        assert_eq!(
            cache.mirror_path("http://u:p@h/r.git"),
            cache.mirror_path("http://h/r.git")
        );
        assert_ne!(
            cache.mirror_path("http://h/r.git"),
            cache.mirror_path("http://h/s.git")
        );
        let name = cache.mirror_path("http://u:secret@h/r.git");
        assert!(!name.to_string_lossy().contains("secret"));
    }

    #[test]
    fn the_cache_root_follows_the_environment() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                vars.iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| std::ffi::OsString::from(v))
            }
        };
        static ALL: [(&str, &str); 3] = [
            ("GANTRY_GIT_CACHE", "/g"),
            ("XDG_CACHE_HOME", "/x"),
            ("HOME", "/h"),
        ];
        assert_eq!(root_from(env(&ALL)), Path::new("/g"));
        assert_eq!(root_from(env(&ALL[1..])), Path::new("/x/gantry/git"));
        assert_eq!(
            root_from(env(&[("GANTRY_GIT_CACHE", ""), ("HOME", "/h")])),
            Path::new("/h/.cache/gantry/git")
        );
        assert_eq!(root_from(env(&[])), Path::new("/tmp/gantry-git-cache"));
    }

    #[test]
    fn a_subject_is_the_first_line_cut_to_size() {
        assert_eq!(subject_line("\n  Fix the build  \n\nbody"), "Fix the build");
        assert_eq!(subject_line(""), "");
        let long = "é".repeat(SUBJECT_MAX + 5);
        let cut = subject_line(&long);
        assert_eq!(cut.chars().count(), SUBJECT_MAX);
        assert!(cut.ends_with('…'));
    }

    #[test]
    fn short_refs_are_branches() {
        assert_eq!(full_ref("main"), "refs/heads/main");
        assert_eq!(full_ref("refs/pull/7/head"), "refs/pull/7/head");
    }
}
