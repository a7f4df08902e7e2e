//! The `gantry` commands that talk to a running engine: each calls the API through `Client`
//! and prints what came back. Exit status: 0 done, 1 the engine refused or the run failed, 2
//! the engine could not be asked (no connection, a bad URL, unreadable input).

use std::collections::BTreeMap;
use std::io::{IsTerminal, Read, Write};
use std::process::ExitCode;

use super::run_ref::{self, RunRef, label};
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

/// Prints the engine's problems with a pipeline file (`FILE:LINE:COL: message` each), each with
/// the line of the local file it points at and a caret under the column.
fn report_problems(error: &ClientError, file: &str, source: &str) -> ExitCode {
    let ClientError::Api { problems, .. } = error else {
        return report(error);
    };
    if problems.is_empty() {
        return report(error);
    }
    let mut err = std::io::stderr().lock();
    for problem in problems {
        let _ = writeln!(err, "{problem}");
        if let Some(snippet) = problem_position(problem, file)
            .and_then(|pos| crate::pipeline::diagnostic::snippet(source, pos))
        {
            let _ = write!(err, "{snippet}");
        }
    }
    error.exit_code()
}

/// The position in `FILE:LINE:COL: message`.
fn problem_position(problem: &str, file: &str) -> Option<crate::pipeline::yaml::Pos> {
    let rest = problem.strip_prefix(file)?.strip_prefix(':')?;
    let mut parts = rest.splitn(3, ':');
    let line = parts.next()?.parse().ok()?;
    let col = parts.next()?.parse().ok()?;
    Some(crate::pipeline::yaml::Pos::new(line, col))
}

fn usage(message: &str) -> ExitCode {
    eprintln!("gantry: {message}");
    ExitCode::from(2)
}

/// The run at the front of `words` and the words after it, which must number `rest` (a
/// range); anything else is a usage error naming the forms a run takes.
fn take_run(
    words: &[String],
    rest: std::ops::RangeInclusive<usize>,
    after: &str,
) -> Result<(RunRef, Vec<String>), ExitCode> {
    let (run, left) = run_ref::take(words).map_err(|e| usage(&e))?;
    if !rest.contains(&left.len()) {
        return Err(usage(&if left.is_empty() {
            format!("give {after} after {run}")
        } else {
            format!(
                "unexpected `{}` after {run}{}",
                left.join(" "),
                if *rest.end() > 0 {
                    format!(" (expected {after})")
                } else {
                    String::new()
                }
            )
        }));
    }
    Ok((run, left.to_vec()))
}

fn connect(server: &ServerArgs) -> Result<Client, ExitCode> {
    Client::new(&server.server)
        .map(|c| c.with_credential(server.credential()))
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
        match client
            .apply(&args.project.project, &file, yaml.clone())
            .await
        {
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
            Err(e @ ClientError::Api { .. }) => code = report_problems(&e, &file, &yaml),
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
            "triggered {} #{} (id {})",
            args.pipeline, triggered.number, triggered.run_id
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

pub async fn status(words: Vec<String>, server: ServerArgs) -> ExitCode {
    let (run, _) = match take_run(&words, 0..=0, "nothing") {
        Ok(r) => r,
        Err(code) => return code,
    };
    with_client(&server, |client| async move {
        let run = client.find_run(&run).await?;
        let text = show::run_status(&run, chrono::Utc::now());
        let _ = std::io::stdout().lock().write_all(text.as_bytes());
        Ok(ExitCode::SUCCESS)
    })
    .await
}

pub async fn logs(args: LogsArgs) -> ExitCode {
    let (run, stage) = match take_run(&args.run, 1..=1, "a stage") {
        Ok((run, mut rest)) => (run, rest.remove(0)),
        Err(code) => return code,
    };
    with_client(&args.server, |client| async move {
        let run = client.run_id(&run).await?;
        if args.follow {
            let stage = match args.attempt {
                Some(attempt) => {
                    let mut stdout = std::io::stdout().lock();
                    follow::attempt_log(&client, run, &stage, attempt, "", &mut stdout).await?;
                    return Ok(ExitCode::SUCCESS);
                }
                None => follow::stage_log(&client, run, &stage, &mut std::io::stdout()).await?,
            };
            return Ok(match stage.status {
                StageStatus::Failed | StageStatus::TimedOut | StageStatus::Cancelled => {
                    ExitCode::FAILURE
                }
                _ => ExitCode::SUCCESS,
            });
        }
        let mut response = client.log(run, &stage, args.attempt).await?;
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

pub async fn cancel(words: Vec<String>, server: ServerArgs) -> ExitCode {
    let (run, stage) = match take_run(&words, 0..=1, "at most a stage") {
        Ok((run, rest)) => (run, rest.into_iter().next()),
        Err(code) => return code,
    };
    with_client(&server, |client| async move {
        let run = client.find_run(&run).await?;
        client.cancel(run.id, stage.as_deref()).await?;
        match stage {
            Some(key) => out(format!("cancelling stage {key} of {}", label(&run))),
            None => out(format!("cancelling {}", label(&run))),
        }
        Ok(ExitCode::SUCCESS)
    })
    .await
}

pub async fn decide(args: DecisionArgs, approve: bool) -> ExitCode {
    let (run, stage) = match take_run(&args.run, 1..=1, "a stage") {
        Ok((run, mut rest)) => (run, rest.remove(0)),
        Err(code) => return code,
    };
    with_client(&args.server, |client| async move {
        let run = client.find_run(&run).await?;
        client.decide(run.id, &stage, approve).await?;
        let verb = if approve { "approved" } else { "rejected" };
        out(format!("{verb} stage {stage} of {}", label(&run)));
        Ok(ExitCode::SUCCESS)
    })
    .await
}

pub async fn rerun(args: RerunArgs) -> ExitCode {
    let (run, _) = match take_run(&args.run, 0..=0, "nothing") {
        Ok(r) => r,
        Err(code) => return code,
    };
    with_client(&args.server, |client| async move {
        let run = client.find_run(&run).await?;
        let triggered = client.rerun(run.id, args.failed).await?;
        out(format!(
            "triggered {} #{} (id {}), a rerun of {}{}",
            run.pipeline,
            triggered.number,
            triggered.run_id,
            label(&run),
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
