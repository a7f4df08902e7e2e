//! `GET /api/openapi.json` describes the API the engine really serves: every documented route
//! answers (not 404/405) with a documented status, and its JSON matches the documented schema.
//! `GET /metrics` is valid Prometheus text and counts what happened.

use std::collections::BTreeMap;
use std::time::Duration;

use gantry::client::sse;
use gantry::http::openapi::{document, operations};
use gantry::store::RunId;
use gantry_tests::kube::StandIn;
use gantry_tests::kube::store::Kind;
use gantry_tests::{TestEngine, assert_succeeded};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);

const PIPELINE: &str = "name: documented
stages:
  - name: build
    steps:
      - echo hello > out.txt && echo built
    artifacts: [out.txt]
  - name: check
    needs: [build]
    steps:
      - cat out.txt
";

/// Checks `instance` against the document's schema `schema` (refs resolve in the document).
fn assert_matches(doc: &Value, schema: &Value, instance: &Value, what: &str) {
    let mut root = schema.clone();
    root["$schema"] = json!("https://json-schema.org/draft/2020-12/schema");
    root["components"] = doc["components"].clone();
    let validator = jsonschema::validator_for(&root)
        .unwrap_or_else(|e| panic!("{what}: the documented schema does not compile: {e}"));
    let errors: Vec<String> = validator
        .iter_errors(instance)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{what}: the answer does not match the documented schema \
         (update the handler's #[utoipa::path] or the type's ToSchema):\n{}\n{instance:#}",
        errors.join("\n")
    );
}

/// Runs the documented pipeline once so every route has something to show.
async fn engine_with_a_finished_run() -> (TestEngine, RunId) {
    let app = TestEngine::start().await;
    let name = app.apply(PIPELINE).await;
    let run = app.trigger(&name, &[]).await;
    let (run_row, _) = app.wait_for_run(run.run_id, WAIT).await;
    assert_succeeded(&run_row);
    (app, run.run_id)
}

/// A pipeline deploying to `demo/documented` on a stand-in cluster, whose Deployment has two
/// revisions, so the deployment routes have something to show and to undo.
const DEPLOYING: &str = "name: documented-deploy
stages:
  - name: rollout
    deploy:
      namespace: demo
      deployment: documented
      image: web:2
";

