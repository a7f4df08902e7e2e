//! The first start: with no user in the database, the engine creates the administrator
//! `admin` with a random password and an API token, and writes both to files only the engine's
//! own user can read (like Jenkins' initial admin password). The CLI on the same machine picks
//! the token up by itself, so a fresh `gantry serve` works with no set-up, and nothing is open
//! to others meanwhile.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::{credential, password};
use crate::store::{self, StoreError};

/// The first administrator's name.
pub const ADMIN: &str = "admin";
/// In the data directory: the first administrator's API token.
pub const TOKEN_FILE: &str = "admin.token";
/// In the data directory: the first administrator's password (for the web UI).
pub const PASSWORD_FILE: &str = "admin.password";
/// In the data directory, beside the token: the URLs of the engine the token works with
/// (one a line), so the CLI sends the token to that engine only, never to another engine it
/// is pointed at.
pub const TOKEN_URL_FILE: &str = "admin.token.url";

#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Password(#[from] password::PasswordError),
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
}

/// What the first start created (`None` from [`ensure_admin`] when users existed already).
#[derive(Debug)]
pub struct FirstAdmin {
    pub token_file: PathBuf,
    pub password_file: PathBuf,
}

/// Creates the first administrator unless any user exists.
pub async fn ensure_admin(
    pool: &sqlx::PgPool,
    data_dir: &Path,
) -> Result<Option<FirstAdmin>, BootstrapError> {
    // Cheap check first: every start but the first stops here without hashing anything.
    if !store::access::users(pool).await?.is_empty() {
        return Ok(None);
    }
    let secret = credential::random();
    let hash = password::hash_blocking(secret.clone()).await?;
    let token = credential::new_token();
    let mut tx = pool.begin().await.map_err(StoreError::from)?;
    let Some(admin) = store::access::create_first_admin(&mut tx, ADMIN, &hash).await? else {
        // Another replica won the race.
        return Ok(None);
    };
    store::access::create_token(
        &mut *tx,
        admin.id,
        "initial admin token",
        &credential::hash(&token),
        None,
    )
    .await?;
    let token_file = data_dir.join(TOKEN_FILE);
    let password_file = data_dir.join(PASSWORD_FILE);
    // Written before the commit: should writing fail, no administrator exists whose
    // credentials nobody knows, and the next start tries again.
    write_private(&token_file, &token)?;
    write_private(&password_file, &secret)?;
    tx.commit().await.map_err(StoreError::from)?;
    Ok(Some(FirstAdmin {
        token_file,
        password_file,
    }))
}

/// Writes `text` to a file readable by its owner only (mode 0600).
fn write_private(path: &Path, text: &str) -> Result<(), BootstrapError> {
    let error = |source| BootstrapError::Write {
        path: path.display().to_string(),
        source,
    };
    // Removed first: an existing file would keep its old (maybe wider) mode.
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(error(e)),
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(error)?;
    writeln!(file, "{text}").map_err(error)
}

/// Records, beside the data directory's `admin.token`, the URLs this engine answers on (the
/// address it listens on, and its public URL when that differs), when the token is valid
/// here. Done at every start, not only the first: the same data directory may be served on
/// another address later (`gantry run` picks a free port, `gantry serve` defaults to 8080).
/// A token that this engine's database does not know loses its record, so the CLI stops
/// sending it anywhere.
pub async fn record_engine(
    pool: &sqlx::PgPool,
    data_dir: &Path,
    urls: &[String],
) -> Result<(), BootstrapError> {
    let path = data_dir.join(TOKEN_URL_FILE);
    let valid = match read_token(data_dir) {
        Some(token) => store::access::user_by_token(pool, &credential::hash(&token))
            .await?
            .is_some(),
        None => false,
    };
    if valid {
        let mut text = String::new();
        for url in urls {
            if !text.lines().any(|l| l == url) {
                text.push_str(url);
                text.push('\n');
            }
        }
        write_private(&path, text.trim_end())
    } else {
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(BootstrapError::Write {
                path: path.display().to_string(),
                source,
            }),
        }
    }
}

/// The URLs recorded beside `admin.token` by [`record_engine`] (`None`: no record).
pub fn read_token_urls(data_dir: &Path) -> Option<Vec<String>> {
    std::fs::read_to_string(data_dir.join(TOKEN_URL_FILE))
        .ok()
        .map(|text| {
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_owned)
                .collect()
        })
}

/// The token in `<data_dir>/admin.token`, if this user may read it.
pub fn read_token(data_dir: &Path) -> Option<String> {
    std::fs::read_to_string(data_dir.join(TOKEN_FILE))
        .ok()
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
}
