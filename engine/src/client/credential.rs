//! Which API token the CLI sends, and where it came from: `--token`, `GANTRY_TOKEN`, or the
//! first administrator's `admin.token` in the local engine's data directory. The file is used
//! only with the engine that recorded its URL beside it (`admin.token.url`): pointed at
//! another engine, the CLI would otherwise send a token that engine never issued and fail
//! with "the API token is not valid" and no clue why. Every authentication error the CLI
//! prints names the source (see [`TokenSource::hint`]).

use std::path::{Path, PathBuf};

use reqwest::Url;

use crate::access::bootstrap;

/// Where the token sent came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenSource {
    /// `--token`.
    Flag,
    /// The `GANTRY_TOKEN` environment variable.
    Env,
    /// A local engine's `admin.token`.
    File(PathBuf),
    /// No token was sent; `skipped` says why a local token file was left alone.
    Nothing { skipped: Option<String> },
}

/// A token to send (if any) and its source.
#[derive(Clone, Debug)]
pub struct Credential {
    pub token: Option<String>,
    pub source: TokenSource,
}

impl Credential {
    pub fn none() -> Credential {
        Credential {
            token: None,
            source: TokenSource::Nothing { skipped: None },
        }
    }
}

impl TokenSource {
    /// What to add to an authentication error: which token was sent (or why none was), and
    /// what to do.
    pub fn hint(&self) -> String {
        match self {
            TokenSource::Flag => "the token was given with --token".into(),
            TokenSource::Env => "the token came from the GANTRY_TOKEN environment variable".into(),
            TokenSource::File(path) => format!(
                "the token was read from {}; give another with --token or GANTRY_TOKEN",
                path.display()
            ),
            TokenSource::Nothing { skipped: None } => {
                "no token was sent: give one with --token or GANTRY_TOKEN".into()
            }
            TokenSource::Nothing { skipped: Some(why) } => {
                format!("no token was sent ({why}): give one with --token or GANTRY_TOKEN")
            }
        }
    }
}

/// The token for the engine at `server`: `given` (from `--token` or `GANTRY_TOKEN`; `env` is
/// the variable's value, to tell the two apart), else `admin.token` in `data_dir` when the
/// engine that wrote it recorded `server` as its URL.
pub fn resolve(
    server: &str,
    given: Option<&str>,
    env: Option<&str>,
    data_dir: &Path,
) -> Credential {
    if let Some(token) = given.filter(|t| !t.is_empty()) {
        let source = if env == Some(token) {
            TokenSource::Env
        } else {
            TokenSource::Flag
        };
        return Credential {
            token: Some(token.to_owned()),
            source,
        };
    }
    let path = data_dir.join(bootstrap::TOKEN_FILE);
    let Some(token) = bootstrap::read_token(data_dir) else {
        return Credential::none();
    };
    let skipped = |why: String| Credential {
        token: None,
        source: TokenSource::Nothing { skipped: Some(why) },
    };
    match bootstrap::read_token_urls(data_dir) {
        Some(urls) if urls.iter().any(|u| same_engine(u, server)) => Credential {
            token: Some(token),
            source: TokenSource::File(path),
        },
        Some(urls) if !urls.is_empty() => skipped(format!(
            "{} is for the engine at {}, not {server}",
            path.display(),
            urls.join(" or ")
        )),
        _ => skipped(format!(
            "{} records no engine URL beside it ({}); restart that engine to record it",
            path.display(),
            bootstrap::TOKEN_URL_FILE
        )),
    }
}

fn parse(url: &str) -> Option<Url> {
    let full = if url.contains("://") {
        url.to_owned()
    } else {
        format!("http://{url}")
    };
    Url::parse(&full).ok()
}

/// Whether `host` is this machine: a loopback address, `localhost`, or the unspecified
/// address an engine listening on every interface records.
fn is_local(url: &Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback() || ip.is_unspecified())
}

/// Whether two URLs reach the same engine: same scheme, port and path, and the same host or
/// both this machine (`127.0.0.1`, `localhost`, `0.0.0.0`).
pub fn same_engine(recorded: &str, asked: &str) -> bool {
    let (Some(a), Some(b)) = (parse(recorded), parse(asked)) else {
        return false;
    };
    a.scheme() == b.scheme()
        && a.port_or_known_default() == b.port_or_known_default()
        && a.path().trim_end_matches('/') == b.path().trim_end_matches('/')
        && (a.host_str() == b.host_str() || (is_local(&a) && is_local(&b)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_engine_is_recognised_under_its_local_names_only() {
        for (recorded, asked) in [
            ("http://127.0.0.1:8080", "http://127.0.0.1:8080/"),
            ("http://127.0.0.1:8080", "localhost:8080"),
            ("http://0.0.0.0:8080", "http://127.0.0.1:8080"),
            ("http://[::1]:8080", "http://localhost:8080"),
            (
                "https://ci.example.com/gantry",
                "https://ci.example.com/gantry/",
            ),
        ] {
            assert!(same_engine(recorded, asked), "{recorded} = {asked}");
        }
        for (recorded, asked) in [
            ("http://127.0.0.1:8080", "http://127.0.0.1:8081"),
            ("http://127.0.0.1:8080", "http://ci.example.com:8080"),
            ("http://ci.example.com", "http://other.example.com"),
            ("https://ci.example.com/gantry", "https://ci.example.com/"),
        ] {
            assert!(!same_engine(recorded, asked), "{recorded} != {asked}");
        }
    }

    fn data_dir(token: Option<&str>, urls: Option<&str>) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("temp dir");
        if let Some(token) = token {
            std::fs::write(dir.path().join(bootstrap::TOKEN_FILE), token).expect("token");
        }
        if let Some(urls) = urls {
            std::fs::write(dir.path().join(bootstrap::TOKEN_URL_FILE), urls).expect("urls");
        }
        dir
    }

    #[test]
    fn a_local_token_goes_only_to_the_engine_that_recorded_its_url() {
        let dir = data_dir(Some("tok\n"), Some("http://127.0.0.1:8080\n"));
        let local = resolve("http://127.0.0.1:8080", None, None, dir.path());
        assert_eq!(local.token.as_deref(), Some("tok"));
        assert_eq!(
            local.source,
            TokenSource::File(dir.path().join("admin.token"))
        );
        assert!(
            local
                .source
                .hint()
                .contains(&dir.path().display().to_string()),
            "the hint names the file"
        );

        let elsewhere = resolve("http://ci.example.com:8080", None, None, dir.path());
        assert_eq!(elsewhere.token, None);
        let hint = elsewhere.source.hint();
        assert!(
            hint.contains("admin.token is for the engine at http://127.0.0.1:8080")
                && hint.contains("--token"),
            "{hint}"
        );

        let unrecorded = data_dir(Some("tok"), None);
        let old = resolve("http://127.0.0.1:8080", None, None, unrecorded.path());
        assert_eq!(old.token, None);
        assert!(old.source.hint().contains("records no engine URL"));
    }

    #[test]
    fn a_given_token_wins_and_says_whether_it_came_from_the_flag_or_the_environment() {
        let dir = data_dir(Some("local"), Some("http://127.0.0.1:8080"));
        let env = resolve("http://127.0.0.1:8080", Some("t1"), Some("t1"), dir.path());
        assert_eq!(
            (env.token.as_deref(), env.source),
            (Some("t1"), TokenSource::Env)
        );
        let flag = resolve("http://127.0.0.1:8080", Some("t2"), Some("t1"), dir.path());
        assert_eq!(
            (flag.token.as_deref(), flag.source),
            (Some("t2"), TokenSource::Flag)
        );
    }
}
