//! Independent image tools the tests check Gantry's images with, and build their base and
//! builder images with (nothing can be pulled from the internet): `buildah` (with storage of
//! its own in a temporary directory, so tests run in parallel), `skopeo`, `umoci` and
//! `oci-image-tool`. Each helper runs the real command and fails the test with its output.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::registry::Registry;

fn run(command: &mut Command) -> Output {
    let shown = format!("{command:?}");
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("{shown}: {e} (scripts/test installs the image tools)"));
    assert!(
        out.status.success(),
        "{shown} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn text(out: Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// buildah with its own storage.
pub struct Buildah {
    dir: tempfile::TempDir,
}

/// Busybox applets the test images link (enough for `sh` scripts).
const APPLETS: &[&str] = &[
    "sh", "echo", "cat", "ls", "mkdir", "cp", "mv", "rm", "chmod", "test", "id", "env", "printf",
    "tar", "true", "false", "sleep", "grep", "sed", "touch", "wc",
];

impl Default for Buildah {
    fn default() -> Self {
        Self::new()
    }
}

impl Buildah {
    pub fn new() -> Buildah {
        Buildah {
            dir: tempfile::tempdir().expect("buildah dir"),
        }
    }

    pub fn command(&self) -> Command {
        let mut command = Command::new("buildah");
        command
            .arg("--root")
            .arg(self.dir.path().join("root"))
            .arg("--runroot")
            .arg(self.dir.path().join("run"))
            .args(["--storage-driver", "vfs"]);
        command
    }

    fn buildah(&self, args: &[&str]) -> String {
        text(run(self.command().args(args)))
    }

    /// A working container from scratch holding busybox-static as `/bin/busybox` with its
    /// applets linked; returns the container and its mounted root.
    pub fn busybox_container(&self) -> (String, PathBuf) {
        let container = self.buildah(&["from", "scratch"]);
        self.buildah(&["copy", &container, "/bin/busybox", "/bin/busybox"]);
        let root = PathBuf::from(self.buildah(&["mount", &container]));
        for applet in APPLETS {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(applet))
                .expect("link an applet");
        }
        std::fs::create_dir_all(root.join("tmp")).expect("tmp");
        std::fs::create_dir_all(root.join("etc")).expect("etc");
        std::fs::write(
            root.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\napp:x:1001:0:app:/opt/app:/bin/sh\n",
        )
        .expect("passwd");
        std::fs::write(root.join("etc/group"), "root:x:0:\n").expect("group");
        (container, root)
    }

    /// Commits `container` and pushes it to `image` on `registry`.
    pub fn commit_and_push(&self, container: &str, registry: &Registry, image: &str) {
        let local = format!("localhost/{}", image.replace([':', '/'], "-"));
        self.buildah(&["commit", "-q", container, &local]);
        let target = format!("docker://{}", registry.image(image));
        let mut push = self.command();
        push.args(["push", "-q", "--tls-verify=false"])
            .args(registry.creds_args("--creds"))
            .args([&local, &target]);
        run(&mut push);
    }

    /// Pushes a busybox base image (`Cmd ["/bin/sh"]`) as `image`.
    pub fn push_busybox_base(&self, registry: &Registry, image: &str) {
        let (container, _) = self.busybox_container();
        self.buildah(&["config", "--cmd", "/bin/sh", &container]);
        self.commit_and_push(&container, registry, image);
    }

    /// Pushes `image` as an image index (manifest list): the busybox base for linux/amd64 and a
    /// different image (with a `/decoy` file) for linux/arm64, or only the decoy.
    pub fn push_busybox_index(&self, registry: &Registry, image: &str, with_amd64: bool) {
        let (decoy, root) = self.busybox_container();
        std::fs::write(root.join("decoy"), "arm64\n").expect("decoy");
        let decoy_image = format!("localhost/decoy-{}", image.replace([':', '/'], "-"));
        self.buildah(&["commit", "-q", &decoy, &decoy_image]);
        let list = format!("localhost/list-{}", image.replace([':', '/'], "-"));
        self.buildah(&["manifest", "create", &list]);
        self.buildah(&[
            "manifest",
            "add",
            "--os",
            "linux",
            "--arch",
            "arm64",
            &list,
            &decoy_image,
        ]);
        if with_amd64 {
            let (base, _) = self.busybox_container();
            let base_image = format!("localhost/amd64-{}", image.replace([':', '/'], "-"));
            self.buildah(&["commit", "-q", &base, &base_image]);
            self.buildah(&[
                "manifest",
                "add",
                "--os",
                "linux",
                "--arch",
                "amd64",
                &list,
                &base_image,
            ]);
        }
        let mut push = self.command();
        push.args(["manifest", "push", "-q", "--all", "--tls-verify=false"])
            .args(registry.creds_args("--creds"))
            .arg(&list)
            .arg(format!("docker://{}", registry.image(image)));
        run(&mut push);
    }

    /// Pushes an S2I builder image as `image`: busybox, a `/opt/app` owned by user 1001 with a
    /// `placeholder` file that `assemble` deletes (so the layer needs a whiteout), and, with
    /// `scripts`, `assemble`/`run` in `/usr/libexec/s2i` named by the scripts-url label.
    pub fn push_s2i_builder(&self, registry: &Registry, image: &str, scripts: bool) {
        use std::os::unix::fs::PermissionsExt;
        let (container, root) = self.busybox_container();
        let app = root.join("opt/app");
        std::fs::create_dir_all(&app).expect("opt/app");
        std::fs::write(app.join("placeholder"), "replaced by the build\n").expect("placeholder");
        for path in [&app, &app.join("placeholder")] {
            std::os::unix::fs::chown(path, Some(1001), Some(0)).expect("chown");
        }
        std::fs::set_permissions(root.join("tmp"), std::fs::Permissions::from_mode(0o1777))
            .expect("chmod tmp");
        let mut config = vec![
            "config",
            "--user",
            "1001",
            "--workingdir",
            "/opt/app",
            "--cmd",
            "/bin/sh",
        ];
        if scripts {
            let dir = root.join("usr/libexec/s2i");
            std::fs::create_dir_all(&dir).expect("s2i dir");
            let assemble = "#!/bin/sh -e\n\
                echo \"---> installing the source as $(id -u)\"\n\
                cp -R /tmp/src/. /opt/app/\n\
                rm -f /opt/app/placeholder\n\
                chmod +x /opt/app/app.sh\n\
                builds=0\n\
                if [ -f /tmp/artifacts/builds ]; then builds=$(cat /tmp/artifacts/builds); \
                echo \"restored the count of $builds earlier builds\"; fi\n\
                echo $((builds + 1)) > /opt/app/builds\n\
                echo \"assembled by $(id -u) with GREETING=$GREETING APP_MODE=$APP_MODE\"\n";
            let run = "#!/bin/sh\nexec /opt/app/app.sh\n";
            // Incremental builds: the count of builds so far is the artifact carried over.
            let save = "#!/bin/sh -e\ncd /opt/app\ntar cf - builds\n";
            for (name, body) in [
                ("assemble", assemble),
                ("run", run),
                ("save-artifacts", save),
            ] {
                std::fs::write(dir.join(name), body).expect("script");
                std::fs::set_permissions(dir.join(name), std::fs::Permissions::from_mode(0o755))
                    .expect("chmod script");
            }
            config.extend([
                "--label",
                "io.openshift.s2i.scripts-url=image:///usr/libexec/s2i",
                "--label",
                "io.openshift.s2i.assemble-user=1001",
            ]);
        }
        config.push(&container);
        self.buildah(&config);
        self.commit_and_push(&container, registry, image);
    }

    /// Runs `command` in a container of the pushed image `image` (chroot isolation, the one
    /// that works on these machines) and returns its standard output.
    pub fn run_image(&self, registry: &Registry, image: &str, command: &[&str]) -> String {
        let mut from = self.command();
        from.args(["from", "-q", "--tls-verify=false"])
            .args(registry.creds_args("--creds"))
            .arg(format!("docker://{image}"));
        let container = text(run(&mut from));
        // Once (in about 17 runs of tests/images.rs on a loaded machine) `buildah run` printed
        // nothing for a command that prints a line; it did not happen again in 12 reruns. The
        // image is fixed once pushed, so a command that prints nothing every time still fails
        // the test; only an empty answer is tried again.
        let mut out = String::new();
        for _ in 0..3 {
            let mut exec = self.command();
            exec.args(["run", "--isolation", "chroot", &container, "--"])
                .args(command);
            out = text(run(&mut exec));
            if !out.is_empty() {
                break;
            }
        }
        self.buildah(&["rm", &container]);
        out
    }

    /// Runs the image's own command (entrypoint and cmd), as `docker run IMAGE` would.
    pub fn run_default(&self, registry: &Registry, image: &str) -> String {
        let config = skopeo_config(registry, image);
        let mut argv: Vec<String> = Vec::new();
        for key in ["Entrypoint", "Cmd"] {
            if let Some(list) = config["config"][key].as_array() {
                argv.extend(list.iter().filter_map(|v| v.as_str().map(str::to_owned)));
            }
        }
        assert!(!argv.is_empty(), "{image} has neither Entrypoint nor Cmd");
        let args: Vec<&str> = argv.iter().map(String::as_str).collect();
        self.run_image(registry, image, &args)
    }
}

