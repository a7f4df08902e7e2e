//! The time an image is dated with, as `SOURCE_DATE_EPOCH` defines it for reproducible builds:
//! the commit time of the source, not the time of the build. It becomes the config's `created`,
//! the new history entry's `created`, the `org.opencontainers.image.created` label and the
//! mtime of every entry of the new layer, so the same inputs give the same image digest on any
//! day.
//!
//! The engine usually knows the time and puts it in the task; when it does not (a run of a
//! registered repository whose commit the engine never fetched), the runner reads it from the
//! commit it checked out into the workspace.

use std::path::Path;

/// The label that carries the image's date.
pub const CREATED_LABEL: &str = "org.opencontainers.image.created";

/// The committer time (seconds since the epoch) of `commit` (default `HEAD`) in the git
/// repository at `dir` (searched upwards from `dir` when `discover`), or `None` when `dir` is
/// no repository or has no such commit.
pub fn commit_time(dir: &Path, commit: Option<&str>, discover: bool) -> Option<i64> {
    let repo = if discover {
        git2::Repository::discover(dir).ok()?
    } else {
        git2::Repository::open(dir).ok()?
    };
    let object = repo.revparse_single(commit.unwrap_or("HEAD")).ok()?;
    let commit = object.peel_to_commit().ok()?;
    Some(commit.time().seconds().max(0))
}

/// The epoch a build uses: the task's, or, when the task says so, the time of the commit
/// checked out in `workspace` (when there is one).
pub fn effective(created_epoch: i64, from_checkout: bool, workspace: &Path) -> i64 {
    let from_workspace = from_checkout
        .then(|| commit_time(workspace, None, false))
        .flatten();
    from_workspace.unwrap_or(created_epoch).max(0)
}

/// `labels` with [`CREATED_LABEL`] set to `epoch` in front, unless they already carry it (the
/// stage's own labels win).
pub fn with_created_label(labels: &[(String, String)], epoch: i64) -> Vec<(String, String)> {
    let mut out = Vec::with_capacity(labels.len() + 1);
    if !labels.iter().any(|(k, _)| k == CREATED_LABEL) {
        out.push((CREATED_LABEL.to_owned(), super::oci::rfc3339(epoch)));
    }
    out.extend(labels.iter().cloned());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A repository with one commit made at `when`, through libgit2 (no `git` needed).
    fn repository_at(dir: &Path, when: i64) -> String {
        let repo = git2::Repository::init(dir).expect("init");
        std::fs::write(dir.join("a.txt"), "a").expect("file");
        let mut index = repo.index().expect("index");
        index.add_path(Path::new("a.txt")).expect("add");
        let tree = repo
            .find_tree(index.write_tree().expect("tree"))
            .expect("find tree");
        let who = git2::Signature::new("t", "t@example.invalid", &git2::Time::new(when, 120))
            .expect("signature");
        repo.commit(Some("HEAD"), &who, &who, "one", &tree, &[])
            .expect("commit")
            .to_string()
    }

    #[test]
    fn the_commit_time_comes_from_the_checkout() {
        let dir = tempfile::tempdir().expect("temp dir");
        let sha = repository_at(dir.path(), 1_714_564_800);
        assert_eq!(commit_time(dir.path(), None, false), Some(1_714_564_800));
        assert_eq!(
            commit_time(dir.path(), Some(&sha), false),
            Some(1_714_564_800)
        );
        assert_eq!(commit_time(dir.path(), Some("0000000"), false), None);
        let inner = dir.path().join("sub/dir");
        std::fs::create_dir_all(&inner).expect("sub dir");
        assert_eq!(
            commit_time(&inner, None, false),
            None,
            "open: this directory only"
        );
        assert_eq!(commit_time(&inner, None, true), Some(1_714_564_800));

        assert_eq!(effective(42, true, dir.path()), 1_714_564_800);
        assert_eq!(
            effective(42, false, dir.path()),
            42,
            "the engine's time wins"
        );
        let plain = tempfile::tempdir().expect("temp dir");
        assert_eq!(effective(42, true, plain.path()), 42, "no checkout");
    }

    #[test]
    fn the_stages_own_created_label_wins() {
        let labels = with_created_label(&[("a".into(), "b".into())], 0);
        assert_eq!(
            labels,
            [
                (CREATED_LABEL.to_owned(), "1970-01-01T00:00:00Z".to_owned()),
                ("a".into(), "b".into())
            ]
        );
        let own = vec![(CREATED_LABEL.to_owned(), "yesterday".to_owned())];
        assert_eq!(with_created_label(&own, 5), own);
    }
}
