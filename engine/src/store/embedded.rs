//! The PostgreSQL server `gantry serve` runs for itself when no `DATABASE_URL` is given, so one
//! machine (or one CI job) can run Gantry without setting up a database first.
//!
//! It owns a data directory: `pgdata/` (the cluster), `postgres.log` (the server's output),
//! `socket/` (its Unix socket) and `superuser.password`. The server listens on that socket only,
//! never on TCP, and asks every client for the superuser's password (scram-sha-256), even over
//! the socket: the socket directory's 0700 mode keeps others out, and the password keeps out
//! processes of the same user (a pipeline step, when Gantry is not root) that reach the socket.
//! The password is random, written once, mode 0600. PostgreSQL refuses to run as root, so when
//! Gantry is root the server runs as the `postgres` system user that Debian's `postgresql`
//! package creates.
//!
//! A server left behind by a Gantry that crashed is adopted rather than started twice. A stale
//! `postmaster.pid` left by a server that crashed is replaced by PostgreSQL itself on start, except
//! while the dead server is an unreaped zombie, which is handled here. One data directory is meant
//! for one Gantry process at a time: whichever handle stops the server stops it for all.

use std::fs;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use sqlx::Connection;
use sqlx::postgres::PgConnection;

/// With no TCP listener the port only names the socket file (`.s.PGSQL.<port>`), and the socket
/// directory is ours alone, so the default port cannot collide with anything.
const PORT: u16 = 5432;
/// The cluster's superuser, created by initdb.
const SUPERUSER: &str = "gantry";
/// The database Gantry keeps its tables in.
const DATABASE: &str = "gantry";
/// `sun_path` holds 108 bytes including the terminating NUL.
const MAX_SOCKET_PATH: usize = 107;
/// The socket's name within its directory, for `PORT`.
const SOCKET_FILE: &str = "/.s.PGSQL.5432";
/// The superuser's password, in the data directory (mode 0600, the engine's own).
const PASSWORD_FILE: &str = "superuser.password";
/// How clients prove who they are, over the socket too.
const AUTH_METHOD: &str = "scram-sha-256";
/// Enough of a log to hold PostgreSQL's reason for failing, short enough to read in an error.
const TAIL_LINES: usize = 20;
/// How long pg_ctl waits for the server to start or stop, and we wait for a server that some
/// other process is starting or stopping.
const PG_CTL_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    #[error(
        "PostgreSQL server programs (initdb, pg_ctl) not found (looked in {searched}). \
         Install them with `apt-get install postgresql` (Debian/Ubuntu), \
         or set DATABASE_URL to an existing PostgreSQL server"
    )]
    BinariesNotFound { searched: String },
    #[error(
        "PostgreSQL refuses to run as root, and there is no `postgres` system user to run it as. \
         Install the server with `apt-get install postgresql` (Debian/Ubuntu; it creates the user), \
         run gantry as an ordinary user, or set DATABASE_URL to an existing PostgreSQL server"
    )]
    NoPostgresUser,
    #[error("could not look up the `postgres` system user: {0}")]
    UserLookup(#[source] nix::Error),
    #[error(
        "the embedded PostgreSQL runs as user `postgres` (it refuses to run as root), and that user \
         cannot enter {blocked} (mode {mode:o}) to reach the data directory {data_dir}. \
         Use a data directory outside it (e.g. under /var/lib), or allow it: chmod o+x {blocked}"
    )]
    DataDirUnreachable {
        data_dir: PathBuf,
        blocked: PathBuf,
        mode: u32,
    },
    #[error(
        "the data directory path {0} contains a character pg_ctl cannot quote \
         (\" $ ` \\ or a line break); choose another path"
    )]
    UnquotablePath(PathBuf),
    #[error(
        "refusing to use {0} as the PostgreSQL socket directory: \
         it exists but is not a directory owned by the server's user"
    )]
    ForeignSocketDir(PathBuf),
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("could not run {program}: {source}")]
    Spawn {
        program: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("initdb failed ({status}); its output ends with:\n{output}")]
    Initdb { status: ExitStatus, output: String },
    #[error("PostgreSQL did not start ({status}): {output}\n{log} ends with:\n{log_tail}")]
    Start {
        status: ExitStatus,
        output: String,
        log: PathBuf,
        log_tail: String,
    },
    #[error(
        "a PostgreSQL server for {pgdata} was still starting or stopping after {}s",
        PG_CTL_TIMEOUT.as_secs()
    )]
    Busy { pgdata: PathBuf },
    #[error("PostgreSQL is running but {0} does not say where it listens")]
    UnreadablePidFile(PathBuf),
    #[error("could not create the `gantry` database: {0}")]
    CreateDatabase(#[source] sqlx::Error),
    #[error("could not set the superuser's password (the cluster trusted every local client): {0}")]
    SetPassword(#[source] sqlx::Error),
}

/// A running PostgreSQL server owned by this process: stopped by [`EmbeddedPostgres::stop`], or
/// when dropped.
#[derive(Debug)]
pub struct EmbeddedPostgres {
    url: String,
    cluster: Cluster,
    /// Stop only this server: after a crash another handle's server may run in the same directory.
    postmaster_pid: i32,
    stopped: bool,
}

impl EmbeddedPostgres {
    /// Starts (or adopts) the server for `data_dir`, creating the cluster on first use, with the
    /// server programs found on this machine.
    pub async fn start(data_dir: &Path) -> Result<EmbeddedPostgres, EmbeddedError> {
        let bindir = find_bindir()?;
        Self::start_with_bindir(data_dir, &bindir).await
    }

    /// Like [`EmbeddedPostgres::start`], with the directory holding initdb, pg_ctl and postgres.
    pub async fn start_with_bindir(
        data_dir: &Path,
        bindir: &Path,
    ) -> Result<EmbeddedPostgres, EmbeddedError> {
        let began = Instant::now();
        if !has_server_programs(bindir) {
            return Err(EmbeddedError::BinariesNotFound {
                searched: bindir.display().to_string(),
            });
        }
        let run_as = server_user()?;
        let data_dir = prepare_data_dir(data_dir, run_as)?;
        let password = superuser_password(&data_dir)?;
        let cluster = Cluster {
            bindir: bindir.to_path_buf(),
            pgdata: data_dir.join("pgdata"),
            log: data_dir.join("postgres.log"),
            run_as,
        };
        cluster.prepare_files()?;
        if !cluster.pgdata.join("PG_VERSION").exists() {
            cluster.initdb(&data_dir, &password).await?;
        }
        let (pid_file, adopted) = match cluster.running_server().await? {
            Some(pid_file) => (pid_file, true),
            None => {
                let socket_dir = socket_dir_for(&data_dir);
                prepare_socket_dir(&socket_dir, run_as)?;
                cluster.start(&socket_dir).await?;
                let pid_file = cluster
                    .read_pid_file()?
                    .ok_or_else(|| EmbeddedError::UnreadablePidFile(cluster.pid_path()))?;
                (pid_file, false)
            }
        };
        // From here on an error drops `server`, which stops the server again.
        let server = EmbeddedPostgres {
            url: pid_file.url(DATABASE, &password),
            cluster,
            postmaster_pid: pid_file.pid,
            stopped: false,
        };
        let admin_url = pid_file.url("postgres", &password);
        if server.cluster.trusts_local_clients()? {
            server
                .cluster
                .require_password(&admin_url, &password)
                .await?;
        }
        create_database(&admin_url).await?;
        tracing::info!(
            data_dir = %data_dir.display(),
            url = %server.url,
            adopted,
            duration_ms = began.elapsed().as_millis() as u64,
            "embedded PostgreSQL ready"
        );
        Ok(server)
    }

    /// A `postgres://` URL for the `gantry` database, over the server's Unix socket.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Stops the server (fast shutdown: open transactions are rolled back) and waits for it.
    pub async fn stop(mut self) {
        self.stopped = true;
        if !self.still_running() {
            return;
        }
        let result = output_of(self.cluster.stop_command()).await;
        self.report_stop(result);
    }

    /// Whether the server is still running (it may have been killed, or stopped by hand).
    pub fn is_running(&self) -> bool {
        self.still_running()
    }

    /// Whether our server still holds the data directory: not if it stopped, nor if it died and
    /// another took its place, nor if it died unreaped (pg_ctl would wait for a zombie to exit).
    fn still_running(&self) -> bool {
        matches!(
            self.cluster.read_pid_file(),
            Ok(Some(pid_file)) if pid_file.pid == self.postmaster_pid && is_alive(pid_file.pid)
        )
    }

    fn report_stop(&self, result: Result<Output, EmbeddedError>) {
        match result {
            Ok(output) if output.status.success() => {
                tracing::info!(pgdata = %self.cluster.pgdata.display(), "embedded PostgreSQL stopped");
            }
            Ok(output) => tracing::warn!(
                pgdata = %self.cluster.pgdata.display(),
                status = %output.status,
                output = %tail_of_output(&output),
                "embedded PostgreSQL did not stop"
            ),
            Err(error) => tracing::warn!(%error, "embedded PostgreSQL did not stop"),
        }
    }
}

impl Drop for EmbeddedPostgres {
    /// The fallback for paths that never reach `stop` (errors, panics): blocking, but it is
    /// better to hold a thread for a moment than to leave a server running behind us.
    fn drop(&mut self) {
        if self.stopped || !self.still_running() {
            return;
        }
        let mut command = self.cluster.stop_command();
        let program = PathBuf::from(command.get_program());
        let result = command
            .output()
            .map_err(|source| EmbeddedError::Spawn { program, source });
        self.report_stop(result);
    }
}

/// The uid and gid the server programs run as when Gantry runs as root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RunAs {
    uid: u32,
    gid: u32,
}

