//! Moves artifact archives between the engine and the workspace as streams: a download is
//! unpacked while it arrives, an upload is packed while it is sent. A blocking thread does the
//! tar and gzip work; bounded channels carry the bytes, so memory stays at a few chunks.
//!
//! A transfer cut off by a network failure or an engine restart starts over (unpacking again
//! overwrites the same files; packing again gives the same archive). A fault in the archive
//! itself is final and fails the stage.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::CONTENT_TYPE;
use reqwest::{Body, Method};
use tokio::sync::mpsc;

use crate::artifact::archive::{self, ArtifactError, Unpacked};
use crate::engine::{ApiError, Attempt, EngineClient, check, describe};

/// The name the engine stores a stage's uploaded artifacts under.
pub const UPLOAD_NAME: &str = "artifacts";
/// A download that delivers nothing for this long is treated as broken and started over.
const STALL_LIMIT: Duration = Duration::from_secs(120);
/// Chunks in flight between the network and the blocking thread.
const CHANNEL_CHUNKS: usize = 8;
/// Bytes collected before a packed chunk is handed to the upload.
const UPLOAD_CHUNK: usize = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
    #[error("the archive worker stopped unexpectedly: {0}")]
    Worker(String),
}

/// Downloads artifact `id` and unpacks it into `workspace` as it arrives.
pub async fn download_and_unpack(
    client: &EngineClient,
    id: i64,
    workspace: &Path,
) -> Result<Unpacked, TransferError> {
    const CALL: &str = "artifact download";
    client
        .retrying(CALL, || async {
            let sent = client
                .request(Method::GET, &format!("/artifacts/{id}"))
                .send()
                .await;
            let mut response = match check(CALL, sent).await {
                Attempt::Done(response) => response,
                Attempt::Retry(why) => return Attempt::Retry(why),
                Attempt::Fatal(err) => return Attempt::Fatal(err.into()),
            };
            let (tx, rx) = mpsc::channel(CHANNEL_CHUNKS);
            let destination = workspace.to_owned();
            let unpacking = tokio::task::spawn_blocking(move || {
                archive::unpack(ChannelReader::new(rx), &destination)
            });
            let mut broken: Option<String> = None;
            loop {
                let chunk = match tokio::time::timeout(STALL_LIMIT, response.chunk()).await {
                    Ok(Ok(Some(chunk))) => Ok(chunk),
                    Ok(Ok(None)) => break,
                    Ok(Err(err)) => Err(describe(&err)),
                    Err(_) => Err(format!("no data for {} s", STALL_LIMIT.as_secs())),
                };
                match chunk {
                    Ok(chunk) => {
                        // A closed channel means the unpacker stopped: its result says why.
                        if tx.send(Ok(chunk)).await.is_err() {
                            break;
                        }
                    }
                    Err(why) => {
                        // Tell the unpacker the stream broke, rather than letting it see an end.
                        let _ = tx.send(Err(())).await;
                        broken = Some(why);
                        break;
                    }
                }
            }
            drop(tx);
            let unpacked = unpacking.await;
            match (broken, unpacked) {
                (Some(why), _) => Attempt::Retry(why),
                (None, Ok(Ok(unpacked))) => Attempt::Done(unpacked),
                (None, Ok(Err(err))) => Attempt::Fatal(err.into()),
                (None, Err(err)) => Attempt::Fatal(TransferError::Worker(err.to_string())),
            }
        })
        .await
}

/// Packs `entries` (from [`archive::resolve`]) and uploads them as the stage's artifacts.
pub async fn pack_and_upload(
    client: &EngineClient,
    workspace: &Path,
    entries: &[PathBuf],
) -> Result<(), TransferError> {
    const CALL: &str = "artifact upload";
    client
        .retrying(CALL, || async {
            let (tx, mut rx) = mpsc::channel::<io::Result<Bytes>>(CHANNEL_CHUNKS);
            let abort = tx.clone();
            let (workspace, entries) = (workspace.to_owned(), entries.to_vec());
            let packing = tokio::task::spawn_blocking(move || {
                let packed = archive::pack(&workspace, &entries, ChannelWriter::new(tx))
                    .and_then(|writer| writer.finish().map_err(ArtifactError::Write));
                if packed.is_err() {
                    // Fail the request body, so the engine never takes a cut-off archive as whole.
                    let _ = abort.blocking_send(Err(io::Error::other("packing failed")));
                }
                packed
            });
            let body = Body::wrap_stream(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)));
            let sent = client
                .request(Method::PUT, &format!("/artifacts/{UPLOAD_NAME}"))
                .header(CONTENT_TYPE, "application/gzip")
                .body(body)
                .send()
                .await;
            let packing_fault = match packing.await {
                Ok(Ok(())) => None,
                Ok(Err(err)) => Some(TransferError::Artifact(err)),
                Err(err) => Some(TransferError::Worker(err.to_string())),
            };
            match (check(CALL, sent).await, packing_fault) {
                // The upload broke off and packing only stopped because of that: try again.
                (Attempt::Retry(why), None) => Attempt::Retry(why),
                (Attempt::Retry(why), Some(TransferError::Artifact(err)))
                    if err.is_disconnect() =>
                {
                    Attempt::Retry(why)
                }
                (Attempt::Fatal(err), _) => Attempt::Fatal(err.into()),
                (_, Some(fault)) => Attempt::Fatal(fault),
                (Attempt::Done(_), None) => Attempt::Done(()),
            }
        })
        .await
}

