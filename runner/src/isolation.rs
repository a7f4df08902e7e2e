//! Hiding the engine's files from a local stage's steps.
//!
//! The local executor starts the runner on the engine's own machine, beside the engine's data
//! directory: its key, API tokens, database and every other stage's workspace. Before the
//! runner starts any step it moves itself into a user namespace and a mount namespace of its
//! own and covers each directory it was told to hide ([`ENV_HIDE`]) with an empty, read-only
//! tmpfs, then mounts back only the directories its stage needs ([`ENV_KEEP`]: its workspace,
//! the step user's home). Everything it starts inherits that view of the file system.
//!
//! The covering mounts are made in the first namespace and the runner then enters a second,
//! nested pair of namespaces: the kernel locks mounts inherited from a more privileged mount
//! namespace together (`MNT_LOCKED`), so a step cannot unmount a cover to see beneath it, even
//! though it may create namespaces of its own. The user namespace maps only the runner's own
//! uid and gid, so steps keep their identity and gain no privilege outside.
//!
//! Who the runner is inside depends on who started it ([`IdMap`]). An engine that is not root
//! can only map the runner's own uid and gid to themselves: steps keep their identity. An engine
//! that is root starts the runner as the step user and, once the runner has entered its user
//! namespace, writes a full map for it: the namespace's root is the step user, and 65536 more
//! ids come from the step user's subordinate range (`/etc/subuid`). The runner is then root of
//! its namespace — it may chown, chroot and change user, which S2I's `assemble` needs — while on
//! the host it and everything it starts are the step user (or ids nobody else has).
//!
//! This needs user namespaces (unprivileged ones for an engine that is not root: the kernel
//! default; some distributions turn them off). The engine checks at start-up with
//! `gantry-runner isolation-check` and says so when they are missing; a runner told to hide
//! paths that cannot is an error, never silently open.

use std::fs;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::fcntl::{OFlag, open};
use nix::mount::{MsFlags, mount};
use nix::sched::{CloneFlags, unshare};
use nix::sys::stat::Mode;
use nix::unistd::{getgid, getuid};

use crate::source_layer::{Placed, SourceLayer};

/// Directories to cover, one absolute path per line.
pub const ENV_HIDE: &str = "GANTRY_RUNNER_HIDE";
/// Directories beneath a covered one that stay visible, one absolute path per line.
pub const ENV_KEEP: &str = "GANTRY_RUNNER_KEEP";
/// `own` (the default) or `parent`: who writes the runner's uid and gid maps ([`IdMap`]).
pub const ENV_ID_MAP: &str = "GANTRY_RUNNER_ID_MAP";

/// How long a runner waits for its parent to map its ids.
const MAP_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Who writes the uid and gid maps of the runner's user namespace.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum IdMap {
    /// The runner maps its own uid and gid to themselves (all an unprivileged process may).
    #[default]
    Own,
    /// The engine (root, the runner's parent) writes a full map; the runner waits for it.
    Parent,
}

