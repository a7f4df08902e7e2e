//! A builder image's root filesystem, unpacked from its layers in order: each layer's whiteouts
//! (`.wh.NAME` deletes `NAME` below, `.wh..wh..opq` empties its directory) are applied as the
//! image spec says, owners and modes kept, so `assemble` sees what it would in a container.

use std::fs;
use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};

const WHITEOUT: &str = ".wh.";
const OPAQUE: &str = ".wh..wh..opq";

/// Unpacks one (gzipped or plain) layer tarball onto `root`; returns the entries applied.
pub fn unpack_layer(layer: &Path, root: &Path) -> io::Result<u64> {
    let mut file = fs::File::open(layer)?;
    let mut magic = [0u8; 2];
    let gzipped = file.read_exact(&mut magic).is_ok() && magic == [0x1f, 0x8b];
    let file = fs::File::open(layer)?;
    let reader: Box<dyn Read> = if gzipped {
        Box::new(flate2::read::GzDecoder::new(io::BufReader::with_capacity(
            256 * 1024,
            file,
        )))
    } else {
        Box::new(io::BufReader::new(file))
    };
    let mut archive = tar::Archive::new(reader);
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(true);
    archive.set_preserve_mtime(true);
    archive.set_unpack_xattrs(false);
    archive.set_overwrite(true);
    let mut applied = 0;
    for entry in archive.entries()? {
        let mut entry = entry?;
        let Some(relative) = clean(&entry.path()?) else {
            continue;
        };
        let name = relative
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let parent = root.join(relative.parent().unwrap_or(Path::new("")));
        if name == OPAQUE {
            empty_dir(&parent)?;
            applied += 1;
            continue;
        }
        if let Some(hidden) = name.strip_prefix(WHITEOUT) {
            remove_any(&parent.join(hidden))?;
            applied += 1;
            continue;
        }
        let target = root.join(&relative);
        // A directory replaced by something else, or the other way round: the old one goes.
        if let Ok(existing) = fs::symlink_metadata(&target) {
            let becomes_dir = entry.header().entry_type().is_dir();
            if existing.is_dir() != becomes_dir {
                remove_any(&target)?;
            }
        }
        entry.unpack_in(root)?;
        applied += 1;
    }
    Ok(applied)
}

/// `./a/../b` style names are refused; `/a/b` and `./a/b` become `a/b`.
fn clean(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => out.push(part),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    (!out.as_os_str().is_empty()).then_some(out)
}

fn remove_any(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

fn empty_dir(dir: &Path) -> io::Result<()> {
    let Ok(listing) = fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in listing {
        remove_any(&entry?.path())?;
    }
    Ok(())
}

/// The device nodes scripts expect (`/dev/null` and friends), made in an unpacked root. The
/// snapshot leaves `dev/` out, so they never reach an image.
pub fn make_devices(root: &Path) -> io::Result<()> {
    use nix::sys::stat::{Mode, SFlag, makedev, mknod};
    let dev = root.join("dev");
    fs::create_dir_all(&dev)?;
    for (name, minor) in [("null", 3), ("zero", 5), ("random", 8), ("urandom", 9)] {
        let path = dev.join(name);
        if fs::symlink_metadata(&path).is_ok() {
            continue;
        }
        match mknod(
            &path,
            SFlag::S_IFCHR,
            Mode::from_bits_truncate(0o666),
            makedev(1, minor),
        ) {
            // mknod honours the umask; scripts need to write to /dev/null.
            Ok(()) => {
                fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o666))?
            }
            // In a user namespace (a local runner of a root engine) no device may be made, but
            // the host's own may be bound in, as rootless containers do.
            Err(nix::errno::Errno::EPERM) => bind_host_device(&path, name)?,
            Err(e) => return Err(io::Error::from(e)),
        }
    }
    Ok(())
}

/// Binds `/dev/NAME` of this machine onto a new empty file at `path`.
fn bind_host_device(path: &Path, name: &str) -> io::Result<()> {
    use nix::mount::{MsFlags, mount};
    fs::File::create(path)?;
    mount(
        Some(Path::new("/dev").join(name).as_path()),
        path,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::layer::{LayerWriter, Owner};

    #[test]
    fn whiteouts_delete_and_opaque_markers_empty_lower_layers() {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path().join("root");
        fs::create_dir_all(&root).expect("root");
        let lower = dir.path().join("lower.tar.gz");
        let mut layer = LayerWriter::create(&lower, 1).expect("create");
        let o = Owner::default();
        layer.dir("etc", 0o755, o).expect("dir");
        layer
            .file("etc/motd", 0o644, o, 2, &b"hi"[..])
            .expect("file");
        layer
            .file("etc/keep", 0o600, Owner { uid: 7, gid: 8 }, 1, &b"k"[..])
            .expect("file");
        layer.dir("cache", 0o755, o).expect("dir");
        layer.file("cache/a", 0o644, o, 1, &b"a"[..]).expect("file");
        layer.finish().expect("finish");
        let upper = dir.path().join("upper.tar.gz");
        let mut layer = LayerWriter::create(&upper, 1).expect("create");
        layer.whiteout("etc/motd").expect("whiteout");
        layer
            .file("cache/.wh..wh..opq", 0o644, o, 0, io::empty())
            .expect("opaque");
        layer.file("cache/b", 0o644, o, 1, &b"b"[..]).expect("file");
        layer.finish().expect("finish");

        assert_eq!(unpack_layer(&lower, &root).expect("lower"), 5);
        assert_eq!(unpack_layer(&upper, &root).expect("upper"), 3);
        assert!(!root.join("etc/motd").exists());
        assert!(!root.join("cache/a").exists());
        assert_eq!(fs::read_to_string(root.join("cache/b")).expect("b"), "b");
        use std::os::unix::fs::MetadataExt;
        let keep = fs::metadata(root.join("etc/keep")).expect("keep");
        assert_eq!((keep.mode() & 0o777, keep.uid(), keep.gid()), (0o600, 7, 8));
    }
}
