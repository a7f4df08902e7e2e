//! Schemathesis (PyPI) against the OpenAPI document the engine serves: generated requests,
//! valid and invalid, to every documented operation of a real engine that has a project, a
//! pipeline, a finished run with an artifact, a secret, a second user, a webhook delivery and a
//! Deployment with two revisions (on a stand-in cluster) to find. Any 5xx, undocumented status
//! code or content type, body unlike its documented schema, or request the document calls
//! invalid that the engine serves anyway fails the test with schemathesis' own report.
//!
//! `scripts/schemathesis` installs the pinned version and prints where; `scripts/test` exports
//! that path as `GANTRY_SCHEMATHESIS`. The seed and the example count are fixed: the same
//! answers lead to the same requests, and a failure names the case to replay.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use gantry::http::openapi::operations;
use gantry_tests::kube::StandIn;
use gantry_tests::{TestEngine, assert_succeeded};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);

/// How long schemathesis may take at most (it takes far less; a hang must not hold the suite).
const SCHEMATHESIS_LIMIT: Duration = Duration::from_secs(600);

/// Fixed: the same seed generates the same requests, so a failure is reproducible with the
/// command line the test prints.
const SEED: u64 = 20261205;

/// Generated cases per operation in the fuzzing phase (the coverage phase adds its boundary
/// cases, the stateful phase its sequences): about 2,500 requests in all, a minute on two
/// cores busy with other work (twice as many took 90 s there).
const MAX_EXAMPLES: u32 = 25;

const PIPELINE: &str = "name: schema
stages:
  - name: build
    steps:
      - echo hello > out.txt && echo built
    artifacts: [out.txt]
";

/// The `st` program: what `scripts/schemathesis` installed (`scripts/test` sets the variable).
fn schemathesis() -> PathBuf {
    let Some(path) = std::env::var_os("GANTRY_SCHEMATHESIS") else {
        panic!(
            "GANTRY_SCHEMATHESIS is not set: run the tests with scripts/test, which installs \
             schemathesis (scripts/schemathesis) and sets it"
        );
    };
    let path = PathBuf::from(path);
    assert!(
        path.is_file(),
        "GANTRY_SCHEMATHESIS={} does not exist: run scripts/test (or scripts/schemathesis) to \
         install schemathesis",
        path.display()
    );
    path
}

