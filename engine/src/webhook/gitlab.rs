//! Placeholder: the gitlab parser.
use super::event::{Parsed, Rejection};

pub fn parse(_event: &str, _body: &[u8]) -> Result<Parsed, Rejection> {
    Err(Rejection::BadPayload("not implemented".into()))
}

pub fn repository(_body: &[u8]) -> Result<super::event::RepoRef, Rejection> {
    Err(Rejection::BadPayload("not implemented".into()))
}
