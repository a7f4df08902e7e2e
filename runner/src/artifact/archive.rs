//! The artifact archive format (a gzipped tar) and its two sides: choosing and packing the paths
//! a stage keeps, and unpacking what needed stages kept into the workspace.
//!
//! Everything here is synchronous file work; [`super::transfer`] runs it on a blocking thread
//! and streams it to or from the engine, so no archive is ever whole in memory.

use std::collections::BTreeSet;
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Component, Path, PathBuf};

use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use globset::GlobBuilder;

#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("artifact path {0:?} does not exist")]
    Missing(String),
    #[error("artifact pattern {0:?} matched nothing")]
    NoMatch(String),
    #[error("artifact path {0:?} is not inside the workspace")]
    Outside(String),
    #[error("artifact pattern {pattern:?} is not a valid glob: {source}")]
    Glob {
        pattern: String,
        source: globset::Error,
    },
    #[error("archive entry {0:?} would land outside the workspace")]
    Escape(PathBuf),
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("reading the archive: {0}")]
    Archive(io::Error),
    #[error("writing the archive: {0}")]
    Write(io::Error),
}

impl ArtifactError {
    fn io(path: &Path) -> impl FnOnce(io::Error) -> ArtifactError + '_ {
        move |source| ArtifactError::Io {
            path: path.to_owned(),
            source,
        }
    }

    /// Whether this is only the other end going away (the upload failed), not a packing fault.
    pub fn is_disconnect(&self) -> bool {
        match self {
            ArtifactError::Io { source, .. }
            | ArtifactError::Write(source)
            | ArtifactError::Archive(source) => source.kind() == io::ErrorKind::BrokenPipe,
            _ => false,
        }
    }
}

/// What an unpacked archive held.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Unpacked {
    pub entries: u64,
}

/// The workspace-relative paths `patterns` name, with the contents of directories, in the
/// deterministic order they are packed in (parents before children). A literal path that does
/// not exist, or a glob that matches nothing, is an error: a stage that promised an artifact and
/// did not make it has failed.
pub fn resolve(workspace: &Path, patterns: &[String]) -> Result<Vec<PathBuf>, ArtifactError> {
    let mut chosen = BTreeSet::new();
    // Every path in the workspace, listed once and only if some pattern is a glob.
    let mut everything: Option<BTreeSet<PathBuf>> = None;
    for pattern in patterns {
        let relative = relative_pattern(pattern)?;
        if is_glob(pattern) {
            let text = relative.to_string_lossy().into_owned();
            let matcher = GlobBuilder::new(&text)
                .literal_separator(true)
                .build()
                .map_err(|source| ArtifactError::Glob {
                    pattern: pattern.clone(),
                    source,
                })?
                .compile_matcher();
            let all = match &mut everything {
                Some(all) => all,
                None => {
                    let mut all = BTreeSet::new();
                    add_tree(workspace, Path::new(""), &mut all)?;
                    everything.insert(all)
                }
            };
            let mut matched = false;
            for path in all.iter().filter(|p| matcher.is_match(p)) {
                matched = true;
                add_tree(workspace, path, &mut chosen)?;
            }
            if !matched {
                return Err(ArtifactError::NoMatch(pattern.clone()));
            }
        } else {
            let full = workspace.join(&relative);
            match fs::symlink_metadata(&full) {
                Ok(_) => add_tree(workspace, &relative, &mut chosen)?,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Err(ArtifactError::Missing(pattern.clone()));
                }
                Err(e) => return Err(ArtifactError::io(&full)(e)),
            }
        }
    }
    chosen.remove(Path::new(""));
    Ok(chosen.into_iter().collect())
}

fn is_glob(pattern: &str) -> bool {
    pattern.contains(['*', '?', '[', '{'])
}

/// `pattern` as a normal relative path; `..` and absolute paths are refused.
fn relative_pattern(pattern: &str) -> Result<PathBuf, ArtifactError> {
    let mut relative = PathBuf::new();
    for part in Path::new(pattern).components() {
        match part {
            Component::Normal(part) => relative.push(part),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                return Err(ArtifactError::Outside(pattern.to_owned()));
            }
        }
    }
    Ok(relative)
}

/// Adds `relative` and, for a real directory (not a symlink to one), everything below it.
fn add_tree(
    workspace: &Path,
    relative: &Path,
    chosen: &mut BTreeSet<PathBuf>,
) -> Result<(), ArtifactError> {
    let full = workspace.join(relative);
    let meta = fs::symlink_metadata(&full).map_err(ArtifactError::io(&full))?;
    chosen.insert(relative.to_owned());
    if meta.is_dir() {
        for entry in fs::read_dir(&full).map_err(ArtifactError::io(&full))? {
            let entry = entry.map_err(ArtifactError::io(&full))?;
            add_tree(workspace, &relative.join(entry.file_name()), chosen)?;
        }
    }
    Ok(())
}

