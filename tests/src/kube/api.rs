//! The stand-in's HTTP side: the Kubernetes REST paths (`/api/v1/...`, `/apis/GROUP/VERSION/...`)
//! for the resources Gantry uses, with the real wire format: `Status` errors, lists with a
//! resourceVersion, `?watch=true` streams of `{"type","object"}` lines, label selectors,
//! DeleteOptions with propagation policies, the patch content types, and `pods/log` with
//! `follow`.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::{Json, Router};
use serde_json::{Value, json};

use super::Cluster;
use super::selector::Selector;
use super::store::{ApiErr, Kind};

pub fn router(cluster: Arc<Cluster>) -> Router {
    Router::new()
        .route("/version", any(version))
        .route("/api/v1/{*rest}", any(core))
        .route("/apis/{group}/{version}/{*rest}", any(grouped))
        .with_state(cluster)
}

async fn version(State(cluster): State<Arc<Cluster>>) -> Json<Value> {
    let minor = cluster.minor.load(std::sync::atomic::Ordering::Relaxed);
    Json(json!({
        "major": "1", "minor": minor.to_string(),
        "gitVersion": format!("v1.{minor}.0-gantry-standin"), "platform": "linux/amd64",
    }))
}

impl IntoResponse for ApiErr {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (code, Json(self.status())).into_response()
    }
}

type Params = std::collections::HashMap<String, String>;

async fn core(
    State(cluster): State<Arc<Cluster>>,
    method: Method,
    headers: HeaderMap,
    Path(rest): Path<String>,
    Query(params): Query<Params>,
    body: Bytes,
) -> Response {
    handle(cluster, "v1", method, headers, &rest, params, body).await
}

async fn grouped(
    State(cluster): State<Arc<Cluster>>,
    method: Method,
    headers: HeaderMap,
    Path((group, version, rest)): Path<(String, String, String)>,
    Query(params): Query<Params>,
    body: Bytes,
) -> Response {
    handle(
        cluster,
        &format!("{group}/{version}"),
        method,
        headers,
        &rest,
        params,
        body,
    )
    .await
}

async fn handle(
    cluster: Arc<Cluster>,
    group_version: &str,
    method: Method,
    headers: HeaderMap,
    rest: &str,
    params: Params,
    body: Bytes,
) -> Response {
    let authorised = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == format!("Bearer {}", super::TOKEN));
    if !authorised {
        return ApiErr {
            code: 401,
            reason: "Unauthorized",
            message: "Unauthorized".into(),
        }
        .into_response();
    }
    cluster
        .requests
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    match route(
        &cluster,
        group_version,
        &method,
        &headers,
        rest,
        &params,
        &body,
    )
    .await
    {
        Ok(response) => response,
        Err(e) => e.into_response(),
    }
}

async fn route(
    cluster: &Arc<Cluster>,
    group_version: &str,
    method: &Method,
    headers: &HeaderMap,
    rest: &str,
    params: &Params,
    body: &[u8],
) -> Result<Response, ApiErr> {
    let parts: Vec<&str> = rest.split('/').filter(|p| !p.is_empty()).collect();
    let (namespace, plural, name, sub) = match parts.as_slice() {
        [plural] => (None, *plural, None, None),
        ["namespaces", ns, plural] => (Some(*ns), *plural, None, None),
        ["namespaces", ns, plural, name] => (Some(*ns), *plural, Some(*name), None),
        ["namespaces", ns, plural, name, sub] => (Some(*ns), *plural, Some(*name), Some(*sub)),
        _ => return Err(not_found_path(rest)),
    };
    let kind = Kind::from_path(group_version, plural).ok_or_else(|| not_found_path(rest))?;
    let store = &cluster.store;
    let selector = Selector::parse(params.get("labelSelector").map_or("", String::as_str))
        .map_err(ApiErr::bad)?;
    match (method.as_str(), name, sub) {
        ("GET", None, None) if params.get("watch").is_some_and(|w| w == "true" || w == "1") => {
            Ok(watch(cluster, kind, namespace, selector, params))
        }
        ("GET", None, None) => {
            let (items, rv) = store.list(kind, namespace, &selector);
            Ok(Json(json!({
                "kind": format!("{}List", kind.name()), "apiVersion": kind.api_version(),
                "metadata": {"resourceVersion": rv.to_string()}, "items": items,
            }))
            .into_response())
        }
        ("POST", None, None) => {
            let namespace = namespace.ok_or_else(|| ApiErr::bad("create needs a namespace"))?;
            let object: Value = serde_json::from_slice(body)
                .map_err(|e| ApiErr::bad(format!("the body is not JSON: {e}")))?;
            store.note_received(&object);
            let created = store.create(kind, namespace, object)?;
            Ok((StatusCode::CREATED, Json(created)).into_response())
        }
        ("GET", Some(name), None) => {
            Ok(Json(store.get(kind, namespace.unwrap_or(""), name)?).into_response())
        }
        ("PATCH", Some(name), None | Some("status")) => {
            let content_type = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            let patched = store.update(kind, namespace.unwrap_or(""), name, |object| {
                super::patch::apply(content_type, object, body)
            })?;
            store.note_received(&patched);
            Ok(Json(patched).into_response())
        }
        ("DELETE", Some(name), None) => {
            let options: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
            let policy = options["propagationPolicy"]
                .as_str()
                .map(str::to_owned)
                .or_else(|| params.get("propagationPolicy").cloned());
            let deleted = cluster.delete(kind, namespace.unwrap_or(""), name, policy.as_deref())?;
            Ok(Json(deleted).into_response())
        }
        ("GET", Some(name), Some("log")) if kind == Kind::Pod => {
            let namespace = namespace.unwrap_or("");
            store.get(kind, namespace, name)?;
            Ok(logs(cluster, namespace, name, params))
        }
        _ => Err(ApiErr {
            code: 405,
            reason: "MethodNotAllowed",
            message: format!("{method} is not supported on {rest}"),
        }),
    }
}

