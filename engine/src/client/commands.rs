//! The `gantry` commands that talk to a running engine: each calls the API through `Client`
//! and prints what came back. Exit status: 0 done, 1 the engine refused or the run failed, 2
//! the engine could not be asked (no connection, a bad URL, unreadable input).

use std::collections::BTreeMap;
use std::io::{IsTerminal, Read, Write};
use std::process::ExitCode;

use super::{Client, ClientError, follow, show};
use crate::cli::{
    ApplyArgs, DecisionArgs, LogsArgs, ProjectArgs, RerunArgs, RunsArgs, ServerArgs, TriggerArgs,
};
use crate::store::{RunStatus, StageStatus};

/// Prints an error as the engine worded it and picks the exit status.
fn report(error: &ClientError) -> ExitCode {
    match error {
        ClientError::Api { problems, .. } if !problems.is_empty() => {
            let mut err = std::io::stderr().lock();
            for problem in problems {
                let _ = writeln!(err, "{problem}");
            }
        }
        other => eprintln!("gantry: {other}"),
    }
    error.exit_code()
}

fn usage(message: &str) -> ExitCode {
    eprintln!("gantry: {message}");
    ExitCode::from(2)
}

fn connect(server: &ServerArgs) -> Result<Client, ExitCode> {
    Client::new(&server.server)
        .map(|c| c.with_token(server.token()))
        .map_err(|e| report(&e))
}

/// Runs `body` with a client of the engine, turning its error into the exit status.
async fn with_client<F, Fut>(server: &ServerArgs, body: F) -> ExitCode
where
    F: FnOnce(Client) -> Fut,
    Fut: std::future::Future<Output = Result<ExitCode, ClientError>>,
{
    let client = match connect(server) {
        Ok(c) => c,
        Err(code) => return code,
    };
    match body(client).await {
        Ok(code) => code,
        Err(e) => report(&e),
    }
}

fn out(text: impl std::fmt::Display) {
    // A closed pipe (`gantry runs | head`) is not an error worth reporting.
    let _ = writeln!(std::io::stdout().lock(), "{text}");
}

fn run_outcome(status: RunStatus) -> ExitCode {
    if status == RunStatus::Succeeded {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

pub async fn apply(args: ApplyArgs) -> ExitCode {
    let client = match connect(&args.project.server) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let mut code = ExitCode::SUCCESS;
    for path in &args.files {
        let file = path.display().to_string();
        let yaml = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) => return usage(&format!("cannot read {file}: {e}")),
        };
        match client.apply(&args.project.project, &file, yaml).await {
            Ok(applied) if applied.created => {
                out(format!(
                    "applied {} version {}",
                    applied.name, applied.version
                ));
            }
            Ok(applied) => out(format!(
                "unchanged {} version {}",
                applied.name, applied.version
            )),
            Err(e @ ClientError::Api { .. }) => code = report(&e),
            Err(e) => return report(&e),
        }
    }
    code
}

pub async fn trigger(args: TriggerArgs) -> ExitCode {
    let params: BTreeMap<String, String> = args.params.into_iter().collect();
    with_client(&args.project.server, |client| async move {
        let triggered = client
            .trigger(&args.project.project, &args.pipeline, &params)
            .await?;
        out(format!(
            "triggered run {}: {} #{}",
            triggered.run_id, args.pipeline, triggered.number
        ));
        if !args.follow {
            return Ok(ExitCode::SUCCESS);
        }
        let run = follow::run(&client, triggered.run_id).await?;
        Ok(run_outcome(run.status))
    })
    .await
}

pub async fn runs(args: RunsArgs) -> ExitCode {
    with_client(&args.server, |client| async move {
        let runs = client
            .runs(
                args.project.as_deref(),
                args.pipeline.as_deref(),
                args.limit,
            )
            .await?;
        if runs.is_empty() {
            eprintln!("no runs");
        } else {
            let text = show::runs_table(&runs, chrono::Utc::now());
            let _ = std::io::stdout().lock().write_all(text.as_bytes());
        }
        Ok(ExitCode::SUCCESS)
    })
    .await
}