fn skopeo(registry: &Registry, args: &[&str], image: &str) -> serde_json::Value {
    let mut command = Command::new("skopeo");
    command
        .arg("inspect")
        .arg("--tls-verify=false")
        .args(registry.creds_args("--creds"))
        .args(args)
        .arg(format!("docker://{image}"));
    serde_json::from_str(&text(run(&mut command))).expect("skopeo prints JSON")
}

/// `skopeo inspect`: digest, labels, layers, env, architecture.
pub fn skopeo_inspect(registry: &Registry, image: &str) -> serde_json::Value {
    skopeo(registry, &[], image)
}

/// `skopeo inspect --config`: the image config document.
pub fn skopeo_config(registry: &Registry, image: &str) -> serde_json::Value {
    skopeo(registry, &["--config"], image)
}

/// `skopeo inspect --raw`: the manifest as stored.
pub fn skopeo_manifest(registry: &Registry, image: &str) -> serde_json::Value {
    skopeo(registry, &["--raw"], image)
}

/// An image copied out of the registry into an OCI layout, validated and unpacked.
pub struct Unpacked {
    pub dir: tempfile::TempDir,
}

impl Unpacked {
    /// `skopeo copy` to an OCI layout, `oci-image-tool validate` it, `umoci unpack` it.
    pub fn fetch(registry: &Registry, image: &str) -> Unpacked {
        let dir = tempfile::tempdir().expect("layout dir");
        let layout = dir.path().join("layout");
        let mut copy = Command::new("skopeo");
        copy.args(["copy", "-q", "--src-tls-verify=false"])
            .args(registry.creds_args("--src-creds"))
            .arg(format!("docker://{image}"))
            .arg(format!("oci:{}:img", layout.display()));
        run(&mut copy);
        run(Command::new("oci-image-tool")
            .args(["validate", "--type", "image", "--ref", "name=img"])
            .arg(&layout));
        run(Command::new("umoci")
            .arg("unpack")
            .arg("--image")
            .arg(format!("{}:img", layout.display()))
            .arg(dir.path().join("bundle")));
        Unpacked { dir }
    }

