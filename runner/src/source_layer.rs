//! A stage's source as a copy-on-write layer over the run's snapshot.
//!
//! `gantry run` gives every stage the files of the directory it was started in. Copying them
//! into each stage's workspace costs a file creation per source file per stage — seconds per
//! stage in a repository of tens of thousands of files. Instead the engine copies the source
//! once per run (the snapshot, the layer's `lower` directory) and each runner mounts an overlay
//! on its workspace in its own mount namespace: the snapshot below, an empty directory of the
//! stage's own (`upper`) above. Reads come from the snapshot; the first write to a file copies
//! that one file up; deletions are recorded above. So a stage sees a private, writable tree
//! for the price of one mount, and no stage — nor the user's own directory — sees another's
//! writes.
//!
//! Where an overlay cannot be mounted (a data directory that is itself on an overlay, as in
//! many containers; a kernel without unprivileged overlay mounts) the runner copies the
//! snapshot into the workspace instead, as before, and says so in its log.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use nix::mount::{MsFlags, mount};

/// `lower`, `upper`, `work` and the workspace to mount on, one absolute path per line.
pub const ENV_SOURCE_LAYER: &str = "GANTRY_RUNNER_SOURCE_LAYER";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceLayer {
    /// The run's snapshot of the source (read only to the stage).
    pub lower: PathBuf,
    /// Where the stage's own changes go (empty at start).
    pub upper: PathBuf,
    /// Overlay's scratch directory: empty, on the same file system as `upper`.
    pub work: PathBuf,
    /// The stage's workspace, where the merged tree appears.
    pub target: PathBuf,
}

/// How the stage's source was put in place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placed {
    Mounted,
    Copied,
}

impl SourceLayer {
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Option<SourceLayer> {
        let value = lookup(ENV_SOURCE_LAYER)?;
        let paths: Vec<PathBuf> = value
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(PathBuf::from)
            .collect();
        match paths.as_slice() {
            [lower, upper, work, target] => Some(SourceLayer {
                lower: lower.clone(),
                upper: upper.clone(),
                work: work.clone(),
                target: target.clone(),
            }),
            _ => None,
        }
    }

    pub fn to_env(&self) -> (&'static str, String) {
        let lines = [&self.lower, &self.upper, &self.work, &self.target]
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join("\n");
        (ENV_SOURCE_LAYER, lines)
    }

    /// Mounts the overlay on the workspace, or copies the snapshot there when the kernel
    /// refuses the mount. Must run in the runner's own mount namespace (a mount made in the
    /// engine's would be visible to everything on the machine).
    pub fn place(&self) -> io::Result<Placed> {
        match self.mount() {
            Ok(()) => Ok(Placed::Mounted),
            Err(why) => {
                eprintln!(
                    "gantry-runner: cannot mount the source layer on {} ({why}); copying the source instead",
                    self.target.display()
                );
                copy_tree(&self.lower, &self.target)?;
                Ok(Placed::Copied)
            }
        }
    }

    fn mount(&self) -> Result<(), nix::Error> {
        // Overlay options are comma-separated: a path with a comma (or the escapes overlay
        // knows) cannot be passed safely, so such a layer is copied instead.
        let unsafe_path = [&self.lower, &self.upper, &self.work]
            .iter()
            .any(|p| p.to_string_lossy().contains([',', ':', '\\']));
        if unsafe_path {
            return Err(nix::Error::EINVAL);
        }
        // `userxattr`: an overlay mounted inside a user namespace keeps its bookkeeping in
        // `user.overlay.*` attributes (the `trusted.*` ones need privilege on the host).
        let options = format!(
            "lowerdir={},upperdir={},workdir={},userxattr",
            self.lower.display(),
            self.upper.display(),
            self.work.display()
        );
        mount(
            Some("overlay"),
            &self.target,
            Some("overlay"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some(options.as_str()),
        )
    }
}

/// Copies the tree at `from` into the existing directory `to`: directories, regular files
/// (with their modes) and symbolic links (as links).
pub fn copy_tree(from: &Path, to: &Path) -> io::Result<()> {
    let mut todo = vec![PathBuf::new()];
    while let Some(rel) = todo.pop() {
        for entry in fs::read_dir(from.join(&rel))? {
            let entry = entry?;
            let rel = rel.join(entry.file_name());
            let (source, target) = (from.join(&rel), to.join(&rel));
            let kind = entry.file_type()?;
            if kind.is_dir() {
                match fs::create_dir(&target) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(e),
                }
                todo.push(rel);
            } else if kind.is_symlink() {
                std::os::unix::fs::symlink(fs::read_link(&source)?, &target)?;
            } else if kind.is_file() {
                fs::copy(&source, &target)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_layer_travels_in_one_variable() {
        let layer = SourceLayer {
            lower: "/d/sources/run-3".into(),
            upper: "/d/workspaces/9-1.layer/upper".into(),
            work: "/d/workspaces/9-1.layer/work".into(),
            target: "/d/workspaces/9-1".into(),
        };
        let (name, value) = layer.to_env();
        let back = SourceLayer::from_lookup(|n| (n == name).then(|| value.clone()));
        assert_eq!(back, Some(layer));
        assert_eq!(SourceLayer::from_lookup(|_| None), None);
        assert_eq!(SourceLayer::from_lookup(|_| Some("/a\n/b".into())), None);
    }

    #[test]
    fn the_fallback_copies_files_modes_and_links() {
        use std::os::unix::fs::PermissionsExt;
        let from = tempfile::tempdir().expect("from");
        fs::create_dir_all(from.path().join("a/b")).expect("dirs");
        fs::write(from.path().join("a/b/tool.sh"), "#!/bin/sh\n").expect("file");
        fs::set_permissions(
            from.path().join("a/b/tool.sh"),
            fs::Permissions::from_mode(0o755),
        )
        .expect("chmod");
        std::os::unix::fs::symlink("b/tool.sh", from.path().join("a/link")).expect("link");
        let to = tempfile::tempdir().expect("to");
        copy_tree(from.path(), to.path()).expect("copy");
        let copied = to.path().join("a/b/tool.sh");
        assert_eq!(fs::read_to_string(&copied).expect("read"), "#!/bin/sh\n");
        let mode = fs::metadata(&copied).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o755);
        assert_eq!(
            fs::read_link(to.path().join("a/link")).expect("link"),
            Path::new("b/tool.sh")
        );
    }
}
