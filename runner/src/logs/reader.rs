//! Reads one output pipe of a step into the log queue.
//!
//! Each read's worth of lines is encoded in one block and pushed with one lock, so the cost per
//! line stays small; while the queue is full the reader waits, which is the backpressure that
//! eventually blocks the child on its pipe.

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt};

use crate::logs::line::{LineEncoder, now_ms, split_lines};
use crate::logs::mask::Masker;
use crate::logs::queue::{LogQueue, QueueClosed};
use crate::wire::{MAX_LINE_BYTES, Stream};

/// How much one read asks for: the size of a Linux pipe buffer.
const READ_SIZE: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("reading the step's {stream:?}: {source}")]
    Pipe {
        stream: Stream,
        source: std::io::Error,
    },
    #[error(transparent)]
    Closed(#[from] QueueClosed),
}

/// Copies `pipe` into `queue` line by line until end of file.
pub async fn read_into_queue<R: AsyncRead + Unpin>(
    mut pipe: R,
    stream: Stream,
    masker: Arc<Masker>,
    queue: Arc<LogQueue>,
) -> Result<(), ReadError> {
    // Room for a partial line of up to the limit plus one full read.
    let mut buf = vec![0u8; MAX_LINE_BYTES + READ_SIZE];
    let mut filled = 0;
    let mut encoder = LineEncoder::new(masker);
    loop {
        let n = pipe
            .read(&mut buf[filled..])
            .await
            .map_err(|source| ReadError::Pipe { stream, source })?;
        let eof = n == 0;
        filled += n;
        let ts_ms = now_ms();
        let used = split_lines(&buf[..filled], eof, |line| {
            encoder.push_raw(ts_ms, stream, line);
        });
        buf.copy_within(used..filled, 0);
        filled -= used;
        if encoder.lines() > 0 {
            queue.push(encoder.encoded(), encoder.lines()).await?;
            encoder.clear();
        }
        if eof {
            return Ok(());
        }
    }
}

/// Writes one line Gantry itself says (`$ build`, `exit code 0`); returns its number.
pub async fn log_system(
    queue: &LogQueue,
    masker: &Arc<Masker>,
    text: &str,
) -> Result<u64, QueueClosed> {
    let mut encoder = LineEncoder::new(masker.clone());
    encoder.push_text(now_ms(), Stream::System, text);
    queue.push(encoder.encoded(), encoder.lines()).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logs::queue::DEFAULT_CAPACITY;
    use crate::wire::decode_line;
    use std::time::Duration;

    async fn drained(queue: &LogQueue) -> String {
        queue.close();
        let mut text = String::new();
        while let Some(batch) = queue.next_batch(usize::MAX, Duration::ZERO).await {
            text.push_str(std::str::from_utf8(&batch.body).expect("utf-8"));
            queue.release(batch.body.len());
        }
        text
    }

    #[tokio::test]
    async fn pipe_output_becomes_masked_numbered_lines() {
        let queue = Arc::new(LogQueue::new(0, DEFAULT_CAPACITY));
        let masker = Arc::new(Masker::new(&["pa55".to_string()]).expect("masker"));
        log_system(&queue, &masker, "$ test").await.expect("open");
        let output: &[u8] = b"hello\npassword pa55\r\nno newline at the end";
        read_into_queue(output, Stream::Stderr, masker, queue.clone())
            .await
            .expect("read");
        assert_eq!(queue.last_line(), 4);
        let text = drained(&queue).await;
        let lines: Vec<(Stream, String)> = text
            .split_terminator('\n')
            .map(|l| decode_line(l).expect("valid"))
            .map(|l| (l.stream, l.text.to_owned()))
            .collect();
        assert_eq!(
            lines,
            vec![
                (Stream::System, "$ test".into()),
                (Stream::Stderr, "hello".into()),
                (Stream::Stderr, "password ***".into()),
                (Stream::Stderr, "no newline at the end".into()),
            ]
        );
    }

    #[tokio::test]
    async fn a_secret_split_across_reads_is_still_masked() {
        let queue = Arc::new(LogQueue::new(0, DEFAULT_CAPACITY));
        let masker = Arc::new(Masker::new(&["topsecret".to_string()]).expect("masker"));
        let (mut tx, rx) = tokio::io::duplex(16);
        let reader = tokio::spawn(read_into_queue(rx, Stream::Stdout, masker, queue.clone()));
        use tokio::io::AsyncWriteExt;
        tx.write_all(b"key: tops").await.expect("write");
        tokio::time::sleep(Duration::from_millis(20)).await;
        tx.write_all(b"ecret\n").await.expect("write");
        drop(tx);
        reader.await.expect("joined").expect("read");
        let text = drained(&queue).await;
        assert!(text.ends_with(" o key: ***\n"), "{text}");
    }
}
