//! Real git servers and repositories for checkout tests: bare repositories made with the `git`
//! CLI, a working clone to commit and push from, `git daemon` (git://) and `git-http-backend`
//! under lighttpd (smart HTTP, optionally behind basic auth). Servers listen on free loopback
//! ports and are killed when dropped.
//!
//! Everything here is blocking (the checkout it tests is too); call it from `spawn_blocking` or
//! plain `#[test]`s.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::serve::on_free_port;

/// Runs `git ARGS` in `dir` with no system or user configuration (HOME is a directory of its
/// own), a fixed identity, and local-file submodules allowed; panics with git's stderr when it
/// fails; returns stdout, trimmed.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let home = std::env::temp_dir().join("gantry-tests-git-home");
    let _ = std::fs::create_dir_all(&home);
    let out = Command::new("git")
        .args([
            "-c",
            "user.name=Gantry Test",
            "-c",
            "user.email=test@gantry.invalid",
            "-c",
            "protocol.file.allow=always",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", &home)
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("git {args:?}: {e} (is git installed? run scripts/test)"));
    assert!(
        out.status.success(),
        "git {args:?} in {} failed: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Loose plus packed objects of a repository (`git count-objects -v`).
pub fn object_count(repo: &Path) -> usize {
    git(repo, &["count-objects", "-v"])
        .lines()
        .filter_map(|l| {
            let (key, value) = l.split_once(": ")?;
            matches!(key, "count" | "in-pack").then(|| value.parse::<usize>().ok())?
        })
        .sum()
}

/// A bare repository on disk, served by whichever server is started on its parent directory.
pub struct BareRepo {
    pub name: String,
    pub path: PathBuf,
}

impl BareRepo {
    /// `DIR/NAME.git`, made with `git init --bare -b main`, accepting pushes over HTTP.
    pub fn create(dir: &Path, name: &str) -> BareRepo {
        let path = dir.join(format!("{name}.git"));
        std::fs::create_dir_all(&path).expect("create the bare repository's directory");
        git(&path, &["init", "--bare", "-q", "-b", "main"]);
        git(&path, &["config", "http.receivepack", "true"]);
        BareRepo {
            name: name.to_owned(),
            path,
        }
    }

    /// A working clone to commit to this repository from (pushes go straight to the path).
    pub fn work_clone(&self) -> WorkClone {
        WorkClone::new(&self.path)
    }
}

/// A non-bare repository whose `origin` is a bare one: write files, commit, push.
pub struct WorkClone {
    pub dir: tempfile::TempDir,
}

impl WorkClone {
    pub fn new(origin: &Path) -> WorkClone {
        let dir = tempfile::tempdir().expect("work clone dir");
        git(dir.path(), &["init", "-q", "-b", "main"]);
        let origin = origin.to_string_lossy();
        git(dir.path(), &["remote", "add", "origin", &origin]);
        WorkClone { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `contents` to `path` (directories created) with unix permissions `mode`.
    pub fn write(&self, path: &str, contents: &str, mode: u32) -> &WorkClone {
        use std::os::unix::fs::PermissionsExt;
        let file = self.path().join(path);
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent).expect("create directories");
        }
        std::fs::write(&file, contents).expect("write a file");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).expect("chmod");
        self
    }

    pub fn symlink(&self, path: &str, target: &str) -> &WorkClone {
        let link = self.path().join(path);
        if let Some(parent) = link.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::os::unix::fs::symlink(target, link).expect("make a symlink");
        self
    }

    pub fn remove(&self, path: &str) -> &WorkClone {
        git(self.path(), &["rm", "-q", path]);
        self
    }

    /// Commits everything (`git add -A`) and returns the new commit's id.
    pub fn commit(&self, message: &str) -> String {
        git(self.path(), &["add", "-A"]);
        git(self.path(), &["commit", "-q", "-m", message]);
        git(self.path(), &["rev-parse", "HEAD"])
    }

    /// Writes regular files (mode 0644), commits and pushes to `main`.
    pub fn commit_files(&self, files: &[(&str, &str)], message: &str) -> String {
        for (path, contents) in files {
            self.write(path, contents, 0o644);
        }
        let commit = self.commit(message);
        self.push();
        commit
    }

    pub fn push(&self) {
        git(
            self.path(),
            &["push", "-q", "origin", "HEAD:refs/heads/main"],
        );
    }

    /// `git submodule add URL PATH` (a relative URL like `../lib.git` resolves against
    /// `origin`, and is what `.gitmodules` records).
    pub fn add_submodule(&self, url: &str, path: &str) -> &WorkClone {
        git(self.path(), &["submodule", "add", "-q", url, path]);
        self
    }
}

/// `git daemon` serving every repository under a directory, read-only.
pub struct GitDaemon {
    pub port: u16,
    child: Child,
}

impl GitDaemon {
    pub fn start(base_dir: &Path) -> GitDaemon {
        let base = base_dir.to_string_lossy();
        // git-daemon itself, not `git daemon`: the `git` wrapper runs it as a child of its own,
        // which would neither be the process listening nor die when the wrapper is killed.
        let exec_path = git(base_dir, &["--exec-path"]);
        let program = Path::new(exec_path.trim()).join("git-daemon");
        let (child, port) = on_free_port("git daemon", |port| {
            Command::new(&program)
                .arg("--listen=127.0.0.1")
                .arg(format!("--port={port}"))
                .arg(format!("--base-path={base}"))
                .arg("--export-all")
                .arg(&*base)
                .env("GIT_CONFIG_NOSYSTEM", "1")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| {
                    panic!("git daemon: {e} (run scripts/test, which installs git)")
                })
        });
        GitDaemon { port, child }
    }

    /// `git://127.0.0.1:PORT/NAME.git`
    pub fn url(&self, name: &str) -> String {
        format!("git://127.0.0.1:{}/{name}.git", self.port)
    }
}