pub(crate) async fn a_deployment_with_two_revisions(app: &TestEngine, standin: &StandIn) {
    app.apply(DEPLOYING).await;
    standin.create(
        Kind::Deployment,
        "demo",
        json!({
            "metadata": {"name": "documented"},
            "spec": {
                "selector": {"matchLabels": {"app": "documented"}},
                "template": {
                    "metadata": {"labels": {"app": "documented"}},
                    "spec": {"containers": [{"name": "web", "image": "web:1"}]}
                }
            }
        }),
    );
    standin
        .wait_for("the first revision", Kind::ReplicaSet, WAIT, |sets| {
            sets.len() == 1
        })
        .await;
    standin
        .cluster
        .store
        .update(Kind::Deployment, "demo", "documented", |d| {
            d["spec"]["template"]["spec"]["containers"][0]["image"] = json!("web:2");
            Ok(())
        })
        .expect("a second revision");
    standin
        .wait_for("the second revision", Kind::ReplicaSet, WAIT, |sets| {
            sets.len() == 2
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_route_answers_as_documented() {
    // Stages run locally; the stand-in cluster is there for the deployment routes.
    let standin = StandIn::for_tests().await;
    let app = TestEngine::start_with(|c| {
        standin.configure(c);
        c.executor = "local".into();
    })
    .await;
    let name = app.apply(PIPELINE).await;
    let triggered = app.trigger(&name, &[]).await;
    let (run_row, _) = app.wait_for_run(triggered.run_id, WAIT).await;
    assert_succeeded(&run_row);
    let run = triggered.run_id;
    a_deployment_with_two_revisions(&app, &standin).await;
    let http = app.http();
    let served: Value = http
        .get(format!("{}/api/openapi.json", app.url()))
        .send()
        .await
        .expect("GET openapi.json")
        .json()
        .await
        .expect("JSON");
    let doc = document();
    assert_eq!(served, doc);
    assert_eq!(doc["openapi"], "3.1.0");

    let secret = http
        .put(format!("{}/api/v1/projects/test/secrets/TOKEN", app.url()))
        .body("value")
        .send()
        .await
        .expect("PUT secret");
    assert_eq!(secret.status(), 204);

    // A user to be a member, and a token to revoke (not the one this test uses).
    app.create_user("member", "member-password").await;
    let spare: Value = http
        .post(format!("{}/api/v1/tokens", app.url()))
        .json(&json!({ "name": "spare" }))
        .send()
        .await
        .expect("POST token")
        .json()
        .await
        .expect("JSON");
    let spare = spare["id"].as_i64().expect("token id");

    // A webhook delivery to read back (stored as the generic hook stores one).
    let pipeline = gantry::store::pipelines::find(app.pool(), "test", &name)
        .await
        .expect("pipeline");
    let delivery = gantry::store::deliveries::insert(
        app.pool(),
        gantry::store::deliveries::NewDelivery {
            provider: "generic",
            delivery_key: "documented",
            repository: None,
            pipeline: Some(pipeline.id),
            event: "webhook",
            payload: b"{}",
            status: gantry::store::deliveries::DeliveryStatus::Ignored,
            summary: Some("documented"),
        },
    )
    .await
    .expect("insert a delivery")
    .expect("a new delivery");

    // The run's artifact (out.txt, kept by `build`), to download.
    let artifacts: Value = http
        .get(format!("{}/api/v1/runs/{run}/artifacts", app.url()))
        .send()
        .await
        .expect("GET artifacts")
        .json()
        .await
        .expect("JSON");
    let artifact = artifacts[0]["id"].as_i64().expect("an artifact id");

    // Reads first, then the routes that change things, deletions last.
    let operations = operations();
    let mut routes: Vec<(&str, &str)> = operations
        .iter()
        .map(|(method, path)| (method.as_str(), path.as_str()))
        .collect();
    routes.sort_by_key(|(method, _)| match *method {
        "get" => 0,
        "delete" => 2,
        _ => 1,
    });
    let mut statuses = BTreeMap::new();
    for (method, template) in routes {
        let path = template
            .replace("{project}", "test")
            .replace("{user}", "member")
            .replace("users/{name}", "users/member")
            .replace("tokens/{id}", &format!("tokens/{spare}"))
            .replace("deliveries/{id}", &format!("deliveries/{delivery}"))
            .replace("secrets/{name}", "secrets/TOKEN")
            .replace("{namespace}", "demo")
            .replace("{name}", "documented")
            .replace("{artifact}", &artifact.to_string())
            .replace("{id}", &run.to_string())
            .replace("{key}", "build");
        let url = format!("{}/api/v1{path}", app.url());
        let request = match method {
            "get" => http.get(&url),
            "post" if template.ends_with("/pipelines") => http
                .post(&url)
                .query(&[("file", "documented.yaml")])
                .body(PIPELINE),
            "post" if template == "/users" => http
                .post(&url)
                .json(&json!({ "name": "newcomer", "password": "a long password" })),
            "post" if template == "/tokens" => http.post(&url).json(&json!({ "name": "ci" })),
            "post" => http.post(&url).json(&json!({})),
            "put" if template.ends_with("/members/{user}") => {
                http.put(&url).json(&json!({ "role": "developer" }))
            }
            "put" if template == "/projects/{project}" => {
                http.put(&url).json(&json!({ "anonymous_read": false }))
            }
            "put" => http.put(&url).body("another value"),
            "delete" => http.delete(&url),
            other => panic!("no request for method {other}"),
        };
        let answer = request.send().await.expect("request");
        let status = answer.status().as_u16();
        let what = format!("{} {template} -> {status}", method.to_uppercase());
        assert!(status != 404 && status != 405, "{what}");
        let operation = &doc["paths"][template][method];
        let documented = &operation["responses"][status.to_string()];
        assert!(
            documented.is_object(),
            "{what}: status {status} is not documented"
        );
        let documented = match documented["$ref"].as_str() {
            Some(r) => doc
                .pointer(r.trim_start_matches('#'))
                .cloned()
                .unwrap_or_default(),
            None => documented.clone(),
        };
        let content_type = answer
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let length = answer.content_length();
        let bytes = answer.bytes().await.expect("body");
        let body = String::from_utf8_lossy(&bytes).into_owned();
        let content = documented["content"].as_object();
        match content {
            None => assert!(body.is_empty(), "{what}: undocumented body {body}"),
            Some(content) => {
                let (media, spec) = content
                    .iter()
                    .find(|(media, _)| content_type.starts_with(media.as_str()))
                    .unwrap_or_else(|| {
                        panic!("{what}: content type {content_type} is not documented")
                    });
                match media.as_str() {
                    "application/json" => {
                        let json: Value = serde_json::from_str(&body).expect("JSON body");
                        assert_matches(&doc, &spec["schema"], &json, &what);
                    }
                    "text/event-stream" => {
                        let events = sse::Parser::default().push(body.as_bytes());
                        assert_eq!(
                            events.last().map(|e| e.event.as_str()),
                            Some("end"),
                            "{what}"
                        );
                        let lines: Vec<&sse::Event> =
                            events.iter().filter(|e| e.event == "message").collect();
                        assert!(!lines.is_empty(), "{what}: no log lines");
                        for event in lines {
                            let line: Value =
                                serde_json::from_str(&event.data).expect("JSON event");
                            assert_matches(&doc, &spec["x-event-data"], &line, &what);
                        }
                    }
                    "application/gzip" => {
                        assert_eq!(bytes.get(..2), Some(&[0x1f, 0x8b][..]), "{what}: gzip");
                        assert_eq!(length, Some(bytes.len() as u64), "{what}: length");
                    }
                    _ => assert!(body.contains("built"), "{what}: {body}"),
                }
            }
        }
        statuses.insert(format!("{method} {template}"), status);
    }
    // The finished run cannot be cancelled or approved; it can be rerun.
    assert_eq!(statuses["post /runs/{id}/cancel"], 409);
    assert_eq!(statuses["post /runs/{id}/stages/{key}/approve"], 409);
    assert_eq!(statuses["post /runs/{id}/rerun"], 201);
    assert_eq!(statuses["post /projects/{project}/pipelines"], 200);
    assert_eq!(statuses["post /users"], 201);
    assert_eq!(statuses["post /tokens"], 201);
    assert_eq!(statuses["put /projects/{project}/members/{user}"], 204);
    assert_eq!(statuses["delete /projects/{project}/members/{user}"], 204);
    assert_eq!(statuses["delete /tokens/{id}"], 204);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_match_the_documented_error_schema() {
    let app = TestEngine::start().await;
    let doc = document();
    let http = app.http();
    let invalid = http
        .post(format!("{}/api/v1/projects/test/pipelines", app.url()))
        .query(&[("file", "bad.yaml")])
        .body("name: bad\nstages: 3\n")
        .send()
        .await
        .expect("POST");
    assert_eq!(invalid.status(), 422);
    let body: Value = invalid.json().await.expect("JSON");
    let schema = &doc["paths"]["/projects/{project}/pipelines"]["post"]["responses"]["422"]["content"]
        ["application/json"]["schema"];
    assert_matches(&doc, schema, &body, "invalid pipeline");
    assert!(
        body["problems"][0]
            .as_str()
            .is_some_and(|p| p.starts_with("bad.yaml:2:")),
        "{body}"
    );
    let missing = http
        .get(format!("{}/api/v1/runs/999999", app.url()))
        .send()
        .await
        .expect("GET");
    assert_eq!(missing.status(), 404);
    let body: Value = missing.json().await.expect("JSON");
    assert_matches(
        &doc,
        &json!({ "$ref": "#/components/schemas/Error" }),
        &body,
        "not found",
    );
    app.stop().await;
}

/// Parses the Prometheus text format: `name{labels} value` lines and `#` comments.
fn parse_metrics(text: &str) -> BTreeMap<String, f64> {
    let mut values = BTreeMap::new();
    for line in text.lines() {
        if line.is_empty() || line.starts_with("# HELP ") || line.starts_with("# TYPE ") {
            continue;
        }
        assert!(!line.starts_with('#'), "unexpected comment `{line}`");
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("`{line}` is not `name{{labels}} value`"));
        let name_end = series.find('{').unwrap_or(series.len());
        let name = &series[..name_end];
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name in `{line}`"
        );
        if name_end < series.len() {
            let labels = &series[name_end..];
            assert!(
                labels.starts_with('{') && labels.ends_with('}'),
                "bad labels in `{line}`"
            );
            for pair in labels[1..labels.len() - 1].split(',') {
                let (key, quoted) = pair
                    .split_once('=')
                    .unwrap_or_else(|| panic!("bad label in `{line}`"));
                assert!(!key.is_empty(), "`{line}`");
                assert!(
                    quoted.len() >= 2 && quoted.starts_with('"') && quoted.ends_with('"'),
                    "`{line}`"
                );
            }
        }
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("bad value in `{line}`")),
        };
        assert!(
            values.insert(series.to_owned(), value).is_none(),
            "duplicate series `{series}`"
        );
    }
    values
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_runs_stages_and_the_attempts_this_engine_saw() {
    let (app, _) = engine_with_a_finished_run().await;
    let answer = reqwest::get(format!("{}/metrics", app.url()))
        .await
        .expect("GET /metrics");
    assert_eq!(answer.status(), 200);
    let content_type = answer
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let text = answer.text().await.expect("text");
    let metrics = parse_metrics(&text);
    let get = |series: &str| {
        metrics
            .get(series)
            .copied()
            .unwrap_or_else(|| panic!("no {series} in:\n{text}"))
    };
    assert_eq!(get("gantry_runs{status=\"succeeded\"}"), 1.0);
    for status in ["queued", "running", "failed", "cancelled", "timed_out"] {
        assert_eq!(get(&format!("gantry_runs{{status=\"{status}\"}}")), 0.0);
    }
    assert_eq!(get("gantry_stages{status=\"succeeded\"}"), 2.0);
    for status in [
        "pending",
        "queued",
        "running",
        "failed",
        "cancelled",
        "skipped",
        "waiting_approval",
        "timed_out",
    ] {
        assert_eq!(get(&format!("gantry_stages{{status=\"{status}\"}}")), 0.0);
    }
    assert_eq!(get("gantry_queue_depth"), 0.0);
    // Both stage attempts reported to this engine, and it started both.
    assert_eq!(get("gantry_stage_duration_seconds_count"), 2.0);
    assert_eq!(
        get("gantry_stage_duration_seconds_bucket{le=\"+Inf\"}"),
        2.0
    );
    assert!(get("gantry_stage_duration_seconds_sum") > 0.0);
    assert_eq!(get("gantry_stage_queue_latency_seconds_count"), 2.0);
    assert!(get("gantry_log_bytes_total") > 0.0);
    // Buckets are cumulative.
    let buckets: Vec<f64> = text
        .lines()
        .filter(|l| l.starts_with("gantry_stage_duration_seconds_bucket"))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse().ok())
        .collect();
    assert!(buckets.windows(2).all(|w| w[0] <= w[1]), "{buckets:?}");
    app.stop().await;
}
