//! A step's processes as one unit. The step's shell leads its own process group, so whatever it
//! starts (pipelines, background jobs, their children) is signalled together on timeout or cancel,
//! and nothing is left running once the runner reports the stage done.

use std::io;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::process::{Child, ChildStderr, ChildStdout, Command};
use tokio::time::Instant;

/// How often to look whether the group is gone while waiting.
const POLL: Duration = Duration::from_millis(25);
/// How long SIGKILLed processes get to disappear (they may be in uninterruptible sleep).
const AFTER_KILL: Duration = Duration::from_secs(5);

pub struct ProcessGroup {
    child: Child,
    pgid: i32,
    status: Option<ExitStatus>,
    /// Confirmed that no process of the group is left; Drop need not look.
    gone: bool,
}

/// The pipes of a freshly spawned group.
pub struct Pipes {
    pub stdout: Option<ChildStdout>,
    pub stderr: Option<ChildStderr>,
}

impl ProcessGroup {
    /// Spawns `command` as the leader of a new process group.
    pub fn spawn(mut command: Command) -> io::Result<(ProcessGroup, Pipes)> {
        command.process_group(0);
        let mut child = command.spawn()?;
        let pid = child
            .id()
            .ok_or_else(|| io::Error::other("the spawned process has no pid"))?;
        let pgid = i32::try_from(pid).map_err(|_| io::Error::other("pid out of range"))?;
        let pipes = Pipes {
            stdout: child.stdout.take(),
            stderr: child.stderr.take(),
        };
        Ok((
            ProcessGroup {
                child,
                pgid,
                status: None,
                gone: false,
            },
            pipes,
        ))
    }

    pub fn pgid(&self) -> i32 {
        self.pgid
    }

    /// Waits for the group leader (the step's shell) to exit.
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        if let Some(status) = self.status {
            return Ok(status);
        }
        let status = self.child.wait().await?;
        self.status = Some(status);
        Ok(status)
    }

    fn try_reap(&mut self) -> io::Result<Option<ExitStatus>> {
        if self.status.is_none() {
            self.status = self.child.try_wait()?;
        }
        Ok(self.status)
    }

    /// Sends `signal` to every process of the group; a group already gone is no error.
    pub fn signal(&self, signal: Signal) -> io::Result<()> {
        match killpg(Pid::from_raw(self.pgid), signal) {
            Ok(()) | Err(Errno::ESRCH) => Ok(()),
            Err(errno) => Err(io::Error::from(errno)),
        }
    }

    /// Processes of the group still running (zombies excluded: they are gone, only unreaped).
    pub fn live_members(&self) -> Vec<i32> {
        live_members_of(self.pgid)
    }

    /// Whether the leader has exited and no process of the group is left.
    pub fn is_gone(&mut self) -> bool {
        if !self.gone {
            let leader_done = matches!(self.try_reap(), Ok(Some(_)) | Err(_));
            // `killpg(0)` fails with ESRCH once no process (not even a zombie) has the group id,
            // the usual case after a step: that answer costs one system call, where listing the
            // members reads every process's /proc entry (about 20 µs each on a build host).
            self.gone = leader_done
                && (matches!(killpg(Pid::from_raw(self.pgid), None), Err(Errno::ESRCH))
                    || self.live_members().is_empty());
        }
        self.gone
    }

    /// Stops the whole group: SIGTERM, up to `grace` to exit, then SIGKILL. Returns the leader's
    /// exit status (a signal when it was killed), or `None` when it could not be reaped.
    pub async fn terminate(&mut self, grace: Duration) -> Option<ExitStatus> {
        if !self.is_gone() {
            let _ = self.signal(Signal::SIGTERM);
            // Stopped processes only act on SIGTERM once continued.
            let _ = self.signal(Signal::SIGCONT);
            if !self.wait_gone(grace).await {
                let _ = self.signal(Signal::SIGKILL);
                if !self.wait_gone(AFTER_KILL).await {
                    eprintln!(
                        "gantry-runner: processes {:?} of group {} survive SIGKILL",
                        self.live_members(),
                        self.pgid
                    );
                }
            }
        }
        self.status
    }

    async fn wait_gone(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            if self.is_gone() {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            tokio::time::sleep(POLL.min(deadline - now)).await;
        }
    }
}

