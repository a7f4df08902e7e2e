//! The control plane's certificates, made with the `openssl` command as in
//! tests/controlplane/START.md: one CA signs the API server's serving certificate, a client
//! certificate per identity (the user is the certificate's CN, its groups the O entries; that is
//! how kube-apiserver authenticates client certificates) and the fake kubelet's serving
//! certificate. EC P-256 keys throughout: they take milliseconds to make, where RSA keys take
//! a good part of a second each on a busy machine.

use std::path::{Path, PathBuf};

/// A certificate and its key, PEM files.
#[derive(Clone, Debug)]
pub struct Pair {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The CA and what it signed, in one directory.
#[derive(Clone, Debug)]
pub struct Pki {
    pub dir: PathBuf,
}

/// The names the API server's certificate is valid for: loopback, where it listens, and the
/// in-cluster names of the `kubernetes` Service (10.0.0.1 is the first address of
/// `--service-cluster-ip-range`).
const APISERVER_SANS: &str = "IP:127.0.0.1,IP:10.0.0.1,DNS:localhost,DNS:kubernetes,\
DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local";

const EC_KEY: [&str; 4] = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];

impl Pki {
    /// Makes the CA, the service-account signing key pair and the API server's certificate.
    pub async fn generate(dir: &Path) -> Pki {
        std::fs::create_dir_all(dir).expect("pki dir");
        let pki = Pki {
            dir: dir.to_path_buf(),
        };
        let ca = pki.path("ca");
        openssl(
            dir,
            &[
                &["req", "-x509", "-nodes"][..],
                &EC_KEY,
                &[
                    "-keyout",
                    &ca.key_str(),
                    "-out",
                    &ca.cert_str(),
                    "-days",
                    "2",
                ],
                &["-subj", "/CN=gantry-test-ca"],
                &["-addext", "basicConstraints=critical,CA:TRUE"],
                &["-addext", "keyUsage=critical,keyCertSign,cRLSign"],
            ]
            .concat(),
        )
        .await;
        // Service-account tokens are signed with this key (ES256) and checked with its
        // public half.
        let sa_key = dir.join("sa.key").display().to_string();
        let sa_pub = dir.join("sa.pub").display().to_string();
        let keys = async {
            openssl(
                dir,
                &[
                    "genpkey",
                    "-algorithm",
                    "EC",
                    "-pkeyopt",
                    "ec_paramgen_curve:P-256",
                    "-out",
                    &sa_key,
                ],
            )
            .await;
            openssl(dir, &["pkey", "-in", &sa_key, "-pubout", "-out", &sa_pub]).await;
        };
        let serving = pki.serving("apiserver", "kube-apiserver", APISERVER_SANS);
        tokio::join!(keys, serving);
        pki
    }

    /// `NAME.crt` and `NAME.key` in this directory.
    pub fn path(&self, name: &str) -> Pair {
        Pair {
            cert: self.dir.join(format!("{name}.crt")),
            key: self.dir.join(format!("{name}.key")),
        }
    }

    pub fn ca(&self) -> PathBuf {
        self.path("ca").cert
    }

    pub fn sa_key(&self) -> PathBuf {
        self.dir.join("sa.key")
    }

    pub fn sa_pub(&self) -> PathBuf {
        self.dir.join("sa.pub")
    }

    /// A client certificate `NAME.crt` for `user` in `groups`.
    pub async fn client(&self, name: &str, user: &str, groups: &[&str]) -> Pair {
        let mut subject = String::new();
        for part in groups.iter().chain(std::iter::once(&user)) {
            assert!(
                !part.contains(['/', '\\', '=']),
                "`{part}` cannot go into a certificate subject as it is"
            );
        }
        for group in groups {
            subject.push_str(&format!("/O={group}"));
        }
        subject.push_str(&format!("/CN={user}"));
        self.sign(
            name,
            &subject,
            &[
                "keyUsage=critical,digitalSignature",
                "extendedKeyUsage=clientAuth",
            ],
        )
        .await
    }

    /// A serving certificate `NAME.crt` for `sans` (`IP:…,DNS:…`).
    pub async fn serving(&self, name: &str, common_name: &str, sans: &str) -> Pair {
        self.sign(
            name,
            &format!("/CN={common_name}"),
            &[
                &format!("subjectAltName={sans}"),
                "keyUsage=critical,digitalSignature",
                "extendedKeyUsage=serverAuth",
            ],
        )
        .await
    }

    /// A new key and a certificate for it signed by the CA. Each signature gets a random
    /// serial number (no shared serial file, so certificates can be made in parallel).
    async fn sign(&self, name: &str, subject: &str, extensions: &[&str]) -> Pair {
        let pair = self.path(name);
        let csr = self.dir.join(format!("{name}.csr"));
        let ext = self.dir.join(format!("{name}.ext"));
        let csr_str = csr.display().to_string();
        let ext_str = ext.display().to_string();
        let ca = self.path("ca");
        openssl(
            &self.dir,
            &[
                &["req", "-nodes"][..],
                &EC_KEY,
                &[
                    "-keyout",
                    &pair.key_str(),
                    "-out",
                    &csr_str,
                    "-subj",
                    subject,
                ],
            ]
            .concat(),
        )
        .await;
        std::fs::write(&ext, extensions.join("\n") + "\n").expect("write the extensions");
        let serial = format!("0x{:016x}{:08x}", random(), std::process::id());
        openssl(
            &self.dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr_str,
                "-CA",
                &ca.cert_str(),
                "-CAkey",
                &ca.key_str(),
                "-set_serial",
                &serial,
                "-days",
                "2",
                "-extfile",
                &ext_str,
                "-out",
                &pair.cert_str(),
            ],
        )
        .await;
        let _ = std::fs::remove_file(csr);
        let _ = std::fs::remove_file(ext);
        pair
    }
}

impl Pair {
    fn cert_str(&self) -> String {
        self.cert.display().to_string()
    }

    fn key_str(&self) -> String {
        self.key.display().to_string()
    }

    /// The certificate's PEM text.
    pub fn cert_pem(&self) -> Vec<u8> {
        std::fs::read(&self.cert).unwrap_or_else(|e| panic!("{}: {e}", self.cert.display()))
    }

    /// The key's PEM text.
    pub fn key_pem(&self) -> Vec<u8> {
        std::fs::read(&self.key).unwrap_or_else(|e| panic!("{}: {e}", self.key.display()))
    }
}

async fn openssl(dir: &Path, args: &[&str]) {
    let out = tokio::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .expect("openssl runs (scripts/test installs it)");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// 64 random bits for serial numbers, without a rand dependency: std's `RandomState` is
/// seeded randomly per instance.
fn random() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    hasher.finish()
}