fn not_found_path(rest: &str) -> ApiErr {
    ApiErr {
        code: 404,
        reason: "NotFound",
        message: format!("the server could not find the requested resource ({rest})"),
    }
}

fn watch(
    cluster: &Arc<Cluster>,
    kind: Kind,
    namespace: Option<&str>,
    selector: Selector,
    params: &Params,
) -> Response {
    let from: u64 = params
        .get("resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| cluster.store.current_rv());
    let timeout = params
        .get("timeoutSeconds")
        .and_then(|v| v.parse().ok())
        .unwrap_or(300u64);
    let namespace = namespace.map(str::to_owned);
    let (backlog, mut receiver) = cluster.store.watch_from(from);
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(256);
    let wanted = move |e: &super::store::Event| {
        e.kind == kind
            && namespace.as_deref().is_none_or(|n| n == e.namespace)
            && selector.matches(&e.object)
    };
    tokio::spawn(async move {
        let line = |e: &super::store::Event| {
            let mut text = json!({"type": e.type_, "object": e.object}).to_string();
            text.push('\n');
            Bytes::from(text)
        };
        let mut last = from;
        for event in backlog.iter().filter(|e| wanted(e)) {
            last = event.rv;
            if tx.send(Ok(line(event))).await.is_err() {
                return;
            }
        }
        let end = tokio::time::sleep(Duration::from_secs(timeout));
        let mut end = std::pin::pin!(end);
        loop {
            tokio::select! {
                received = receiver.recv() => match received {
                    Ok(event) if event.rv > last && wanted(&event) => {
                        last = event.rv;
                        if tx.send(Ok(line(&event))).await.is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    // Too far behind: end the stream; the client lists and watches again.
                    Err(_) => return,
                },
                _ = &mut end => return,
            }
        }
    });
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
    (
        [(header::CONTENT_TYPE, "application/json")],
        Body::from_stream(stream),
    )
        .into_response()
}

fn logs(cluster: &Arc<Cluster>, namespace: &str, pod: &str, params: &Params) -> Response {
    let container = params.get("container").cloned().unwrap_or_default();
    let path = cluster.kubelet.log_path(namespace, pod, &container);
    let follow = params.get("follow").is_some_and(|f| f == "true");
    let tail: Option<usize> = params.get("tailLines").and_then(|t| t.parse().ok());
    if !follow {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let text = match tail {
            Some(n) => {
                let lines: Vec<&str> = text.lines().collect();
                let mut out = lines[lines.len().saturating_sub(n)..].join("\n");
                if !out.is_empty() {
                    out.push('\n');
                }
                out
            }
            None => text,
        };
        return ([(header::CONTENT_TYPE, "text/plain")], text).into_response();
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(64);
    let kubelet = Arc::clone(&cluster.kubelet);
    let (namespace, pod) = (namespace.to_owned(), pod.to_owned());
    tokio::spawn(async move {
        let mut offset = 0usize;
        loop {
            let running = kubelet.container_running(&namespace, &pod, &container);
            let data = std::fs::read(&path).unwrap_or_default();
            if data.len() > offset {
                let chunk = Bytes::copy_from_slice(&data[offset..]);
                offset = data.len();
                if tx.send(Ok(chunk)).await.is_err() {
                    return;
                }
            }
            if !running {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    (
        [(header::CONTENT_TYPE, "text/plain")],
        Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx)),
    )
        .into_response()
}
