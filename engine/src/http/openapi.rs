//! `GET /api/openapi.json`: the OpenAPI 3.1 description of the public API (`/api/v1`),
//! written by hand. `ROUTES` lists every route once; the document is built from it, and tests
//! check it against the router in `api.rs` (so a new route without documentation fails a test)
//! and against the JSON the real API answers (see `tests/tests/api_docs.rs`).

use axum::Json;
use serde_json::{Map, Value, json};

/// Every route of `api::router()`, as (method, path under `/api/v1`).
pub const ROUTES: &[(&str, &str)] = &[
    ("get", "/pipelines"),
    ("post", "/projects/{project}/pipelines"),
    ("post", "/projects/{project}/pipelines/{name}/runs"),
    ("get", "/projects/{project}/pipelines/{name}/runs"),
    ("get", "/projects/{project}/pipelines/{name}/runs/{number}"),
    ("get", "/projects/{project}/secrets"),
    ("put", "/projects/{project}/secrets/{name}"),
    ("get", "/runs"),
    ("get", "/runs/{id}"),
    ("post", "/runs/{id}/cancel"),
    ("post", "/runs/{id}/rerun"),
    ("get", "/runs/{id}/artifacts"),
    ("get", "/runs/{id}/artifacts/{artifact}"),
    ("get", "/runs/{id}/events"),
    ("get", "/runs/{id}/stages/{key}"),
    ("post", "/runs/{id}/stages/{key}/cancel"),
    ("post", "/runs/{id}/stages/{key}/approve"),
    ("post", "/runs/{id}/stages/{key}/reject"),
    ("get", "/runs/{id}/stages/{key}/logs"),
    ("get", "/runs/{id}/stages/{key}/logs/stream"),
    ("get", "/me"),
    ("get", "/projects"),
    ("put", "/projects/{project}"),
    ("get", "/projects/{project}/members"),
    ("put", "/projects/{project}/members/{user}"),
    ("delete", "/projects/{project}/members/{user}"),
    ("get", "/users"),
    ("post", "/users"),
    ("put", "/users/{name}/password"),
    ("get", "/tokens"),
    ("post", "/tokens"),
    ("delete", "/tokens/{id}"),
    ("get", "/projects/{project}/deployments"),
    (
        "get",
        "/projects/{project}/deployments/{namespace}/{name}/history",
    ),
    (
        "post",
        "/projects/{project}/deployments/{namespace}/{name}/undo",
    ),
    ("post", "/projects/{project}/repositories"),
    ("get", "/projects/{project}/repositories"),
    ("get", "/projects/{project}/deliveries"),
    ("get", "/deliveries/{id}"),
];

pub async fn document_json() -> Json<Value> {
    Json(document())
}

/// The whole document.
pub fn document() -> Value {
    let mut paths = Map::new();
    for &(method, path) in ROUTES {
        let Some(op) = operation(method, path) else {
            continue;
        };
        let item = paths
            .entry(path.to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(item) = item {
            item.insert(method.to_owned(), op);
        }
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Gantry API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Apply pipelines, start and steer runs, read their logs and artifacts. \
                Errors are JSON objects with an `error` message (and `problems`, one \
                `FILE:LINE:COL: message` line each, for an invalid pipeline). Callers \
                authenticate with an API token (`Authorization: Bearer gty_...`) or the web \
                UI's session cookie (writes then also need the `X-CSRF-Token` header); what \
                they may do depends on their role in the project (docs/access.md).",
            "license": { "name": "Apache-2.0", "identifier": "Apache-2.0" }
        },
        "servers": [{ "url": "/api/v1" }],
        "tags": [
            { "name": "pipelines", "description": "Pipeline files and their versions." },
            { "name": "runs", "description": "Runs and their stages." },
            { "name": "logs", "description": "Stage logs, downloaded or followed live." },
            { "name": "secrets", "description": "Write-only project secrets." },
            { "name": "access", "description": "Users, API tokens, project members and roles." },
            { "name": "deployments", "description": "Kubernetes Deployments: rollout history and undo." },
            { "name": "webhooks", "description": "Registered repositories and the webhook deliveries they receive (the hooks themselves are POST /hooks/{github,gitlab,gitea,forgejo} and /hooks/generic/{project}/{pipeline})." }
        ],
        "security": [{ "token": [] }, { "session": [] }, {}],
        "paths": paths,
        "components": {
            "schemas": schemas(),
            "parameters": parameters(),
            "securitySchemes": {
                "token": { "type": "http", "scheme": "bearer", "description": "An API token (`gty_...`)." },
                "session": { "type": "apiKey", "in": "cookie", "name": "gantry_session", "description": "The web UI's session; writes also need the `X-CSRF-Token` header." }
            },
            "responses": {
                "Unauthorized": error_response("Not signed in (no or an invalid API token) and the project is not open to anonymous readers."),
                "Forbidden": error_response("The caller's role does not allow this (or a session write lacks its CSRF token)."),
                "NotFound": error_response("The project, pipeline, run or stage does not exist."),
                "Unprocessable": error_response("The request is not valid (a malformed id, an unknown param)."),
                "Conflict": error_response("The run or stage is not in a state that allows this."),
                "Internal": error_response("Something failed inside the engine; the detail is in its log.")
            }
        }
    })
}

fn schema_ref(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

fn param_ref(name: &str) -> Value {
    json!({ "$ref": format!("#/components/parameters/{name}") })
}

fn response_ref(name: &str) -> Value {
    json!({ "$ref": format!("#/components/responses/{name}") })
}

fn error_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": { "application/json": { "schema": schema_ref("Error") } }
    })
}

fn json_response(description: &str, schema: Value) -> Value {
    json!({
        "description": description,
        "content": { "application/json": { "schema": schema } }
    })
}

fn array_of(name: &str) -> Value {
    json!({ "type": "array", "items": schema_ref(name) })
}

