//! The protocol between the engine and `gantry-runner`: the types both sides serialise, and the
//! compact line format logs travel in. The engine depends on these types; the runner owns them
//! because it is the smaller, more widely deployed side (it runs inside every stage container).
//!
//! Every runner call carries `Authorization: Bearer <token>`; the token names one stage attempt,
//! so no path carries ids and a runner can only speak for its own attempt.
//!
//! | call | method and path | body → answer |
//! |---|---|---|
//! | spec | `GET /api/runner/v1/spec` | → [`StageSpec`] |
//! | logs | `POST /api/runner/v1/logs?first_seq=N` | log lines (below) → [`LogAck`] |
//! | steps | `POST /api/runner/v1/steps` | [`StepReport`]s, in order |
//! | step started | `POST /api/runner/v1/steps/start` | [`StepStarted`] (older runners) |
//! | step finished | `POST /api/runner/v1/steps/finish` | [`StepFinished`] (older runners) |
//! | heartbeat | `POST /api/runner/v1/heartbeat` | → [`HeartbeatReply`] |
//! | download artifact | `GET /api/runner/v1/artifacts/{id}` | → tar.gz stream |
//! | upload artifacts | `PUT /api/runner/v1/artifacts/{name}` | tar.gz stream |
//! | complete | `POST /api/runner/v1/complete` | [`Completion`] |
//!
//! A short stage needs only two calls, spec and complete: step reports and the last log lines
//! ride in the completion ([`Completion::steps`], [`Completion::tail`]) instead of travelling
//! alone, because every call in between is a round trip the next stage waits for.

use serde::{Deserialize, Serialize};

pub const API_PREFIX: &str = "/api/runner/v1";

/// Environment variables the executor sets for the runner.
pub const ENV_ENGINE_URL: &str = "GANTRY_ENGINE_URL";
pub const ENV_TOKEN: &str = "GANTRY_RUNNER_TOKEN";
pub const ENV_WORKSPACE: &str = "GANTRY_WORKSPACE";

/// Longest log line kept whole; longer output is split into several lines.
pub const MAX_LINE_BYTES: usize = 16 * 1024;
/// Largest log batch body the engine accepts.
pub const MAX_LOG_BATCH_BYTES: usize = 4 * 1024 * 1024;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct StageSpec {
    pub stage_run_id: i64,
    pub attempt: i32,
    /// The plan key, e.g. `build` or `test[os=linux]`.
    pub key: String,
    pub steps: Vec<StepSpec>,
    /// The stage's environment in order: GANTRY_* facts, pipeline and stage env, params,
    /// secrets. Later entries win.
    pub env: Vec<(String, String)>,
    /// Values to replace with `***` in logs (the secrets' values).
    pub mask: Vec<String>,
    pub timeout_secs: Option<u64>,
    /// Artifacts of needed stages to unpack into the workspace before the first step.
    pub inputs: Vec<ArtifactInput>,
    /// Paths (files, directories, globs) to pack and upload after the steps succeed.
    pub artifacts: Vec<String>,
    /// How often to call heartbeat.
    pub heartbeat_secs: u64,
    /// Log lines already stored for this attempt (non-zero when a runner resumes).
    pub logged_lines: u64,
    /// An image to build and push instead of steps (`s2i` and `b2i` stages).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<crate::image::ImageTask>,
    /// Source to check out into the workspace before anything else (runs from a repository).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkout: Option<Checkout>,
    /// Engines sharing the database, as `http://host:port` like the runner's own: when its own
    /// engine cannot be reached, the runner carries on with these (its token works on any).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub engines: Vec<String>,
}

/// One commit of one repository, to be checked out into the workspace.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Checkout {
    /// Clone URL: `https://`, `http://`, `git://` or a local path.
    pub url: String,
    /// The full commit id to check out (detached HEAD).
    pub commit: String,
    /// The ref the commit was pushed to (`refs/heads/main`, `refs/pull/7/head`): fetched instead
    /// when the server refuses to hand out a commit by id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_ref: Option<String>,
    /// History depth to fetch; 0 fetches everything. Default 1 (just the commit).
    #[serde(default = "default_depth")]
    pub depth: u32,
    /// Also check out submodules (recursively).
    #[serde(default)]
    pub submodules: bool,
    /// Credentials for http(s) URLs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<GitAuth>,
}

fn default_depth() -> u32 {
    1
}