/// Path parameters bound to what exists, half of the time (the other half stays generated, so
/// unknown ids and names are asked about too): without them nearly every request would be a
/// 404 and the answers with data would go unchecked.
fn config(values: &[(&str, Vec<Value>)]) -> String {
    let mut toml = String::new();
    for (name, entries) in values {
        let list: Vec<String> = entries.iter().map(Value::to_string).collect();
        toml.push_str(&format!(
            "[dictionaries.{name}]\nvalues = [{}]\n\n",
            list.join(", ")
        ));
    }
    toml.push_str("[parameters]\n");
    for (name, _) in values {
        toml.push_str(&format!(
            "\"path.{name}\" = {{ dictionary = \"{name}\", probability = 0.5 }}\n"
        ));
    }
    toml
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_answers_as_its_openapi_document_says() {
    let st = schemathesis();
    let started = Instant::now();
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
    super::api_docs::a_deployment_with_two_revisions(&app, &standin).await;
    let http = app.http();

    let secret = http
        .put(format!("{}/api/v1/projects/test/secrets/TOKEN", app.url()))
        .body("a secret value")
        .send()
        .await
        .expect("PUT secret");
    assert_eq!(secret.status(), 204);
    app.create_user("member", "member-password").await;
    app.grant("test", "member", gantry::access::Role::Developer)
        .await;
    let pipeline = gantry::store::pipelines::find(app.pool(), "test", &name)
        .await
        .expect("pipeline");
    let delivery = gantry::store::deliveries::insert(
        app.pool(),
        gantry::store::deliveries::NewDelivery {
            provider: "generic",
            delivery_key: "schema",
            repository: None,
            pipeline: Some(pipeline.id),
            event: "webhook",
            payload: b"{}",
            status: gantry::store::deliveries::DeliveryStatus::Ignored,
            summary: Some("schema"),
        },
    )
    .await
    .expect("insert a delivery")
    .expect("a new delivery");
    let artifacts: Value = http
        .get(format!("{}/api/v1/runs/{run}/artifacts", app.url()))
        .send()
        .await
        .expect("GET artifacts")
        .json()
        .await
        .expect("JSON");
    let artifact = artifacts[0]["id"].as_i64().expect("an artifact id");

    let dir = tempfile::tempdir().expect("temp dir");
    let config_file = dir.path().join("schemathesis.toml");
    std::fs::write(
        &config_file,
        config(&[
            ("project", vec![json!("test")]),
            // The pipeline's, the secret's, the user's and the Deployment's name: `name` is each
            // in some path.
            (
                "name",
                vec![
                    json!(name),
                    json!("TOKEN"),
                    json!("member"),
                    json!("documented"),
                ],
            ),
            ("namespace", vec![json!("demo")]),
            ("user", vec![json!("member")]),
            ("id", vec![json!(run.0), json!(delivery)]),
            ("number", vec![json!(run_row.number)]),
            ("key", vec![json!("build")]),
            ("artifact", vec![json!(artifact)]),
        ]),
    )
    .expect("write schemathesis.toml");

    let url = app.url();
    let args: Vec<String> = vec![
        "--config-file".into(),
        config_file.display().to_string(),
        "run".into(),
        format!("{url}/api/openapi.json"),
        "--url".into(),
        format!("{url}/api/v1"),
        "--header".into(),
        format!("Authorization: Bearer {}", app.token),
        // No 5xx; only documented status codes and content types; bodies as documented; and a
        // request the document calls invalid (`limit=0`, an empty secret) refused, not served.
        "--checks".into(),
        "not_a_server_error,status_code_conformance,content_type_conformance,\
         response_schema_conformance,negative_data_rejection"
            .into(),
        "--seed".into(),
        SEED.to_string(),
        "--max-examples".into(),
        MAX_EXAMPLES.to_string(),
        // Only the generated requests, none remembered from an earlier run (which would make
        // two runs with the same seed differ).
        "--generation-database".into(),
        "none".into(),
        // Every phase: the document has no examples (that phase finds nothing to do) and no
        // links, but schemathesis infers links from its schemas for the stateful sequences.
        "--phases".into(),
        "examples,coverage,fuzzing,stateful".into(),
        // Revoking the token this test authenticates with would turn every later answer into
        // a 401 (generated ids are small numbers, and the administrator's token is among the
        // first); `api_docs` revokes a spare token instead.
        "--exclude-operation-id".into(),
        "deleteToken".into(),
        // One at a time: with two worker threads, hypothesis' `ast.parse` of its own lambdas
        // (for their descriptions) fails now and then on Python 3.11 ("AST constructor
        // recursion depth mismatch", a CPython bug with parsing in several threads at once),
        // which schemathesis reports as an error of the operation being tested.
        "--workers".into(),
        "1".into(),
        "--request-timeout".into(),
        "30".into(),
        "--no-color".into(),
        "--output-truncate".into(),
        "false".into(),
    ];
    let command_line = format!(
        "{} {}",
        st.display(),
        args.iter()
            .map(|a| if a.starts_with("Authorization:") {
                "'Authorization: Bearer …'".to_owned()
            } else {
                a.clone()
            })
            .collect::<Vec<_>>()
            .join(" ")
    );
    let child = tokio::process::Command::new(&st)
        .args(&args)
        // Its reports and caches land in the temporary directory, not in the checkout.
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", st.display()));
    let output = tokio::time::timeout(SCHEMATHESIS_LIMIT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("schemathesis still running after {SCHEMATHESIS_LIMIT:?}"))
        .expect("schemathesis output");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "schemathesis found answers that differ from docs/openapi.json ({}):\n{command_line}\n\n{report}",
        output.status
    );
    // A run that tested less than it should also exits 0: every operation but the excluded
    // one must have been tested.
    let tested = report
        .lines()
        .find_map(|line| line.trim().strip_prefix("Tested: "))
        .and_then(|n| n.trim().parse::<usize>().ok());
    assert_eq!(
        tested,
        Some(operations().len() - 1),
        "schemathesis did not test every operation:\n{command_line}\n\n{report}"
    );
    eprintln!(
        "schemathesis passed in {:?} (engine set-up included):\n{command_line}\n{report}",
        started.elapsed()
    );
    app.stop().await;
}
