//! Layer tarballs written so the same input always gives the same bytes: entries in the order
//! the caller sorted them, a fixed mtime, numeric owners without names, no device numbers or
//! extended attributes, and gzip with no name and a zero header time. The tar streams through
//! two hashers (the uncompressed `diff_id`, the compressed `digest`) into a file, so a layer is
//! never in memory.

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use flate2::write::GzEncoder;
use sha2::{Digest, Sha256};

use super::task::Compression;

/// A finished layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layer {
    /// Where it was written; `None` when it was streamed ([`LayerWriter::streaming`]).
    pub path: Option<PathBuf>,
    /// `sha256:` of the uncompressed tar (the config's `rootfs.diff_ids`).
    pub diff_id: String,
    /// `sha256:` of the gzip file (the manifest's layer digest).
    pub digest: String,
    pub size: u64,
    pub entries: u64,
}

/// Counts and hashes what passes through.
struct Hashing<W> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn hashing<W>(inner: W) -> Hashing<W> {
    Hashing {
        inner,
        hasher: Sha256::new(),
        bytes: 0,
    }
}

/// Who owns an entry (numeric ids only: names would depend on the machine building).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Owner {
    pub uid: u64,
    pub gid: u64,
}

pub struct LayerWriter<W: Write = BufWriter<File>> {
    path: Option<PathBuf>,
    tar: tar::Builder<Hashing<GzEncoder<Hashing<W>>>>,
    mtime: u64,
    entries: u64,
}

impl LayerWriter {
    /// Starts a layer at `path`, with every entry's mtime set to `mtime` (seconds), compressed
    /// [`Compression::Fast`].
    pub fn create(path: &Path, mtime: u64) -> io::Result<LayerWriter> {
        LayerWriter::create_with(path, mtime, Compression::Fast)
    }

    /// [`create`](Self::create) at a chosen compression.
    pub fn create_with(
        path: &Path,
        mtime: u64,
        compression: Compression,
    ) -> io::Result<LayerWriter> {
        let file = BufWriter::with_capacity(256 * 1024, File::create(path)?);
        let mut writer = LayerWriter::streaming_with(file, mtime, compression);
        writer.path = Some(path.to_owned());
        Ok(writer)
    }
}

impl<W: Write> LayerWriter<W> {
    /// Starts a layer written to `sink` as it is made (say, an upload: see [`ChunkSender`]),
    /// compressed [`Compression::Fast`].
    pub fn streaming(sink: W, mtime: u64) -> LayerWriter<W> {
        LayerWriter::streaming_with(sink, mtime, Compression::Fast)
    }

    /// [`streaming`](Self::streaming) at a chosen compression.
    pub fn streaming_with(sink: W, mtime: u64, compression: Compression) -> LayerWriter<W> {
        // GzBuilder's defaults: no file name, mtime 0, OS "unknown": nothing machine-specific.
        let level = flate2::Compression::new(compression.gzip_level());
        let gzip = GzEncoder::new(hashing(sink), level);
        let mut tar = tar::Builder::new(hashing(gzip));
        tar.mode(tar::HeaderMode::Deterministic);
        LayerWriter {
            path: None,
            tar,
            mtime,
            entries: 0,
        }
    }

    fn header(&self, kind: tar::EntryType, mode: u32, owner: Owner, size: u64) -> tar::Header {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(kind);
        header.set_mode(mode & 0o7777);
        header.set_uid(owner.uid);
        header.set_gid(owner.gid);
        header.set_mtime(self.mtime);
        header.set_size(size);
        header
    }

    /// A directory (`path` relative, without a leading `/`).
    pub fn dir(&mut self, path: &str, mode: u32, owner: Owner) -> io::Result<()> {
        let mut header = self.header(tar::EntryType::Directory, mode, owner, 0);
        let name = format!("{}/", path.trim_end_matches('/'));
        self.entries += 1;
        self.tar.append_data(&mut header, name, io::empty())
    }

    /// A regular file with the contents of `reader` (`size` bytes).
    pub fn file(
        &mut self,
        path: &str,
        mode: u32,
        owner: Owner,
        size: u64,
        reader: impl Read,
    ) -> io::Result<()> {
        let mut header = self.header(tar::EntryType::Regular, mode, owner, size);
        self.entries += 1;
        self.tar.append_data(&mut header, path, reader)
    }

    /// A regular file copied from `source` on disk, streamed.
    pub fn file_from(
        &mut self,
        path: &str,
        source: &Path,
        mode: u32,
        owner: Owner,
    ) -> io::Result<()> {
        let file = File::open(source)?;
        let size = file.metadata()?.len();
        // Take exactly `size` bytes: a file that grows meanwhile must not corrupt the tar.
        self.file(path, mode, owner, size, file.take(size))
    }

    pub fn symlink(&mut self, path: &str, target: &Path, owner: Owner) -> io::Result<()> {
        let mut header = self.header(tar::EntryType::Symlink, 0o777, owner, 0);
        self.entries += 1;
        self.tar.append_link(&mut header, path, target)
    }