fn server_user() -> Result<Option<RunAs>, EmbeddedError> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(None);
    }
    match nix::unistd::User::from_name("postgres") {
        Ok(Some(user)) => Ok(Some(RunAs {
            uid: user.uid.as_raw(),
            gid: user.gid.as_raw(),
        })),
        Ok(None) => Err(EmbeddedError::NoPostgresUser),
        Err(errno) => Err(EmbeddedError::UserLookup(errno)),
    }
}

/// Where to look, in order: the installation pg_config describes; Debian's per-version
/// directories, which keep the server programs off PATH (newest first); then PATH, where other
/// distributions and Homebrew put them.
fn find_bindir() -> Result<PathBuf, EmbeddedError> {
    let mut searched = Vec::new();
    if let Ok(output) = Command::new("pg_config").arg("--bindir").output()
        && output.status.success()
    {
        let dir = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
        if has_server_programs(&dir) {
            return Ok(dir);
        }
        searched.push(dir.display().to_string());
    }
    let debian = Path::new("/usr/lib/postgresql");
    if let Some(dir) = newest_versioned_bindir(debian) {
        return Ok(dir);
    }
    searched.push(format!("{}/*/bin", debian.display()));
    if let Some(path) = std::env::var_os("PATH") {
        if let Some(dir) = std::env::split_paths(&path).find(|dir| has_server_programs(dir)) {
            return Ok(dir);
        }
        searched.push("PATH".to_owned());
    }
    Err(EmbeddedError::BinariesNotFound {
        searched: searched.join(", "),
    })
}