/// Writes `entries` (from [`resolve`]) as a gzipped tar to `out`, in order. Symlinks are kept as
/// symlinks; modes and modification times are kept so later stages see files as built.
pub fn pack<W: Write>(workspace: &Path, entries: &[PathBuf], out: W) -> Result<W, ArtifactError> {
    // Fast compression: artifacts travel to a nearby engine, and level 1 runs several times
    // faster than the default for a modest size difference.
    let mut builder = tar::Builder::new(GzEncoder::new(out, Compression::fast()));
    builder.follow_symlinks(false);
    for relative in entries {
        let full = workspace.join(relative);
        builder
            .append_path_with_name(&full, relative)
            .map_err(ArtifactError::io(&full))?;
    }
    builder
        .into_inner()
        .and_then(GzEncoder::finish)
        .map_err(ArtifactError::Write)
}

/// Unpacks a gzipped tar from `input` into `workspace`, refusing any entry that would land
/// outside it (absolute paths, `..`, hard links out, writes through symlinks).
pub fn unpack<R: Read>(input: R, workspace: &Path) -> Result<Unpacked, ArtifactError> {
    let mut archive = tar::Archive::new(GzDecoder::new(input));
    archive.set_overwrite(true);
    let mut unpacked = Unpacked::default();
    for entry in archive.entries().map_err(ArtifactError::Archive)? {
        let mut entry = entry.map_err(ArtifactError::Archive)?;
        let path = entry.path().map_err(ArtifactError::Archive)?.into_owned();
        check_inside(&path)?;
        if entry.header().entry_type().is_hard_link()
            && let Some(target) = entry.link_name().map_err(ArtifactError::Archive)?
        {
            check_inside(&target)?;
        }
        let landed = entry.unpack_in(workspace).map_err(|source| {
            // tar reports a write through a symlink that leads out as a plain I/O error.
            if source.to_string().contains("outside of destination") {
                ArtifactError::Escape(path.clone())
            } else {
                ArtifactError::Io {
                    path: workspace.join(&path),
                    source,
                }
            }
        })?;
        if !landed {
            return Err(ArtifactError::Escape(path));
        }
        unpacked.entries += 1;
    }
    Ok(unpacked)
}

