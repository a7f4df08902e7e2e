//! Placeholder for the checkout work (replaced by the real module): the API the engine uses.

use std::path::PathBuf;

use crate::wire::GitAuth;

#[derive(Debug, thiserror::Error)]
pub enum CheckoutError {
    #[error("{0}")]
    Other(String),
}

#[derive(Clone, Debug)]
pub struct MirrorCache {
    pub root: PathBuf,
}

#[derive(Clone, Debug)]
pub struct Mirror {
    pub path: PathBuf,
}

impl MirrorCache {
    pub fn new(root: PathBuf) -> Self {
        MirrorCache { root }
    }

    pub fn fetch(
        &self,
        _url: &str,
        _commit: &str,
        _git_ref: Option<&str>,
        _auth: Option<&GitAuth>,
        _depth: u32,
    ) -> Result<Mirror, CheckoutError> {
        Err(CheckoutError::Other("not implemented".into()))
    }

    pub fn ls_remote(
        _url: &str,
        _auth: Option<&GitAuth>,
        _refname: &str,
    ) -> Result<Option<String>, CheckoutError> {
        Err(CheckoutError::Other("not implemented".into()))
    }
}

impl Mirror {
    pub fn read_file(&self, _commit: &str, _path: &str) -> Result<Option<Vec<u8>>, CheckoutError> {
        Err(CheckoutError::Other("not implemented".into()))
    }

    pub fn list_dir(&self, _commit: &str, _dir: &str) -> Result<Vec<(String, Vec<u8>)>, CheckoutError> {
        Err(CheckoutError::Other("not implemented".into()))
    }

    pub fn changed_files(&self, _from: Option<&str>, _to: &str) -> Result<Vec<String>, CheckoutError> {
        Err(CheckoutError::Other("not implemented".into()))
    }
}
