//! Image names as users write them (`127.0.0.1:5000/demo/app:1`, `busybox`,
//! `ghcr.io/o/r@sha256:...`), split into registry, repository, tag and digest with Docker's
//! defaults (`docker.io`, `library/`, `latest`).

use std::fmt;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReferenceError {
    #[error("an image name cannot be empty")]
    Empty,
    #[error("`{0}` is not a valid repository name (lowercase letters, digits, `.`, `_`, `-`, `/`)")]
    Repository(String),
    #[error("`{0}` is not a valid tag (letters, digits, `_`, `.`, `-`, at most 128)")]
    Tag(String),
    #[error("`{0}` is not a valid digest (expected sha256: and 64 hex digits)")]
    Digest(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reference {
    /// `host[:port]`; `docker.io` for Docker Hub.
    pub registry: String,
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

impl Reference {
    pub fn parse(text: &str) -> Result<Reference, ReferenceError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(ReferenceError::Empty);
        }
        let (rest, digest) = match text.split_once('@') {
            Some((rest, digest)) => {
                if !is_digest(digest) {
                    return Err(ReferenceError::Digest(digest.to_owned()));
                }
                (rest, Some(digest.to_owned()))
            }
            None => (text, None),
        };
        // A tag is after the last `:` that follows the last `/` (a port's `:` comes before one).
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => {
                let at = last_slash + i;
                (&rest[..at], Some(rest[at + 1..].to_owned()))
            }
            None => (rest, None),
        };
        if let Some(tag) = &tag
            && !is_tag(tag)
        {
            return Err(ReferenceError::Tag(tag.clone()));
        }
        let (registry, repository) = match name.split_once('/') {
            Some((first, path))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_owned(), path.to_owned())
            }
            _ => ("docker.io".to_owned(), name.to_owned()),
        };
        let repository = if registry == "docker.io" && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        if !is_repository(&repository) {
            return Err(ReferenceError::Repository(repository));
        }
        Ok(Reference {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// What to ask the registry's manifest endpoint for: the digest, else the tag.
    pub fn manifest_reference(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or("latest")
    }

    /// The tag to push to (`latest` when none was given).
    pub fn push_tag(&self) -> &str {
        self.tag.as_deref().unwrap_or("latest")
    }

    /// `registry/repository@digest`, the pinned form later stages and deployments use.
    pub fn pinned(&self, digest: &str) -> String {
        format!("{}/{}@{digest}", self.registry, self.repository)
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

/// The host to send API requests to: Docker Hub's API is not at `docker.io`.
pub fn api_host(registry: &str) -> &str {
    match registry {
        "docker.io" | "index.docker.io" => "registry-1.docker.io",
        other => other,
    }
}

pub fn is_digest(text: &str) -> bool {
    text.strip_prefix("sha256:")
        .is_some_and(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn is_tag(tag: &str) -> bool {
    !tag.is_empty()
        && tag.len() <= 128
        && !tag.starts_with(['.', '-'])
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

fn is_repository(repository: &str) -> bool {
    !repository.is_empty()
        && repository.split('/').all(|part| {
            !part.is_empty()
                && part.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
                })
                && part.as_bytes()[0].is_ascii_alphanumeric()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Reference {
        Reference::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn registry_port_repository_and_tag_are_told_apart() {
        let r = parse("127.0.0.1:5000/demo/hello:7");
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.repository, "demo/hello");
        assert_eq!(r.tag.as_deref(), Some("7"));
        assert_eq!(r.to_string(), "127.0.0.1:5000/demo/hello:7");
        let r = parse("localhost:5000/app");
        assert_eq!(
            (r.registry.as_str(), r.tag.as_deref()),
            ("localhost:5000", None)
        );
        assert_eq!(r.manifest_reference(), "latest");
    }

    #[test]
    fn docker_hub_names_get_their_defaults() {
        let r = parse("busybox");
        assert_eq!(r.registry, "docker.io");
        assert_eq!(r.repository, "library/busybox");
        assert_eq!(api_host(&r.registry), "registry-1.docker.io");
        assert_eq!(parse("bitnami/nginx:1.25").repository, "bitnami/nginx");
    }

    #[test]
    fn digests_pin_and_win_over_tags() {
        let digest = format!("sha256:{}", "ab".repeat(32));
        let r = parse(&format!("ghcr.io/o/r:1@{digest}"));
        assert_eq!(r.manifest_reference(), digest);
        assert_eq!(r.pinned(&digest), format!("ghcr.io/o/r@{digest}"));
    }

    #[test]
    fn malformed_names_say_which_part_is_wrong() {
        assert_eq!(Reference::parse(" "), Err(ReferenceError::Empty));
        assert!(matches!(
            Reference::parse("reg.io/Demo/App:1"),
            Err(ReferenceError::Repository(_))
        ));
        assert!(matches!(
            Reference::parse("reg.io/demo:bad tag"),
            Err(ReferenceError::Tag(_))
        ));
        assert!(matches!(
            Reference::parse("reg.io/demo@sha256:12"),
            Err(ReferenceError::Digest(_))
        ));
    }
}
