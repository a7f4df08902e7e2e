//! `gantry run FILE`: runs one pipeline from the current directory on an embedded engine,
//! prints stage headers and logs as they are written, and exits with the run's status.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use futures_util::StreamExt;

use crate::cli::RunArgs;
use crate::run::{RunContext, TriggerRequest};
use crate::server::Server;
use crate::store::{RunStatus, StageStatus, logs, runs, stages};

const PROJECT: &str = "local";

fn git(args: &[&str]) -> Option<String> {
    let out = std::process::Command::new("git").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        .filter(|s| !s.is_empty())
}

pub async fn run(args: RunArgs) -> ExitCode {
    if std::env::var_os("GANTRY_LOG").is_some() {
        crate::cli::init_tracing();
    }
    let yaml = match std::fs::read_to_string(&args.file) {
        Ok(y) => y,
        Err(e) => {
            eprintln!("gantry: cannot read {}: {e}", args.file.display());
            return ExitCode::from(2);
        }
    };
    let file = args.file.display().to_string();
    if let Err(report) = crate::pipeline::parse(&file, &yaml) {
        eprintln!("{report}");
        return ExitCode::from(2);
    }
    let mut config = args.engine.config();
    config.listen = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    config.source_dir = std::env::current_dir().ok();
    let server = match Server::start(config).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("gantry: {e}");
            return ExitCode::from(2);
        }
    };
    for notice in server.engine.executors.values().filter_map(|e| e.notice()) {
        eprintln!("gantry: {notice}");
    }
    let code = drive(&server, &file, &yaml, args.params.into_iter().collect()).await;
    server.stop().await;
    code
}

async fn drive(
    server: &Server,
    file: &str,
    yaml: &str,
    params: BTreeMap<String, String>,
) -> ExitCode {
    let engine = &server.engine;
    let applied = match crate::run::apply(engine, PROJECT, file, yaml).await {
        Ok(a) => a,
        Err(e) => {
            eprintln!("gantry: {e}");
            return ExitCode::from(2);
        }
    };
    let context = RunContext {
        event: "manual".into(),
        branch: git(&["rev-parse", "--abbrev-ref", "HEAD"]).filter(|b| b != "HEAD"),
        commit_sha: git(&["rev-parse", "HEAD"]),
        ..RunContext::default()
    };
    let triggered = match crate::run::trigger(
        engine,
        PROJECT,
        &applied.name,
        "manual",
        TriggerRequest {
            params,
            context: Some(context),
        },
    )
    .await
    {
        Ok(t) => t,
        Err(e) => {
            eprintln!("gantry: {e}");
            return ExitCode::from(2);
        }
    };
    println!("==> {} run #{}", applied.name, triggered.number);
    let mut printed: HashMap<(i64, i32), i64> = HashMap::new();
    let mut announced: HashMap<i64, StageStatus> = HashMap::new();
    let stdout = std::io::stdout();
    loop {
        let run = match runs::get(&engine.store.pool, triggered.run_id).await {
            Ok(r) => r,
            Err(e) => {
                eprintln!("gantry: {e}");
                return ExitCode::from(2);
            }
        };
        let rows = stages::for_run(&engine.store.pool, triggered.run_id)
            .await
            .unwrap_or_default();
        for row in &rows {
            // Logs first, then the stage's end, so a stage's lines come before its verdict.
            if row.attempt > 0 {
                let after = printed.get(&(row.id.0, row.attempt)).copied().unwrap_or(0);
                let mut chunks = logs::chunks_after(&engine.store.pool, row.id, row.attempt, after);
                let mut last = after;
                let mut out = stdout.lock();
                while let Some(Ok(chunk)) = chunks.next().await {
                    crate::http::logs::each_line(&chunk, last, |line| {
                        let _ = writeln!(out, "[{}] {}", row.key, line.text);
                    });
                    last = chunk.last_seq;
                }
                printed.insert((row.id.0, row.attempt), last);
            }
            if announced.get(&row.id.0) != Some(&row.status) {
                announced.insert(row.id.0, row.status);
                let mut out = stdout.lock();
                match row.status {
                    StageStatus::Running => {
                        let _ = writeln!(out, "--> {} (attempt {})", row.key, row.attempt);
                    }
                    StageStatus::WaitingApproval => {
                        let _ = writeln!(
                            out,
                            "--> {} waits for approval: gantry approve {} {}",
                            row.key, run.id, row.key
                        );
                    }
                    s if s.is_terminal() => {
                        let why = row
                            .error
                            .as_deref()
                            .map(|e| format!(": {e}"))
                            .unwrap_or_default();
                        let _ = writeln!(out, "<-- {} {}{why}", row.key, s.as_str());
                    }
                    _ => {}
                }
            }
        }
        if run.status.is_terminal() {
            let why = run
                .reason
                .as_deref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default();
            println!("==> run #{} {}{why}", run.number, run.status.as_str());
            return if run.status == RunStatus::Succeeded {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            };
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