/// `root/<version>/bin` with the highest version that holds the server programs.
fn newest_versioned_bindir(root: &Path) -> Option<PathBuf> {
    fs::read_dir(root)
        .ok()?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version: Vec<u32> = entry
                .file_name()
                .to_str()?
                .split('.')
                .map(|part| part.parse().ok())
                .collect::<Option<_>>()?;
            let bindir = entry.path().join("bin");
            has_server_programs(&bindir).then_some((version, bindir))
        })
        .max()
        .map(|(_, bindir)| bindir)
}

fn has_server_programs(dir: &Path) -> bool {
    ["initdb", "pg_ctl", "postgres"]
        .iter()
        .all(|program| dir.join(program).is_file())
}

/// Creates the data directory and returns its absolute path, which every later step uses so the
/// server programs can run from any working directory.
fn prepare_data_dir(data_dir: &Path, run_as: Option<RunAs>) -> Result<PathBuf, EmbeddedError> {
    fs::create_dir_all(data_dir).map_err(io_error("could not create", data_dir))?;
    let data_dir = data_dir
        .canonicalize()
        .map_err(io_error("could not resolve", data_dir))?;
    // pg_ctl starts the server through `sh -c` with paths in double quotes.
    if data_dir
        .as_os_str()
        .as_bytes()
        .iter()
        .any(|byte| b"\"$`\\\n\r".contains(byte))
    {
        return Err(EmbeddedError::UnquotablePath(data_dir));
    }
    if let Some(run_as) = run_as {
        for dir in data_dir.ancestors() {
            let meta = fs::metadata(dir).map_err(io_error("could not inspect", dir))?;
            if !searchable_by(&meta, run_as) {
                return Err(EmbeddedError::DataDirUnreachable {
                    data_dir: data_dir.clone(),
                    blocked: dir.to_path_buf(),
                    mode: meta.mode() & 0o7777,
                });
            }
        }
    }
    Ok(data_dir)
}

