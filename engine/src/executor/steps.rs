//! Who local steps run as, and what they can reach: the trust boundary between a pipeline's
//! steps and the engine that runs them on its own machine.
//!
//! - **Environment**: a runner (and so every step) gets only the variables listed in
//!   [`PASSED_THROUGH`], the step user's `HOME`, `USER` and `LOGNAME`, and what the runner
//!   itself needs; never the engine's own (`DATABASE_URL`, `GANTRY_SECRET_KEY`, ...).
//! - **User**: an engine running as root starts runners as a dedicated unprivileged user
//!   (`--step-user`, default [`DEFAULT_STEP_USER`], created when missing), in workspaces that
//!   user owns; the engine's files are root's, mode 0600/0700. An engine that is not root can
//!   only run steps as itself, and says so at start-up.
//! - **Files**: runners hide the data directory from their steps (a mount namespace covering
//!   it, see `gantry_runner::isolation`) and keep only their workspace and the step user's home;
//!   whether this machine allows that is checked once at start-up.
//! - The engine marks itself non-dumpable, so a process of the same user cannot read its
//!   memory or `/proc/<engine>/environ`.

use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use gantry_runner::isolation::{IdMap, Isolation};

/// The user root engines run steps as when no `--step-user` is given.
pub const DEFAULT_STEP_USER: &str = "gantry-step";

/// The engine's variables a runner keeps: where programs are, the locale and time zone, the
/// certificate store and the proxy. Nothing else of the engine's environment reaches a step.
pub const PASSED_THROUGH: &[&str] = &[
    "PATH",
    "LANG",
    "LANGUAGE",
    "LC_ALL",
    "LC_CTYPE",
    "LC_MESSAGES",
    "TZ",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
];

/// Ids a root engine gives each runner's user namespace besides its root (the step user): the
/// size of a container's usual id space, from the step user's subordinate range.
const SUBORDINATE_IDS: u32 = 65536;
/// Where a new subordinate range may start (below are ordinary users' ids).
const SUBORDINATE_FLOOR: u64 = 100_000;

/// `PATH` when the engine has none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

#[derive(Debug, thiserror::Error)]
pub enum StepsError {
    #[error("--step-user {0}: only an engine running as root can run steps as another user")]
    NotRoot(String),
    #[error("--step-user root: steps must not run as root; name an unprivileged user")]
    Root,
    #[error("looking up user `{name}`: {source}")]
    Lookup { name: String, source: nix::Error },
    #[error("creating the step user `{name}` with useradd: {why}")]
    Create { name: String, why: String },
    #[error(
        "the step user `{user}` cannot enter {blocked} (mode {mode:o}) to reach its workspaces \
         under {data_dir}: use a data directory elsewhere (e.g. /var/lib/gantry), or allow it: \
         chmod o+x {blocked}"
    )]
    Unreachable {
        user: String,
        data_dir: PathBuf,
        blocked: PathBuf,
        mode: u32,
    },
    #[error("giving the step user `{name}` subordinate ids in {file}: {why}")]
    Subordinate {
        name: String,
        file: &'static str,
        why: String,
    },
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

/// A user steps run as, with the subordinate ids its runners' namespaces map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StepUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    /// First of [`SUBORDINATE_IDS`] host uids (`/etc/subuid`) and gids (`/etc/subgid`).
    pub sub_uid: u32,
    pub sub_gid: u32,
}

impl StepUser {
    /// The uid map of a runner's namespace: its root is the step user, ids 1.. come from
    /// the subordinate range.
    fn uid_map(&self) -> String {
        format!("0 {} 1\n1 {} {SUBORDINATE_IDS}\n", self.uid, self.sub_uid)
    }

    fn gid_map(&self) -> String {
        format!("0 {} 1\n1 {} {SUBORDINATE_IDS}\n", self.gid, self.sub_gid)
    }
}

