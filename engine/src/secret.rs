//! Encryption of secrets at rest (AES-256-GCM) with the engine's key. The key lives outside the
//! database (config or a key file), so a database dump alone reveals no secret.

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use rand::RngCore;

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("the secret key must be 32 bytes, base64-encoded (got {0} bytes)")]
    BadKey(usize),
    #[error("the secret key is not valid base64: {0}")]
    NotBase64(#[from] base64::DecodeError),
    #[error("a stored secret could not be decrypted (wrong GANTRY_SECRET_KEY?)")]
    Decrypt,
    #[error("reading or writing the key file {path}: {source}")]
    KeyFile {
        path: String,
        source: std::io::Error,
    },
}

#[derive(Clone)]
pub struct SecretKey(Aes256Gcm);

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(..)")
    }
}

impl SecretKey {
    pub fn from_base64(text: &str) -> Result<SecretKey, SecretError> {
        let bytes = base64::engine::general_purpose::STANDARD.decode(text.trim())?;
        Self::from_bytes(&bytes)
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<SecretKey, SecretError> {
        if bytes.len() != 32 {
            return Err(SecretError::BadKey(bytes.len()));
        }
        let cipher =
            Aes256Gcm::new_from_slice(bytes).map_err(|_| SecretError::BadKey(bytes.len()))?;
        Ok(SecretKey(cipher))
    }

    pub fn generate() -> (SecretKey, String) {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        let text = base64::engine::general_purpose::STANDARD.encode(bytes);
        (SecretKey(Aes256Gcm::new(&bytes.into())), text)
    }

    /// Reads the key file, creating it (mode 0600) with a fresh key on first use.
    pub fn load_or_create(path: &std::path::Path) -> Result<SecretKey, SecretError> {
        let io = |source| SecretError::KeyFile {
            path: path.display().to_string(),
            source,
        };
        match std::fs::read_to_string(path) {
            Ok(text) => Self::from_base64(&text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                use std::io::Write;
                use std::os::unix::fs::OpenOptionsExt;
                let (key, text) = Self::generate();
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)
                    .map_err(io)?;
                file.write_all(text.as_bytes()).map_err(io)?;
                Ok(key)
            }
            Err(e) => Err(io(e)),
        }
    }

    /// Returns (nonce, ciphertext). A fresh random nonce per value.
    pub fn encrypt(&self, plaintext: &[u8]) -> (Vec<u8>, Vec<u8>) {
        let mut nonce = [0u8; 12];
        rand::rng().fill_bytes(&mut nonce);
        // Encryption with a valid key and a 12-byte nonce cannot fail for in-memory buffers.
        let ciphertext = self
            .0
            .encrypt(Nonce::from_slice(&nonce), plaintext)
            .unwrap_or_default();
        (nonce.to_vec(), ciphertext)
    }

    pub fn decrypt(&self, nonce: &[u8], ciphertext: &[u8]) -> Result<Vec<u8>, SecretError> {
        if nonce.len() != 12 {
            return Err(SecretError::Decrypt);
        }
        self.0
            .decrypt(Nonce::from_slice(nonce), ciphertext)
            .map_err(|_| SecretError::Decrypt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_detects_tampering() {
        let (key, text) = SecretKey::generate();
        let (nonce, ct) = key.encrypt(b"hunter2");
        assert_ne!(ct, b"hunter2");
        assert_eq!(key.decrypt(&nonce, &ct).expect("decrypts"), b"hunter2");
        let mut tampered = ct.clone();
        tampered[0] ^= 1;
        assert!(key.decrypt(&nonce, &tampered).is_err());
        let same = SecretKey::from_base64(&text).expect("key parses");
        assert_eq!(same.decrypt(&nonce, &ct).expect("decrypts"), b"hunter2");
        let (other, _) = SecretKey::generate();
        assert!(other.decrypt(&nonce, &ct).is_err());
    }

    #[test]
    fn bad_keys_are_explained() {
        assert!(matches!(
            SecretKey::from_bytes(&[0; 16]),
            Err(SecretError::BadKey(16))
        ));
        assert!(SecretKey::from_base64("not base64!").is_err());
    }
}
