//! Placeholder: signature and token checks.
use super::event::Rejection;

pub fn verify_github(_secret: &[u8], _header: Option<&str>, _body: &[u8]) -> Result<(), Rejection> {
    Err(Rejection::Unauthorized("not implemented".into()))
}

pub fn verify_gitlab(_secret: &[u8], _header: Option<&str>) -> Result<(), Rejection> {
    Err(Rejection::Unauthorized("not implemented".into()))
}

pub fn verify_gitea(_secret: &[u8], _header: Option<&str>, _body: &[u8]) -> Result<(), Rejection> {
    Err(Rejection::Unauthorized("not implemented".into()))
}
