//! A real OCI registry for tests: Debian's `docker-registry` (the CNCF distribution server) on
//! a free loopback port with its storage in a temporary directory, optionally behind htpasswd
//! basic auth. It is killed when dropped.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct Registry {
    /// `127.0.0.1:PORT`, the registry part of image names.
    pub host: String,
    /// Basic-auth user and password, when started with them.
    pub credentials: Option<(String, String)>,
    child: Child,
    pub dir: tempfile::TempDir,
}

impl Registry {
    /// A registry anyone may pull from and push to.
    pub async fn start() -> Registry {
        Self::spawn(None).await
    }

    /// A registry that wants `user`/`password` (htpasswd, bcrypt) for everything.
    pub async fn start_with_auth(user: &str, password: &str) -> Registry {
        Self::spawn(Some((user.to_owned(), password.to_owned()))).await
    }

    async fn spawn(credentials: Option<(String, String)>) -> Registry {
        let dir = tempfile::tempdir().expect("registry dir");
        let htpasswd = credentials.as_ref().map(|(user, password)| {
            let out = Command::new("htpasswd")
                .args(["-Bbn", user, password])
                .output()
                .expect("htpasswd runs (apache2-utils; scripts/test installs it)");
            assert!(out.status.success(), "htpasswd failed");
            let file = dir.path().join("htpasswd");
            std::fs::write(&file, &out.stdout).expect("write htpasswd");
            file
        });
        let (child, port) = crate::serve::on_free_port("docker-registry", |port| {
            let mut config = format!(
                "version: 0.1\nlog: {{level: error, accesslog: {{disabled: true}}}}\n\
                 storage: {{filesystem: {{rootdirectory: {}}}, delete: {{enabled: true}}}}\n\
                 http: {{addr: 127.0.0.1:{port}}}\n",
                dir.path().join("data").display()
            );
            if let Some(file) = &htpasswd {
                config.push_str(&format!(
                    "auth: {{htpasswd: {{realm: gantry-test, path: {}}}}}\n",
                    file.display()
                ));
            }
            let config_path = dir.path().join("config.yml");
            std::fs::write(&config_path, config).expect("write registry config");
            let log = std::fs::File::create(dir.path().join("registry.log")).expect("registry log");
            Command::new("docker-registry")
                .arg("serve")
                .arg(&config_path)
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("log"))
                .stderr(log)
                .spawn()
                .expect("docker-registry starts (scripts/test installs it)")
        });
        let host = format!("127.0.0.1:{port}");
        let registry = Registry {
            host,
            credentials,
            child,
            dir,
        };
        registry.wait_ready().await;
        registry
    }

    async fn wait_ready(&self) {
        let url = format!("http://{}/v2/", self.host);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(answer) = reqwest::get(&url).await
                && (answer.status().is_success() || answer.status().as_u16() == 401)
            {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the registry on {} did not answer within 30 s; its log:\n{}",
                self.host,
                std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `HOST/name`.
    pub fn image(&self, name: &str) -> String {
        format!("{}/{name}", self.host)
    }

    /// A docker config.json with this registry's credentials (or `password` instead).
    pub fn docker_config(&self, password: Option<&str>) -> String {
        use base64::Engine as _;
        let (user, real) = self.credentials.clone().unwrap_or_default();
        let auth = base64::engine::general_purpose::STANDARD
            .encode(format!("{user}:{}", password.unwrap_or(&real)));
        format!(r#"{{"auths": {{"{}": {{"auth": "{auth}"}}}}}}"#, self.host)
    }

    /// `--creds user:pass` for skopeo and buildah, when the registry wants them.
    pub fn creds_args(&self, flag: &str) -> Vec<String> {
        match &self.credentials {
            Some((user, password)) => vec![flag.to_owned(), format!("{user}:{password}")],
            None => Vec::new(),
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
