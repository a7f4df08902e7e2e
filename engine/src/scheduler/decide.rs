//! The scheduler's decisions as a pure function: given a run's stage states, which stages may
//! start, which are skipped or cancelled, and whether the run has ended. Kept free of I/O so
//! every rule (needs, `when`, allow_failure, finally, cancel) is unit-tested directly.

use crate::pipeline::Plan;
use crate::pipeline::condition::Facts;
use crate::store::{RunStatus, StageStatus};

/// What the scheduler knows about one stage instance.
#[derive(Clone, Debug)]
pub struct StageState {
    pub status: StageStatus,
    pub allow_failure: bool,
    pub approved: bool,
    pub error: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    /// Needs are met and `when` holds: hand to an executor.
    Queue,
    /// Needs are met but a person must approve first.
    AwaitApproval,
    /// An approval-only gate that was approved: nothing to run.
    Succeed,
    Skip(String),
    Cancel(String),
    /// `when` could not be evaluated.
    Fail(String),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// Changes to pending (or, on cancel, waiting) stages, by plan index.
    pub changes: Vec<(usize, Change)>,
    /// Running stages to stop because the run is being cancelled.
    pub stop: Vec<usize>,
    /// The run's new status, when it changes.
    pub run: Option<(RunStatus, Option<String>)>,
}

fn counts_as_success(s: &StageState) -> bool {
    s.status == StageStatus::Succeeded
        || (s.allow_failure && matches!(s.status, StageStatus::Failed | StageStatus::TimedOut))
}

/// Decides what happens next in a run. `stages` is indexed like `plan.stages`. `cancelled`
/// is how the run's cancel reads (`cancelled by alice`) once one was asked for.
pub fn decide(
    plan: &Plan,
    stages: &[StageState],
    run_status: RunStatus,
    cancelled: Option<&str>,
    facts: &dyn Fn(usize) -> Facts,
) -> Decision {
    let mut status: Vec<StageStatus> = stages.iter().map(|s| s.status).collect();
    let mut changes = Vec::new();
    let mut stop = Vec::new();

    // Plan order is topological, so one pass sees each stage after everything it needs.
    for (i, planned) in plan.stages.iter().enumerate() {
        let current = status[i];
        // A cancel stops the regular stages; `finally` stages still run once those have
        // ended ("whatever their outcome"), as the run's cleanup.
        if let Some(cause) = cancelled
            && !planned.finally
        {
            match current {
                StageStatus::Pending | StageStatus::Queued | StageStatus::WaitingApproval => {
                    changes.push((i, Change::Cancel(format!("the run was {cause}"))));
                    status[i] = StageStatus::Cancelled;
                }
                StageStatus::Running => stop.push(i),
                _ => {}
            }
            continue;
        }
        if current != StageStatus::Pending {
            continue;
        }
        if planned.needs.iter().any(|&n| !status[n].is_terminal()) {
            continue;
        }
        let stage = plan.stage(planned);
        // A failed need stops a regular stage. Finally stages wait for regular stages
        // whatever their outcome, and only require their finally-stage needs to succeed.
        let blocking = planned.needs.iter().copied().find(|&n| {
            let need_is_regular = !plan.stages[n].finally;
            if planned.finally && need_is_regular {
                return false;
            }
            let state = StageState {
                status: status[n],
                ..stages[n].clone()
            };
            !counts_as_success(&state)
        });
        let change = if let Some(n) = blocking {
            Change::Skip(format!(
                "needs `{}`, which {}",
                plan.stages[n].key,
                match status[n] {
                    StageStatus::Skipped => "was skipped",
                    StageStatus::Cancelled => "was cancelled",
                    StageStatus::TimedOut => "timed out",
                    _ => "failed",
                }
            ))
        } else {
            match stage.when.as_ref().map(|w| w.evaluate(&facts(i))) {
                Some(Ok(false)) => Change::Skip(format!(
                    "`when: {}` is false",
                    stage.when.as_ref().map_or("", |w| w.source.value.as_str())
                )),
                Some(Err(e)) => Change::Fail(e.to_string()),
                Some(Ok(true)) | None => {
                    let gate = matches!(stage.kind, crate::pipeline::StageKind::Gate);
                    match (stage.approval.is_some(), stages[i].approved, gate) {
                        (true, false, _) => Change::AwaitApproval,
                        (_, _, true) => Change::Succeed,
                        _ => Change::Queue,
                    }
                }
            }
        };
        status[i] = match &change {
            Change::Queue => StageStatus::Queued,
            Change::AwaitApproval => StageStatus::WaitingApproval,
            Change::Succeed => StageStatus::Succeeded,
            Change::Skip(_) => StageStatus::Skipped,
            Change::Cancel(_) => StageStatus::Cancelled,
            Change::Fail(_) => StageStatus::Failed,
        };
        changes.push((i, change));
    }

    let run = run_outcome(plan, stages, &status, cancelled)
        .filter(|(s, _)| *s != run_status)
        .or_else(|| (run_status == RunStatus::Queued).then_some((RunStatus::Running, None)));
    Decision { changes, stop, run }
}

