//! Filesystem snapshots, as kaniko takes them: walk a root before and after a command, compare
//! each path's type, mode, owner, size, times and link target, and write what changed as one
//! layer, with whiteouts for what was deleted. Comparing metadata (including the change time,
//! which any write, chmod or chown bumps) finds every change without hashing contents.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::layer::{Layer, LayerWriter, Owner, parents};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    /// Sockets, fifos, devices: not carried into layers.
    Other,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Meta {
    pub kind: Kind,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub mtime_ns: i128,
    pub ctime_ns: i128,
    pub inode: u64,
    pub target: Option<PathBuf>,
}

/// Every path under a root (relative, `/`-separated), with its metadata.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub entries: BTreeMap<String, Meta>,
}

/// What a command changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// New or modified paths, sorted.
    pub changed: Vec<String>,
    /// Deleted paths, sorted; a deleted directory's contents are not listed.
    pub deleted: Vec<String>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.changed.is_empty() && self.deleted.is_empty()
    }
}

/// Walks `root` without following symlinks, leaving out the paths in `exclude` (relative:
/// `proc`, `sys`, `dev`, what the running system rather than the build puts there, or the
/// runner's own directories).
pub fn take(root: &Path, exclude: &[impl AsRef<str>]) -> io::Result<Snapshot> {
    let mut snapshot = Snapshot::default();
    let mut todo = vec![String::new()];
    while let Some(dir) = todo.pop() {
        let listing = match fs::read_dir(root.join(&dir)) {
            Ok(listing) => listing,
            // Gone meanwhile, or unreadable: a snapshot of what can be seen.
            Err(_) => continue,
        };
        for entry in listing {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let relative = if dir.is_empty() {
                name
            } else {
                format!("{dir}/{name}")
            };
            if exclude.iter().any(|e| e.as_ref() == relative) {
                continue;
            }
            let path = entry.path();
            let Ok(meta) = fs::symlink_metadata(&path) else {
                continue;
            };
            let kind = if meta.file_type().is_symlink() {
                Kind::Symlink
            } else if meta.is_dir() {
                Kind::Dir
            } else if meta.is_file() {
                Kind::File
            } else {
                Kind::Other
            };
            if kind == Kind::Dir {
                todo.push(relative.clone());
            }
            snapshot.entries.insert(
                relative,
                Meta {
                    kind,
                    mode: meta.mode() & 0o7777,
                    uid: meta.uid(),
                    gid: meta.gid(),
                    size: if kind == Kind::Dir { 0 } else { meta.size() },
                    mtime_ns: i128::from(meta.mtime()) * 1_000_000_000
                        + i128::from(meta.mtime_nsec()),
                    ctime_ns: i128::from(meta.ctime()) * 1_000_000_000
                        + i128::from(meta.ctime_nsec()),
                    inode: meta.ino(),
                    target: (kind == Kind::Symlink)
                        .then(|| fs::read_link(&path).ok())
                        .flatten(),
                },
            );
        }
    }
    Ok(snapshot)
}

/// What changed from `before` to `after`. A directory whose contents changed but which
/// itself did not is not "changed" (its parent entry is written anyway, see [`write_layer`]).
pub fn diff(before: &Snapshot, after: &Snapshot) -> Changes {
    let mut changes = Changes::default();
    for (path, meta) in &after.entries {
        let unchanged = before.entries.get(path).is_some_and(|old| {
            // A directory's times move whenever an entry is added or removed in it; that is
            // the children's change, not the directory's.
            if meta.kind == Kind::Dir && old.kind == Kind::Dir {
                (old.mode, old.uid, old.gid) == (meta.mode, meta.uid, meta.gid)
            } else {
                old == meta
            }
        });
        if !unchanged {
            changes.changed.push(path.clone());
        }
    }
    for path in before.entries.keys() {
        if after.entries.contains_key(path) {
            continue;
        }
        // Only the topmost deleted path: a whiteout of a directory hides all it held.
        let parent_gone = parents(path)
            .iter()
            .any(|p| before.entries.contains_key(p) && !after.entries.contains_key(p));
        if !parent_gone {
            changes.deleted.push(path.clone());
        }
    }
    changes
}

/// One tar entry of the layer, in the order written: by parent directory, whiteouts first,
/// then by name (so parents always precede their contents).
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Item {
    parent: String,
    is_entry: bool,
    name: String,
}

