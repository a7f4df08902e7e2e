//! Proof that a delivery comes from the provider: GitHub and Gitea sign the body with the
//! repository's webhook secret (HMAC-SHA256), GitLab sends the secret itself as a token. Every
//! comparison is constant-time, so the response time says nothing about how much of a guess
//! was right. The receiver checks this before parsing anything but the repository.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::event::Rejection;

type HmacSha256 = Hmac<Sha256>;

const GITHUB_HEADER: &str = "X-Hub-Signature-256";
const GITLAB_HEADER: &str = "X-Gitlab-Token";
const GITEA_HEADER: &str = "X-Gitea-Signature";

/// Checks `X-Hub-Signature-256: sha256=<hex>` against the body.
pub fn verify_github(secret: &[u8], header: Option<&str>, body: &[u8]) -> Result<(), Rejection> {
    let header = header.ok_or_else(|| {
        Rejection::Unauthorized(format!(
            "missing {GITHUB_HEADER} header: is the webhook secret set on GitHub?"
        ))
    })?;
    let digest = header
        .trim()
        .strip_prefix("sha256=")
        .and_then(decode_digest)
        .ok_or_else(|| {
            Rejection::Unauthorized(format!("{GITHUB_HEADER} is not sha256=<64 hex digits>"))
        })?;
    verify_mac(secret, body, &digest, GITHUB_HEADER)
}

/// Checks `X-Gitlab-Token`, which GitLab sets to the secret itself.
pub fn verify_gitlab(secret: &[u8], header: Option<&str>) -> Result<(), Rejection> {
    let token = header.ok_or_else(|| {
        Rejection::Unauthorized(format!(
            "missing {GITLAB_HEADER} header: is the secret token set on GitLab?"
        ))
    })?;
    // Comparing the MACs of both under a fixed key is constant-time in the token's content and
    // hides its length, which a byte-by-byte comparison would give away.
    let expected = mac(b"gantry gitlab token", secret);
    let mut given = keyed(b"gantry gitlab token");
    given.update(token.as_bytes());
    given.verify_slice(&expected).map_err(|_| {
        Rejection::Unauthorized(format!(
            "{GITLAB_HEADER} does not match the repository's webhook secret"
        ))
    })
}

/// Checks `X-Gitea-Signature: <hex>` (no prefix) against the body. Forgejo sends the same
/// value under `X-Forgejo-Signature` as well; the receiver passes whichever is present.
pub fn verify_gitea(secret: &[u8], header: Option<&str>, body: &[u8]) -> Result<(), Rejection> {
    let header = header.ok_or_else(|| {
        Rejection::Unauthorized(format!(
            "missing {GITEA_HEADER} header: is the webhook secret set on Gitea?"
        ))
    })?;
    let digest = decode_digest(header.trim())
        .ok_or_else(|| Rejection::Unauthorized(format!("{GITEA_HEADER} is not <64 hex digits>")))?;
    verify_mac(secret, body, &digest, GITEA_HEADER)
}

/// The `X-Hub-Signature-256` value GitHub would send for `body`.
pub fn sign_github(secret: &[u8], body: &[u8]) -> String {
    format!("sha256={}", sign_gitea(secret, body))
}

/// The `X-Gitea-Signature` value Gitea would send for `body`.
pub fn sign_gitea(secret: &[u8], body: &[u8]) -> String {
    hex::encode(mac(secret, body))
}

fn decode_digest(text: &str) -> Option<Vec<u8>> {
    if text.len() != 64 {
        return None;
    }
    hex::decode(text).ok()
}

fn verify_mac(secret: &[u8], body: &[u8], digest: &[u8], header: &str) -> Result<(), Rejection> {
    let mut m = keyed(secret);
    m.update(body);
    m.verify_slice(digest).map_err(|_| {
        Rejection::Unauthorized(format!(
            "{header} does not match the repository's webhook secret"
        ))
    })
}

fn keyed(key: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length (long ones are hashed first); `new_from_slice` only
    // fails for MACs with a fixed key size.
    match HmacSha256::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC-SHA256 accepts keys of every length"),
    }
}