#[derive(Debug, thiserror::Error)]
pub enum IsolationError {
    #[error(
        "cannot create a user namespace to hide the engine's files from the steps ({0}); \
         unprivileged user namespaces may be turned off on this machine \
         (sysctl kernel.unprivileged_userns_clone or user.max_user_namespaces)"
    )]
    Namespace(nix::Error),
    #[error("{action} {path}: {source}")]
    Mount {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("writing {path}: {source}")]
    Map {
        path: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{0} is not an absolute path")]
    Relative(PathBuf),
    #[error("the runner's user namespace was not given its ids within {}s", MAP_WAIT.as_secs())]
    MapTimeout,
    #[error("starting the helper that maps the runner's ids: {source}")]
    Helper {
        #[source]
        source: std::io::Error,
    },
    #[error("placing the source in the workspace: {source}")]
    Source {
        #[source]
        source: std::io::Error,
    },
    #[error("making a mount point at {path}: {source}")]
    MountPoint {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What to hide and what to keep, from the runner's environment (empty: hide nothing).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Isolation {
    pub hide: Vec<PathBuf>,
    pub keep: Vec<PathBuf>,
    pub ids: IdMap,
    /// The stage's source, mounted on its workspace in the runner's namespace (`gantry run`).
    pub layer: Option<SourceLayer>,
}

impl Isolation {
    pub fn from_env() -> Isolation {
        Isolation::from_lookup(|name| std::env::var(name).ok())
    }

    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Isolation {
        let paths = |name| -> Vec<PathBuf> {
            lookup(name)
                .unwrap_or_default()
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(PathBuf::from)
                .collect()
        };
        Isolation {
            hide: paths(ENV_HIDE),
            keep: paths(ENV_KEEP),
            ids: match lookup(ENV_ID_MAP).as_deref() {
                Some("parent") => IdMap::Parent,
                _ => IdMap::Own,
            },
            layer: SourceLayer::from_lookup(&lookup),
        }
    }

    /// The environment lines that carry this isolation to a runner.
    pub fn to_env(&self) -> Vec<(&'static str, String)> {
        let join = |paths: &[PathBuf]| {
            paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join("\n")
        };
        let ids = match self.ids {
            IdMap::Own => "own",
            IdMap::Parent => "parent",
        };
        let mut env = vec![
            (ENV_HIDE, join(&self.hide)),
            (ENV_KEEP, join(&self.keep)),
            (ENV_ID_MAP, ids.to_owned()),
        ];
        env.extend(self.layer.as_ref().map(SourceLayer::to_env));
        env
    }

    pub fn is_empty(&self) -> bool {
        self.hide.is_empty()
    }

    /// Enters the namespaces and covers what is to be hidden. Must run before the process
    /// starts a second thread: the kernel refuses a new user namespace to a threaded process.
    pub fn apply(&self) -> Result<(), IsolationError> {
        if self.is_empty() {
            // No namespace to mount in: the source is copied (the engine does not ask for a
            // layer without isolation; this keeps a runner started by hand whole).
            if let Some(layer) = &self.layer {
                crate::source_layer::copy_tree(&layer.lower, &layer.target)
                    .map_err(|source| IsolationError::Source { source })?;
            }
            return Ok(());
        }
        for path in self.hide.iter().chain(&self.keep) {
            if !path.is_absolute() {
                return Err(IsolationError::Relative(path.clone()));
            }
        }
        let (uid, gid) = (getuid().as_raw(), getgid().as_raw());
        unshare(CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNS)
            .map_err(IsolationError::Namespace)?;
        match self.ids {
            IdMap::Own => map_own_ids(uid, gid)?,
            IdMap::Parent => wait_for_map()?,
        }
        // Nothing done here may leak back into the engine's namespace.
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_REC | MsFlags::MS_PRIVATE,
            None::<&str>,
        )
        .map_err(mount_error("making private", Path::new("/")))?;
        // The source layer goes on the workspace before the workspace is kept below: the kept
        // handle then holds the merged tree.
        let placed = match &self.layer {
            Some(layer) => Some(
                layer
                    .place()
                    .map_err(|source| IsolationError::Source { source })?,
            ),
            None => None,
        };
        // Handles on what stays visible, taken before anything covers their paths, and in this
        // mount namespace: a bind mount's source must belong to the namespace it is made in.
        let kept: Vec<(&PathBuf, OwnedFd)> = self
            .keep
            .iter()
            .filter_map(|path| {
                open(
                    path,
                    OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )
                .ok()
                .map(|fd| (path, fd))
            })
            .collect();
        for hidden in &self.hide {
            if !hidden.is_dir() {
                continue;
            }
            let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
            mount(
                Some("tmpfs"),
                hidden,
                Some("tmpfs"),
                flags,
                Some("mode=0755,size=1m"),
            )
            .map_err(mount_error("covering", hidden))?;
            for (path, fd) in &kept {
                let Ok(inside) = path.strip_prefix(hidden) else {
                    continue;
                };
                let target = hidden.join(inside);
                fs::create_dir_all(&target).map_err(|source| IsolationError::MountPoint {
                    path: target.clone(),
                    source,
                })?;
                let source = format!("/proc/self/fd/{}", fd.as_raw_fd());
                mount(
                    Some(source.as_str()),
                    &target,
                    None::<&str>,
                    MsFlags::MS_BIND | MsFlags::MS_REC,
                    None::<&str>,
                )
                .map_err(mount_error("keeping", &target))?;
            }
            mount(
                None::<&str>,
                hidden,
                None::<&str>,
                MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | flags,
                None::<&str>,
            )
            .map_err(mount_error("making read-only", hidden))?;
        }
        // The runner was started in the workspace directory as it was before the mount; its
        // steps (and it) must work in the merged tree.
        if let (Some(Placed::Mounted), Some(layer)) = (placed, &self.layer) {
            nix::unistd::chdir(&layer.target).map_err(mount_error("entering", &layer.target))?;
        }
        // A nested pair of namespaces locks the covers in place (see the module docs).
        match self.ids {
            // Unprivileged: the same single id again.
            IdMap::Own => {
                unshare(CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNS)
                    .map_err(IsolationError::Namespace)?;
                map_own_ids(uid, gid)
            }
            // Every id of the first namespace, each to itself. Only a process that stays in
            // the first namespace may write such a map (a process inside the new one has no
            // capability over its parent), so a helper — this program again — writes it.
            // `setgroups` stays allowed: changing user (chroot --userspec) needs it.
            IdMap::Parent => {
                let mut helper = std::process::Command::new("/proc/self/exe")
                    .arg(MAP_IDS_COMMAND)
                    .arg(std::process::id().to_string())
                    .stdin(std::process::Stdio::null())
                    .spawn()
                    .map_err(|source| IsolationError::Helper { source })?;
                let entered = unshare(CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNS)
                    .map_err(IsolationError::Namespace);
                let mapped = entered.and_then(|()| wait_for_map());
                let _ = helper.wait();
                mapped
            }
        }
    }
}

/// The runner's subcommand that maps a nested namespace's ids ([`map_nested`]).
pub const MAP_IDS_COMMAND: &str = "isolation-map-ids";