/// How this engine runs local steps: decided once at start-up.
#[derive(Clone, Debug)]
pub struct StepPolicy {
    /// The user runners run as; `None`: the engine's own user (not root).
    pub user: Option<StepUser>,
    /// `HOME` of the steps: the step user's home (a directory in the data directory for a
    /// dedicated user), or the engine's own.
    pub home: Option<PathBuf>,
    /// The data directory, hidden from steps when `hide_data_dir`.
    pub data_dir: PathBuf,
    /// Whether runners can hide the data directory (user namespaces work here).
    pub hide_data_dir: bool,
}

impl StepPolicy {
    /// Decides who steps run as and prepares the data directory for it: root engines get a
    /// dedicated user (created when missing) and a home for it; the engine's own files are
    /// made private either way. `runner` is probed for namespace support.
    pub fn prepare(
        data_dir: &Path,
        step_user: Option<&str>,
        runner: &Path,
    ) -> Result<StepPolicy, StepsError> {
        let root = nix::unistd::geteuid().is_root();
        let data_dir = data_dir
            .canonicalize()
            .map_err(io_error("resolving", data_dir))?;
        let user = match (root, step_user) {
            (_, Some("root")) => return Err(StepsError::Root),
            (false, Some(name)) if !is_current_user(name) => {
                return Err(StepsError::NotRoot(name.to_owned()));
            }
            (false, _) => None,
            (true, name) => Some(ensure_user(name.unwrap_or(DEFAULT_STEP_USER))?),
        };
        // The data directory: the engine's alone, except that a dedicated step user may pass
        // through it (not list it) to its workspaces and home.
        let mode = if user.is_some() { 0o711 } else { 0o700 };
        set_mode(&data_dir, mode)?;
        let workspaces = data_dir.join("workspaces");
        fs::create_dir_all(&workspaces).map_err(io_error("creating", &workspaces))?;
        set_mode(&workspaces, mode)?;
        for private in ["runner-logs", "git"] {
            let dir = data_dir.join(private);
            if dir.exists() {
                set_mode(&dir, 0o700)?;
            }
        }
        for file in ["secret.key", "admin.token", "admin.password"] {
            let path = data_dir.join(file);
            if path.exists() {
                set_mode(&path, 0o600)?;
            }
        }
        let home = match &user {
            Some(user) => {
                check_reachable(&data_dir, user)?;
                let home = data_dir.join("step-home");
                fs::create_dir_all(&home).map_err(io_error("creating", &home))?;
                chown(&home, user)?;
                set_mode(&home, 0o700)?;
                Some(home)
            }
            None => std::env::var_os("HOME").map(PathBuf::from),
        };
        let hide_data_dir = match probe(runner, &data_dir, user.as_ref()) {
            Ok(()) => true,
            Err(why) => {
                tracing::warn!(
                    reason = %why,
                    "steps cannot be kept out of the data directory on this machine: they can read what the step user can read there"
                );
                false
            }
        };
        let policy = StepPolicy {
            user,
            home,
            data_dir,
            hide_data_dir,
        };
        policy.announce();
        Ok(policy)
    }

    /// The policy of an engine that starts no runner of its own (tests of other parts).
    pub fn unprepared(data_dir: &Path) -> StepPolicy {
        StepPolicy {
            user: None,
            home: std::env::var_os("HOME").map(PathBuf::from),
            data_dir: data_dir.to_path_buf(),
            hide_data_dir: false,
        }
    }

    /// What an operator should know about how steps run, when it is a compromise: they share
    /// the engine's user, or the data directory cannot be hidden from them.
    pub fn notice(&self) -> Option<String> {
        match (&self.user, self.hide_data_dir) {
            (Some(_), true) => None,
            (Some(user), false) => Some(format!(
                "local steps run as `{}`, but this machine has no user namespaces to hide the data directory from them: they can read what that user may read there",
                user.name
            )),
            (None, hidden) => Some(format!(
                "local steps run as gantry's own user and share its privileges (run gantry as root to give them a user of their own: --step-user); their environment is scrubbed{}",
                if hidden {
                    " and the data directory is hidden from them"
                } else {
                    ", but they can read the data directory (no user namespaces here)"
                }
            )),
        }
    }

