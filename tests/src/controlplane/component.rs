//! One control-plane process (etcd, kube-apiserver, …): started in a process group of its own
//! with its output in a log file, and killed with that whole group when dropped, so a test
//! that panics half-way leaves nothing running.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

pub struct Component {
    pub name: &'static str,
    child: Child,
    pub log: PathBuf,
}

/// A command for `program` whose output goes to `log` (appended: a retry on another port
/// adds to the same file) and which leads a process group of its own.
pub fn command(program: &Path, args: &[String], log: &Path) -> Command {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap_or_else(|e| panic!("{}: {e}", log.display()));
    let mut command = Command::new(program);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(file.try_clone().expect("log file"))
        .stderr(file)
        .process_group(0);
    command
}

impl Component {
    pub fn new(name: &'static str, child: Child, log: PathBuf) -> Component {
        Component { name, child, log }
    }

    /// Starts `program` as [`command`] does.
    pub fn spawn(name: &'static str, program: &Path, args: &[String], log: PathBuf) -> Component {
        let child = command(program, args, &log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name} ({}): {e}", program.display()));
        Component::new(name, child, log)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `Err` with the end of its log once the process has exited.
    pub fn check_alive(&mut self) -> Result<(), String> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(format!(
                "{} exited ({status}); the end of {}:\n{}",
                self.name,
                self.log.display(),
                self.log_tail(30)
            )),
            Err(e) => Err(format!("{}: {e}", self.name)),
        }
    }

    /// The last `lines` lines of its log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Resident memory now and at its peak, in kB (`VmRSS`, `VmHWM` of /proc/PID/status).
    pub fn memory_kb(&self) -> (u64, u64) {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|kb| kb.parse().ok())
                .unwrap_or(0)
        };
        (field("VmRSS:"), field("VmHWM:"))
    }
}

impl Drop for Component {
    fn drop(&mut self) {
        // SIGKILL: the state it would save on a clean stop lives in a directory that is
        // removed next anyway, and a clean stop of the API server takes seconds.
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