/// HTTP credentials for a clone: a user name and a token or password (GitHub takes
/// `x-access-token`, GitLab `oauth2`, Gitea any user name with a token).
#[derive(Clone, Serialize, Deserialize, PartialEq)]
pub struct GitAuth {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for GitAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitAuth")
            .field("username", &self.username)
            .field("password", &"***")
            .finish()
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct StepSpec {
    pub name: String,
    /// Run with `sh -e -c`.
    pub run: String,
    pub env: Vec<(String, String)>,
    pub timeout_secs: Option<u64>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ArtifactInput {
    pub id: i64,
    /// The stage that kept it, for messages.
    pub stage: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct LogAck {
    /// The highest line number stored; the next batch must start at `acked + 1` (or earlier:
    /// lines already stored are skipped, so resending is safe).
    pub acked: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct StepStarted {
    pub index: u32,
    pub name: String,
    /// The line number of the step's first log line.
    pub first_line: u64,
    /// When the step started (unix ms, the runner's clock): reports may reach the engine later
    /// than the step started, so the engine must not use its own clock. Absent from older
    /// runners, which reported at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_ms: Option<i64>,
}

/// A step's start or end, as queued by the runner and sent with the next call.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum StepReport {
    Started(StepStarted),
    Finished(StepFinished),
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct StepFinished {
    pub index: u32,
    /// The exit code, or 128 + signal number when killed by a signal.
    pub exit_code: i32,
    pub duration_ms: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Default)]
pub struct HeartbeatReply {
    /// The stage was cancelled: stop the steps and complete as cancelled.
    pub cancel: bool,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Succeeded,
    Failed,
    Cancelled,
    TimedOut,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Completion {
    pub outcome: Outcome,
    /// Why, for anything but success (`step "test" exited with 2`).
    pub reason: Option<String>,
    /// How many log lines the runner produced in total: all acknowledged before completing,
    /// or in `tail`.
    pub lines: u64,
    /// The image an `s2i`/`b2i` stage pushed, pinned: `registry/repository@sha256:...`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Step reports not yet sent, in order; the engine records them before the completion.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<StepReport>,
    /// The last log lines, not yet sent; stored in the same transaction as the completion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tail: Option<LogTail>,
}

/// Log lines carried by a completion: `lines` is a batch body (encoded lines, each ending with
/// `\n`) whose first line has number `first_seq`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct LogTail {
    pub first_seq: u64,
    pub lines: String,
}

/// The largest tail a completion carries; more is sent as ordinary log batches first.
pub const MAX_TAIL_BYTES: usize = 256 * 1024;

/// Error bodies from the engine's runner API.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ErrorBody {
    pub error: String,
}

/// Which stream a log line came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stream {
    Stdout,
    Stderr,
    /// Lines Gantry itself writes (step headers, exit codes).
    System,
}

impl Stream {
    pub fn code(self) -> char {
        match self {
            Stream::Stdout => 'o',
            Stream::Stderr => 'e',
            Stream::System => 's',
        }
    }

    pub fn from_code(c: char) -> Option<Stream> {
        match c {
            'o' => Some(Stream::Stdout),
            'e' => Some(Stream::Stderr),
            's' => Some(Stream::System),
            _ => None,
        }
    }
}

/// One log line as it travels and as it is stored: `<unix ms> <o|e|s> <text>\n`.
/// The text never contains `\n`, `\r` or NUL (the runner replaces them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogLine<'a> {
    pub ts_ms: i64,
    pub stream: Stream,
    pub text: &'a str,
}

/// Appends one encoded line to `out`.
pub fn encode_line(out: &mut String, ts_ms: i64, stream: Stream, text: &str) {
    use std::fmt::Write;
    let _ = write!(out, "{ts_ms} {} ", stream.code());
    out.push_str(text);
    out.push('\n');
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("malformed log line {line}: {why}")]
pub struct LineError {
    pub line: usize,
    pub why: &'static str,
}

/// Parses one encoded line (without its `\n`).
pub fn decode_line(raw: &str) -> Result<LogLine<'_>, &'static str> {
    let (ts, rest) = raw.split_once(' ').ok_or("no timestamp")?;
    let ts_ms: i64 = ts.parse().map_err(|_| "bad timestamp")?;
    let mut chars = rest.chars();
    let stream = chars
        .next()
        .and_then(Stream::from_code)
        .ok_or("bad stream")?;
    let text = match chars.next() {
        Some(' ') => &rest[2..],
        None => "",
        Some(_) => return Err("missing space after stream"),
    };
    if text.contains(['\r', '\0']) {
        return Err("control character in text");
    }
    Ok(LogLine {
        ts_ms,
        stream,
        text,
    })
}