/// The run's status once every stage has ended; `None` while any is still going.
fn run_outcome(
    plan: &Plan,
    stages: &[StageState],
    status: &[StageStatus],
    cancelled: Option<&str>,
) -> Option<(RunStatus, Option<String>)> {
    if !status.iter().all(|s| s.is_terminal()) {
        return None;
    }
    if let Some(cause) = cancelled {
        return Some((RunStatus::Cancelled, Some(cause.to_owned())));
    }
    let failed = status.iter().enumerate().find(|(i, s)| {
        matches!(
            s,
            StageStatus::Failed | StageStatus::TimedOut | StageStatus::Cancelled
        ) && !stages[*i].allow_failure
    });
    match failed {
        None => Some((RunStatus::Succeeded, None)),
        Some((i, s)) => {
            let key = &plan.stages[i].key;
            let why = stages[i].error.as_deref().unwrap_or("");
            let (run_status, verb) = match s {
                StageStatus::TimedOut => (RunStatus::TimedOut, "timed out"),
                StageStatus::Cancelled => (RunStatus::Cancelled, "was cancelled"),
                _ => (RunStatus::Failed, "failed"),
            };
            let reason = if why.is_empty() {
                format!("stage `{key}` {verb}")
            } else {
                format!("stage `{key}` {verb}: {why}")
            };
            Some((run_status, Some(reason)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(yaml: &str) -> Plan {
        crate::pipeline::load("t.yaml", yaml).unwrap_or_else(|r| panic!("{r}"))
    }

    fn states(plan: &Plan, set: &[(&str, StageStatus)]) -> Vec<StageState> {
        plan.stages
            .iter()
            .map(|p| StageState {
                status: set
                    .iter()
                    .find(|(k, _)| *k == p.key)
                    .map_or(StageStatus::Pending, |(_, s)| *s),
                allow_failure: plan.stage(p).allow_failure,
                approved: false,
                error: None,
            })
            .collect()
    }

    fn run(plan: &Plan, s: &[StageState], cancel: bool) -> Decision {
        let cause = cancel.then_some("cancelled by alice");
        decide(plan, s, RunStatus::Running, cause, &|_| Facts {
            event: "push".into(),
            branch: "main".into(),
            ..Facts::default()
        })
    }

    fn keys(plan: &Plan, d: &Decision, want: fn(&Change) -> bool) -> Vec<String> {
        d.changes
            .iter()
            .filter(|(_, c)| want(c))
            .map(|(i, _)| plan.stages[*i].key.clone())
            .collect()
    }

    const DAG: &str = "name: d\nstages:\n  - {name: a, steps: [x]}\n  - {name: b, needs: [a], steps: [x]}\n  - {name: c, needs: [a], steps: [x]}\n  - {name: d, needs: [b, c], steps: [x]}\nfinally:\n  - {name: z, steps: [x]}\n";

    #[test]
    fn only_stages_whose_needs_succeeded_are_queued() {
        let p = plan(DAG);
        let d = run(&p, &states(&p, &[]), false);
        assert_eq!(keys(&p, &d, |c| *c == Change::Queue), vec!["a"]);
        let d = run(&p, &states(&p, &[("a", StageStatus::Succeeded)]), false);
        assert_eq!(keys(&p, &d, |c| *c == Change::Queue), vec!["b", "c"]);
        assert_eq!(d.run, None);
    }

    #[test]
    fn failed_stage_skips_its_dependents_but_runs_finally() {
        let p = plan(DAG);
        let s = states(
            &p,
            &[
                ("a", StageStatus::Succeeded),
                ("b", StageStatus::Failed),
                ("c", StageStatus::Succeeded),
            ],
        );
        let d = run(&p, &s, false);
        assert_eq!(keys(&p, &d, |c| matches!(c, Change::Skip(_))), vec!["d"]);
        assert_eq!(keys(&p, &d, |c| *c == Change::Queue), vec!["z"]);
        let Some((_, Change::Skip(why))) = d.changes.first() else {
            panic!("{d:?}")
        };
        assert_eq!(why, "needs `b`, which failed");
    }

    #[test]
    fn run_fails_with_the_first_failed_stage_once_all_ended() {
        let p = plan(DAG);
        let mut s = states(
            &p,
            &[
                ("a", StageStatus::Succeeded),
                ("b", StageStatus::Failed),
                ("c", StageStatus::Succeeded),
                ("d", StageStatus::Skipped),
                ("z", StageStatus::Succeeded),
            ],
        );
        s[1].error = Some("step \"x\" exited with 2".into());
        let d = run(&p, &s, false);
        assert_eq!(
            d.run,
            Some((
                RunStatus::Failed,
                Some("stage `b` failed: step \"x\" exited with 2".into())
            ))
        );
    }

    #[test]
    fn allowed_failures_count_as_success() {
        let p = plan(
            "name: d\nstages:\n  - {name: a, allow_failure: true, steps: [x]}\n  - {name: b, steps: [x]}\n",
        );
        let s = states(&p, &[("a", StageStatus::Failed)]);
        let d = run(&p, &s, false);
        assert_eq!(keys(&p, &d, |c| *c == Change::Queue), vec!["b"]);
        let s = states(
            &p,
            &[("a", StageStatus::Failed), ("b", StageStatus::Succeeded)],
        );
        assert_eq!(run(&p, &s, false).run, Some((RunStatus::Succeeded, None)));
    }

    #[test]
    fn false_when_skips_and_dependents_follow() {
        let p = plan(
            "name: d\nstages:\n  - {name: a, when: \"branch == 'release'\", steps: [x]}\n  - {name: b, steps: [x]}\n",
        );
        let d = run(&p, &states(&p, &[]), false);
        assert_eq!(
            keys(&p, &d, |c| matches!(c, Change::Skip(_))),
            vec!["a", "b"]
        );
        // Both skipped: the run succeeds (nothing failed).
        let s = states(
            &p,
            &[("a", StageStatus::Skipped), ("b", StageStatus::Skipped)],
        );
        assert_eq!(run(&p, &s, false).run, Some((RunStatus::Succeeded, None)));
    }

    #[test]
    fn approval_waits_then_gates_succeed() {
        let p = plan(
            "name: d\nstages:\n  - {name: gate, approval: true}\n  - {name: b, approval: {message: go}, steps: [x]}\n",
        );
        let mut s = states(&p, &[]);
        assert_eq!(run(&p, &s, false).changes, vec![(0, Change::AwaitApproval)]);
        s[0].approved = true;
        assert_eq!(
            run(&p, &s, false).changes,
            vec![(0, Change::Succeed), (1, Change::AwaitApproval)]
        );
    }

    #[test]
    fn cancel_stops_running_and_cancels_the_rest_but_finally_runs() {
        let p = plan(DAG);
        let s = states(
            &p,
            &[("a", StageStatus::Succeeded), ("b", StageStatus::Running)],
        );
        let d = run(&p, &s, true);
        assert_eq!(d.stop, vec![1]);
        assert_eq!(
            keys(&p, &d, |c| matches!(c, Change::Cancel(_))),
            vec!["c", "d"]
        );
        assert!(
            d.changes
                .contains(&(2, Change::Cancel("the run was cancelled by alice".into())))
        );
        assert_eq!(d.run, None, "b still running");
        // Once the regular stages have ended, the cleanup stage runs.
        let s = states(
            &p,
            &[
                ("a", StageStatus::Succeeded),
                ("b", StageStatus::Cancelled),
                ("c", StageStatus::Cancelled),
                ("d", StageStatus::Cancelled),
            ],
        );
        let d = run(&p, &s, true);
        assert_eq!(keys(&p, &d, |c| *c == Change::Queue), vec!["z"]);
        assert_eq!(d.run, None, "z has yet to run");
        let s = states(
            &p,
            &[
                ("a", StageStatus::Succeeded),
                ("b", StageStatus::Cancelled),
                ("c", StageStatus::Cancelled),
                ("d", StageStatus::Cancelled),
                ("z", StageStatus::Succeeded),
            ],
        );
        assert_eq!(
            run(&p, &s, true).run,
            Some((RunStatus::Cancelled, Some("cancelled by alice".into())))
        );
    }
}
