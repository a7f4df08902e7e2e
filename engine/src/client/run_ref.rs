//! How a person names a run on the command line. The web UI shows runs by the number their
//! pipeline gave them (`build #7`), the API addresses them by a global id; the CLI takes both:
//! `ID`, `PIPELINE#N`, `PROJECT/PIPELINE#N`, or `PIPELINE N` as two words (`#` starts a
//! comment in a shell, so `build #7` would lose its number unquoted).

use std::fmt;

use reqwest::StatusCode;

use super::{Client, ClientError, Run};

/// A run as the user named it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RunRef {
    /// The run's id (what the API and `gantry runs`' ID column use).
    Id(i64),
    /// Run `number` of a pipeline, in `project` when given.
    Number {
        project: Option<String>,
        pipeline: String,
        number: i32,
    },
}

/// What `--help` says a RUN is.
pub const RUN_FORMS: &str = "ID, PIPELINE#N, PROJECT/PIPELINE#N or PIPELINE N";

impl fmt::Display for RunRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunRef::Id(id) => write!(f, "run {id}"),
            RunRef::Number {
                project: Some(project),
                pipeline,
                number,
            } => write!(f, "{project}/{pipeline}#{number}"),
            RunRef::Number {
                project: None,
                pipeline,
                number,
            } => write!(f, "{pipeline}#{number}"),
        }
    }
}

fn run_number(text: &str) -> Option<i32> {
    let digits = text.strip_prefix('#').unwrap_or(text);
    (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

fn pipeline_of(text: &str) -> Option<(Option<String>, String)> {
    let (project, pipeline) = match text.split_once('/') {
        Some((project, pipeline)) => (Some(project.to_owned()), pipeline),
        None => (None, text),
    };
    let ok = |s: &str| !s.is_empty() && !s.contains(['/', '#']) && !s.contains(char::is_whitespace);
    (ok(pipeline) && project.as_deref().is_none_or(ok)).then(|| (project, pipeline.to_owned()))
}

/// Takes the run from the front of `words` (one word, or two for `PIPELINE N`) and returns it
/// with the words after it.
pub fn take(words: &[String]) -> Result<(RunRef, &[String]), String> {
    let Some(first) = words.first() else {
        return Err(format!("name a run: {RUN_FORMS}"));
    };
    let not_a_run = || format!("`{first}` is not a run: give {RUN_FORMS}");
    if !first.is_empty() && first.bytes().all(|b| b.is_ascii_digit()) {
        let id = first.parse().map_err(|_| not_a_run())?;
        return Ok((RunRef::Id(id), &words[1..]));
    }
    if let Some((name, number)) = first.rsplit_once('#') {
        let (project, pipeline) = pipeline_of(name).ok_or_else(not_a_run)?;
        let number = run_number(number).ok_or_else(not_a_run)?;
        return Ok((
            RunRef::Number {
                project,
                pipeline,
                number,
            },
            &words[1..],
        ));
    }
    let (project, pipeline) = pipeline_of(first).ok_or_else(not_a_run)?;
    match words.get(1).and_then(|w| run_number(w)) {
        Some(number) => Ok((
            RunRef::Number {
                project,
                pipeline,
                number,
            },
            &words[2..],
        )),
        None => Err(format!(
            "`{first}` is not a run id; to name run N of pipeline {first}, give `{first}#N` or `{first} N`"
        )),
    }
}

/// How every command names a run it acted on: `PIPELINE #N (id ID)`, the number as the web UI
/// shows it and the id the API takes.
pub fn label(run: &Run) -> String {
    format!("{} #{} (id {})", run.pipeline, run.number, run.id)
}

fn refused(status: StatusCode, message: String) -> ClientError {
    ClientError::Api {
        status,
        message,
        problems: Vec::new(),
    }
}

impl Client {
    /// The run `what` names, with its stages. A pipeline named without its project is looked
    /// up among the pipelines the caller may read; a name several projects use is refused
    /// with the candidates.
    pub async fn find_run(&self, what: &RunRef) -> Result<Run, ClientError> {
        match what {
            RunRef::Id(id) => self.run(*id).await,
            RunRef::Number {
                project: Some(project),
                pipeline,
                number,
            } => self.run_by_number(project, pipeline, *number).await,
            RunRef::Number {
                project: None,
                pipeline,
                number,
            } => {
                let mut projects: Vec<String> = self
                    .pipelines()
                    .await?
                    .into_iter()
                    .filter(|p| p.name == *pipeline)
                    .map(|p| p.project)
                    .collect();
                projects.sort();
                projects.dedup();
                match projects.as_slice() {
                    [] => Err(refused(
                        StatusCode::NOT_FOUND,
                        format!("no pipeline named `{pipeline}` (in the projects you may read)"),
                    )),
                    [project] => self.run_by_number(project, pipeline, *number).await,
                    several => Err(refused(
                        StatusCode::CONFLICT,
                        format!(
                            "pipeline `{pipeline}` is in several projects: {}; name one as PROJECT/{pipeline}#{number}",
                            several
                                .iter()
                                .map(|p| format!("{p}/{pipeline}"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    )),
                }
            }
        }
    }

    /// The id of the run `what` names (no request for an id).
    pub async fn run_id(&self, what: &RunRef) -> Result<i64, ClientError> {
        match what {
            RunRef::Id(id) => Ok(*id),
            other => Ok(self.find_run(other).await?.id),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(text: &str) -> Vec<String> {
        text.split(' ').map(str::to_owned).collect()
    }

    fn number(project: Option<&str>, pipeline: &str, number: i32) -> RunRef {
        RunRef::Number {
            project: project.map(str::to_owned),
            pipeline: pipeline.into(),
            number,
        }
    }

    #[test]
    fn a_run_is_an_id_a_pipeline_number_or_a_pipeline_and_a_number() {
        let cases = [
            ("17 build", RunRef::Id(17), 1),
            ("counting#2 build", number(None, "counting", 2), 1),
            ("test/counting#2", number(Some("test"), "counting", 2), 0),
            ("counting 2 build", number(None, "counting", 2), 1),
            ("counting #2", number(None, "counting", 2), 0),
            ("test/counting 3", number(Some("test"), "counting", 3), 0),
        ];
        for (text, expected, rest) in cases {
            let words = words(text);
            let (found, left) = take(&words).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(found, expected, "{text}");
            assert_eq!(left.len(), rest, "{text}");
        }
    }

    #[test]
    fn what_is_not_a_run_says_which_forms_are() {
        for text in [
            "counting",
            "counting build",
            "counting#x",
            "#2",
            "a/b/c#1",
            "/x#1",
        ] {
            let error = take(&words(text)).expect_err(text);
            assert!(
                error.contains("#N"),
                "{text}: the message should show the forms: {error}"
            );
        }
    }
}