/// Adds the errors every route may answer to `responses`.
fn with_errors(mut responses: Value, errors: &[(&str, &str)]) -> Value {
    if let Value::Object(map) = &mut responses {
        for (code, name) in errors {
            map.insert((*code).to_owned(), response_ref(name));
        }
        map.insert("401".to_owned(), response_ref("Unauthorized"));
        map.insert("403".to_owned(), response_ref("Forbidden"));
        map.insert("500".to_owned(), response_ref("Internal"));
    }
    responses
}

fn json_body(name: &str, description: &str) -> Value {
    json!({
        "required": false,
        "description": description,
        "content": { "application/json": { "schema": schema_ref(name) } }
    })
}

fn op(tag: &str, id: &str, summary: &str, params: &[&str], responses: Value) -> Value {
    let parameters: Vec<Value> = params.iter().map(|p| param_ref(p)).collect();
    json!({
        "tags": [tag],
        "operationId": id,
        "summary": summary,
        "parameters": parameters,
        "responses": responses
    })
}

fn with_body(mut operation: Value, body: Value) -> Value {
    operation["requestBody"] = body;
    operation
}

const RUN_ERRORS: &[(&str, &str)] = &[("404", "NotFound"), ("422", "Unprocessable")];
const STEER_ERRORS: &[(&str, &str)] = &[
    ("404", "NotFound"),
    ("409", "Conflict"),
    ("422", "Unprocessable"),
];