fn check_inside(path: &Path) -> Result<(), ArtifactError> {
    let escapes = path.components().any(|c| {
        matches!(
            c,
            Component::ParentDir | Component::RootDir | Component::Prefix(_)
        )
    });
    if escapes {
        return Err(ArtifactError::Escape(path.to_owned()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{PermissionsExt, symlink};

    /// A fresh directory under the target's temp space, removed on drop.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Scratch {
            let dir = std::env::temp_dir().join(format!(
                "gantry-runner-{name}-{}-{:?}",
                std::process::id(),
                std::thread::current().id()
            ));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).expect("scratch dir");
            Scratch(dir)
        }

        fn write(&self, relative: &str, contents: &str) {
            let path = self.0.join(relative);
            fs::create_dir_all(path.parent().expect("parent")).expect("dirs");
            fs::write(path, contents).expect("write");
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn strings(paths: &[PathBuf]) -> Vec<String> {
        paths.iter().map(|p| p.display().to_string()).collect()
    }

    fn patterns(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn files_directories_and_globs_resolve_in_a_stable_order() {
        let ws = Scratch::new("resolve");
        ws.write("dist/app", "bin");
        ws.write("dist/lib/a.so", "so");
        ws.write("report.xml", "<r/>");
        ws.write("sub/report.xml", "<r/>");
        ws.write("notes.txt", "no");
        let chosen =
            resolve(&ws.0, &patterns(&["./dist/", "**/*.xml", "dist/app"])).expect("resolved");
        assert_eq!(
            strings(&chosen),
            vec![
                "dist",
                "dist/app",
                "dist/lib",
                "dist/lib/a.so",
                "report.xml",
                "sub/report.xml"
            ]
        );
        let top = resolve(&ws.0, &patterns(&["*.xml"])).expect("resolved");
        assert_eq!(strings(&top), vec!["report.xml"], "* does not cross /");
    }

    #[test]
    fn missing_paths_and_empty_globs_are_errors() {
        let ws = Scratch::new("missing");
        ws.write("a.txt", "a");
        assert!(matches!(
            resolve(&ws.0, &patterns(&["a.txt", "target/app"])),
            Err(ArtifactError::Missing(p)) if p == "target/app"
        ));
        assert!(matches!(
            resolve(&ws.0, &patterns(&["*.jar"])),
            Err(ArtifactError::NoMatch(_))
        ));
        assert!(matches!(
            resolve(&ws.0, &patterns(&["../etc/passwd"])),
            Err(ArtifactError::Outside(_))
        ));
        assert!(matches!(
            resolve(&ws.0, &patterns(&["/etc/passwd"])),
            Err(ArtifactError::Outside(_))
        ));
    }

    #[test]
    fn packed_artifacts_unpack_to_the_same_tree() {
        let from = Scratch::new("pack-from");
        from.write("dist/app", "binary");
        from.write("dist/empty/.keep", "");
        from.write("logs/run.log", "line\n");
        fs::set_permissions(from.0.join("dist/app"), fs::Permissions::from_mode(0o755))
            .expect("chmod");
        symlink("app", from.0.join("dist/current")).expect("symlink");
        let entries = resolve(&from.0, &patterns(&["dist", "logs/*.log"])).expect("resolved");
        let archive = pack(&from.0, &entries, Vec::new()).expect("packed");
        let again = pack(&from.0, &entries, Vec::new()).expect("packed");
        assert_eq!(archive, again, "same tree, same bytes");

        let to = Scratch::new("pack-to");
        let unpacked = unpack(&archive[..], &to.0).expect("unpacked");
        assert_eq!(unpacked.entries, entries.len() as u64);
        assert_eq!(
            fs::read_to_string(to.0.join("dist/app")).expect("read"),
            "binary"
        );
        assert_eq!(
            fs::read_to_string(to.0.join("logs/run.log")).expect("read"),
            "line\n"
        );
        assert!(to.0.join("dist/empty/.keep").exists());
        let mode = fs::metadata(to.0.join("dist/app"))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
        assert_eq!(
            fs::read_link(to.0.join("dist/current")).expect("link"),
            PathBuf::from("app")
        );
    }

    /// A gzipped tar with one entry whose name is written into the header raw, as an attacker
    /// would (the tar crate refuses to build such entries through its safe API).
    fn archive_with_raw_entry(name: &str, kind: tar::EntryType, link: Option<&str>) -> Vec<u8> {
        let mut header = tar::Header::new_gnu();
        header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        header.set_entry_type(kind);
        header.set_mode(0o644);
        if let Some(link) = link {
            header.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
        }
        let data: &[u8] = if kind == tar::EntryType::Regular {
            b"pwned"
        } else {
            b""
        };
        header.set_size(data.len() as u64);
        header.set_cksum();
        let mut builder = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::fast()));
        builder.append(&header, data).expect("append");
        builder
            .into_inner()
            .and_then(GzEncoder::finish)
            .expect("finish")
    }

    #[test]
    fn entries_escaping_the_workspace_are_refused() {
        let root = Scratch::new("escape");
        let ws = root.0.join("ws");
        fs::create_dir_all(&ws).expect("ws");
        let dotdot = archive_with_raw_entry("../outside.txt", tar::EntryType::Regular, None);
        assert!(matches!(
            unpack(&dotdot[..], &ws),
            Err(ArtifactError::Escape(_))
        ));
        assert!(!root.0.join("outside.txt").exists());

        let absolute = archive_with_raw_entry("/tmp/abs.txt", tar::EntryType::Regular, None);
        assert!(matches!(
            unpack(&absolute[..], &ws),
            Err(ArtifactError::Escape(_))
        ));

        let hard = archive_with_raw_entry("h", tar::EntryType::Link, Some("../../etc/passwd"));
        assert!(matches!(
            unpack(&hard[..], &ws),
            Err(ArtifactError::Escape(_))
        ));
    }

    #[test]
    fn writing_through_a_symlink_out_of_the_workspace_is_refused() {
        let root = Scratch::new("symlink-escape");
        let ws = root.0.join("ws");
        fs::create_dir_all(&ws).expect("ws");
        let outside = root.0.join("outside");
        fs::create_dir_all(&outside).expect("outside");
        // First entry: a symlink pointing out; second: a file written through it.
        let mut builder = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::fast()));
        let mut link = tar::Header::new_gnu();
        link.set_entry_type(tar::EntryType::Symlink);
        link.set_size(0);
        builder
            .append_link(&mut link, "out", &outside)
            .expect("link");
        let mut file = tar::Header::new_gnu();
        file.set_size(5);
        file.set_mode(0o644);
        builder
            .append_data(&mut file, "out/pwned.txt", &b"pwned"[..])
            .expect("file");
        let archive = builder
            .into_inner()
            .and_then(GzEncoder::finish)
            .expect("finish");
        assert!(matches!(
            unpack(&archive[..], &ws),
            Err(ArtifactError::Escape(_))
        ));
        assert!(!outside.join("pwned.txt").exists());
    }

    #[test]
    fn a_corrupt_archive_is_an_error() {
        let ws = Scratch::new("corrupt");
        assert!(matches!(
            unpack(&b"not gzip at all"[..], &ws.0),
            Err(ArtifactError::Archive(_))
        ));
    }
}
