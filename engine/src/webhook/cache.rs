//! What webhook handling may remember between deliveries, so the hot paths skip work whose
//! answer cannot have changed: the pipeline files of a commit (a commit never changes, so
//! neither do its files, nor its message and author), and a repository's registration with its decrypted secret (for a
//! few seconds, so a changed registration takes effect quickly).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gantry_runner::checkout::CommitInfo;

use crate::pipeline::Plan;
use crate::store::repos::RepoRow;

/// How long a registration is trusted without reading it again.
const REPO_TTL: Duration = Duration::from_secs(5);
/// Entries kept per map before it is emptied (a crude bound: both are cheap to refill).
const MAX_ENTRIES: usize = 512;

/// One pipeline file at a commit: its text and plan, or the problems that make it invalid.
pub struct CachedFile {
    pub path: String,
    pub text: String,
    pub plan: Result<Arc<Plan>, String>,
}

/// A registration with its webhook secret, decrypted.
pub struct KnownRepo {
    pub row: RepoRow,
    pub secret: Vec<u8>,
}

type FilesKey = (i64, String, Vec<String>);
/// (provider, lower-cased full name) → when read, and what.
type Repos = HashMap<(String, String), (Instant, Arc<KnownRepo>)>;

#[derive(Default)]
pub struct WebhookCache {
    files: Mutex<HashMap<FilesKey, Arc<Vec<CachedFile>>>>,
    /// What a repository's commit says of itself, by repository id and commit.
    commits: Mutex<HashMap<(i64, String), CommitInfo>>,
    repos: Mutex<Repos>,
}

impl WebhookCache {
    pub fn files(
        &self,
        repo: i64,
        commit: &str,
        patterns: &[String],
    ) -> Option<Arc<Vec<CachedFile>>> {
        let key = (repo, commit.to_owned(), patterns.to_vec());
        self.files.lock().ok()?.get(&key).cloned()
    }

    pub fn keep_files(
        &self,
        repo: i64,
        commit: &str,
        patterns: &[String],
        files: Arc<Vec<CachedFile>>,
    ) {
        if let Ok(mut map) = self.files.lock() {
            if map.len() >= MAX_ENTRIES {
                map.clear();
            }
            map.insert((repo, commit.to_owned(), patterns.to_vec()), files);
        }
    }

    pub fn commit(&self, repo: i64, commit: &str) -> Option<CommitInfo> {
        let map = self.commits.lock().ok()?;
        map.get(&(repo, commit.to_owned())).cloned()
    }

    pub fn keep_commit(&self, repo: i64, commit: &str, info: CommitInfo) {
        if let Ok(mut map) = self.commits.lock() {
            if map.len() >= MAX_ENTRIES {
                map.clear();
            }
            map.insert((repo, commit.to_owned()), info);
        }
    }

    /// The registration a delivery named, if read recently.
    pub fn repo(&self, provider: &str, full_name: &str) -> Option<Arc<KnownRepo>> {
        let map = self.repos.lock().ok()?;
        let (at, known) = map.get(&(provider.to_owned(), full_name.to_ascii_lowercase()))?;
        (at.elapsed() < REPO_TTL).then(|| Arc::clone(known))
    }

    pub fn keep_repo(&self, provider: &str, full_name: &str, known: Arc<KnownRepo>) {
        if let Ok(mut map) = self.repos.lock() {
            if map.len() >= MAX_ENTRIES {
                map.clear();
            }
            map.insert(
                (provider.to_owned(), full_name.to_ascii_lowercase()),
                (Instant::now(), known),
            );
        }
    }

    /// Forgets registrations (after one changed in this engine).
    pub fn forget_repos(&self) {
        if let Ok(mut map) = self.repos.lock() {
            map.clear();
        }
    }
}