    fn announce(&self) {
        match &self.user {
            Some(user) => tracing::info!(
                step_user = %user.name,
                uid = user.uid,
                data_dir_hidden = self.hide_data_dir,
                "local steps run as an unprivileged user"
            ),
            None => tracing::warn!(
                data_dir_hidden = self.hide_data_dir,
                "{}",
                self.notice().unwrap_or_default()
            ),
        }
    }

    /// The complete environment of a runner: the allow-list, the step user's identity, and
    /// `extra` (the runner's own settings).
    pub fn environment(&self, workspace: &Path) -> Vec<(String, OsString)> {
        let mut env: Vec<(String, OsString)> = PASSED_THROUGH
            .iter()
            .filter_map(|name| std::env::var_os(name).map(|v| ((*name).to_owned(), v)))
            .collect();
        if !env.iter().any(|(k, _)| k == "PATH") {
            env.push(("PATH".into(), DEFAULT_PATH.into()));
        }
        let name = match &self.user {
            Some(user) => Some(user.name.clone()),
            None => nix::unistd::User::from_uid(nix::unistd::geteuid())
                .ok()
                .flatten()
                .map(|u| u.name),
        };
        if let Some(name) = name {
            env.push(("USER".into(), name.clone().into()));
            env.push(("LOGNAME".into(), name.into()));
        }
        if let Some(home) = &self.home {
            env.push(("HOME".into(), home.clone().into_os_string()));
        }
        if self.hide_data_dir {
            let isolation = self.isolation(workspace);
            for (name, value) in isolation.to_env() {
                env.push((name.to_owned(), value.into()));
            }
        }
        env
    }

    /// What a runner hides: the data directory, but for its workspace and the step home.
    pub fn isolation(&self, workspace: &Path) -> Isolation {
        let mut keep = vec![workspace.to_path_buf()];
        if let Some(home) = &self.home
            && home.starts_with(&self.data_dir)
        {
            keep.push(home.clone());
        }
        Isolation {
            hide: vec![self.data_dir.clone()],
            keep,
            ids: if self.user.is_some() {
                IdMap::Parent
            } else {
                IdMap::Own
            },
            layer: None,
        }
    }

    /// Whether the engine maps each runner's ids ([`StepPolicy::map_ids`]) after starting it.
    pub fn maps_ids(&self) -> bool {
        self.hide_data_dir && self.user.is_some()
    }

    /// Writes the uid and gid maps of runner `pid`'s user namespace once the runner has
    /// entered it (root engines; the runner waits for them). Blocking: it polls `/proc`.
    pub fn map_ids(&self, pid: u32) -> Result<(), String> {
        let Some(user) = &self.user else {
            return Ok(());
        };
        write_id_maps(pid, user)
    }

    /// Makes a fresh workspace the step user's own.
    pub fn hand_over(&self, path: &Path) -> Result<(), StepsError> {
        if let Some(user) = &self.user {
            chown_tree(path, user)?;
            set_mode(path, 0o700)?;
        }
        Ok(())
    }
}

