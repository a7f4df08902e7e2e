//! The source tree `gantry run` puts in each local workspace: the files of the directory it was
//! started in (with Git: tracked and untracked-but-not-ignored ones, so `target/` and
//! `node_modules/` stay behind; otherwise everything), never the engine's own data directory
//! when that lies inside it (its PostgreSQL files and earlier workspaces would be copied into
//! every stage, each stage more than the last).
//!
//! Listing the tree (running `git ls-files`, walking directories) is done once per run and
//! shared by its stages; each stage then only creates the directories, once each, and copies
//! the files.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Trees of at least this many files are copied by several threads.
const PARALLEL_FROM: usize = 2_000;

/// What one source tree holds: directories (parents first) and files, relative to it.
#[derive(Debug, Default)]
pub struct Listing {
    source: PathBuf,
    dirs: Vec<PathBuf>,
    files: Vec<PathBuf>,
}

impl Listing {
    /// Lists `source`, leaving out everything under `exclude` (absolute paths).
    pub fn of(source: &Path, exclude: &[PathBuf]) -> Listing {
        let source = source
            .canonicalize()
            .unwrap_or_else(|_| source.to_path_buf());
        // Only exclusions inside the source matter, as paths relative to it.
        let excluded: Vec<PathBuf> = exclude
            .iter()
            .filter_map(|e| {
                let e = e.canonicalize().unwrap_or_else(|_| e.clone());
                e.strip_prefix(&source).ok().map(Path::to_path_buf)
            })
            .collect();
        let is_excluded = |rel: &Path| excluded.iter().any(|e| rel.starts_with(e));
        let files: Vec<PathBuf> = match git_files(&source) {
            Some(files) => files.into_iter().filter(|f| !is_excluded(f)).collect(),
            None => walk(&source, &is_excluded),
        };
        let dirs: BTreeSet<PathBuf> = files
            .iter()
            .flat_map(|f| f.ancestors().skip(1))
            .filter(|d| !d.as_os_str().is_empty())
            .map(Path::to_path_buf)
            .collect();
        Listing {
            source,
            // BTreeSet order puts a parent before its children.
            dirs: dirs.into_iter().collect(),
            files,
        }
    }

    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// Copies the listed tree into `target` (which exists): directories first, then files,
    /// symbolic links as links. Files deleted since the listing are skipped.
    pub fn place(&self, target: &Path) -> std::io::Result<()> {
        for dir in &self.dirs {
            match std::fs::create_dir(target.join(dir)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(with_path(e, &target.join(dir))),
            }
        }
        // Copying is a few system calls per file, nearly all kernel time: a large tree is
        // split across the cores (a run copies its source once, and its first stage waits).
        let workers = if self.files.len() < PARALLEL_FROM {
            1
        } else {
            std::thread::available_parallelism().map_or(1, |n| n.get().min(4))
        };
        let chunk = self.files.len().div_ceil(workers).max(1);
        std::thread::scope(|scope| {
            let copies: Vec<_> = self
                .files
                .chunks(chunk)
                .map(|files| scope.spawn(move || self.copy_files(files, target)))
                .collect();
            copies.into_iter().try_for_each(|copy| {
                copy.join()
                    .unwrap_or_else(|_| Err(std::io::Error::other("a copying thread panicked")))
            })
        })
    }

    fn copy_files(&self, files: &[PathBuf], target: &Path) -> std::io::Result<()> {
        for rel in files {
            let from = self.source.join(rel);
            let to = target.join(rel);
            let Ok(meta) = std::fs::symlink_metadata(&from) else {
                continue; // listed by git but deleted from the work tree
            };
            if meta.file_type().is_symlink() {
                if let Ok(link) = std::fs::read_link(&from) {
                    let _ = std::os::unix::fs::symlink(link, &to);
                }
            } else if meta.is_file() {
                std::fs::copy(&from, &to).map_err(|e| with_path(e, &from))?;
            }
        }
        Ok(())
    }
}