/// The operation of one route, or `None` for a route nobody documented (a test catches that).
fn operation(method: &str, path: &str) -> Option<Value> {
    let stage = ["run_id", "stage_key"];
    Some(match (method, path) {
        ("get", "/pipelines") => op(
            "pipelines",
            "listPipelines",
            "Every pipeline of every project, with its newest version.",
            &[],
            with_errors(
                json!({ "200": json_response("The pipelines.", array_of("Pipeline")) }),
                &[],
            ),
        ),
        ("post", "/projects/{project}/pipelines") => with_body(
            op(
                "pipelines",
                "applyPipeline",
                "Validate a pipeline file and store it as its pipeline's newest version \
                 (unless it is identical to the newest). Creates the project and pipeline if needed.",
                &["project", "file"],
                with_errors(
                    json!({
                        "201": json_response("Stored as a new version.", schema_ref("Applied")),
                        "200": json_response("Identical to the newest version; nothing stored.", schema_ref("Applied")),
                        "422": error_response("The file is not a valid pipeline: `problems` lists every problem as `FILE:LINE:COL: message`.")
                    }),
                    &[],
                ),
            ),
            json!({
                "required": true,
                "description": "The pipeline file (YAML).",
                "content": {
                    "application/yaml": { "schema": { "type": "string" } },
                    "text/plain": { "schema": { "type": "string" } }
                }
            }),
        ),
        ("post", "/projects/{project}/pipelines/{name}/runs") => with_body(
            op(
                "runs",
                "triggerRun",
                "Start a run of the pipeline's newest version.",
                &["project", "pipeline"],
                with_errors(
                    json!({ "201": json_response("The run was created.", schema_ref("Triggered")) }),
                    RUN_ERRORS,
                ),
            ),
            json_body(
                "TriggerRequest",
                "Params and the event the run is about (default: a manual run with the params' defaults).",
            ),
        ),
        ("get", "/projects/{project}/pipelines/{name}/runs") => op(
            "runs",
            "listPipelineRuns",
            "Runs of one pipeline, newest first.",
            &["project", "pipeline", "before", "limit"],
            with_errors(
                json!({ "200": json_response("The runs.", array_of("Run")) }),
                RUN_ERRORS,
            ),
        ),
        ("get", "/projects/{project}/pipelines/{name}/runs/{number}") => op(
            "runs",
            "getRunByNumber",
            "A run with its stages, by the number its pipeline gave it (`#N` in the web UI), for whoever may read `GET /runs/{id}`.",
            &["project", "pipeline", "run_number"],
            with_errors(
                json!({ "200": json_response("The run.", schema_ref("RunDetail")) }),
                RUN_ERRORS,
            ),
        ),
        ("get", "/projects/{project}/secrets") => op(
            "secrets",
            "listSecrets",
            "The names of a project's secrets (values are never returned).",
            &["project"],
            with_errors(
                json!({ "200": json_response("The secrets.", array_of("Secret")) }),
                &[("404", "NotFound")],
            ),
        ),
        ("put", "/projects/{project}/secrets/{name}") => with_body(
            op(
                "secrets",
                "putSecret",
                "Create or replace a secret. The value is stored encrypted and is write-only.",
                &["project", "secret_name"],
                with_errors(
                    json!({ "204": { "description": "Stored." } }),
                    &[("422", "Unprocessable")],
                ),
            ),
            json!({
                "required": true,
                "description": "The secret's value, as is: at least 4 characters (a shorter value could not be masked in logs).",
                "content": { "text/plain": { "schema": { "type": "string", "minLength": 4 } } }
            }),
        ),
        ("get", "/runs") => op(
            "runs",
            "listRuns",
            "Runs of every pipeline the caller may read (or of one project), newest first.",
            &["before", "limit", "pipeline_id", "project_filter"],
            with_errors(
                json!({ "200": json_response("The runs.", array_of("Run")) }),
                RUN_ERRORS,
            ),
        ),
        ("get", "/runs/{id}") => op(
            "runs",
            "getRun",
            "A run with its stages.",
            &["run_id"],
            with_errors(
                json!({ "200": json_response("The run.", schema_ref("RunDetail")) }),
                RUN_ERRORS,
            ),
        ),
        ("post", "/runs/{id}/cancel") => op(
            "runs",
            "cancelRun",
            "Cancel a run: stages not started are cancelled, running ones are stopped.",
            &["run_id"],
            with_errors(
                json!({ "202": { "description": "Cancelling." } }),
                STEER_ERRORS,
            ),
        ),
        ("post", "/runs/{id}/rerun") => with_body(
            op(
                "runs",
                "rerunRun",
                "Start a new run of the same pipeline version, params and commit.",
                &["run_id"],
                with_errors(
                    json!({ "201": json_response("The new run.", schema_ref("Triggered")) }),
                    STEER_ERRORS,
                ),
            ),
            json_body(
                "RerunRequest",
                "Whether to rerun only what did not succeed.",
            ),
        ),
        ("get", "/runs/{id}/artifacts") => op(
            "runs",
            "listArtifacts",
            "The artifacts the run's stages kept (including those a rerun reused).",
            &["run_id"],
            with_errors(
                json!({ "200": json_response("The artifacts.", array_of("Artifact")) }),
                RUN_ERRORS,
            ),
        ),
        ("get", "/runs/{id}/artifacts/{artifact}") => op(
            "runs",
            "downloadArtifact",
            "Download one artifact of the run: a tar.gz of the paths the stage kept, its \
             SHA-256 in the `X-Checksum-Sha256` header.",
            &["run_id", "artifact_id"],
            with_errors(
                json!({ "200": {
                    "description": "The artifact.",
                    "headers": { "X-Checksum-Sha256": {
                        "description": "The SHA-256 of the body, hex.",
                        "schema": { "type": "string" }
                    } },
                    "content": { "application/gzip": {
                        "schema": { "type": "string", "contentMediaType": "application/gzip" }
                    } }
                } }),
                RUN_ERRORS,
            ),
        ),
        ("get", "/runs/{id}/events") => op(
            "runs",
            "listRunEvents",
            "What happened in the run, oldest first: triggered, stages queued, started, ended, \
             approved or rejected (and by whom), cancelled, the run's end.",
            &["run_id"],
            with_errors(
                json!({ "200": json_response("The events.", array_of("Event")) }),
                RUN_ERRORS,
            ),
        ),
        ("get", "/runs/{id}/stages/{key}") => op(
            "runs",
            "getStage",
            "One stage of a run with the steps of all its attempts.",
            &stage,
            with_errors(
                json!({ "200": json_response("The stage.", schema_ref("StageDetail")) }),
                RUN_ERRORS,
            ),
        ),
        ("post", "/runs/{id}/stages/{key}/cancel") => op(
            "runs",
            "cancelStage",
            "Cancel one stage: a running attempt is stopped, a waiting stage is cancelled.",
            &stage,
            with_errors(
                json!({ "202": { "description": "Cancelling." } }),
                STEER_ERRORS,
            ),
        ),
        ("post", "/runs/{id}/stages/{key}/approve") => with_body(
            op(
                "runs",
                "approveStage",
                "Approve a stage waiting for approval.",
                &stage,
                with_errors(
                    json!({ "204": { "description": "Approved; the stage goes on." } }),
                    STEER_ERRORS,
                ),
            ),
            json_body("ApprovalRequest", "Who decides."),
        ),
        ("post", "/runs/{id}/stages/{key}/reject") => with_body(
            op(
                "runs",
                "rejectStage",
                "Reject a stage waiting for approval (it fails).",
                &stage,
                with_errors(
                    json!({ "204": { "description": "Rejected; the stage failed." } }),
                    STEER_ERRORS,
                ),
            ),
            json_body("ApprovalRequest", "Who decides."),
        ),
        ("get", "/runs/{id}/stages/{key}/logs") => op(
            "logs",
            "getStageLog",
            "The text of one attempt's log, streamed.",
            &["run_id", "stage_key", "attempt"],
            with_errors(
                json!({
                    "200": {
                        "description": "The log's lines, each ending in a newline.",
                        "content": { "text/plain": { "schema": { "type": "string" } } }
                    }
                }),
                RUN_ERRORS,
            ),
        ),
        ("get", "/runs/{id}/stages/{key}/logs/stream") => op(
            "logs",
            "followStageLog",
            "Follow one attempt's log live over Server-Sent Events.",
            &["run_id", "stage_key", "attempt", "after", "last_event_id"],
            with_errors(
                json!({
                    "200": {
                        "description": "An event stream. Each line is an event whose `id` is its line \
                            number and whose `data` is a `LogLine` as JSON; reconnect with \
                            `Last-Event-ID` to resume. Once the attempt has ended and every line \
                            was sent, an `end` event (data `{}`) closes the stream.",
                        "content": {
                            "text/event-stream": {
                                "schema": sse_event(),
                                "x-event-data": schema_ref("LogLine")
                            }
                        }
                    }
                }),
                RUN_ERRORS,
            ),
        ),
        ("get", "/me") => op(
            "access",
            "getMe",
            "The caller: name, whether an engine administrator, and the projects they may see with their role in each.",
            &[],
            with_errors(
                json!({ "200": json_response("The caller.", schema_ref("Me")) }),
                &[],
            ),
        ),
        ("get", "/projects") => op(
            "access",
            "listProjects",
            "The projects the caller may see, with their role in each.",
            &[],
            with_errors(
                json!({ "200": json_response("The projects.", array_of("Project")) }),
                &[],
            ),
        ),
        ("put", "/projects/{project}") => with_body(
            op(
                "access",
                "putProject",
                "Create a project (engine administrators) or change its settings (the project's admins).",
                &["project"],
                with_errors(
                    json!({ "201": { "description": "Created." }, "204": { "description": "Changed." } }),
                    &[("404", "NotFound"), ("422", "Unprocessable")],
                ),
            ),
            json!({
                "required": true,
                "content": { "application/json": { "schema": schema_ref("ProjectSettings") } }
            }),
        ),
        ("get", "/projects/{project}/members") => op(
            "access",
            "listMembers",
            "The project's members and their roles (the project's admins).",
            &["project"],
            with_errors(
                json!({ "200": json_response("The members.", array_of("Member")) }),
                &[("404", "NotFound")],
            ),
        ),
        ("put", "/projects/{project}/members/{user}") => with_body(
            op(
                "access",
                "putMember",
                "Give a user a role in the project (the project's admins).",
                &["project", "user"],
                with_errors(
                    json!({ "204": { "description": "Set." } }),
                    &[("404", "NotFound"), ("422", "Unprocessable")],
                ),
            ),
            json!({
                "required": true,
                "content": { "application/json": { "schema": schema_ref("MemberRequest") } }
            }),
        ),
        ("delete", "/projects/{project}/members/{user}") => op(
            "access",
            "removeMember",
            "Take a user's role in the project away (the project's admins).",
            &["project", "user"],
            with_errors(
                json!({ "204": { "description": "Removed." } }),
                &[("404", "NotFound")],
            ),
        ),
        ("get", "/users") => op(
            "access",
            "listUsers",
            "Every user (engine administrators).",
            &[],
            with_errors(
                json!({ "200": json_response("The users.", array_of("User")) }),
                &[],
            ),
        ),
        ("post", "/users") => with_body(
            op(
                "access",
                "createUser",
                "Create a user (engine administrators).",
                &[],
                with_errors(
                    json!({ "201": json_response("Created.", schema_ref("User")) }),
                    &[("409", "Conflict"), ("422", "Unprocessable")],
                ),
            ),
            json!({
                "required": true,
                "content": { "application/json": { "schema": schema_ref("NewUser") } }
            }),
        ),
        ("put", "/users/{name}/password") => with_body(
            op(
                "access",
                "setPassword",
                "Set a user's password (one's own, or anyone's for engine administrators).",
                &["user_name"],
                with_errors(
                    json!({ "204": { "description": "Set." } }),
                    &[("404", "NotFound"), ("422", "Unprocessable")],
                ),
            ),
            json!({
                "required": true,
                "description": "The new password (at least 8 characters).",
                "content": { "text/plain": { "schema": { "type": "string", "minLength": 8 } } }
            }),
        ),
        ("get", "/tokens") => op(
            "access",
            "listTokens",
            "The caller's API tokens (never their values).",
            &[],
            with_errors(
                json!({ "200": json_response("The tokens.", array_of("Token")) }),
                &[],
            ),
        ),
        ("post", "/tokens") => with_body(
            op(
                "access",
                "createToken",
                "Create an API token for the caller. Its value is in this answer only: it is stored hashed.",
                &[],
                with_errors(
                    json!({ "201": json_response("Created.", schema_ref("CreatedToken")) }),
                    &[("422", "Unprocessable")],
                ),
            ),
            json!({
                "required": true,
                "content": { "application/json": { "schema": schema_ref("NewToken") } }
            }),
        ),
        ("post", "/projects/{project}/repositories") => with_body(
            op(
                "webhooks",
                "registerRepository",
                "Register a Git repository (or update its registration): pipelines are read from its files at each webhook's commit. Maintainers only. The webhook secret is write-only.",
                &["project"],
                with_errors(
                    json!({
                        "201": json_response("Registered.", schema_ref("RegisteredRepository")),
                        "200": json_response("Updated.", schema_ref("RegisteredRepository"))
                    }),
                    &[("409", "Conflict"), ("422", "Unprocessable")],
                ),
            ),
            json!({
                "required": true,
                "content": { "application/json": { "schema": schema_ref("RepositoryRegistration") } }
            }),
        ),
        ("get", "/projects/{project}/repositories") => op(
            "webhooks",
            "listRepositories",
            "The project's registered repositories.",
            &["project"],
            with_errors(
                json!({ "200": json_response("The repositories.", array_of("Repository")) }),
                &[("404", "NotFound")],
            ),
        ),
        ("get", "/projects/{project}/deliveries") => op(
            "webhooks",
            "listDeliveries",
            "The project's newest webhook deliveries, newest first, each with what it led to.",
            &["project", "limit"],
            with_errors(
                json!({ "200": json_response("The deliveries.", array_of("Delivery")) }),
                &[("404", "NotFound"), ("422", "Unprocessable")],
            ),
        ),
        ("get", "/deliveries/{id}") => op(
            "webhooks",
            "getDelivery",
            "One webhook delivery: its status (received, triggered, ignored, failed), why, and the runs it started.",
            &["delivery_id"],
            with_errors(
                json!({ "200": json_response("The delivery.", schema_ref("Delivery")) }),
                &[("404", "NotFound"), ("422", "Unprocessable")],
            ),
        ),
        ("delete", "/tokens/{id}") => op(
            "access",
            "deleteToken",
            "Revoke one of the caller's API tokens.",
            &["token_id"],
            with_errors(
                json!({ "204": { "description": "Revoked." } }),
                &[("404", "NotFound"), ("422", "Unprocessable")],
            ),
        ),
        ("get", "/projects/{project}/deployments") => op(
            "deployments",
            "deploymentTargets",
            "The Deployments the project's pipelines roll out to.",
            &["project"],
            with_errors(
                json!({ "200": json_response("The Deployments.", array_of("DeployTarget")) }),
                &[("404", "NotFound")],
            ),
        ),
        ("get", "/projects/{project}/deployments/{namespace}/{name}/history") => op(
            "deployments",
            "deploymentHistory",
            "A Deployment's revisions (`kubectl rollout history`), oldest first.",
            &["project", "namespace", "deployment"],
            with_errors(
                json!({ "200": json_response("The revisions.", array_of("Revision")) }),
                DEPLOY_ERRORS,
            ),
        ),
        ("post", "/projects/{project}/deployments/{namespace}/{name}/undo") => with_body(
            op(
                "deployments",
                "undoDeployment",
                "Roll a Deployment back to an earlier revision (`kubectl rollout undo`).",
                &["project", "namespace", "deployment"],
                with_errors(
                    json!({ "200": json_response("What was put back.", schema_ref("Undone")) }),
                    DEPLOY_ERRORS,
                ),
            ),
            json_body("UndoRequest", "The revision to go back to."),
        ),
        _ => return None,
    })
}