/// The blocking side of a download: reads chunks the async side received.
struct ChannelReader {
    rx: mpsc::Receiver<Result<Bytes, ()>>,
    current: Bytes,
}

impl ChannelReader {
    fn new(rx: mpsc::Receiver<Result<Bytes, ()>>) -> ChannelReader {
        ChannelReader {
            rx,
            current: Bytes::new(),
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(chunk)) => self.current = chunk,
                Some(Err(())) => {
                    return Err(io::Error::new(
                        io::ErrorKind::BrokenPipe,
                        "the download broke off",
                    ));
                }
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        let _ = self.current.split_to(n);
        Ok(n)
    }
}

/// The blocking side of an upload: collects packed bytes into chunks for the request body.
struct ChannelWriter {
    tx: mpsc::Sender<io::Result<Bytes>>,
    buf: Vec<u8>,
}

impl ChannelWriter {
    fn new(tx: mpsc::Sender<io::Result<Bytes>>) -> ChannelWriter {
        ChannelWriter {
            tx,
            buf: Vec::with_capacity(UPLOAD_CHUNK),
        }
    }

    fn send_buffered(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(
            &mut self.buf,
            Vec::with_capacity(UPLOAD_CHUNK),
        ));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the upload connection closed"))
    }

    /// Sends what is left; the stream ends when the writer is dropped.
    fn finish(mut self) -> io::Result<()> {
        self.send_buffered()
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        // Take at most what fills the chunk, so chunks stay bounded whatever the caller writes.
        let n = data.len().min(UPLOAD_CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() >= UPLOAD_CHUNK {
            self.send_buffered()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        // Flushing mid-archive would only make small chunks; the end is sent by `finish`.
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_reader_ends_cleanly_or_reports_a_break() {
        let (tx, rx) = mpsc::channel(4);
        tx.try_send(Ok(Bytes::from_static(b"hello ")))
            .expect("room");
        tx.try_send(Ok(Bytes::from_static(b"world"))).expect("room");
        drop(tx);
        let mut text = String::new();
        ChannelReader::new(rx)
            .read_to_string(&mut text)
            .expect("clean end");
        assert_eq!(text, "hello world");

        let (tx, rx) = mpsc::channel(4);
        tx.try_send(Ok(Bytes::from_static(b"part"))).expect("room");
        tx.try_send(Err(())).expect("room");
        let mut text = String::new();
        let err = ChannelReader::new(rx)
            .read_to_string(&mut text)
            .expect_err("broken");
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
    }

    #[test]
    fn channel_writer_delivers_every_byte_in_chunks() {
        let (tx, mut rx) = mpsc::channel(64);
        let data = vec![7u8; UPLOAD_CHUNK * 2 + 100];
        let writer = std::thread::spawn(move || {
            let mut writer = ChannelWriter::new(tx);
            writer.write_all(&data).expect("write");
            writer.finish().expect("finish");
        });
        let mut total = 0;
        let mut chunks = 0;
        while let Some(chunk) = rx.blocking_recv() {
            total += chunk.expect("ok").len();
            chunks += 1;
        }
        writer.join().expect("joined");
        assert_eq!(total, UPLOAD_CHUNK * 2 + 100);
        assert_eq!(chunks, 3, "two full chunks and the tail");
    }

    #[test]
    fn a_writer_whose_upload_closed_reports_a_disconnect() {
        let (tx, rx) = mpsc::channel(1);
        drop(rx);
        let mut writer = ChannelWriter::new(tx);
        let err = writer
            .write_all(&vec![0u8; UPLOAD_CHUNK])
            .expect_err("closed");
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
        let wrapped = ArtifactError::Write(err);
        assert!(wrapped.is_disconnect());
    }
}