/// Whether `run_as` may enter a directory. Supplementary groups are left out: the server
/// programs run without them (std drops them when a root parent sets a uid).
fn searchable_by(meta: &fs::Metadata, run_as: RunAs) -> bool {
    let mode = meta.mode();
    if meta.uid() == run_as.uid {
        mode & 0o100 != 0
    } else if meta.gid() == run_as.gid {
        mode & 0o010 != 0
    } else {
        mode & 0o001 != 0
    }
}

/// The socket lives in the data directory when its path fits in `sun_path` and needs no quoting
/// (it goes through pg_ctl's shell, PostgreSQL's directory list and a URL); otherwise in /tmp,
/// under a name derived from the data directory so every start finds the same one.
fn socket_dir_for(data_dir: &Path) -> PathBuf {
    let preferred = data_dir.join("socket");
    let bytes = preferred.as_os_str().as_bytes();
    let fits = bytes.len() + SOCKET_FILE.len() <= MAX_SOCKET_PATH;
    let plain = bytes
        .iter()
        .all(|byte| byte.is_ascii_alphanumeric() || b"/._-+".contains(byte));
    if fits && plain {
        return preferred;
    }
    let digest = Sha256::digest(data_dir.as_os_str().as_bytes());
    PathBuf::from(format!("/tmp/gantry-pg-{}", hex::encode(&digest[..8])))
}

/// Creates the socket directory private to the server's user. In /tmp anyone could have created
/// it first, so an existing one must already belong to that user (or root).
fn prepare_socket_dir(dir: &Path, run_as: Option<RunAs>) -> Result<(), EmbeddedError> {
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {}
        Err(error) => return Err(io_error("could not create", dir)(error)),
    }
    let meta = fs::symlink_metadata(dir).map_err(io_error("could not inspect", dir))?;
    let owner = run_as.map_or_else(|| nix::unistd::geteuid().as_raw(), |run_as| run_as.uid);
    if !meta.is_dir() || (meta.uid() != owner && meta.uid() != 0) {
        return Err(EmbeddedError::ForeignSocketDir(dir.to_path_buf()));
    }
    if let Some(run_as) = run_as
        && meta.uid() != run_as.uid
    {
        std::os::unix::fs::lchown(dir, Some(run_as.uid), Some(run_as.gid))
            .map_err(io_error("could not hand over", dir))?;
    }
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
        .map_err(io_error("could not restrict", dir))
}

/// One PostgreSQL cluster and the programs that manage it.
#[derive(Debug)]
struct Cluster {
    bindir: PathBuf,
    pgdata: PathBuf,
    log: PathBuf,
    run_as: Option<RunAs>,
}