/// Writes `changes` of the filesystem at `root` (whose state is `after`) as a layer at `path`,
/// every entry with `mtime`. The parent directories of every change are written too, with
/// their current mode and owner, so the layer unpacks the same on any base.
pub fn write_layer(
    root: &Path,
    after: &Snapshot,
    changes: &Changes,
    path: &Path,
    mtime: u64,
    compression: super::task::Compression,
) -> io::Result<Layer> {
    let mut wanted: BTreeSet<&str> = BTreeSet::new();
    let mut dirs: BTreeSet<String> = BTreeSet::new();
    for changed in changes.changed.iter().chain(&changes.deleted) {
        dirs.extend(parents(changed));
    }
    for changed in &changes.changed {
        wanted.insert(changed);
    }
    let mut items: Vec<Item> = Vec::new();
    let split = |p: &str| match p.rsplit_once('/') {
        Some((parent, name)) => (parent.to_owned(), name.to_owned()),
        None => (String::new(), p.to_owned()),
    };
    for dir in dirs
        .iter()
        .map(String::as_str)
        .chain(wanted.iter().copied())
    {
        let (parent, name) = split(dir);
        items.push(Item {
            parent,
            is_entry: true,
            name,
        });
    }
    for deleted in &changes.deleted {
        let (parent, name) = split(deleted);
        items.push(Item {
            parent,
            is_entry: false,
            name,
        });
    }
    items.sort();
    items.dedup();

    let mut layer = LayerWriter::create_with(path, mtime, compression)?;
    for item in items {
        let relative = if item.parent.is_empty() {
            item.name.clone()
        } else {
            format!("{}/{}", item.parent, item.name)
        };
        if !item.is_entry {
            layer.whiteout(&relative)?;
            continue;
        }
        let Some(meta) = after.entries.get(&relative) else {
            continue;
        };
        let owner = Owner {
            uid: u64::from(meta.uid),
            gid: u64::from(meta.gid),
        };
        match meta.kind {
            Kind::Dir => layer.dir(&relative, meta.mode, owner)?,
            Kind::File => layer.file_from(&relative, &root.join(&relative), meta.mode, owner)?,
            Kind::Symlink => {
                if let Some(target) = &meta.target {
                    layer.symlink(&relative, target, owner)?;
                }
            }
            Kind::Other => {}
        }
    }
    layer.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_become_a_layer_with_whiteouts_for_deletions() {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path().join("root");
        for d in ["etc", "opt/app", "var/cache/old", "proc"] {
            fs::create_dir_all(root.join(d)).expect("dirs");
        }
        fs::write(root.join("etc/motd"), "hi").expect("motd");
        fs::write(root.join("etc/keep"), "k").expect("keep");
        fs::write(root.join("var/cache/old/x"), "x").expect("x");
        let before = take(&root, &["proc"]).expect("before");

        // What an assemble script might do.
        fs::remove_file(root.join("etc/motd")).expect("rm motd");
        fs::remove_dir_all(root.join("var/cache/old")).expect("rm old");
        fs::write(root.join("opt/app/run.sh"), "#!/bin/sh\n").expect("write");
        std::os::unix::fs::symlink("run.sh", root.join("opt/app/start")).expect("link");
        fs::write(root.join("proc/ignored"), "").expect("excluded");
        let after = take(&root, &["proc"]).expect("after");

        let changes = diff(&before, &after);
        assert_eq!(changes.changed, ["opt/app/run.sh", "opt/app/start"]);
        assert_eq!(changes.deleted, ["etc/motd", "var/cache/old"]);

        let layer_path = dir.path().join("layer.tar.gz");
        let layer = write_layer(&root, &after, &changes, &layer_path, 5, Default::default())
            .expect("layer");
        let bytes = fs::read(layer.path.as_ref().expect("a file")).expect("read");
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(&bytes[..]));
        let names: Vec<String> = archive
            .entries()
            .expect("entries")
            .map(|e| {
                e.expect("entry")
                    .path()
                    .expect("path")
                    .display()
                    .to_string()
            })
            .collect();
        assert_eq!(
            names,
            [
                "etc/",
                "opt/",
                "var/",
                "etc/.wh.motd",
                "opt/app/",
                "opt/app/run.sh",
                "opt/app/start",
                "var/cache/",
                "var/cache/.wh.old",
            ]
        );
        let again = write_layer(
            &root,
            &after,
            &changes,
            &dir.path().join("again"),
            5,
            Default::default(),
        )
        .expect("again");
        assert_eq!(
            again.digest, layer.digest,
            "the same changes give the same layer"
        );
    }
}
