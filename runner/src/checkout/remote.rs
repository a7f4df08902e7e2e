//! Talking to a remote: which URLs this build can reach, credentials for libgit2's callbacks,
//! and turning libgit2's errors into [`CheckoutError`]s that say what to fix.

use std::cell::Cell;

use git2::{Cred, CredentialType, RemoteCallbacks};

use super::CheckoutError;
use super::url;
use crate::wire::GitAuth;

/// Refuses URLs whose transport this build lacks, before any connection is tried: libgit2's
/// own message for them ("unsupported URL protocol") does not say what to do instead.
pub fn check_url(raw: &str) -> Result<(), CheckoutError> {
    let unsupported = |why: &str| CheckoutError::UnsupportedUrl {
        url: url::redact(raw),
        why: why.to_owned(),
    };
    match url::scheme(raw) {
        Some("https") if !git2::Version::get().https() => Err(unsupported(
            "https clone URLs are not supported by this runner yet (libgit2 is built without \
             TLS); use http:// or git:// inside a trusted network, or a local mirror path",
        )),
        Some("ssh" | "git+ssh" | "ssh+git") => Err(unsupported(
            "ssh clone URLs are not supported; use an http(s) URL with a token in `auth`",
        )),
        Some("http" | "https" | "git" | "file") => Ok(()),
        Some(other) => Err(unsupported(&format!("unknown URL scheme {other:?}"))),
        None if is_scp_like(raw) => Err(unsupported(
            "scp-style (ssh) clone URLs are not supported; use an http(s) URL with a token",
        )),
        None => Ok(()),
    }
}

/// `git@host:org/repo.git`: a colon before any slash, and not a Windows drive letter.
fn is_scp_like(raw: &str) -> bool {
    match (raw.find(':'), raw.find('/')) {
        (Some(colon), slash) => colon > 1 && slash.is_none_or(|s| colon < s),
        (None, _) => false,
    }
}

/// What the credentials callback saw, to explain an authentication failure afterwards:
/// libgit2 reports only that the callback gave up.
#[derive(Default)]
pub struct AuthTrace {
    offered: Cell<bool>,
    refused: Cell<bool>,
    missing: Cell<bool>,
}

/// Callbacks that answer the server's credential requests with `auth`, once: a second request
/// means the server refused them, and asking again would loop until libgit2's replay limit.
pub fn callbacks<'a>(auth: Option<&'a GitAuth>, trace: &'a AuthTrace) -> RemoteCallbacks<'a> {
    let mut callbacks = RemoteCallbacks::new();
    callbacks.credentials(move |_url, _user, allowed| {
        let Some(auth) = auth.filter(|_| allowed.contains(CredentialType::USER_PASS_PLAINTEXT))
        else {
            trace.missing.set(true);
            return Err(git2::Error::from_str("no credentials for this URL"));
        };
        if trace.offered.get() {
            trace.refused.set(true);
            return Err(git2::Error::from_str("credentials refused"));
        }
        trace.offered.set(true);
        Cred::userpass_plaintext(&auth.username, &auth.password)
    });
    callbacks
}

/// A libgit2 error from `action` on `raw_url`, explained with what the callbacks saw, and with
/// every known password masked.
pub fn error(
    action: &'static str,
    raw_url: &str,
    auth: Option<&GitAuth>,
    trace: &AuthTrace,
    err: &git2::Error,
) -> CheckoutError {
    let shown = url::redact(raw_url);
    if trace.refused.get() {
        return CheckoutError::AuthRejected {
            url: shown,
            username: auth.map(|a| a.username.clone()).unwrap_or_default(),
        };
    }
    if trace.missing.get() {
        return CheckoutError::AuthRequired { url: shown };
    }
    CheckoutError::Remote {
        action,
        url: shown,
        message: mask(err.message(), raw_url, auth),
    }
}

/// `message` with the URL's password and the given password replaced by `***`.
pub fn mask(message: &str, raw_url: &str, auth: Option<&GitAuth>) -> String {
    let mut out = message.replace(raw_url, &url::redact(raw_url));
    for secret in [url::password(raw_url), auth.map(|a| a.password.as_str())]
        .into_iter()
        .flatten()
        .filter(|s| !s.is_empty())
    {
        out = out.replace(secret, "***");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_without_a_transport_are_refused_up_front() {
        assert!(check_url("http://h/r.git").is_ok());
        assert!(check_url("git://h/r.git").is_ok());
        assert!(check_url("/srv/git/r.git").is_ok());
        let err = check_url("git@github.example:org/r.git").err();
        assert!(
            matches!(err, Some(CheckoutError::UnsupportedUrl { .. })),
            "{err:?}"
        );
        assert!(check_url("ssh://h/r.git").is_err());
        assert!(check_url("gopher://h/r.git").is_err());
        if !git2::Version::get().https() {
            let err = check_url("https://u:tok@h/r.git")
                .err()
                .map(|e| e.to_string());
            let text = err.unwrap_or_default();
            assert!(
                text.starts_with("https://u:***@h/r.git: https clone URLs"),
                "{text}"
            );
            assert!(!text.contains("tok"), "{text}");
        }
    }

    #[test]
    fn messages_never_carry_passwords() {
        let auth = GitAuth {
            username: "bot".into(),
            password: "hunter2".into(),
        };
        let text = mask(
            "failed to fetch http://u:pw@h/r.git with hunter2",
            "http://u:pw@h/r.git",
            Some(&auth),
        );
        assert_eq!(text, "failed to fetch http://u:***@h/r.git with ***");
    }
}
