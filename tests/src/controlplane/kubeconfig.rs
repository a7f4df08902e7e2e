//! Kubeconfig files, as `kubectl config set-*` would write them (certificates embedded), for a
//! client certificate or a bearer token. Written by hand: running kubectl four times per file
//! costs more than the whole file.

use std::path::Path;

use base64::Engine as _;

use super::pki::Pair;

/// How a kubeconfig's user proves who it is.
pub enum Credentials<'a> {
    Certificate(&'a Pair),
    Token(&'a str),
}

/// Writes a kubeconfig for `server` (trusting the CA at `ca`) as `user` with `credentials`,
/// whose context's namespace is `namespace` (`None`: `default`, as for any kubeconfig that
/// names none).
pub fn write(
    path: &Path,
    server: &str,
    ca: &Path,
    user: &str,
    credentials: Credentials<'_>,
    namespace: Option<&str>,
) {
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    let ca_data = b64(&std::fs::read(ca).unwrap_or_else(|e| panic!("{}: {e}", ca.display())));
    let user_fields = match credentials {
        Credentials::Certificate(pair) => format!(
            "    client-certificate-data: {}\n    client-key-data: {}\n",
            b64(&pair.cert_pem()),
            b64(&pair.key_pem())
        ),
        Credentials::Token(token) => format!("    token: {token}\n"),
    };
    let namespace = namespace
        .map(|ns| format!("    namespace: {ns}\n"))
        .unwrap_or_default();
    let text = format!(
        "apiVersion: v1\nkind: Config\n\
         clusters:\n- name: gantry\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca_data}\n\
         users:\n- name: {user}\n  user:\n{user_fields}\
         contexts:\n- name: gantry\n  context:\n    cluster: gantry\n    user: {user}\n{namespace}\
         current-context: gantry\npreferences: {{}}\n"
    );
    std::fs::write(path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

/// A kube client from a kubeconfig file.
pub async fn client(path: &Path) -> kube::Client {
    let kubeconfig = kube::config::Kubeconfig::read_from(path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap_or_else(|e| panic!("kubeconfig {}: {e}", path.display()));
    kube::Client::try_from(config).expect("a kube client")
}