impl Cluster {
    /// When running as root, hands the cluster and log to the server's user: a fresh pgdata is
    /// created for it, and one created by someone else (an earlier non-root run, a restored
    /// backup) is handed over whole, as PostgreSQL insists on owning every file.
    fn prepare_files(&self) -> Result<(), EmbeddedError> {
        let Some(run_as) = self.run_as else {
            return Ok(());
        };
        match fs::DirBuilder::new().mode(0o700).create(&self.pgdata) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {}
            Err(error) => return Err(io_error("could not create", &self.pgdata)(error)),
        }
        let meta =
            fs::metadata(&self.pgdata).map_err(io_error("could not inspect", &self.pgdata))?;
        if meta.uid() != run_as.uid {
            chown_tree(&self.pgdata, run_as)
                .map_err(io_error("could not hand over", &self.pgdata))?;
        }
        // pg_ctl opens the log as the server's user.
        fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(io_error("could not create", &self.log))?;
        std::os::unix::fs::lchown(&self.log, Some(run_as.uid), Some(run_as.gid))
            .map_err(io_error("could not hand over", &self.log))
    }

    async fn initdb(&self, data_dir: &Path, password: &str) -> Result<(), EmbeddedError> {
        // initdb reads the password from a file, as the server's user: a copy it may read,
        // removed again at once.
        let pwfile = data_dir.join(".initdb-password");
        write_private(&pwfile, password)?;
        if let Some(run_as) = self.run_as {
            std::os::unix::fs::lchown(&pwfile, Some(run_as.uid), Some(run_as.gid))
                .map_err(io_error("could not hand over", &pwfile))?;
        }
        let mut command = self.command("initdb");
        command
            .arg("-D")
            .arg(&self.pgdata)
            .args([
                "-U",
                SUPERUSER,
                &format!("--auth={AUTH_METHOD}"),
                "-E",
                "UTF8",
                "--locale=C",
            ])
            .arg(format!("--pwfile={}", pwfile.display()));
        let output = output_of(command).await;
        let _ = fs::remove_file(&pwfile);
        let output = output?;
        if !output.status.success() {
            return Err(EmbeddedError::Initdb {
                status: output.status,
                output: tail_of_output(&output),
            });
        }
        tracing::info!(pgdata = %self.pgdata.display(), "created PostgreSQL cluster");
        Ok(())
    }

    /// Whether `pg_hba.conf` still lets some local client in without a password (clusters
    /// created before Gantry asked for one).
    fn trusts_local_clients(&self) -> Result<bool, EmbeddedError> {
        let path = self.pgdata.join("pg_hba.conf");
        let text = fs::read_to_string(&path).map_err(io_error("could not read", &path))?;
        Ok(hba_rules(&text).any(|fields| fields.last() == Some(&"trust")))
    }

    /// Gives the superuser `password` and makes every rule of `pg_hba.conf` ask for it; the
    /// running server reloads its rules (new connections need the password from then on).
    async fn require_password(&self, admin_url: &str, password: &str) -> Result<(), EmbeddedError> {
        let mut conn = PgConnection::connect(admin_url)
            .await
            .map_err(EmbeddedError::SetPassword)?;
        // The password is hex digits made here: nothing in it needs quoting.
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "ALTER ROLE {SUPERUSER} PASSWORD '{password}'"
        )))
        .execute(&mut conn)
        .await
        .map_err(EmbeddedError::SetPassword)?;
        let path = self.pgdata.join("pg_hba.conf");
        let text = fs::read_to_string(&path).map_err(io_error("could not read", &path))?;
        fs::write(&path, require_password_in(&text))
            .map_err(io_error("could not rewrite", &path))?;
        sqlx::query("SELECT pg_reload_conf()")
            .execute(&mut conn)
            .await
            .map_err(EmbeddedError::SetPassword)?;
        let _ = conn.close().await;
        tracing::info!(pgdata = %self.pgdata.display(), "the embedded PostgreSQL now asks for a password (scram-sha-256)");
        Ok(())
    }

    /// The server already running on this cluster, if any, once it is neither starting nor
    /// stopping: a server that a crashed Gantry left behind is reused as it is.
    async fn running_server(&self) -> Result<Option<PidFile>, EmbeddedError> {
        let deadline = Instant::now() + PG_CTL_TIMEOUT;
        loop {
            let mut status = self.command("pg_ctl");
            status.arg("status").arg("-D").arg(&self.pgdata);
            // Not running (exit code 3) includes a postmaster.pid left by a server that died:
            // PostgreSQL replaces such a file when it starts.
            if !output_of(status).await?.status.success() {
                return Ok(None);
            }
            // The file vanishes if the server stops between the two looks; then look again.
            if let Some(pid_file) = self.read_pid_file()? {
                if is_zombie(pid_file.pid) {
                    self.clear_lock_files_of(&pid_file)?;
                    return Ok(None);
                }
                if !matches!(pid_file.status.as_str(), "starting" | "stopping") {
                    return Ok(Some(pid_file));
                }
            }
            if Instant::now() >= deadline {
                return Err(EmbeddedError::Busy {
                    pgdata: self.pgdata.clone(),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn start(&self, socket_dir: &Path) -> Result<(), EmbeddedError> {
        // `socket_dir_for` only picks paths that need no quoting here.
        let options = format!(
            "-c listen_addresses='' -k {} -p {PORT}",
            socket_dir.display()
        );
        let mut command = self.command("pg_ctl");
        command
            .arg("-D")
            .arg(&self.pgdata)
            .arg("-l")
            .arg(&self.log)
            .args(["-w", "-t", &PG_CTL_TIMEOUT.as_secs().to_string()])
            .arg("-o")
            .arg(options)
            .arg("start");
        let output = output_of(command).await?;
        if !output.status.success() {
            return Err(EmbeddedError::Start {
                status: output.status,
                output: tail_of_output(&output),
                log: self.log.clone(),
                log_tail: tail_of_file(&self.log),
            });
        }
        Ok(())
    }

    /// A killed postmaster stays a zombie until its parent reaps it: that parent is init (pg_ctl
    /// exits once the server is up), and some inits reap late, or never when Gantry itself is
    /// PID 1 in a container. pg_ctl and PostgreSQL both take a zombie for a live server and would
    /// refuse to start, so its lock files are removed here; a zombie holds nothing they protect.
    fn clear_lock_files_of(&self, dead: &PidFile) -> Result<(), EmbeddedError> {
        tracing::warn!(
            pgdata = %self.pgdata.display(),
            pid = dead.pid,
            "embedded PostgreSQL died; clearing its lock files"
        );
        let socket_lock = Path::new(&dead.socket_dir).join(format!(".s.PGSQL.{}.lock", dead.port));
        for lock in [self.pid_path(), socket_lock] {
            // Only the dead server's own lock: another server may have taken the socket since.
            let Ok(text) = fs::read_to_string(&lock) else {
                continue;
            };
            if text.lines().next().map(str::trim) == Some(dead.pid.to_string().as_str()) {
                match fs::remove_file(&lock) {
                    Ok(()) => {}
                    Err(error) if error.kind() == io::ErrorKind::NotFound => {}
                    Err(error) => return Err(io_error("could not remove", &lock)(error)),
                }
            }
        }
        Ok(())
    }

    fn stop_command(&self) -> Command {
        let mut command = self.command("pg_ctl");
        command
            .arg("-D")
            .arg(&self.pgdata)
            .args([
                "-m",
                "fast",
                "-w",
                "-t",
                &PG_CTL_TIMEOUT.as_secs().to_string(),
            ])
            .arg("stop");
        command
    }

    fn pid_path(&self) -> PathBuf {
        self.pgdata.join("postmaster.pid")
    }

    fn read_pid_file(&self) -> Result<Option<PidFile>, EmbeddedError> {
        let path = self.pid_path();
        match fs::read_to_string(&path) {
            Ok(text) => PidFile::parse(&text)
                .map(Some)
                .ok_or(EmbeddedError::UnreadablePidFile(path)),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(io_error("could not read", &path)(error)),
        }
    }

    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(self.bindir.join(program));
        // The data directory is known to be reachable; the caller's directory may not be.
        command.current_dir("/");
        if let Some(run_as) = self.run_as {
            command.gid(run_as.gid).uid(run_as.uid);
        }
        command
    }
}

/// What `postmaster.pid` says about the running server: one value per line, in the order
/// PostgreSQL's `pidfile.h` defines.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PidFile {
    pid: i32,
    port: u16,
    socket_dir: String,
    listen_address: String,
    status: String,
}

impl PidFile {
    fn parse(text: &str) -> Option<PidFile> {
        let lines: Vec<&str> = text.lines().map(str::trim).collect();
        let line = |index: usize| lines.get(index).copied().unwrap_or_default().to_owned();
        Some(PidFile {
            pid: lines.first()?.parse().ok()?,
            port: lines.get(3)?.parse().ok()?,
            socket_dir: line(4),
            listen_address: line(5),
            status: line(7),
        })
    }

    /// sslmode is pinned so a PGSSLMODE in the environment cannot demand TLS from a local server.
    /// `password` is hex digits: it needs no escaping in a URL.
    fn url(&self, database: &str, password: &str) -> String {
        let port = self.port;
        if self.socket_dir.is_empty() {
            let host = match self.listen_address.as_str() {
                "" | "*" | "0.0.0.0" => "127.0.0.1".to_owned(),
                "::" => "[::1]".to_owned(),
                address if address.contains(':') => format!("[{address}]"),
                address => address.to_owned(),
            };
            format!("postgres://{SUPERUSER}:{password}@{host}:{port}/{database}?sslmode=disable")
        } else {
            let socket = encode_query_value(&self.socket_dir);
            format!(
                "postgres://{SUPERUSER}:{password}@localhost:{port}/{database}?host={socket}&sslmode=disable"
            )
        }
    }
}

fn encode_query_value(value: &str) -> String {
    value
        .bytes()
        .map(|byte| {
            if byte.is_ascii_alphanumeric() || b"/-._~".contains(&byte) {
                char::from(byte).to_string()
            } else {
                format!("%{byte:02X}")
            }
        })
        .collect()
}

async fn create_database(admin_url: &str) -> Result<(), EmbeddedError> {
    let mut conn = PgConnection::connect(admin_url)
        .await
        .map_err(EmbeddedError::CreateDatabase)?;
    let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = $1")
        .bind(DATABASE)
        .fetch_optional(&mut conn)
        .await
        .map_err(EmbeddedError::CreateDatabase)?;
    if exists.is_none() {
        match sqlx::query("CREATE DATABASE gantry")
            .execute(&mut conn)
            .await
        {
            Ok(_) => {}
            // duplicate_database: another connection created it since we looked.
            Err(sqlx::Error::Database(error)) if error.code().as_deref() == Some("42P04") => {}
            Err(error) => return Err(EmbeddedError::CreateDatabase(error)),
        }
    }
    // The database exists either way; a failed goodbye changes nothing.
    let _ = conn.close().await;
    Ok(())
}

/// The superuser's password: read from the data directory, or made (32 random bytes as hex)
/// and written there, mode 0600, on first use.
fn superuser_password(data_dir: &Path) -> Result<String, EmbeddedError> {
    let path = data_dir.join(PASSWORD_FILE);
    match fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() => {
            fs::set_permissions(&path, fs::Permissions::from_mode(0o600))
                .map_err(io_error("could not restrict", &path))?;
            return Ok(text.trim().to_owned());
        }
        Ok(_) => {}
        Err(error) if error.kind() == io::ErrorKind::NotFound => {}
        Err(error) => return Err(io_error("could not read", &path)(error)),
    }
    let mut bytes = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut bytes);
    let password = hex::encode(bytes);
    write_private(&path, &password)?;
    Ok(password)
}