impl Drop for GitDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// lighttpd running `git-http-backend` (smart HTTP) for every repository under a directory.
pub struct GitHttp {
    pub port: u16,
    /// `https` when started with a certificate.
    pub scheme: &'static str,
    child: Child,
    /// Configuration and logs.
    pub dir: tempfile::TempDir,
}

impl GitHttp {
    pub fn start(base_dir: &Path) -> GitHttp {
        Self::spawn(base_dir, None, None)
    }

    /// Asks for basic auth as `user` / `password` on everything.
    pub fn start_with_auth(base_dir: &Path, user: &str, password: &str) -> GitHttp {
        Self::spawn(base_dir, Some((user, password)), None)
    }

    /// Serves https with `pem` (the server's certificate and key in one file), for
    /// 127.0.0.1; see [`test_tls`].
    pub fn start_tls(base_dir: &Path, pem: &Path) -> GitHttp {
        Self::spawn(base_dir, None, Some(pem))
    }

    fn spawn(base_dir: &Path, auth: Option<(&str, &str)>, tls: Option<&Path>) -> GitHttp {
        let dir = tempfile::tempdir().expect("lighttpd dir");
        let exec_path = git(base_dir, &["--exec-path"]);
        let backend = Path::new(&exec_path).join("git-http-backend");
        assert!(
            backend.exists(),
            "{} is missing: git-http-backend comes with git",
            backend.display()
        );
        let (child, port) = on_free_port("lighttpd", |port| {
            let mut config = format!(
                r#"server.modules = ("mod_auth", "mod_authn_file", "mod_alias", "mod_cgi", "mod_setenv")
server.document-root = "{root}"
server.bind = "127.0.0.1"
server.port = {port}
server.errorlog = "{root}/error.log"
alias.url = ("/git" => "{backend}")
$HTTP["url"] =~ "^/git" {{
  cgi.assign = ("" => "")
  setenv.add-environment = ("GIT_PROJECT_ROOT" => "{base}", "GIT_HTTP_EXPORT_ALL" => "", "GIT_CONFIG_NOSYSTEM" => "1")
}}
"#,
                root = dir.path().display(),
                backend = backend.display(),
                base = base_dir.display(),
            );
            if let Some(pem) = tls {
                config.push_str(&format!(
                    "server.modules += (\"mod_openssl\")\nssl.engine = \"enable\"\nssl.pemfile = \"{}\"\n",
                    pem.display()
                ));
            }
            if let Some((user, password)) = auth {
                // mod_authn_file's "plain" backend: one `user:password` line per user.
                let users = dir.path().join("users");
                std::fs::write(&users, format!("{user}:{password}\n")).expect("write users");
                config.push_str(&format!(
                    r#"auth.backend = "plain"
auth.backend.plain.userfile = "{}"
auth.require = ("/git" => ("method" => "basic", "realm" => "gantry-test", "require" => "valid-user"))
"#,
                    users.display()
                ));
            }
            let conf = dir.path().join("lighttpd.conf");
            std::fs::write(&conf, config).expect("write lighttpd.conf");
            let log = std::fs::File::create(dir.path().join("stderr.log")).expect("lighttpd log");
            Command::new("lighttpd")
                .arg("-D")
                .arg("-f")
                .arg(&conf)
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("log"))
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| {
                    panic!("lighttpd: {e} (run scripts/test, which installs lighttpd)")
                })
        });
        let scheme = if tls.is_some() { "https" } else { "http" };
        GitHttp {
            port,
            scheme,
            child,
            dir,
        }
    }

    /// `http://127.0.0.1:PORT/git/NAME.git`
    pub fn url(&self, name: &str) -> String {
        format!("{}://127.0.0.1:{}/git/{name}.git", self.scheme, self.port)
    }

    /// The URL with `user:password@` in it.
    pub fn url_with_credentials(&self, name: &str, user: &str, password: &str) -> String {
        format!(
            "http://{user}:{password}@127.0.0.1:{}/git/{name}.git",
            self.port
        )
    }

    /// lighttpd's error log, for assertion messages.
    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }
}

impl Drop for GitHttp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The test certificates `scripts/test` makes: `ca.pem`, a CA that `SSL_CERT_FILE` (which
/// libgit2's OpenSSL reads) points at for the whole test run, and `server.pem`, a certificate
/// for 127.0.0.1 signed by it, with its key.
pub struct TestTls {
    pub ca: PathBuf,
    pub server: PathBuf,
}

pub fn test_tls() -> TestTls {
    let dir = std::env::var_os("GANTRY_TEST_TLS_DIR").map(PathBuf::from).expect(
        "GANTRY_TEST_TLS_DIR is not set: run the tests with scripts/test, which makes a test CA",
    );
    TestTls {
        ca: dir.join("ca.pem"),
        server: dir.join("server.pem"),
    }
}

/// A self-signed certificate for 127.0.0.1 that nothing trusts (with its key, in one file).
pub fn untrusted_pem(dir: &Path) -> PathBuf {
    let pem = dir.join("untrusted.pem");
    let key = dir.join("untrusted.key");
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
        ])
        .args(["-addext", "subjectAltName=IP:127.0.0.1", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&pem)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut both = std::fs::read(&pem).expect("cert");
    both.extend(std::fs::read(&key).expect("key"));
    std::fs::write(&pem, both).expect("pem");
    pem
}