/// Names of projects, pipelines, secrets and users: what `pipeline::decode::is_valid_name`
/// accepts.
const NAME_PATTERN: &str = "^[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$";

/// One Server-Sent Event as a client reads it (Open API 3.1 has a stream's `schema` describe
/// each event).
fn sse_event() -> Value {
    json!({
        "type": "object",
        "description": "One event: `message` events carry a `LogLine` as JSON in `data` (see `x-event-data`) and its line number in `id`; the last event, `end`, has data `{}`.",
        "properties": {
            "event": { "type": "string", "enum": ["message", "end"] },
            "id": { "type": "string" },
            "data": { "type": "string", "contentMediaType": "application/json" }
        },
        "required": ["data"]
    })
}

/// No such Deployment or revision (or none of the project's); paused, or no cluster.
const DEPLOY_ERRORS: &[(&str, &str)] = &[
    ("404", "NotFound"),
    ("409", "Conflict"),
    ("422", "Unprocessable"),
];

fn parameters() -> Value {
    let path = |name: &str, description: &str, schema: Value| json!({ "name": name, "in": "path", "required": true, "description": description, "schema": schema });
    let query = |name: &str, description: &str, schema: Value| json!({ "name": name, "in": "query", "required": false, "description": description, "schema": schema });
    let name = json!({ "type": "string", "pattern": NAME_PATTERN });
    json!({
        "project": path("project", "The project's name.", name.clone()),
        "pipeline": path("name", "The pipeline's name.", name.clone()),
        "secret_name": path("name", "The secret's name.", name.clone()),
        "user": path("user", "A user's name.", name.clone()),
        "user_name": path("name", "A user's name.", name),
        "token_id": path("id", "The token's id.", json!({ "type": "integer", "format": "int64" })),
        "delivery_id": path("id", "The delivery's id.", json!({ "type": "integer", "format": "int64" })),
        "run_id": path("id", "The run's id.", json!({ "type": "integer", "format": "int64" })),
        "run_number": path("number", "The run's number in its pipeline (`#N`).", json!({ "type": "integer", "format": "int32", "minimum": 1 })),
        "artifact_id": path(
            "artifact",
            "The artifact's id (`id` in the run's artifact list).",
            json!({ "type": "integer", "format": "int64" })
        ),
        "stage_key": path(
            "key",
            "The stage's key: its name, with the matrix values for a matrix instance (`test[os=linux]`).",
            json!({ "type": "string" })
        ),
        "namespace": path("namespace", "The Kubernetes namespace.", json!({ "type": "string" })),
        "deployment": path("name", "The Deployment's name.", json!({ "type": "string" })),
        "file": query("file", "The file name shown in validation messages (default `.gantry.yaml`).", json!({ "type": "string" })),
        "before": query("before", "Only runs with a smaller id (to page backwards).", json!({ "type": "integer", "format": "int64" })),
        "limit": query("limit", "How many runs (1-500, default 50).", json!({ "type": "integer", "minimum": 1, "maximum": 500, "default": 50 })),
        "pipeline_id": query("pipeline", "Only runs of the pipeline with this id.", json!({ "type": "integer", "format": "int64" })),
        "project_filter": query("project", "Only runs of this project (the caller must be able to read it).", json!({ "type": "string" })),
        "attempt": query("attempt", "Which attempt (default: the current one).", json!({ "type": "integer", "minimum": 1 })),
        "after": query("after", "Start after this line number (`Last-Event-ID` wins if both are given).", json!({ "type": "integer", "minimum": 0 })),
        "last_event_id": {
            "name": "Last-Event-ID", "in": "header", "required": false,
            "description": "The last line number received, when reconnecting.",
            "schema": { "type": "string" }
        }
    })
}