/// `gantry-runner isolation-map-ids PID`: waits until `pid` has entered a user namespace
/// below ours, then maps every id of ours to itself there.
pub fn map_nested(pid: u32) -> Result<(), String> {
    let ours = fs::read_link("/proc/self/ns/user").map_err(|e| e.to_string())?;
    let deadline = std::time::Instant::now() + MAP_WAIT;
    loop {
        match fs::read_link(format!("/proc/{pid}/ns/user")) {
            Ok(theirs) if theirs != ours => break,
            Ok(_) => {}
            Err(e) => return Err(format!("process {pid} is gone: {e}")),
        }
        if std::time::Instant::now() >= deadline {
            return Err(format!("process {pid} did not enter a new user namespace"));
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    for file in ["uid_map", "gid_map"] {
        let map = identity_of(&read_map(&format!("/proc/self/{file}")));
        let path = format!("/proc/{pid}/{file}");
        fs::write(&path, map).map_err(|e| format!("writing {path}: {e}"))?;
    }
    Ok(())
}

/// Maps `uid` and `gid` to themselves: all a process may map without privilege.
fn map_own_ids(uid: u32, gid: u32) -> Result<(), IsolationError> {
    write_map("/proc/self/setgroups", "deny")?;
    write_map("/proc/self/uid_map", &format!("{uid} {uid} 1"))?;
    write_map("/proc/self/gid_map", &format!("{gid} {gid} 1"))
}

/// Waits until the parent has written this process's uid map.
fn wait_for_map() -> Result<(), IsolationError> {
    let deadline = std::time::Instant::now() + MAP_WAIT;
    while std::time::Instant::now() < deadline {
        if !read_map("/proc/self/uid_map").trim().is_empty()
            && !read_map("/proc/self/gid_map").trim().is_empty()
        {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    Err(IsolationError::MapTimeout)
}

fn read_map(path: &str) -> String {
    fs::read_to_string(path).unwrap_or_default()
}

/// A map of the ids a map's inside covers, each to itself (`inside inside count` per line).
fn identity_of(map: &str) -> String {
    map.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            match fields.as_slice() {
                [inside, _, count] => Some(format!("{inside} {inside} {count}")),
                _ => None,
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn write_map(path: &'static str, line: &str) -> Result<(), IsolationError> {
    fs::write(path, line).map_err(|source| IsolationError::Map { path, source })
}

fn mount_error(action: &'static str, path: &Path) -> impl FnOnce(nix::Error) -> IsolationError {
    let path = path.to_path_buf();
    move |source| IsolationError::Mount {
        action,
        path,
        source,
    }
}

/// `gantry-runner isolation-check DIR`: hides DIR (keeping DIR/keep) as a runner would and
/// checks from inside that only the kept part is visible. The engine runs it at start-up.
pub fn check(dir: &Path) -> Result<(), String> {
    let secret = dir.join("secret");
    let keep = dir.join("keep");
    fs::create_dir_all(&keep).map_err(|e| format!("creating {}: {e}", keep.display()))?;
    fs::write(&secret, "hidden").map_err(|e| format!("writing {}: {e}", secret.display()))?;
    fs::write(keep.join("visible"), "kept")
        .map_err(|e| format!("writing in {}: {e}", keep.display()))?;
    Isolation {
        hide: vec![dir.to_path_buf()],
        keep: vec![keep.clone()],
        ids: Isolation::from_env().ids,
        layer: None,
    }
    .apply()
    .map_err(|e| e.to_string())?;
    if secret.exists() {
        return Err(format!("{} is still visible", secret.display()));
    }
    match fs::read_to_string(keep.join("visible")) {
        Ok(text) if text == "kept" => Ok(()),
        Ok(_) | Err(_) => Err(format!("{} is not visible", keep.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_travel_one_per_line() {
        let isolation = Isolation {
            hide: vec!["/var/lib/gantry".into()],
            keep: vec!["/var/lib/gantry/workspaces/7-1".into(), "/home/x y".into()],
            ids: IdMap::Parent,
            layer: Some(SourceLayer {
                lower: "/var/lib/gantry/sources/run-1".into(),
                upper: "/var/lib/gantry/workspaces/7-1.layer/upper".into(),
                work: "/var/lib/gantry/workspaces/7-1.layer/work".into(),
                target: "/var/lib/gantry/workspaces/7-1".into(),
            }),
        };
        let env: std::collections::HashMap<_, _> = isolation.to_env().into_iter().collect();
        let back = Isolation::from_lookup(|name| env.get(name).cloned());
        assert_eq!(back, isolation);
        assert!(Isolation::from_lookup(|_| None).is_empty());
        assert_eq!(Isolation::from_lookup(|_| None).ids, IdMap::Own);
    }

    #[test]
    fn a_nested_namespace_maps_every_id_of_its_parent_to_itself() {
        assert_eq!(
            identity_of("         0       1001          1\n         1     100000      65536\n"),
            "0 0 1\n1 1 65536"
        );
    }
}