/// Checks a batch body and counts its lines. Every line must end with `\n`.
///
/// The engine runs this on every batch (4 MiB, 40,000 lines), so it avoids per-line work where
/// it can: `\r` and NUL are looked for once in the whole body, and a line starting with the
/// `<ts> <stream> ` prefix of the line before (the lines of one read share it) is not decoded
/// again. [`count_batch_lines_line_by_line`] is the plain definition it must agree with.
pub fn count_batch_lines(body: &str) -> Result<u64, LineError> {
    let bytes = body.as_bytes();
    if !body.ends_with('\n') || bytes.contains(&b'\r') || bytes.contains(&0) {
        // Rare: the plain check finds the bad line and numbers it.
        return count_batch_lines_line_by_line(body);
    }
    let mut lines = 0;
    let mut known_prefix = "";
    for (i, raw) in body.split_terminator('\n').enumerate() {
        if known_prefix.is_empty() || !raw.starts_with(known_prefix) {
            // The timestamp, its space, the stream letter and the space after it (if any).
            let prefix = raw
                .find(' ')
                .and_then(|space| raw.get(..raw.len().min(space + 3)))
                .unwrap_or(raw);
            decode_line(prefix).map_err(|why| LineError { line: i + 1, why })?;
            // Only a whole `<ts> <stream> ` prefix: `1 o` would also admit `1 ox`.
            if prefix.ends_with(' ') {
                known_prefix = prefix;
            }
        }
        lines += 1;
    }
    Ok(lines)
}

/// [`count_batch_lines`] by its definition: every line decoded on its own.
pub fn count_batch_lines_line_by_line(body: &str) -> Result<u64, LineError> {
    if !body.is_empty() && !body.ends_with('\n') {
        return Err(LineError {
            line: body.lines().count(),
            why: "batch does not end with a newline",
        });
    }
    let mut n = 0u64;
    for (i, raw) in body.split_terminator('\n').enumerate() {
        decode_line(raw).map_err(|why| LineError { line: i + 1, why })?;
        n += 1;
    }
    Ok(n)
}

/// Makes process output safe to store as one log line: invalid UTF-8 becomes U+FFFD, NUL and
/// carriage returns are dropped (a progress bar's `\r` redraws keep their last state).
pub fn sanitize_line(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    let last_frame = text.rsplit('\r').find(|s| !s.is_empty()).unwrap_or("");
    last_frame.replace('\0', "\u{FFFD}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip() {
        let mut body = String::new();
        encode_line(&mut body, 1_700_000_000_123, Stream::Stdout, "hello world");
        encode_line(&mut body, 1_700_000_000_124, Stream::Stderr, "");
        encode_line(&mut body, 1_700_000_000_125, Stream::System, "$ step 1");
        assert_eq!(count_batch_lines(&body), Ok(3));
        let lines: Vec<LogLine<'_>> = body
            .split_terminator('\n')
            .map(|l| decode_line(l).expect("valid"))
            .collect();
        assert_eq!(lines[0].text, "hello world");
        assert_eq!(lines[1].stream, Stream::Stderr);
        assert_eq!(lines[1].text, "");
        assert_eq!(lines[2].ts_ms, 1_700_000_000_125);
    }

    #[test]
    fn malformed_batches_are_rejected_with_the_line() {
        assert_eq!(
            count_batch_lines("1 o fine\nnope\n"),
            Err(LineError {
                line: 2,
                why: "no timestamp"
            })
        );
        assert!(count_batch_lines("1 o no newline").is_err());
        assert!(count_batch_lines("1 x bad stream\n").is_err());
    }

    #[test]
    fn the_fast_line_count_agrees_with_the_definition() {
        let batches = [
            "",
            "1 o a\n",
            "1 o a\n1 o b\n2 e c\n1 o d\n",
            "1 o\n1 ox\n",
            "1 o \n1 ox\n",
            "1 o a\n1 o\n1 o b\n",
            "-5 s $ build\n",
            "1 o a\n1 o b",
            "1 o a\rb\n",
            "1 o a\n1 o b\0\n",
            "1 o a\nnope\n",
            "1 x a\n",
            "x o a\n",
            "1 é a\n",
            "1 oé\n",
            "1 o é\n1 o é\n",
            " o a\n",
            "1\n",
            "1 \n",
            "\n",
            "99999999999999999999 o overflow\n",
        ];
        for body in batches {
            assert_eq!(
                count_batch_lines(body),
                count_batch_lines_line_by_line(body),
                "{body:?}"
            );
        }
    }

    #[test]
    fn sanitising_keeps_text_safe_to_store() {
        assert_eq!(sanitize_line(b"50%\r100%"), "100%");
        assert_eq!(sanitize_line(b"a\0b"), "a\u{FFFD}b");
        assert_eq!(sanitize_line(&[0x66, 0xff, 0x6f]), "f\u{FFFD}o");
    }
}
