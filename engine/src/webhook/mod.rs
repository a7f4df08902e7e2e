//! Webhooks from GitHub, GitLab and Gitea/Forgejo, and the generic token hook: verify, parse into
//! one [`event::Event`], store the delivery, answer 202, and process it asynchronously.

pub mod event;
pub mod gitea;
pub mod github;
pub mod gitlab;
pub mod signature;

pub use event::{Event, GitRef, Parsed, Provider, PullRequest, Push, Rejection, RepoRef};