/// An object schema whose properties are all required and which allows no others: what the
/// API's row types serialise to.
fn object(description: &str, properties: Value) -> Value {
    let required: Vec<String> = properties
        .as_object()
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default();
    json!({
        "type": "object",
        "description": description,
        "properties": properties,
        "required": required,
        "additionalProperties": false
    })
}

fn extended(base: &Value, description: &str, extra: &[(&str, Value)]) -> Value {
    let mut properties = base["properties"].clone();
    for (name, schema) in extra {
        properties[*name] = schema.clone();
    }
    object(description, properties)
}

fn schemas() -> Value {
    let id = || json!({ "type": "integer", "format": "int64" });
    let int = || json!({ "type": "integer", "format": "int32" });
    let text = || json!({ "type": "string" });
    let opt_text = || json!({ "type": ["string", "null"] });
    let time = || json!({ "type": "string", "format": "date-time" });
    let opt_time = || json!({ "type": ["string", "null"], "format": "date-time" });
    let opt_id = || json!({ "type": ["integer", "null"], "format": "int64" });
    let flag = || json!({ "type": "boolean" });

    let repository = object(
        "A registered Git repository (the webhook secret is never shown).",
        json!({
            "id": id(),
            "project": text(),
            "provider": text(),
            "full_name": text(),
            "clone_url": text(),
            "token_secret": opt_text(),
            "api_url": opt_text(),
            "pipeline_files": { "type": "array", "items": { "type": "string" } },
            "default_branch": text(),
            "submodules": flag(),
            "created_at": time()
        }),
    );
    let mut registered = extended(
        &repository,
        "A registered repository, with the URL to configure as its webhook.",
        &[
            ("webhook_url", text()),
            (
                "schedules",
                json!({ "type": "array", "items": { "type": "string" }, "description": "The `on.schedule` of the pipeline files at the head of the default branch, armed now: a line per pipeline." }),
            ),
            (
                "schedules_error",
                json!({ "type": "string", "description": "Why the pipeline files could not be read to arm their schedules (the registration stands; the next push to the default branch arms them). Only when they could not." }),
            ),
        ],
    );
    // Only there when arming failed.
    if let Some(required) = registered["required"].as_array_mut() {
        required.retain(|name| name != "schedules_error");
    }
    let run = object(
        "One execution of one pipeline version.",
        json!({
            "id": id(),
            "pipeline_id": id(),
            "project": text(),
            "pipeline": text(),
            "version_id": id(),
            "number": { "type": "integer", "format": "int32", "description": "Numbered per pipeline from 1." },
            "trigger": { "type": "string", "description": "What started it: manual, push, schedule, rerun, ..." },
            "params": { "type": "object", "additionalProperties": { "type": "string" } },
            "context": schema_ref("RunContext"),
            "status": schema_ref("RunStatus"),
            "reason": { "type": ["string", "null"], "description": "Why the run ended as it did." },
            "cancel_requested": flag(),
            "triggered_by": { "type": ["string", "null"], "description": "Who started it: a user, a webhook's sender, `schedule`." },
            "cancelled_by": { "type": ["string", "null"], "description": "Who cancelled it: a user, or `concurrency` for a newer run of its group." },
            "rerun_of": opt_id(),
            "created_at": time(),
            "started_at": opt_time(),
            "finished_at": opt_time()
        }),
    );
    let stage = object(
        "One planned stage instance of a run (the same row across retry attempts).",
        json!({
            "id": id(),
            "run_id": id(),
            "key": text(),
            "plan_index": int(),
            "needs": { "type": "array", "items": int(), "description": "The plan indices of the stages it waits for." },
            "finally": flag(),
            "allow_failure": flag(),
            "status": schema_ref("StageStatus"),
            "attempt": { "type": "integer", "format": "int32", "description": "The current attempt (0 before the first)." },
            "max_attempts": int(),
            "timeout_secs": { "type": ["integer", "null"], "format": "int32" },
            "executor": opt_text(),
            "executor_handle": opt_text(),
            "claimed_by": { "type": ["string", "null"], "description": "The engine process that started the attempt." },
            "cancel_requested": flag(),
            "error": opt_text(),
            "approved_by": { "type": ["string", "null"], "description": "Who approved the stage (a rejection is in `error`: \"rejected by NAME\")." },
            "approval_message": { "type": ["string", "null"], "description": "The approval question as asked: `approval.message` with the run's values, set when the stage began to wait." },
            "reused_from": { "type": ["integer", "null"], "format": "int64", "description": "The stage run whose result a rerun reused." },
            "queued_at": opt_time(),
            "started_at": opt_time(),
            "finished_at": opt_time(),
            "heartbeat_at": opt_time(),
            "image": { "type": ["string", "null"], "description": "The image a build stage pushed." },
            "log_lines": { "type": "integer", "format": "int64" }
        }),
    );
    let step = object(
        "One step of one stage attempt.",
        json!({
            "attempt": int(),
            "idx": int(),
            "name": text(),
            "exit_code": { "type": ["integer", "null"], "format": "int32" },
            "started_at": time(),
            "finished_at": opt_time(),
            "first_line": { "type": ["integer", "null"], "format": "int64", "description": "The step's first log line." }
        }),
    );
    let run_detail = extended(
        &run,
        "A run with its stages.",
        &[
            ("stages", array_of("Stage")),
            (
                "description",
                json!({ "type": ["string", "null"], "description": "The `description` of the pipeline version the run ran." }),
            ),
        ],
    );
    let stage_detail = extended(
        &stage,
        "A stage with its steps.",
        &[("steps", array_of("Step"))],
    );
    // Built in two parts: one `json!` this large passes the macro recursion limit.
    let event = object(
        "One entry of a run's trail, written in the same transaction as the change it records.",
        json!({
            "id": id(),
            "stage_run_id": { "type": ["integer", "null"], "format": "int64", "description": "The stage run it concerns, if any." },
            "kind": { "type": "string", "description": "`run` (triggered, cancel requested, ended), `stage` (a status change) or `approval` (approved or rejected, by whom)." },
            "message": text(),
            "at": time()
        }),
    );
    let mut all = json!({
        "RunStatus": {
            "type": "string",
            "enum": ["queued", "running", "succeeded", "failed", "cancelled", "timed_out"]
        },
        "StageStatus": {
            "type": "string",
            "enum": ["pending", "queued", "running", "succeeded", "failed", "cancelled", "skipped", "waiting_approval", "timed_out"]
        },
        "Run": run,
        "RunDetail": run_detail,
        "Stage": stage,
        "StageDetail": stage_detail,
        "Step": step,
        "Pipeline": object(
            "A pipeline with its newest version.",
            json!({
                "id": id(),
                "project": text(),
                "name": text(),
                "version_id": id(),
                "version": int(),
                "created_at": time()
            }),
        ),
        "Applied": object(
            "The version a pipeline file was stored as.",
            json!({
                "pipeline_id": id(),
                "project": text(),
                "name": text(),
                "version": int(),
                "created": { "type": "boolean", "description": "false when the file was identical to the newest version." }
            }),
        ),
        "Triggered": object(
            "A run that was created.",
            json!({ "run_id": id(), "number": int() }),
        ),
        "Artifact": object(
            "A file set a stage kept (a tar.gz).",
            json!({
                "id": id(),
                "stage_run_id": id(),
                "name": text(),
                "size": { "type": "integer", "format": "int64", "description": "Bytes." },
                "sha256": opt_text()
            }),
        ),
        "Secret": object(
            "A secret's name (values are never returned).",
            json!({ "name": text(), "updated_at": time() }),
        ),
        "LogLine": object(
            "One log line, as the `data` of a log stream event.",
            json!({
                "n": { "type": "integer", "format": "int64", "description": "The line number, from 1 per attempt." },
                "ts_ms": { "type": "integer", "format": "int64", "description": "When it was written (Unix milliseconds)." },
                "stream": { "type": "string", "enum": ["stdout", "stderr", "system"] },
                "text": text()
            }),
        ),
        "Error": {
            "type": "object",
            "properties": {
                "error": { "type": "string", "description": "What went wrong, for people." },
                "problems": {
                    "type": "array",
                    "items": { "type": "string" },
                    "description": "For an invalid pipeline: one `FILE:LINE:COL: message` per problem."
                }
            },
            "required": ["error"],
            "additionalProperties": false
        },
        "RunContext": {
            "type": "object",
            "description": "What a run is about: the event and the commit.",
            "properties": {
                "event": text(),
                "branch": text(),
                "tag": text(),
                "commit_sha": text(),
                "commit_message": { "type": "string", "description": "The commit message's first line (at most 200 characters)." },
                "commit_author": { "type": "string", "description": "The commit's author, by name." },
                "commit_time": { "type": "integer", "format": "int64", "description": "The commit's committer time, seconds since the epoch (images are dated with it)." },
                "pr_number": { "type": "integer", "format": "int64" },
                "pr_title": text(),
                "from_fork": flag()
            },
            "required": ["event"]
        },
        "TriggerRequest": {
            "type": "object",
            "properties": {
                "params": { "type": "object", "additionalProperties": { "type": "string" } },
                "context": { "oneOf": [schema_ref("RunContext"), { "type": "null" }], "description": "Default (or null): a manual run." }
            }
        },
        "RerunRequest": {
            "type": "object",
            "properties": {
                "failed_only": { "type": "boolean", "default": false, "description": "Keep the results of stages that succeeded." }
            }
        },
        "UndoRequest": {
            "type": "object",
            "properties": {
                "to_revision": { "type": "integer", "format": "int64", "minimum": 0, "default": 0, "description": "The revision to go back to; 0: the one before the current." }
            }
        },
        "Revision": object(
            "One revision of a Deployment: a ReplicaSet it controls.",
            json!({
                "revision": id(),
                "replica_set": text(),
                "change_cause": opt_text(),
                "images": { "type": "array", "items": text(), "description": "`container=image` for each container." },
                "current": { "type": "boolean" },
                "created": opt_text()
            }),
        ),
        "DeployTarget": object(
            "A Deployment one of the project's pipelines rolls out to.",
            json!({
                "namespace": text(),
                "deployment": text(),
                "pipeline": text(),
                "stage": text()
            }),
        ),
        "Undone": object(
            "The outcome of an undo.",
            json!({
                "to_revision": id(),
                "changed": { "type": "boolean", "description": "False when the Deployment already ran that revision's template." },
                "revision": { "type": ["integer", "null"], "format": "int64", "description": "The revision the rollback became (the newest), once the Deployment controller took it in; null when it had not within 15 s, or nothing changed." }
            }),
        ),
        "ApprovalRequest": {
            "type": "object",
            "properties": {
                "by": { "type": "string", "description": "Ignored: the signed-in caller is recorded as the one who decided." }
            }
        },
        "Role": { "type": "string", "enum": ["viewer", "developer", "maintainer", "admin"] },
        "Project": object(
            "A project as the caller sees it.",
            json!({
                "name": text(),
                "anonymous_read": { "type": "boolean", "description": "Anyone may read it, signed in or not." },
                "role": { "description": "The role the caller acts with there.", "oneOf": [schema_ref("Role"), { "type": "null" }] }
            }),
        ),
        "Me": object(
            "The caller.",
            json!({ "name": text(), "is_admin": flag(), "projects": array_of("Project") }),
        ),
        "Member": object(
            "A user's role in a project.",
            json!({ "user": text(), "role": schema_ref("Role") }),
        ),
        "User": object(
            "A user.",
            json!({ "id": id(), "name": text(), "is_admin": { "type": "boolean", "description": "An engine administrator: every role in every project, and manages users." }, "created_at": time() }),
        ),
        "Token": object(
            "An API token (its value is never shown again after creation).",
            json!({ "id": id(), "name": text(), "created_at": time(), "last_used_at": opt_time(), "expires_at": opt_time() }),
        ),
        "CreatedToken": object(
            "A token just created, with its value: keep it, it is not shown again.",
            json!({ "id": id(), "name": text(), "created_at": time(), "last_used_at": opt_time(), "expires_at": opt_time(), "token": { "type": "string", "description": "The token (`gty_...`): send it as `Authorization: Bearer TOKEN`." } }),
        ),
        "ProjectSettings": {
            "type": "object",
            "properties": { "anonymous_read": { "type": ["boolean", "null"], "description": "Anyone may read it, signed in or not (null or left out: unchanged)." } }
        },
        "MemberRequest": {
            "type": "object",
            "properties": { "role": schema_ref("Role") },
            "required": ["role"]
        },
        "NewUser": {
            "type": "object",
            "properties": {
                "name": { "type": "string", "pattern": NAME_PATTERN },
                "password": { "type": ["string", "null"], "minLength": 8, "description": "Without one (or null) the user cannot sign in to the web UI until one is set." },
                "is_admin": { "type": "boolean", "default": false }
            },
            "required": ["name"]
        },
        "Repository": repository.clone(),
        "RegisteredRepository": registered,
        "RepositoryRegistration": {
            "type": "object",
            "additionalProperties": false,
            "properties": {
                "provider": { "type": "string", "enum": ["github", "gitlab", "gitea", "forgejo"] },
                "full_name": { "type": "string", "pattern": "/", "description": "`owner/name` as the provider names it." },
                "clone_url": { "type": "string", "pattern": "^(https://|http://|git://|ssh://|file://|/)", "description": "An https://, http://, git:// or ssh:// URL, or a local path." },
                "webhook_secret": { "type": "string", "minLength": 8, "writeOnly": true },
                "token_secret": { "type": ["string", "null"], "description": "A project secret holding an access token (clones, commit statuses)." },
                "api_url": { "type": ["string", "null"], "description": "The provider's API base; default from the provider and clone URL." },
                "pipeline_files": { "type": ["array", "null"], "items": { "type": "string" }, "description": "Default `.gantry.yaml`, `.gantry/*.yaml`." },
                "default_branch": { "type": ["string", "null"] },
                "submodules": { "type": "boolean", "default": false }
            },
            "required": ["provider", "full_name", "clone_url", "webhook_secret"]
        },
        "Delivery": object(
            "A webhook delivery and what it led to.",
            json!({
                "id": id(),
                "provider": text(),
                "delivery_key": text(),
                "repository": opt_text(),
                "project": opt_text(),
                "event": text(),
                "status": { "type": "string", "enum": ["received", "triggered", "ignored", "failed"] },
                "summary": opt_text(),
                "received_at": time(),
                "processed_at": opt_time(),
                "runs": { "type": "array", "items": object("A run the delivery started.", json!({
                    "id": id(), "pipeline": text(), "number": int(), "status": text()
                })) }
            }),
        ),
        "NewToken": {
            "type": "object",
            "properties": {
                "name": { "type": "string", "minLength": 1, "maxLength": 100, "pattern": "\\S", "description": "1 to 100 characters, not only spaces (leading and trailing ones are dropped)." },
                "expires_in_days": { "type": ["integer", "null"], "minimum": 1, "maximum": 3650, "description": "Days until the token expires, 1 to 3650 (ten years). Default (or null): never." }
            },
            "required": ["name"]
        }
    });
    all["Event"] = event;
    all
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// The (method, path) pairs `api::router()` registers, read from its source: every
    /// `.route("PATH", get(..).post(..))` call.
    fn routes_in_router_source() -> BTreeSet<(String, String)> {
        // `api::router()` merges `repos::router()`: both sources count.
        let source = [include_str!("api.rs"), include_str!("repos.rs")]
            .iter()
            .map(|s| {
                s.split("pub fn router()")
                    .nth(1)
                    .and_then(|rest| rest.split("\n}\n").next())
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join("\n");
        let body = source.as_str();
        let mut found = BTreeSet::new();
        for call in body.split(".route(").skip(1) {
            let mut quoted = call.split('"');
            let path = quoted.nth(1).unwrap_or_default().to_owned();
            // Up to the call's closing parenthesis.
            let mut depth = 1;
            let end = call
                .char_indices()
                .find(|&(_, c)| {
                    match c {
                        '(' => depth += 1,
                        ')' => depth -= 1,
                        _ => {}
                    }
                    depth == 0
                })
                .map_or(call.len(), |(i, _)| i);
            let args = &call[..end];
            for method in ["get", "post", "put", "patch", "delete"] {
                let called = args.match_indices(&format!("{method}(")).any(|(i, _)| {
                    i == 0 || !args[..i].ends_with(|c: char| c.is_alphanumeric() || c == '_')
                });
                if called {
                    found.insert((method.to_owned(), path.clone()));
                }
            }
        }
        found
    }

    fn documented() -> BTreeSet<(String, String)> {
        let doc = document();
        let mut found = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().into_iter().flatten() {
            for method in item.as_object().into_iter().flatten().map(|(m, _)| m) {
                found.insert((method.clone(), path.clone()));
            }
        }
        found
    }

    #[test]
    fn every_router_route_is_in_routes() {
        let routes: BTreeSet<(String, String)> = ROUTES
            .iter()
            .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
            .collect();
        let in_router = routes_in_router_source();
        assert!(
            in_router.len() > 10,
            "reading api.rs found too few routes: {in_router:?}"
        );
        assert_eq!(
            in_router, routes,
            "api::router() and openapi::ROUTES differ: add the route to ROUTES and document it"
        );
    }

    #[test]
    fn every_route_is_documented() {
        let routes: BTreeSet<(String, String)> = ROUTES
            .iter()
            .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
            .collect();
        assert_eq!(documented(), routes, "document every route in operation()");
    }

    #[test]
    fn every_reference_resolves_and_path_parameters_match_the_path() {
        let doc = document();
        let mut refs = Vec::new();
        fn collect(v: &Value, out: &mut Vec<String>) {
            match v {
                Value::Object(map) => {
                    for (k, v) in map {
                        match (k.as_str(), v) {
                            ("$ref", Value::String(r)) => out.push(r.clone()),
                            _ => collect(v, out),
                        }
                    }
                }
                Value::Array(items) => items.iter().for_each(|i| collect(i, out)),
                _ => {}
            }
        }
        collect(&doc, &mut refs);
        for r in &refs {
            let pointer = r.trim_start_matches('#');
            assert!(doc.pointer(pointer).is_some(), "dangling $ref {r}");
        }
        for (path, item) in doc["paths"].as_object().into_iter().flatten() {
            let in_path: BTreeSet<&str> = path
                .split('/')
                .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
                .collect();
            for (method, op) in item.as_object().into_iter().flatten() {
                let declared: BTreeSet<&str> = op["parameters"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|p| {
                        let r = p["$ref"].as_str()?.trim_start_matches('#');
                        let param = doc.pointer(r)?;
                        (param["in"] == "path").then(|| param["name"].as_str())?
                    })
                    .collect();
                assert_eq!(declared, in_path, "{method} {path}: path parameters");
            }
        }
    }

    #[test]
    fn docs_copy_of_the_document_is_current() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi.json");
        let current = format!(
            "{}\n",
            serde_json::to_string_pretty(&document()).expect("serialises")
        );
        if std::env::var_os("GANTRY_BLESS").is_some() {
            std::fs::write(&path, &current).expect("write docs/openapi.json");
        }
        let kept = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            kept == current,
            "docs/openapi.json is out of date: GANTRY_BLESS=1 cargo test -p gantry --lib openapi"
        );
    }

    #[test]
    fn operation_ids_are_unique() {
        let doc = document();
        let mut seen = BTreeSet::new();
        for (_, item) in doc["paths"].as_object().into_iter().flatten() {
            for (_, op) in item.as_object().into_iter().flatten() {
                let id = op["operationId"].as_str().unwrap_or_default().to_owned();
                assert!(seen.insert(id.clone()), "duplicate operationId {id}");
            }
        }
    }
}