fn with_path(e: std::io::Error, path: &Path) -> std::io::Error {
    std::io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

/// The files Git would give a build, or `None` outside a Git work tree.
fn git_files(source: &Path) -> Option<Vec<PathBuf>> {
    let out = std::process::Command::new("git")
        .args([
            "ls-files",
            "-z",
            "--cached",
            "--others",
            "--exclude-standard",
        ])
        .current_dir(source)
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    Some(
        out.stdout
            .split(|b| *b == 0)
            .filter(|p| !p.is_empty())
            .map(|p| {
                use std::os::unix::ffi::OsStrExt;
                PathBuf::from(std::ffi::OsStr::from_bytes(p))
            })
            .collect(),
    )
}

/// Every file under `source`, not descending into excluded directories.
fn walk(source: &Path, is_excluded: &dyn Fn(&Path) -> bool) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut todo = vec![PathBuf::new()];
    while let Some(rel) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(source.join(&rel)) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = rel.join(entry.file_name());
            if is_excluded(&path) {
                continue;
            }
            match entry.file_type() {
                Ok(t) if t.is_dir() => todo.push(path),
                Ok(_) => files.push(path),
                Err(_) => {}
            }
        }
    }
    files
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().expect("parent")).expect("dirs");
        std::fs::write(path, text).expect("write");
    }

    #[test]
    fn the_data_directory_inside_the_source_is_left_out() {
        let dir = tempfile::tempdir().expect("temp dir");
        let source = dir.path();
        write(&source.join("src/main.sh"), "echo hi");
        write(&source.join("README"), "read me");
        let data = source.join(".gantry");
        write(&data.join("postgres/base/1"), "database file");
        write(&data.join("workspaces/1-1/src/main.sh"), "an older copy");
        let listing = Listing::of(source, std::slice::from_ref(&data));
        let mut files: Vec<String> = listing
            .files()
            .iter()
            .map(|f| f.display().to_string())
            .collect();
        files.sort();
        assert_eq!(files, ["README", "src/main.sh"]);

        let target = tempfile::tempdir().expect("target");
        listing.place(target.path()).expect("place");
        assert_eq!(
            std::fs::read_to_string(target.path().join("src/main.sh")).expect("copied"),
            "echo hi"
        );
        assert!(!target.path().join(".gantry").exists());
        // A second stage gets its own copy: changing one leaves the other alone.
        let second = tempfile::tempdir().expect("second target");
        listing.place(second.path()).expect("place again");
        std::fs::write(target.path().join("README"), "changed").expect("change");
        assert_eq!(
            std::fs::read_to_string(second.path().join("README")).expect("read"),
            "read me"
        );
    }

    #[test]
    fn a_tree_large_enough_for_several_threads_is_copied_whole() {
        let dir = tempfile::tempdir().expect("temp dir");
        let count = PARALLEL_FROM + 501;
        for i in 0..count {
            write(
                &dir.path().join(format!("d{}/f{i}", i % 17)),
                &i.to_string(),
            );
        }
        let listing = Listing::of(dir.path(), &[]);
        assert_eq!(listing.files().len(), count);
        let target = tempfile::tempdir().expect("target");
        listing.place(target.path()).expect("place");
        for i in 0..count {
            let copied = target.path().join(format!("d{}/f{i}", i % 17));
            assert_eq!(
                std::fs::read_to_string(copied).expect("copied"),
                i.to_string()
            );
        }
    }

    #[test]
    fn an_exclusion_outside_the_source_changes_nothing() {
        let dir = tempfile::tempdir().expect("temp dir");
        write(&dir.path().join("a/b/c.txt"), "c");
        let elsewhere = tempfile::tempdir().expect("elsewhere");
        let listing = Listing::of(dir.path(), &[elsewhere.path().to_path_buf()]);
        assert_eq!(listing.files(), [PathBuf::from("a/b/c.txt")]);
        assert_eq!(listing.dirs, [PathBuf::from("a"), PathBuf::from("a/b")]);
    }
}
