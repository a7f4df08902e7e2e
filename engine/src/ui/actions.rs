//! What the UI's forms do: trigger, cancel, rerun (all or the failed part), approve, reject,
//! set a secret. Each checks the form's CSRF token, then the same permission the API route
//! checks, calls the same domain operation, and redirects to the page showing the result.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Form;
use axum::extract::{Path, State};
use axum::response::Redirect;
use serde::Deserialize;

use super::PageError;
use crate::access::{self, Action, Principal};
use crate::engine::Engine;
use crate::http::api;
use crate::http::error::ApiError;
use crate::pipeline::ParamKind;
use crate::run::{self, RunContext, TriggerRequest};
use crate::store::{self, pipelines, stages};

/// The form's fields as sent (repeated names kept), after checking its `csrf` field.
fn checked(who: &mut Principal, fields: &[(String, String)]) -> Result<(), PageError> {
    let csrf = fields
        .iter()
        .find(|(k, _)| k == "csrf")
        .map(|(_, v)| v.as_str())
        .unwrap_or_default();
    who.accept_csrf(csrf);
    // Every form writes: refuse it here already when the token is wrong.
    who.require_user(true)?;
    Ok(())
}

fn field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn to_run(id: impl std::fmt::Display) -> Redirect {
    Redirect::to(&format!("/runs/{id}"))
}

/// Fields `param.NAME`; a bool param's unchecked box sends nothing, which means `false`.
pub async fn trigger(
    State(engine): State<Arc<Engine>>,
    mut who: Principal,
    Path((project, name)): Path<(String, String)>,
    Form(fields): Form<Vec<(String, String)>>,
) -> Result<Redirect, PageError> {
    checked(&mut who, &fields)?;
    access::require(&engine.store.pool, &who, &project, Action::Trigger).await?;
    let row = pipelines::find(&engine.store.pool, &project, &name).await?;
    let plan = engine.plan(row.version_id).await?;
    let mut params = BTreeMap::new();
    for p in &plan.pipeline.params {
        let key = format!("param.{}", p.name.value);
        let given = field(&fields, &key);
        let value = match (&p.kind, given) {
            (ParamKind::Bool { .. }, v) => Some(v.is_some_and(|v| v == "true").to_string()),
            (_, Some(v)) => Some(v.to_owned()),
            (_, None) => None,
        };
        if let Some(value) = value {
            params.insert(p.name.value.clone(), value);
        }
    }
    let triggered = run::trigger_by(
        &engine,
        &project,
        &name,
        "manual",
        TriggerRequest {
            params,
            context: Some(RunContext {
                event: "manual".into(),
                ..RunContext::default()
            }),
        },
        who.user().map(|u| u.name.as_str()),
    )
    .await?;
    Ok(to_run(triggered.run_id))
}

pub async fn cancel(
    State(engine): State<Arc<Engine>>,
    mut who: Principal,
    Path(id): Path<String>,
    Form(fields): Form<Vec<(String, String)>>,
) -> Result<Redirect, PageError> {
    checked(&mut who, &fields)?;
    let (run, _) = api::authorized_run(&engine, &who, &id, Action::Cancel).await?;
    let by = who.user().map(|u| u.name.as_str());
    match field(&fields, "stage") {
        Some(key) => {
            let stage = stages::find(&engine.store.pool, run.id, key).await?;
            run::cancel(&engine, run.id, Some(stage.id), by).await?;
        }
        None => run::cancel(&engine, run.id, None, by).await?,
    }
    Ok(to_run(run.id))
}

/// Field `failed_only=true` keeps what succeeded.
pub async fn rerun(
    State(engine): State<Arc<Engine>>,
    mut who: Principal,
    Path(id): Path<String>,
    Form(fields): Form<Vec<(String, String)>>,
) -> Result<Redirect, PageError> {
    checked(&mut who, &fields)?;
    let (run, _) = api::authorized_run(&engine, &who, &id, Action::Rerun).await?;
    let failed_only = field(&fields, "failed_only") == Some("true");
    let by = who.user().map(|u| u.name.as_str());
    let triggered = run::rerun(&engine, run.id, failed_only, by).await?;
    Ok(to_run(triggered.run_id))
}

