//! Runner tokens: a bearer token scoped to one stage attempt, expiring, signed with HMAC-SHA256
//! under a key every engine replica shares (stored in the database), so a runner keeps working
//! across an engine restart or when its calls reach another replica.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::store::StageRunId;

type HmacSha256 = Hmac<Sha256>;

#[derive(Clone)]
pub struct TokenKey(Vec<u8>);

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(..)")
    }
}

/// What a valid token grants: one attempt of one stage run, until `expires` (unix seconds).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grant {
    pub stage_run: StageRunId,
    pub attempt: i32,
    pub expires: i64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("malformed runner token")]
    Malformed,
    #[error("runner token signature does not match")]
    BadSignature,
    #[error("runner token expired")]
    Expired,
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
}

impl TokenKey {
    pub fn new(bytes: Vec<u8>) -> Self {
        TokenKey(bytes)
    }

    fn mac(&self, payload: &str) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.0).expect("HMAC accepts keys of any length");
        mac.update(payload.as_bytes());
        mac
    }

    pub fn issue(&self, grant: Grant) -> String {
        let payload = format!("{}.{}.{}", grant.stage_run.0, grant.attempt, grant.expires);
        let signature = self.mac(&payload).finalize().into_bytes();
        format!("{}.{}", b64().encode(payload), b64().encode(signature))
    }

    pub fn verify(&self, token: &str, now: i64) -> Result<Grant, TokenError> {
        let (payload, signature) = token.split_once('.').ok_or(TokenError::Malformed)?;
        let payload = String::from_utf8(b64().decode(payload).map_err(|_| TokenError::Malformed)?)
            .map_err(|_| TokenError::Malformed)?;
        let signature = b64().decode(signature).map_err(|_| TokenError::Malformed)?;
        // verify_slice compares in constant time.
        self.mac(&payload)
            .verify_slice(&signature)
            .map_err(|_| TokenError::BadSignature)?;
        let mut parts = payload.split('.');
        let mut next = || parts.next().ok_or(TokenError::Malformed);
        let stage_run = StageRunId(next()?.parse().map_err(|_| TokenError::Malformed)?);
        let attempt = next()?.parse().map_err(|_| TokenError::Malformed)?;
        let expires: i64 = next()?.parse().map_err(|_| TokenError::Malformed)?;
        if now > expires {
            return Err(TokenError::Expired);
        }
        Ok(Grant {
            stage_run,
            attempt,
            expires,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_verify_and_expire() {
        let key = TokenKey::new(b"k".repeat(32));
        let grant = Grant {
            stage_run: StageRunId(42),
            attempt: 2,
            expires: 1_000,
        };
        let token = key.issue(grant);
        assert_eq!(key.verify(&token, 999), Ok(grant));
        assert_eq!(key.verify(&token, 1_001), Err(TokenError::Expired));
        let other = TokenKey::new(b"x".repeat(32));
        assert_eq!(other.verify(&token, 0), Err(TokenError::BadSignature));
        assert_eq!(key.verify("garbage", 0), Err(TokenError::Malformed));
        // Changing the payload (another stage) breaks the signature.
        let (_, sig) = token.split_once('.').expect("two parts");
        let forged = format!("{}.{sig}", b64().encode("43.2.1000"));
        assert_eq!(key.verify(&forged, 0), Err(TokenError::BadSignature));
    }
}