/// Waits until `pid` is in a user namespace other than ours, then writes its maps.
fn write_id_maps(pid: u32, user: &StepUser) -> Result<(), String> {
    let ours = fs::read_link("/proc/self/ns/user").map_err(|e| e.to_string())?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match fs::read_link(format!("/proc/{pid}/ns/user")) {
            Ok(theirs) if theirs != ours => break,
            Ok(_) => {}
            Err(e) => {
                return Err(format!(
                    "runner {pid} is gone before its ids were mapped: {e}"
                ));
            }
        }
        if std::time::Instant::now() >= deadline {
            return Err(format!(
                "runner {pid} did not enter a user namespace within 10 s"
            ));
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    for (file, map) in [("uid_map", user.uid_map()), ("gid_map", user.gid_map())] {
        let path = format!("/proc/{pid}/{file}");
        fs::write(&path, &map).map_err(|e| format!("writing {path}: {e}"))?;
    }
    Ok(())
}

/// The start of `name`'s subordinate range in `file` (`/etc/subuid` or `/etc/subgid`),
/// given one of [`SUBORDINATE_IDS`] after every range there when it has none.
fn subordinate_range(file: &'static str, name: &str, id: u32) -> Result<u32, StepsError> {
    let error = |why: String| StepsError::Subordinate {
        name: name.to_owned(),
        file,
        why,
    };
    let text = match fs::read_to_string(file) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(error(e.to_string())),
    };
    let mut end = SUBORDINATE_FLOOR;
    for line in text.lines() {
        let fields: Vec<&str> = line.trim().split(':').collect();
        let [owner, start, count] = fields.as_slice() else {
            continue;
        };
        let (Ok(start), Ok(count)) = (start.parse::<u64>(), count.parse::<u64>()) else {
            continue;
        };
        if (*owner == name || *owner == id.to_string()) && count >= u64::from(SUBORDINATE_IDS) {
            return u32::try_from(start).map_err(|e| error(e.to_string()));
        }
        end = end.max(start + count);
    }
    let start = u32::try_from(end).map_err(|e| error(e.to_string()))?;
    let line = format!("{name}:{start}:{SUBORDINATE_IDS}\n");
    use std::io::Write;
    fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(file)
        .and_then(|mut f| f.write_all(line.as_bytes()))
        .map_err(|e| error(e.to_string()))?;
    tracing::info!(
        step_user = name,
        file,
        start,
        "gave the step user subordinate ids"
    );
    Ok(start)
}

fn is_current_user(name: &str) -> bool {
    nix::unistd::User::from_uid(nix::unistd::geteuid())
        .ok()
        .flatten()
        .is_some_and(|u| u.name == name)
}

/// The named user, created (a system user with its own group and no login) when missing.
fn ensure_user(name: &str) -> Result<StepUser, StepsError> {
    let lookup = |name: &str| {
        nix::unistd::User::from_name(name).map_err(|source| StepsError::Lookup {
            name: name.to_owned(),
            source,
        })
    };
    let user = match lookup(name)? {
        Some(user) => user,
        None => {
            let output = std::process::Command::new("useradd")
                .args([
                    "--system",
                    "--user-group",
                    "--no-create-home",
                    "--home-dir",
                    "/nonexistent",
                    "--shell",
                    "/usr/sbin/nologin",
                    "--comment",
                    "Gantry pipeline steps",
                    name,
                ])
                .output()
                .map_err(|e| StepsError::Create {
                    name: name.to_owned(),
                    why: e.to_string(),
                })?;
            // Another engine may have created it at the same moment: look again either way.
            match lookup(name)? {
                Some(user) => {
                    tracing::info!(step_user = name, "created the step user");
                    user
                }
                None => {
                    return Err(StepsError::Create {
                        name: name.to_owned(),
                        why: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
                    });
                }
            }
        }
    };
    if user.uid.is_root() {
        return Err(StepsError::Root);
    }
    let (uid, gid) = (user.uid.as_raw(), user.gid.as_raw());
    Ok(StepUser {
        sub_uid: subordinate_range("/etc/subuid", &user.name, uid)?,
        sub_gid: subordinate_range("/etc/subgid", &user.name, uid)?,
        name: user.name,
        uid,
        gid,
    })
}

/// Every directory above the data directory must let the step user pass.
fn check_reachable(data_dir: &Path, user: &StepUser) -> Result<(), StepsError> {
    use std::os::unix::fs::MetadataExt;
    for dir in data_dir.ancestors().skip(1) {
        let meta = fs::metadata(dir).map_err(io_error("inspecting", dir))?;
        let mode = meta.mode();
        let passes = if meta.uid() == user.uid {
            mode & 0o100 != 0
        } else if meta.gid() == user.gid {
            mode & 0o010 != 0
        } else {
            mode & 0o001 != 0
        };
        if !passes {
            return Err(StepsError::Unreachable {
                user: user.name.clone(),
                data_dir: data_dir.to_path_buf(),
                blocked: dir.to_path_buf(),
                mode: mode & 0o7777,
            });
        }
    }
    Ok(())
}

