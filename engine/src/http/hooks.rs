//! Webhook endpoints: `POST /hooks/{github,gitlab,gitea,forgejo}` and the generic
//! `POST /hooks/generic/{project}/{pipeline}`. A delivery is size-limited, its repository found,
//! its signature checked before anything else of it is believed, then stored and answered 202;
//! the processor (`webhook::process`) decides what it starts. Redeliveries (same delivery id)
//! are answered 200 and not processed again.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::error::ApiError;
use crate::engine::Engine;
use crate::store::{deliveries, repos};
use crate::webhook::cache::KnownRepo;
use crate::webhook::intake::Incoming;
use crate::webhook::{self, Provider};

pub fn router() -> Router<Arc<Engine>> {
    Router::new()
        .route("/github", post(github))
        .route("/gitlab", post(gitlab))
        .route("/gitea", post(gitea))
        .route("/forgejo", post(gitea))
        .route("/generic/{project}/{pipeline}", post(generic))
}

async fn github(State(e): State<Arc<Engine>>, h: HeaderMap, b: Body) -> Result<Response, ApiError> {
    receive(&e, Provider::Github, &h, b).await
}

async fn gitlab(State(e): State<Arc<Engine>>, h: HeaderMap, b: Body) -> Result<Response, ApiError> {
    receive(&e, Provider::Gitlab, &h, b).await
}

async fn gitea(State(e): State<Arc<Engine>>, h: HeaderMap, b: Body) -> Result<Response, ApiError> {
    receive(&e, Provider::Gitea, &h, b).await
}

/// Reads the body up to the limit; larger deliveries get 413 with the limit named.
async fn read_body(engine: &Engine, body: Body) -> Result<bytes::Bytes, ApiError> {
    let limit = engine.config.webhook_max_bytes;
    axum::body::to_bytes(body, limit).await.map_err(|_| {
        ApiError::PayloadTooLarge(format!(
            "the payload is larger than the {} KiB limit for webhook deliveries",
            limit / 1024
        ))
    })
}

fn header<'a>(headers: &'a HeaderMap, names: &[&str]) -> Option<&'a str> {
    names
        .iter()
        .find_map(|n| headers.get(*n).and_then(|v| v.to_str().ok()))
        .filter(|v| !v.is_empty())
}

/// The delivery id, or (for senders that give none) a digest of the body, so a resent
/// identical payload is still recognised.
fn delivery_key(headers: &HeaderMap, names: &[&str], body: &[u8]) -> String {
    match header(headers, names) {
        Some(id) => id.chars().take(200).collect(),
        None => format!("sha256:{}", hex::encode(Sha256::digest(body))),
    }
}

fn answer(status: StatusCode, body: serde_json::Value) -> Response {
    (status, Json(body)).into_response()
}

async fn receive(
    engine: &Engine,
    provider: Provider,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let names = webhook::headers(provider);
    let event = header(headers, names.event).ok_or_else(|| {
        ApiError::BadPayload(format!(
            "missing {} header: is this a {} webhook?",
            names.event[0],
            provider.as_str()
        ))
    })?;
    let raw = read_body(engine, body).await?;
    let content_type = header(headers, &["content-type"]);
    let body = webhook::json_of(content_type, &raw)?;
    let named = webhook::repository(provider, &body)?;
    let known = known_repo(engine, provider, &named).await?;
    // The signature covers the body as it was sent (the form, for a form-encoded delivery).
    webhook::verify(provider, &known.secret, headers, &raw)?;
    let repo = &known.row;

    let key = delivery_key(headers, names.delivery, &body);
    // A ping is answered at once: there is nothing to process, and the sender wants a 200.
    let ping = event == "ping";
    let stored = engine
        .intake
        .store(
            &engine.store.pool,
            Incoming {
                provider: provider.as_str(),
                delivery_key: key.clone(),
                repository: repo.id,
                event: event.to_owned(),
                payload: body.clone(),
                status: if ping {
                    deliveries::DeliveryStatus::Ignored
                } else {
                    deliveries::DeliveryStatus::Received
                },
                summary: ping.then_some("ping: the hook works"),
            },
        )
        .await?;
    let Some(id) = stored else {
        let earlier = deliveries::find_key(&engine.store.pool, provider.as_str(), &key).await?;
        return Ok(answer(
            StatusCode::OK,
            json!({ "delivery": earlier, "status": "duplicate",
                    "summary": "this delivery id was received before; it is not processed again" }),
        ));
    };
    if ping {
        return Ok(answer(
            StatusCode::OK,
            json!({ "delivery": id, "status": "ignored", "summary": "ping: the hook works" }),
        ));
    }
    // The insert also NOTIFYs, which wakes idle engines sharing the database; this one's
    // processor is woken directly.
    engine.deliveries.notify_one();
    Ok(answer(
        StatusCode::ACCEPTED,
        json!({ "delivery": id, "status": "received" }),
    ))
}

/// The registration a delivery names, with its secret: from the cache when read in the
/// last seconds (every delivery needs it, and registrations rarely change).
async fn known_repo(
    engine: &Engine,
    provider: Provider,
    named: &webhook::RepoRef,
) -> Result<Arc<KnownRepo>, ApiError> {
    if let Some(known) = engine
        .webhook_cache
        .repo(provider.as_str(), &named.full_name)
    {
        return Ok(known);
    }
    let row = repos::find_for_delivery(
        &engine.store.pool,
        provider.as_str(),
        &named.full_name,
        &named.urls,
    )
    .await?
    .ok_or_else(|| {
        ApiError::NotFound(format!(
            "no {} repository `{}` is registered with Gantry (register it with POST /api/v1/projects/PROJECT/repositories)",
            provider.as_str(),
            named.full_name
        ))
    })?;
    let secret = engine
        .secrets
        .decrypt(&row.secret_nonce, &row.secret_cipher)
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let known = Arc::new(KnownRepo { row, secret });
    engine
        .webhook_cache
        .keep_repo(provider.as_str(), &named.full_name, Arc::clone(&known));
    Ok(known)
}

/// The generic hook ([`webhook::generic`]): the pipeline's webhook secret as
/// `Authorization: Bearer VALUE` (or `X-Gantry-Token`), an optional JSON body, and an optional
/// `X-Gantry-Delivery` id.
async fn generic(
    State(engine): State<Arc<Engine>>,
    Path((project, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let body = read_body(&engine, body).await?;
    let token = header(&headers, &["x-gantry-token"])
        .or_else(|| {
            header(&headers, &["authorization"]).and_then(|v| v.strip_prefix("Bearer "))
        })
        .ok_or_else(|| {
            ApiError::Unauthorized(
                "missing token: send the pipeline's webhook secret as `Authorization: Bearer ...` or `X-Gantry-Token`".into(),
            )
        })?;
    let delivery = header(&headers, &["x-gantry-delivery"]);
    match webhook::generic::receive(&engine, &project, &name, token, delivery, &body).await? {
        webhook::generic::Received::Duplicate(earlier) => Ok(answer(
            StatusCode::OK,
            json!({ "delivery": earlier, "status": "duplicate",
                    "summary": "this delivery id was received before; it is not processed again" }),
        )),
        webhook::generic::Received::Started(triggered) => Ok(answer(
            StatusCode::ACCEPTED,
            json!({ "run_id": triggered.run_id, "number": triggered.number }),
        )),
    }
}
