//! The runner's exit codes. The local executor reads them when the runner could not report a
//! completion (a usage or protocol error), and they make a runner started by hand scriptable.

use crate::wire::Outcome;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunnerExit {
    /// 0: every step succeeded and the completion was accepted.
    Succeeded,
    /// 1: a step failed or timed out (completed as `failed` or `timed_out`).
    Failed,
    /// 2: bad configuration, or the engine could not be talked to as the protocol says.
    Usage,
    /// 3: cancelled by the engine or a signal (completed as `cancelled`).
    Cancelled,
}

impl RunnerExit {
    pub fn for_outcome(outcome: Outcome) -> RunnerExit {
        match outcome {
            Outcome::Succeeded => RunnerExit::Succeeded,
            Outcome::Failed | Outcome::TimedOut => RunnerExit::Failed,
            Outcome::Cancelled => RunnerExit::Cancelled,
        }
    }

    pub fn code(self) -> u8 {
        match self {
            RunnerExit::Succeeded => 0,
            RunnerExit::Failed => 1,
            RunnerExit::Usage => 2,
            RunnerExit::Cancelled => 3,
        }
    }
}

impl From<RunnerExit> for std::process::ExitCode {
    fn from(exit: RunnerExit) -> std::process::ExitCode {
        std::process::ExitCode::from(exit.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_map_to_the_documented_codes() {
        assert_eq!(RunnerExit::for_outcome(Outcome::Succeeded).code(), 0);
        assert_eq!(RunnerExit::for_outcome(Outcome::Failed).code(), 1);
        assert_eq!(RunnerExit::for_outcome(Outcome::TimedOut).code(), 1);
        assert_eq!(RunnerExit::for_outcome(Outcome::Cancelled).code(), 3);
        assert_eq!(RunnerExit::Usage.code(), 2);
    }
}