/// Runs `gantry-runner isolation-check` as the step user on a scratch directory in the data
/// directory: it hides the directory from itself and reports whether that worked.
fn probe(runner: &Path, data_dir: &Path, user: Option<&StepUser>) -> Result<(), String> {
    let scratch = data_dir.join("workspaces").join(".isolation-check");
    let _ = fs::remove_dir_all(&scratch);
    fs::create_dir_all(&scratch).map_err(|e| format!("creating {}: {e}", scratch.display()))?;
    let result = (|| {
        let mut command = std::process::Command::new(runner);
        command
            .arg("isolation-check")
            .arg(&scratch)
            .env_clear()
            .env("PATH", DEFAULT_PATH)
            .stdin(std::process::Stdio::null());
        if let Some(user) = user {
            chown_tree(&scratch, user).map_err(|e| e.to_string())?;
            command
                .uid(user.uid)
                .gid(user.gid)
                .env(gantry_runner::isolation::ENV_ID_MAP, "parent");
        }
        use std::os::unix::process::CommandExt;
        let child = command
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| format!("{}: {e}", runner.display()))?;
        let mapped = match user {
            Some(user) => write_id_maps(child.id(), user),
            None => Ok(()),
        };
        let output = child
            .wait_with_output()
            .map_err(|e| format!("{}: {e}", runner.display()))?;
        mapped?;
        if output.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&output.stderr).trim().to_owned())
        }
    })();
    let _ = fs::remove_dir_all(&scratch);
    result
}

fn set_mode(path: &Path, mode: u32) -> Result<(), StepsError> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(io_error("restricting", path))
}

fn chown(path: &Path, user: &StepUser) -> Result<(), StepsError> {
    std::os::unix::fs::lchown(path, Some(user.uid), Some(user.gid))
        .map_err(io_error("handing over", path))
}

fn chown_tree(path: &Path, user: &StepUser) -> Result<(), StepsError> {
    chown(path, user)?;
    let meta = fs::symlink_metadata(path).map_err(io_error("inspecting", path))?;
    if meta.is_dir() {
        for entry in fs::read_dir(path).map_err(io_error("listing", path))? {
            let entry = entry.map_err(io_error("listing", path))?;
            chown_tree(&entry.path(), user)?;
        }
    }
    Ok(())
}

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> StepsError {
    let path = path.to_path_buf();
    move |source| StepsError::Io {
        action,
        path,
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_engines_secrets_are_not_passed_through() {
        for name in [
            "DATABASE_URL",
            "GANTRY_SECRET_KEY",
            "GANTRY_TOKEN",
            "PGPASSWORD",
        ] {
            assert!(!PASSED_THROUGH.contains(&name), "{name}");
        }
    }

    #[test]
    fn the_workspace_and_the_step_home_stay_visible() {
        let policy = StepPolicy {
            user: None,
            home: Some("/data/step-home".into()),
            data_dir: "/data".into(),
            hide_data_dir: true,
        };
        let isolation = policy.isolation(Path::new("/data/workspaces/4-1"));
        assert_eq!(isolation.hide, vec![PathBuf::from("/data")]);
        assert_eq!(
            isolation.keep,
            vec![
                PathBuf::from("/data/workspaces/4-1"),
                PathBuf::from("/data/step-home")
            ]
        );
        let env = policy.environment(Path::new("/data/workspaces/4-1"));
        assert!(env.iter().any(|(k, _)| k == "GANTRY_RUNNER_HIDE"));
        assert!(env.iter().all(|(k, _)| k != "DATABASE_URL"));
    }
}