impl Drop for ProcessGroup {
    /// A group that was not stopped properly (the runner is bailing out) is killed outright; the
    /// check before guards against signalling a group id the kernel has since reused.
    fn drop(&mut self) {
        if !self.gone && !self.live_members().is_empty() {
            let _ = self.signal(Signal::SIGKILL);
        }
    }
}

/// The exit code reported for a step: its own, or 128 + the signal that killed it.
pub fn exit_code(status: ExitStatus) -> i32 {
    match (status.code(), status.signal()) {
        (Some(code), _) => code,
        (None, Some(signal)) => 128 + signal,
        (None, None) => -1,
    }
}

/// Running processes whose process group is `pgid`, from `/proc`.
pub fn live_members_of(pgid: i32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| proc_stat(*pid).is_some_and(|stat| stat.pgrp == pgid && !stat.is_zombie()))
        .collect()
}

/// The fields of `/proc/<pid>/stat` the runner needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    pub state: char,
    pub ppid: i32,
    pub pgrp: i32,
}

impl ProcStat {
    pub fn is_zombie(&self) -> bool {
        matches!(self.state, 'Z' | 'X' | 'x')
    }
}

pub fn proc_stat(pid: i32) -> Option<ProcStat> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&stat)
}

/// Parses `pid (comm) state ppid pgrp ...`; `comm` may contain spaces and parentheses, so the
/// fields are counted from the last `)`.
fn parse_stat(stat: &str) -> Option<ProcStat> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some(ProcStat { state, ppid, pgrp })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Stdio;

    fn shell(script: &str) -> Command {
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(script)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        command
    }

    async fn wait_for_members(group: &ProcessGroup, count: usize) {
        for _ in 0..200 {
            if group.live_members().len() >= count {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the group never had {count} processes");
    }

    #[tokio::test]
    async fn terminating_a_group_leaves_no_process_behind() {
        let (mut group, _pipes) =
            ProcessGroup::spawn(shell("sleep 100 & sleep 100")).expect("spawn");
        wait_for_members(&group, 3).await;
        let pgid = group.pgid();
        let started = Instant::now();
        let status = group.terminate(Duration::from_secs(10)).await;
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "SIGTERM sufficed"
        );
        assert_eq!(status.map(exit_code), Some(128 + 15));
        assert_eq!(live_members_of(pgid), Vec::<i32>::new());
    }

    #[tokio::test]
    async fn processes_ignoring_sigterm_are_killed_after_the_grace() {
        let script = "trap '' TERM; sleep 100 & sleep 100";
        let (mut group, _pipes) = ProcessGroup::spawn(shell(script)).expect("spawn");
        wait_for_members(&group, 3).await;
        let pgid = group.pgid();
        let started = Instant::now();
        let status = group.terminate(Duration::from_millis(300)).await;
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert_eq!(status.map(exit_code), Some(128 + 9));
        assert_eq!(live_members_of(pgid), Vec::<i32>::new());
    }

    #[tokio::test]
    async fn background_processes_outlive_their_leader_until_terminated() {
        let (mut group, _pipes) = ProcessGroup::spawn(shell("sleep 100 & exit 3")).expect("spawn");
        let status = group.wait().await.expect("wait");
        assert_eq!(exit_code(status), 3);
        wait_for_members(&group, 1).await;
        assert!(!group.is_gone());
        assert_eq!(
            group.terminate(Duration::from_secs(5)).await.map(exit_code),
            Some(3)
        );
        assert!(group.is_gone());
    }

    #[tokio::test]
    async fn dropping_a_running_group_kills_it() {
        let (group, _pipes) = ProcessGroup::spawn(shell("sleep 100 & sleep 100")).expect("spawn");
        wait_for_members(&group, 3).await;
        let pgid = group.pgid();
        drop(group);
        for _ in 0..200 {
            if live_members_of(pgid).is_empty() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("processes {:?} survived", live_members_of(pgid));
    }

    #[test]
    fn stat_lines_with_odd_command_names_parse() {
        let stat = "4242 (a) b (c)) S 1 4240 4240 0 -1 4194560";
        assert_eq!(
            parse_stat(stat),
            Some(ProcStat {
                state: 'S',
                ppid: 1,
                pgrp: 4240
            })
        );
        assert!(parse_stat("garbage").is_none());
    }
}
