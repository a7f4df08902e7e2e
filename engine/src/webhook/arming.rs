//! Arming a repository's schedules. A pipeline file whose only trigger is `on.schedule` (the
//! usual nightly build) is never run by a push, so nothing would ever store it: instead, the
//! pipeline files at the head of the repository's default branch are read on registration and
//! on every push to that branch, and each file's schedules are armed — its pipeline stored and
//! the version marked as the one cron fires ([`crate::webhook::cron`]). A file that is gone
//! from the default branch, or no longer has a schedule, is disarmed. Other branches never arm
//! anything: a schedule is a promise about the default branch.

use std::sync::Arc;

use super::cache::CachedFile;
use super::source;
use crate::engine::Engine;
use crate::store::StoreError;
use crate::store::pipelines;
use crate::store::repos::RepoRow;

#[derive(Debug, thiserror::Error)]
pub enum ArmingError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Source(#[from] source::SourceError),
}

impl From<sqlx::Error> for ArmingError {
    fn from(e: sqlx::Error) -> Self {
        ArmingError::Store(StoreError::Database(e))
    }
}

/// What arming found, a line per pipeline for the delivery summary or the registration answer.
pub type Report = Vec<String>;

/// Arms the schedules of the pipeline `files` read at the head of `repo`'s default branch,
/// and disarms those of pipelines whose file is gone or has no schedule any more.
pub async fn sync(
    tx: &mut sqlx::PgConnection,
    repo: &RepoRow,
    files: &[CachedFile],
) -> Result<Report, StoreError> {
    let mut report = Vec::new();
    let mut present = Vec::with_capacity(files.len());
    for file in files {
        present.push(file.path.clone());
        let plan = match &file.plan {
            Ok(plan) => plan,
            Err(_) => {
                // A broken file keeps what was armed from its last good version: a typo
                // should not silently stop the nightly build. Its failed run says what is wrong.
                if let Some(pipeline) =
                    pipelines::for_source_file(&mut *tx, repo.id, &file.path).await?
                    && pipelines::armed(&mut *tx, pipeline).await?
                {
                    report.push(format!(
                        "{}: invalid; the schedules of its last valid version stay armed",
                        file.path
                    ));
                }
                continue;
            }
        };
        let name = &plan.pipeline.name.value;
        let schedule = &plan.pipeline.on.schedule;
        if schedule.is_empty() {
            if let Some(pipeline) =
                pipelines::for_source_file(&mut *tx, repo.id, &file.path).await?
                && pipelines::disarm(&mut *tx, pipeline).await?
            {
                report.push(format!(
                    "{} (`{name}`): no schedule any more; disarmed",
                    file.path
                ));
            }
            continue;
        }
        let pipeline = pipelines::ensure_pipeline(&mut *tx, repo.project_id, name).await?;
        let (version, _, _) = pipelines::add_version(&mut *tx, pipeline, &file.text).await?;
        pipelines::link_repository(&mut *tx, pipeline, repo.id, &file.path).await?;
        let changed = pipelines::arm(&mut *tx, pipeline, version, repo.id, &file.path).await?;
        let crons: Vec<String> = schedule
            .iter()
            .map(|t| format!("`{}`", t.cron.value))
            .collect();
        report.push(format!(
            "{} (`{name}`): schedule {} {}",
            file.path,
            crons.join(", "),
            if changed { "armed" } else { "still armed" }
        ));
    }
    for name in pipelines::disarm_missing(&mut *tx, repo.id, &present).await? {
        report.push(format!(
            "`{name}`: its file is gone from `{}`; schedule disarmed",
            repo.default_branch
        ));
    }
    Ok(report)
}

/// Reads the pipeline files at the head of `repo`'s default branch and arms their schedules
/// (on registration, before any push has come).
pub async fn sync_from_head(engine: &Engine, repo: &RepoRow) -> Result<Report, ArmingError> {
    let branch = repo.default_branch.clone();
    let head = source::branch_head(engine, repo, &branch)
        .await?
        .ok_or_else(|| source::SourceError::NoBranch {
            branch: branch.clone(),
            url: repo.clone_url.clone(),
        })?;
    let git_ref = format!("refs/heads/{branch}");
    let files: Arc<Vec<CachedFile>> = source::files_at(engine, repo, &head, Some(&git_ref)).await?;
    let mut tx = engine.store.pool.begin().await?;
    let report = sync(&mut tx, repo, &files).await?;
    tx.commit().await?;
    Ok(report)
}
