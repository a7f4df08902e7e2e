//! The control plane's etcd, spoken to directly on its unix socket (etcd's HTTP/JSON gateway
//! to its v3 API): its health, its current revision, and compaction, which throws away every
//! revision before a given one. Compaction is how a test makes a watch's resourceVersion "too
//! old" (410 Gone) on demand instead of waiting for the API server's own (every 5 minutes).

use std::path::Path;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `method path` with `body` (JSON) over the unix socket; the answer's status code and body.
async fn request(
    socket: &Path,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Option<(u16, String)> {
    let mut stream = tokio::net::UnixStream::connect(socket).await.ok()?;
    let body = body.map(Value::to_string).unwrap_or_default();
    // HTTP/1.0: etcd closes the connection after the answer, so reading to the end is enough.
    let head = format!(
        "{method} {path} HTTP/1.0\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.ok()?;
    stream.write_all(body.as_bytes()).await.ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.ok()?;
    let (status_line, rest) = answer.split_once("\r\n")?;
    let code = status_line.split_whitespace().nth(1)?.parse().ok()?;
    let (_, body) = rest.split_once("\r\n\r\n")?;
    Some((code, body.to_owned()))
}

/// Whether the etcd at `socket` says it is healthy (`GET /health`).
pub async fn healthy(socket: &Path) -> bool {
    request(socket, "GET", "/health", None)
        .await
        .is_some_and(|(_, body)| body.contains("\"health\":\"true\""))
}

/// A v3 API call that must succeed; its answer.
async fn call(socket: &Path, path: &str, body: &Value) -> Value {
    let (code, text) = request(socket, "POST", path, Some(body))
        .await
        .unwrap_or_else(|| panic!("etcd {path}: no answer on {}", socket.display()));
    assert_eq!(code, 200, "etcd {path} {body}: {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("etcd {path}: {e}: {text}"))
}

/// The store's current revision: the resourceVersion the API server's next write goes past.
pub async fn revision(socket: &Path) -> i64 {
    // Any range answers with the header; `/` matches nothing the API server writes (its keys
    // start with `/registry/`), so the answer stays small.
    let answer = call(socket, "/v3/kv/range", &json!({"key": base64("/")})).await;
    // int64 fields are strings in the gateway's JSON.
    answer["header"]["revision"]
        .as_str()
        .and_then(|r| r.parse().ok())
        .unwrap_or_else(|| panic!("etcd's revision: {answer}"))
}

/// Writes `value` under `key` (a new revision).
pub async fn put(socket: &Path, key: &str, value: &str) {
    let body = json!({"key": base64(key), "value": base64(value)});
    call(socket, "/v3/kv/put", &body).await;
}

/// Bytes as the gateway's JSON carries them.
fn base64(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(text)
}

/// Compacts the store to `revision`: watches and reads from any revision before it fail with
/// "required revision has been compacted" (the API server's 410 Gone, reason `Expired`).
/// Physical: it returns once the old revisions are really gone.
pub async fn compact(socket: &Path, revision: i64) {
    call(
        socket,
        "/v3/kv/compaction",
        &json!({"revision": revision.to_string(), "physical": true}),
    )
    .await;
}