pub async fn status(run: i64, server: ServerArgs) -> ExitCode {
    with_client(&server, |client| async move {
        let run = client.run(run).await?;
        let text = show::run_status(&run, chrono::Utc::now());
        let _ = std::io::stdout().lock().write_all(text.as_bytes());
        Ok(ExitCode::SUCCESS)
    })
    .await
}

pub async fn logs(args: LogsArgs) -> ExitCode {
    with_client(&args.server, |client| async move {
        if args.follow {
            let stage = match args.attempt {
                Some(attempt) => {
                    let mut stdout = std::io::stdout();
                    follow::attempt_log(&client, args.run, &args.stage, attempt, |line| {
                        let _ = writeln!(stdout, "{}", line.text);
                    })
                    .await?;
                    return Ok(ExitCode::SUCCESS);
                }
                None => {
                    follow::stage_log(&client, args.run, &args.stage, &mut std::io::stdout())
                        .await?
                }
            };
            return Ok(match stage.status {
                StageStatus::Failed | StageStatus::TimedOut | StageStatus::Cancelled => {
                    ExitCode::FAILURE
                }
                _ => ExitCode::SUCCESS,
            });
        }
        let mut response = client.log(args.run, &args.stage, args.attempt).await?;
        let mut stdout = std::io::stdout().lock();
        while let Some(chunk) = client.next_chunk(&mut response).await? {
            if stdout.write_all(&chunk).is_err() {
                break; // the reader went away (`| head`)
            }
        }
        let _ = stdout.flush();
        Ok(ExitCode::SUCCESS)
    })
    .await
}

pub async fn cancel(run: i64, stage: Option<String>, server: ServerArgs) -> ExitCode {
    with_client(&server, |client| async move {
        client.cancel(run, stage.as_deref()).await?;
        match stage {
            Some(key) => out(format!("cancelling stage {key} of run {run}")),
            None => out(format!("cancelling run {run}")),
        }
        Ok(ExitCode::SUCCESS)
    })
    .await
}

pub async fn decide(args: DecisionArgs, approve: bool) -> ExitCode {
    with_client(&args.server, |client| async move {
        client.decide(args.run, &args.stage, approve).await?;
        let verb = if approve { "approved" } else { "rejected" };
        out(format!("{verb} stage {} of run {}", args.stage, args.run));
        Ok(ExitCode::SUCCESS)
    })
    .await
}

pub async fn rerun(args: RerunArgs) -> ExitCode {
    with_client(&args.server, |client| async move {
        let triggered = client.rerun(args.run, args.failed).await?;
        out(format!(
            "triggered run {}: #{}, a rerun of run {}{}",
            triggered.run_id,
            triggered.number,
            args.run,
            if args.failed {
                " (what did not succeed)"
            } else {
                ""
            }
        ));
        if !args.follow {
            return Ok(ExitCode::SUCCESS);
        }
        let run = follow::run(&client, triggered.run_id).await?;
        Ok(run_outcome(run.status))
    })
    .await
}

/// Reads a line from the terminal without echoing it.
fn read_hidden_line(prompt: &str) -> std::io::Result<String> {
    use nix::sys::termios::{self, LocalFlags, SetArg};
    let stdin = std::io::stdin();
    eprint!("{prompt}");
    let saved = termios::tcgetattr(&stdin).map_err(std::io::Error::from)?;
    let mut quiet = saved.clone();
    quiet.local_flags.remove(LocalFlags::ECHO);
    termios::tcsetattr(&stdin, SetArg::TCSANOW, &quiet).map_err(std::io::Error::from)?;
    let mut line = String::new();
    let read = stdin.read_line(&mut line);
    let _ = termios::tcsetattr(&stdin, SetArg::TCSANOW, &saved);
    eprintln!();
    read.map(|_| line)
}