/// Writes `text` to a new file only its owner may read.
fn write_private(path: &Path, text: &str) -> Result<(), EmbeddedError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let _ = fs::remove_file(path);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io_error("could not create", path))?;
    file.write_all(text.as_bytes())
        .map_err(io_error("could not write", path))
}

/// The rules of a `pg_hba.conf`: each non-comment line's fields.
fn hba_rules(text: &str) -> impl Iterator<Item = Vec<&str>> {
    text.lines()
        .map(|line| line.split('#').next().unwrap_or_default())
        .map(|line| line.split_whitespace().collect::<Vec<_>>())
        .filter(|fields| !fields.is_empty())
}

/// `pg_hba.conf` with every `trust` rule asking for a scram-sha-256 password instead.
fn require_password_in(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let rule = line.split('#').next().unwrap_or_default();
        let fields: Vec<&str> = rule.split_whitespace().collect();
        if fields.last() == Some(&"trust") {
            out.push_str(&fields[..fields.len() - 1].join(" "));
            out.push(' ');
            out.push_str(AUTH_METHOD);
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

/// Whether `pid` is a live process: it exists (a killed postmaster leaves its pid file behind)
/// and is not an unreaped zombie. Where there is no /proc, every process counts as alive.
fn is_alive(pid: i32) -> bool {
    if !Path::new("/proc/self").exists() {
        return true;
    }
    Path::new(&format!("/proc/{pid}")).exists() && !is_zombie(pid)
}

/// Whether `pid` has exited but not been reaped. Only Linux says so (in /proc); elsewhere every
/// process counts as alive, as pg_ctl counts it.
fn is_zombie(pid: i32) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // "pid (command) state ...", and the command may itself contain ") ".
    stat.rsplit_once(')')
        .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
}

fn chown_tree(path: &Path, run_as: RunAs) -> io::Result<()> {
    std::os::unix::fs::lchown(path, Some(run_as.uid), Some(run_as.gid))?;
    if fs::symlink_metadata(path)?.is_dir() {
        for entry in fs::read_dir(path)? {
            chown_tree(&entry?.path(), run_as)?;
        }
    }
    Ok(())
}

async fn output_of(command: Command) -> Result<Output, EmbeddedError> {
    let program = PathBuf::from(command.get_program());
    tokio::process::Command::from(command)
        .output()
        .await
        .map_err(|source| EmbeddedError::Spawn { program, source })
}

fn tail_of_output(output: &Output) -> String {
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    last_lines(&text)
}

/// The end of a log that grows for as long as the data directory is used: only its last bytes
/// are read.
fn tail_of_file(path: &Path) -> String {
    const WINDOW: u64 = 16 * 1024;
    let read = || -> io::Result<String> {
        let mut file = fs::File::open(path)?;
        let len = file.metadata()?.len();
        file.seek(SeekFrom::Start(len.saturating_sub(WINDOW)))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    };
    match read() {
        Ok(text) => last_lines(&text),
        Err(error) => format!("(could not read it: {error})"),
    }
}

fn last_lines(text: &str) -> String {
    let lines: Vec<&str> = text.trim_end().lines().collect();
    lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n")
}

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> EmbeddedError {
    let path = path.to_path_buf();
    move |source| EmbeddedError::Io {
        action,
        path,
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pid_file_of_a_socket_only_server_gives_a_socket_url() {
        let text =
            "4242\n/data/pgdata\n1732540000\n5432\n/data/socket\n\n  1234567     98304\nready   \n";
        let pid_file = PidFile::parse(text).unwrap();
        assert_eq!(pid_file.pid, 4242);
        assert_eq!(pid_file.status, "ready");
        assert_eq!(
            pid_file.url("gantry", "abc123"),
            "postgres://gantry:abc123@localhost:5432/gantry?host=/data/socket&sslmode=disable"
        );
    }

    #[test]
    fn pid_file_of_a_tcp_server_gives_a_loopback_url() {
        let text = "4242\n/data/pgdata\n1732540000\n5433\n\n*\n  1234567     98304\nready   \n";
        assert_eq!(
            PidFile::parse(text).unwrap().url("postgres", "abc123"),
            "postgres://gantry:abc123@127.0.0.1:5433/postgres?sslmode=disable"
        );
    }

    #[test]
    fn truncated_pid_file_is_not_trusted() {
        assert_eq!(PidFile::parse("4242\n/data/pgdata\n"), None);
    }

    #[test]
    fn socket_goes_in_a_short_data_dir() {
        assert_eq!(
            socket_dir_for(Path::new("/var/lib/gantry")),
            Path::new("/var/lib/gantry/socket")
        );
    }

    #[test]
    fn socket_of_a_long_data_dir_goes_to_tmp_under_a_stable_name() {
        let long = PathBuf::from(format!("/srv/{}", "deep/".repeat(30)));
        let dir = socket_dir_for(&long);
        assert!(
            dir.to_string_lossy().starts_with("/tmp/gantry-pg-"),
            "{}",
            dir.display()
        );
        assert_eq!(dir, socket_dir_for(&long));
        assert_ne!(dir, socket_dir_for(&long.join("other")));
        assert!(dir.as_os_str().len() + SOCKET_FILE.len() <= MAX_SOCKET_PATH);
    }

    #[test]
    fn socket_of_a_data_dir_with_spaces_goes_to_tmp() {
        assert!(socket_dir_for(Path::new("/home/me/Gantry Data")).starts_with("/tmp"));
    }

    #[test]
    fn newest_versioned_bindir_compares_versions_as_numbers() {
        let root = tempfile::tempdir().unwrap();
        for version in ["9.6", "15", "16"] {
            let bin = root.path().join(version).join("bin");
            fs::create_dir_all(&bin).unwrap();
            if version != "16" {
                for program in ["initdb", "pg_ctl", "postgres"] {
                    fs::write(bin.join(program), "").unwrap();
                }
            }
        }
        // 16 lacks the server programs (only the client package is installed).
        assert_eq!(
            newest_versioned_bindir(root.path()),
            Some(root.path().join("15/bin"))
        );
    }

    #[test]
    fn trust_rules_are_made_to_ask_for_a_password() {
        let hba = "# TYPE DATABASE USER ADDRESS METHOD\nlocal all all trust\nhost all all 127.0.0.1/32 trust # loopback\nlocal replication all peer\n";
        let text = require_password_in(hba);
        assert_eq!(
            text,
            "# TYPE DATABASE USER ADDRESS METHOD\nlocal all all scram-sha-256\nhost all all 127.0.0.1/32 scram-sha-256\nlocal replication all peer\n"
        );
        assert!(!hba_rules(&text).any(|f| f.last() == Some(&"trust")));
        assert!(hba_rules(hba).any(|f| f.last() == Some(&"trust")));
    }

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(encode_query_value("/a b/c&d"), "/a%20b/c%26d");
    }
}