pub async fn approve(
    State(engine): State<Arc<Engine>>,
    who: Principal,
    Path((id, key)): Path<(String, String)>,
    Form(fields): Form<Vec<(String, String)>>,
) -> Result<Redirect, PageError> {
    decide(&engine, who, &id, &key, &fields, true).await
}

pub async fn reject(
    State(engine): State<Arc<Engine>>,
    who: Principal,
    Path((id, key)): Path<(String, String)>,
    Form(fields): Form<Vec<(String, String)>>,
) -> Result<Redirect, PageError> {
    decide(&engine, who, &id, &key, &fields, false).await
}

async fn decide(
    engine: &Engine,
    mut who: Principal,
    id: &str,
    key: &str,
    fields: &[(String, String)],
    approve: bool,
) -> Result<Redirect, PageError> {
    checked(&mut who, fields)?;
    api::decide(engine, &who, id, key, approve).await?;
    Ok(to_run(id))
}

#[derive(Deserialize)]
pub struct SecretForm {
    csrf: String,
    name: String,
    value: String,
}

/// Sets a secret; the page it leads to names it, never shows the value.
pub async fn set_secret(
    State(engine): State<Arc<Engine>>,
    mut who: Principal,
    Path(project): Path<String>,
    Form(form): Form<SecretForm>,
) -> Result<Redirect, PageError> {
    who.accept_csrf(&form.csrf);
    let granted = access::require(&engine.store.pool, &who, &project, Action::WriteSecret).await?;
    if !crate::pipeline::decode::is_valid_name(&form.name) {
        return Err(
            ApiError::BadRequest(format!("secret name `{}` is not valid", form.name)).into(),
        );
    }
    let id = match granted.project {
        Some(id) => id,
        None => pipelines::ensure_project(&engine.store.pool, &project).await?,
    };
    let (nonce, ciphertext) = engine.secrets.encrypt(form.value.as_bytes());
    store::secrets::put(&engine.store.pool, id, &form.name, &nonce, &ciphertext).await?;
    Ok(Redirect::to(&format!(
        "/p/{project}/secrets?saved={}",
        super::urlencode(&form.name)
    )))
}

/// `kubectl rollout undo --to-revision N` from the deployments page's button; field
/// `to_revision` (0 or absent: the revision before the current one).
pub async fn undo_deployment(
    State(engine): State<Arc<Engine>>,
    mut who: Principal,
    Path((project, namespace, name)): Path<(String, String, String)>,
    Form(fields): Form<Vec<(String, String)>>,
) -> Result<Redirect, PageError> {
    checked(&mut who, &fields)?;
    let to_revision = match field(&fields, "to_revision").filter(|v| !v.is_empty()) {
        None => 0,
        Some(text) => text
            .parse::<i64>()
            .ok()
            .filter(|r| *r >= 0)
            .ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "`{text}` is not a revision number (0 means the previous revision)"
                ))
            })?,
    };
    let client =
        api::authorized_deployment(&engine, &who, &project, &namespace, &name, Action::Deploy)
            .await?;
    let undone = crate::deploy::history::undo(client, &namespace, &name, to_revision).await?;
    tracing::info!(
        project,
        namespace,
        name,
        to_revision = undone.to_revision,
        changed = undone.changed,
        by = who.user().map(|u| u.name.as_str()).unwrap_or_default(),
        "rollback from the web UI"
    );
    Ok(Redirect::to(&format!(
        "/p/{}/deployments?undone={}&revision={}{}#deploy-{}-{}",
        super::urlencode(&project),
        super::urlencode(&format!("{namespace}/{name}")),
        undone.to_revision,
        if undone.changed {
            ""
        } else {
            "&unchanged=true"
        },
        super::urlencode(&namespace),
        super::urlencode(&name),
    )))
}
