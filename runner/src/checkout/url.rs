//! Clone URLs as the checkout sees them: what may be printed (passwords masked), what names a
//! mirror (credentials left out, so a token change keeps the cache), and how a submodule's
//! relative URL joins its parent's.

/// The URL with the password of any `user:pass@` part replaced by `***`, fit for logs and error
/// messages. Anything that does not look like `scheme://...` is returned as it is (local paths,
/// `host:path` scp-style URLs, which carry no password).
pub fn redact(url: &str) -> String {
    match split_userinfo(url) {
        Some((scheme, Some((user, Some(_))), rest)) => format!("{scheme}://{user}:***@{rest}"),
        _ => url.to_owned(),
    }
}

/// The URL without any `user[:pass]@` part: the name of the repository, whoever asks for it.
pub fn without_credentials(url: &str) -> String {
    match split_userinfo(url) {
        Some((scheme, Some(_), rest)) => format!("{scheme}://{rest}"),
        _ => url.to_owned(),
    }
}

/// The password written into the URL itself, if any, so it can be masked in messages that
/// libgit2 builds from the URL.
pub fn password(url: &str) -> Option<&str> {
    match split_userinfo(url) {
        Some((_, Some((_, password)), _)) => password,
        _ => None,
    }
}

/// `scheme`, the user name and password (if any), and what follows the `@`.
type Parts<'a> = (&'a str, Option<(&'a str, Option<&'a str>)>, &'a str);

fn split_userinfo(url: &str) -> Option<Parts<'_>> {
    let (scheme, rest) = url.split_once("://")?;
    // The authority ends at the first `/`; an `@` after it belongs to the path.
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    match authority.rfind('@') {
        None => Some((scheme, None, rest)),
        Some(at) => {
            let userinfo = &authority[..at];
            let creds = match userinfo.split_once(':') {
                Some((user, pass)) => (user, Some(pass)),
                None => (userinfo, None),
            };
            Some((scheme, Some(creds), &rest[at + 1..]))
        }
    }
}

/// The scheme of a URL (`https`, `git`, ...), or `None` for local paths and scp-style URLs.
pub fn scheme(url: &str) -> Option<&str> {
    url.split_once("://").map(|(scheme, _)| scheme)
}

/// Scheme and host (with port) of a URL, to decide whether credentials given for one URL may
/// be sent to another (a submodule's).
pub fn origin(url: &str) -> Option<(String, String)> {
    let (scheme, _, rest) = split_userinfo(url)?;
    let host = rest.split('/').next().unwrap_or_default();
    Some((scheme.to_ascii_lowercase(), host.to_ascii_lowercase()))
}

/// A submodule URL as git resolves it: `../x.git` and `./x` are relative to the parent
/// repository's URL (its last path segment is the repository itself); anything else is absolute.
pub fn join_submodule(parent: &str, sub: &str) -> String {
    if !(sub.starts_with("../") || sub.starts_with("./")) {
        return sub.to_owned();
    }
    let mut base = parent.trim_end_matches('/').to_owned();
    let mut rest = sub;
    loop {
        if let Some(r) = rest.strip_prefix("./") {
            rest = r;
        } else if let Some(r) = rest.strip_prefix("../") {
            // Up one segment, but never into the `scheme://host` part.
            let floor = base.find("://").map_or(0, |i| {
                i + 3 + base[i + 3..].find('/').unwrap_or(base.len() - i - 3)
            });
            match base.rfind('/') {
                Some(slash) if slash >= floor => base.truncate(slash),
                _ => {}
            }
            rest = r;
        } else {
            break;
        }
    }
    format!("{base}/{rest}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_masks_only_the_password() {
        assert_eq!(
            redact("https://bot:s3cret@git.example/org/repo.git"),
            "https://bot:***@git.example/org/repo.git"
        );
        assert_eq!(
            redact("https://token@git.example/r.git"),
            "https://token@git.example/r.git"
        );
        assert_eq!(redact("git://h:9418/r.git"), "git://h:9418/r.git");
        assert_eq!(redact("/srv/git/r.git"), "/srv/git/r.git");
        // An `@` in the path is not a user name.
        assert_eq!(redact("http://h/a@b:c/r.git"), "http://h/a@b:c/r.git");
        // A password containing `@` is masked whole.
        assert_eq!(
            redact("http://u:p@ss@h/r.git"),
            "http://u:***@h/r.git".to_owned()
        );
    }

    #[test]
    fn mirrors_are_named_without_credentials() {
        assert_eq!(
            without_credentials("https://u:p@h/r.git"),
            "https://h/r.git"
        );
        assert_eq!(without_credentials("https://h/r.git"), "https://h/r.git");
        assert_eq!(password("https://u:p@h/r.git"), Some("p"));
        assert_eq!(password("https://u@h/r.git"), None);
    }

    #[test]
    fn relative_submodule_urls_join_the_parent() {
        assert_eq!(
            join_submodule("http://h/git/app.git", "../lib.git"),
            "http://h/git/lib.git"
        );
        assert_eq!(
            join_submodule("http://h/git/app.git/", "../../other/lib.git"),
            "http://h/other/lib.git"
        );
        assert_eq!(
            join_submodule("http://h/app.git", "../../../lib.git"),
            "http://h/lib.git"
        );
        assert_eq!(join_submodule("/srv/app.git", "./sub"), "/srv/app.git/sub");
        assert_eq!(
            join_submodule("http://h/app.git", "git://x/lib.git"),
            "git://x/lib.git"
        );
    }

    #[test]
    fn origins_compare_scheme_and_host() {
        assert_eq!(
            origin("HTTP://u:p@Host:8080/a.git"),
            Some(("http".into(), "host:8080".into()))
        );
        assert_eq!(origin("/local/path"), None);
    }
}