    pub fn rootfs(&self) -> PathBuf {
        self.dir.path().join("bundle/rootfs")
    }

    /// The names in the image's last layer (to see whiteouts, which unpacking applies).
    pub fn last_layer_entries(&self) -> Vec<String> {
        let layout = self.dir.path().join("layout");
        let index: serde_json::Value = read_json(&layout.join("index.json"));
        let manifest_digest = index["manifests"][0]["digest"]
            .as_str()
            .expect("index entry");
        let manifest: serde_json::Value = read_json(&blob_path(&layout, manifest_digest));
        let layers = manifest["layers"].as_array().expect("layers");
        let last = layers.last().expect("a layer")["digest"]
            .as_str()
            .expect("digest");
        let out = run(Command::new("tar")
            .arg("-tzvf")
            .arg(blob_path(&layout, last)));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

fn blob_path(layout: &Path, digest: &str) -> PathBuf {
    let (algorithm, hex) = digest.split_once(':').expect("a digest");
    layout.join("blobs").join(algorithm).join(hex)
}

fn read_json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).expect("JSON")
}

/// Mode bits, owner and group of a file in an unpacked root filesystem.
pub fn mode_and_owner(path: &Path) -> (u32, u32, u32) {
    use std::os::unix::fs::MetadataExt;
    let meta =
        std::fs::symlink_metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (meta.mode() & 0o7777, meta.uid(), meta.gid())
}