fn mac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut m = keyed(key);
    m.update(data);
    m.finalize().into_bytes().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    // Computed independently:
    // python3 -c 'import hmac,hashlib;print(hmac.new(b"It'"'"'s a Secret to Everybody",
    //   b"Hello, World!",hashlib.sha256).hexdigest())'
    // (GitHub's documented example secret and body; the docs give the same digest.)
    const DOCS_SECRET: &[u8] = b"It's a Secret to Everybody";
    const DOCS_BODY: &[u8] = b"Hello, World!";
    const DOCS_DIGEST: &str = "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
    // python3 -c 'import hmac,hashlib;print(hmac.new(b"s3cret",b"{\"ref\":\"refs/heads/main\"}",hashlib.sha256).hexdigest())'
    const GITEA_DIGEST: &str = "232a5e067b6a5aa567ed5a1d21a0dffaf6ef0eeecb6bd9bcf43b3d5ef3fc4f43";

    fn unauthorized(r: Result<(), Rejection>) -> String {
        match r {
            Err(Rejection::Unauthorized(m)) => m,
            other => panic!("expected Unauthorized, got {other:?}"),
        }
    }

    #[test]
    fn github_signature_matches_an_independent_vector() {
        assert_eq!(
            sign_github(DOCS_SECRET, DOCS_BODY),
            format!("sha256={DOCS_DIGEST}")
        );
        let header = format!("sha256={DOCS_DIGEST}");
        assert_eq!(verify_github(DOCS_SECRET, Some(&header), DOCS_BODY), Ok(()));
    }

    #[test]
    fn github_signature_rejects_a_changed_body_a_wrong_secret_and_bad_headers() {
        let header = format!("sha256={DOCS_DIGEST}");
        let message = unauthorized(verify_github(DOCS_SECRET, Some(&header), b"Hello, World?"));
        assert_eq!(
            message,
            "X-Hub-Signature-256 does not match the repository's webhook secret"
        );
        unauthorized(verify_github(b"other", Some(&header), DOCS_BODY));
        assert_eq!(
            unauthorized(verify_github(DOCS_SECRET, None, DOCS_BODY)),
            "missing X-Hub-Signature-256 header: is the webhook secret set on GitHub?"
        );
        for malformed in [
            DOCS_DIGEST,
            "sha1=abc",
            "sha256=zz",
            "sha256=",
            &header[..70],
        ] {
            assert_eq!(
                unauthorized(verify_github(DOCS_SECRET, Some(malformed), DOCS_BODY)),
                "X-Hub-Signature-256 is not sha256=<64 hex digits>",
                "{malformed}"
            );
        }
    }

    #[test]
    fn gitea_signature_is_bare_hex() {
        let body = br#"{"ref":"refs/heads/main"}"#;
        assert_eq!(sign_gitea(b"s3cret", body), GITEA_DIGEST);
        assert_eq!(verify_gitea(b"s3cret", Some(GITEA_DIGEST), body), Ok(()));
        let prefixed = format!("sha256={GITEA_DIGEST}");
        assert_eq!(
            unauthorized(verify_gitea(b"s3cret", Some(&prefixed), body)),
            "X-Gitea-Signature is not <64 hex digits>"
        );
        assert!(unauthorized(verify_gitea(b"s3cret", None, body)).starts_with("missing"));
        assert!(
            unauthorized(verify_gitea(b"s3cre7", Some(GITEA_DIGEST), body))
                .ends_with("does not match the repository's webhook secret")
        );
    }

    #[test]
    fn gitlab_token_must_equal_the_secret() {
        assert_eq!(verify_gitlab(b"tok3n", Some("tok3n")), Ok(()));
        for wrong in ["tok3", "tok3n ", "TOK3N", ""] {
            assert_eq!(
                unauthorized(verify_gitlab(b"tok3n", Some(wrong))),
                "X-Gitlab-Token does not match the repository's webhook secret"
            );
        }
        assert_eq!(
            unauthorized(verify_gitlab(b"tok3n", None)),
            "missing X-Gitlab-Token header: is the secret token set on GitLab?"
        );
    }
}