/// The value on stdin, without the one line end `echo` or a terminal adds.
fn secret_value(name: &str) -> std::io::Result<String> {
    let mut value = if std::io::stdin().is_terminal() {
        read_hidden_line(&format!("value of {name} (not shown): "))?
    } else {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text)?;
        text
    };
    if value.ends_with('\n') {
        value.pop();
        if value.ends_with('\r') {
            value.pop();
        }
    }
    Ok(value)
}

pub async fn set_secret(name: String, project: ProjectArgs) -> ExitCode {
    let value = match secret_value(&name) {
        Ok(v) if v.is_empty() => {
            return usage("no value on stdin: `gantry secret set NAME < FILE`");
        }
        Ok(v) => v,
        Err(e) => return usage(&format!("cannot read the value from stdin: {e}")),
    };
    with_client(&project.server, |client| async move {
        client.set_secret(&project.project, &name, value).await?;
        out(format!("secret {name} set in project {}", project.project));
        Ok(ExitCode::SUCCESS)
    })
    .await
}

pub async fn list_secrets(project: ProjectArgs) -> ExitCode {
    with_client(&project.server, |client| async move {
        let secrets = client.secrets(&project.project).await?;
        if secrets.is_empty() {
            eprintln!("no secrets in project {}", project.project);
        } else {
            let rows: Vec<Vec<String>> = secrets
                .iter()
                .map(|s| vec![s.name.clone(), show::moment(Some(s.updated_at))])
                .collect();
            let text = show::table(&["NAME", "UPDATED"], &rows);
            let _ = std::io::stdout().lock().write_all(text.as_bytes());
        }
        Ok(ExitCode::SUCCESS)
    })
    .await
}

fn deploy_target(target: &str) -> Result<(&str, &str), ExitCode> {
    crate::deploy::parse_target(target)
        .ok_or_else(|| usage(&format!("`{target}` is not NAMESPACE/NAME")))
}

pub async fn deploy_history(target: String, project: ProjectArgs) -> ExitCode {
    let (namespace, name) = match deploy_target(&target) {
        Ok(t) => t,
        Err(code) => return code,
    };
    let project_name = project.project.clone();
    with_client(&project.server, |client| async move {
        let revisions = client
            .deploy_history(&project_name, namespace, name)
            .await?;
        out(format!("deployment.apps/{name}"));
        out(format!(
            "{:<10} {:<8} {:<40} IMAGES",
            "REVISION", "CURRENT", "CHANGE-CAUSE"
        ));
        for r in &revisions {
            out(format!(
                "{:<10} {:<8} {:<40} {}",
                r.revision,
                if r.current { "*" } else { "" },
                r.change_cause.as_deref().unwrap_or("<none>"),
                r.images.join(",")
            ));
        }
        Ok(ExitCode::SUCCESS)
    })
    .await
}

pub async fn deploy_undo(target: String, to_revision: i64, project: ProjectArgs) -> ExitCode {
    let (namespace, name) = match deploy_target(&target) {
        Ok(t) => t,
        Err(code) => return code,
    };
    let project_name = project.project.clone();
    with_client(&project.server, |client| async move {
        let undone = client
            .deploy_undo(&project_name, namespace, name, to_revision)
            .await?;
        if undone.changed {
            out(format!(
                "deployment.apps/{name} rolled back to revision {}",
                undone.to_revision
            ));
        } else {
            out(format!(
                "deployment.apps/{name}: skipped rollback (current template already matches revision {})",
                undone.to_revision
            ));
        }
        Ok(ExitCode::SUCCESS)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_errors_fail_the_operation_and_transport_errors_are_usage_errors() {
        let api = ClientError::Api {
            status: reqwest::StatusCode::CONFLICT,
            message: "run 3 has already ended".into(),
            problems: vec![],
        };
        assert_eq!(api.exit_code(), ExitCode::FAILURE);
        let unreachable = ClientError::Unreachable {
            url: "http://127.0.0.1:1".into(),
            detail: "connection refused".into(),
        };
        assert_eq!(unreachable.exit_code(), ExitCode::from(2));
    }
}
