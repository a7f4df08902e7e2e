//! Random secrets handed to people and browsers (API tokens, session cookies, CSRF tokens)
//! and the SHA-256 they are stored as. They are 32 random bytes, so a plain hash is enough
//! at rest (unlike passwords, which `password` stretches with argon2).

use base64::Engine as _;
use sha2::{Digest, Sha256};

/// Every API token starts with this, so a leaked one is easy to spot (and to grep for).
pub const TOKEN_PREFIX: &str = "gty_";

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
}

/// 32 random bytes, URL-safe base64.
pub fn random() -> String {
    let mut bytes = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut bytes);
    b64().encode(bytes)
}

/// A new API token (shown to its owner once, then only its hash is kept).
pub fn new_token() -> String {
    format!("{TOKEN_PREFIX}{}", random())
}

/// What is stored for a token or session value.
pub fn hash(value: &str) -> Vec<u8> {
    Sha256::digest(value.as_bytes()).to_vec()
}

/// Compares two secrets in time that does not depend on where they differ.
pub fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_prefixed_and_hashed_to_32_bytes() {
        let (a, b) = (new_token(), new_token());
        assert_ne!(a, b);
        assert!(a.starts_with(TOKEN_PREFIX) && a.len() == TOKEN_PREFIX.len() + 43);
        assert_eq!(hash(&a).len(), 32);
        assert_ne!(hash(&a), hash(&b));
        assert!(same(&a, &a.clone()));
        assert!(!same(&a, &b));
        assert!(!same("short", "longer"));
    }
}