    /// Deletes `path` of the layers below: an empty `.wh.<name>` beside it.
    pub fn whiteout(&mut self, path: &str) -> io::Result<()> {
        let (parent, name) = match path.rsplit_once('/') {
            Some((parent, name)) => (format!("{parent}/"), name),
            None => (String::new(), path),
        };
        let whiteout = format!("{parent}.wh.{name}");
        self.file(&whiteout, 0o644, Owner::default(), 0, io::empty())
    }

    pub fn finish(self) -> io::Result<Layer> {
        let LayerWriter {
            path, tar, entries, ..
        } = self;
        let tar_hashing = tar.into_inner()?;
        let diff_id = format!("sha256:{}", hex::encode(tar_hashing.hasher.finalize()));
        let mut gz_hashing = tar_hashing.inner.finish()?;
        gz_hashing.flush()?;
        let digest = format!("sha256:{}", hex::encode(gz_hashing.hasher.finalize()));
        let size = gz_hashing.bytes;
        // Flushing hands the last bytes to the sink (an upload's channel, a file's buffer);
        // dropping the sink then ends the stream.
        gz_hashing.inner.flush()?;
        Ok(Layer {
            path,
            diff_id,
            digest,
            size,
            entries,
        })
    }
}

/// A [`Write`] that hands what is written to an async consumer in chunks, through a bounded
/// channel (so a slow consumer slows the writer instead of filling memory). Runs on a
/// blocking thread.
pub struct ChunkSender {
    tx: tokio::sync::mpsc::Sender<Result<bytes::Bytes, io::Error>>,
    buf: Vec<u8>,
}

/// Bytes handed over at once.
const CHUNK: usize = 256 * 1024;

impl ChunkSender {
    /// The sender and the stream of chunks it feeds (for `reqwest::Body::wrap_stream`).
    pub fn channel() -> (
        ChunkSender,
        impl futures_util::Stream<Item = Result<bytes::Bytes, io::Error>> + Send + 'static,
    ) {
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|chunk| (chunk, rx))
        });
        (
            ChunkSender {
                tx,
                buf: Vec::with_capacity(CHUNK),
            },
            stream,
        )
    }

    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = bytes::Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the upload stopped"))
    }
}

impl Write for ChunkSender {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

/// The directories above `path` (`a/b/c` → `a`, `a/b`), outermost first.
pub fn parents(path: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(i) = path[at..].find('/') {
        out.push(path[..at + i].to_owned());
        at += i + 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, mtime: u64) -> Layer {
        let mut layer = LayerWriter::create(&dir.join(name), mtime).expect("create");
        layer.dir("app", 0o755, Owner::default()).expect("dir");
        let body = b"#!/bin/sh\necho hi\n";
        layer
            .file(
                "app/hello",
                0o755,
                Owner::default(),
                body.len() as u64,
                &body[..],
            )
            .expect("file");
        layer
            .symlink("app/hi", Path::new("hello"), Owner { uid: 1001, gid: 0 })
            .expect("link");
        layer.whiteout("etc/motd").expect("whiteout");
        layer.finish().expect("finish")
    }

    #[test]
    fn the_same_entries_give_the_same_digests() {
        let dir = tempfile::tempdir().expect("temp dir");
        let dir = dir.path();
        let a = write(dir, "a.tar.gz", 1);
        let b = write(dir, "b.tar.gz", 1);
        assert_eq!(
            (&a.diff_id, &a.digest, a.size),
            (&b.diff_id, &b.digest, b.size)
        );
        assert_eq!(a.entries, 4);
        let c = write(dir, "c.tar.gz", 2);
        assert_ne!(a.digest, c.digest, "the mtime is part of the layer");
        let bytes = std::fs::read(a.path.as_ref().expect("a file")).expect("read");
        assert_eq!(crate::image::registry::sha256_digest(&bytes), a.digest);
        assert_eq!(bytes.len() as u64, a.size);

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
        assert_eq!(names, ["app/", "app/hello", "app/hi", "etc/.wh.motd"]);
    }

    #[test]
    fn the_compression_level_changes_the_bytes_not_the_content() {
        let dir = tempfile::tempdir().expect("temp dir");
        // Compressible but not trivial: a level shows in the size.
        let body: Vec<u8> = (0..400_000u32)
            .map(|i| b"gantry layer "[(i as usize * 7 + i as usize / 13) % 13])
            .collect();
        let write = |name: &str, compression| {
            let mut layer =
                LayerWriter::create_with(&dir.path().join(name), 1, compression).expect("create");
            layer
                .file(
                    "data",
                    0o644,
                    Owner::default(),
                    body.len() as u64,
                    &body[..],
                )
                .expect("file");
            layer.finish().expect("finish")
        };
        let fast = write("fast", Compression::Fast);
        let best = write("best", Compression::Best);
        assert_eq!(fast.diff_id, best.diff_id, "the same tar");
        assert_ne!(fast.digest, best.digest, "compressed differently");
        assert!(best.size < fast.size, "{} !< {}", best.size, fast.size);
        assert_eq!(
            write("fast-again", Compression::Fast).digest,
            fast.digest,
            "each level is deterministic"
        );
    }

    #[test]
    fn parents_are_listed_outermost_first() {
        assert_eq!(parents("a/b/c"), ["a", "a/b"]);
        assert!(parents("top").is_empty());
    }
}
