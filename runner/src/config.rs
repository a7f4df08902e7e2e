//! The runner's configuration, read once from the environment the executor prepared.
//!
//! The engine's executor (a local process or a Kubernetes Job) sets the variables named in
//! [`crate::wire`]; the tuning knobs below have defaults so an executor only sets them in tests.

use std::path::PathBuf;
use std::time::Duration;

use crate::wire::{ENV_ENGINE_URL, ENV_TOKEN, ENV_WORKSPACE};

/// How long one engine call keeps retrying before the runner gives up (seconds).
pub const ENV_GIVE_UP_SECS: &str = "GANTRY_RUNNER_GIVE_UP_SECS";
/// How long a step's processes get between SIGTERM and SIGKILL (seconds).
pub const ENV_KILL_GRACE_SECS: &str = "GANTRY_RUNNER_KILL_GRACE_SECS";

const DEFAULT_GIVE_UP: Duration = Duration::from_secs(10 * 60);
const DEFAULT_KILL_GRACE: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("{0} is not set (the engine's executor sets it when it starts the runner)")]
    Missing(&'static str),
    #[error("{var} is {value:?}: {why}")]
    Invalid {
        var: &'static str,
        value: String,
        why: &'static str,
    },
}

#[derive(Clone)]
pub struct Config {
    /// `http://host:port`, without a trailing slash.
    pub engine_url: String,
    pub token: String,
    pub workspace: PathBuf,
    pub give_up_after: Duration,
    pub kill_grace: Duration,
    /// Why the engine's files could not be hidden from the steps ([`crate::isolation`]), if
    /// it was asked for and failed: the stage then fails with this reason before any step.
    pub isolation_error: Option<String>,
}

// By hand so the token never reaches a log line.
impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("engine_url", &self.engine_url)
            .field("token", &"<redacted>")
            .field("workspace", &self.workspace)
            .field("give_up_after", &self.give_up_after)
            .field("kill_grace", &self.kill_grace)
            .field("isolation_error", &self.isolation_error)
            .finish()
    }
}

impl Config {
    pub fn from_env() -> Result<Config, ConfigError> {
        let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
        Config::from_lookup(|var| std::env::var(var).ok(), cwd)
    }

    /// Reads the configuration through `lookup`, so tests need not touch the process environment.
    pub fn from_lookup(
        lookup: impl Fn(&str) -> Option<String>,
        current_dir: PathBuf,
    ) -> Result<Config, ConfigError> {
        let required = |var: &'static str| {
            lookup(var)
                .filter(|v| !v.trim().is_empty())
                .ok_or(ConfigError::Missing(var))
        };
        let engine_url = required(ENV_ENGINE_URL)?
            .trim()
            .trim_end_matches('/')
            .to_owned();
        if !engine_url.starts_with("http://") {
            let why = if engine_url.starts_with("https://") {
                "this runner is built without TLS; use an http:// URL"
            } else {
                "expected an http:// URL"
            };
            return Err(ConfigError::Invalid {
                var: ENV_ENGINE_URL,
                value: engine_url,
                why,
            });
        }
        let token = required(ENV_TOKEN)?.trim().to_owned();
        let workspace = match lookup(ENV_WORKSPACE).filter(|v| !v.is_empty()) {
            Some(dir) => current_dir.join(dir),
            None => current_dir,
        };
        let secs = |var: &'static str, default: Duration| match lookup(var) {
            None => Ok(default),
            Some(v) => v
                .trim()
                .parse::<u64>()
                .map(Duration::from_secs)
                .map_err(|_| ConfigError::Invalid {
                    var,
                    value: v,
                    why: "expected a whole number of seconds",
                }),
        };
        Ok(Config {
            engine_url,
            token,
            workspace,
            give_up_after: secs(ENV_GIVE_UP_SECS, DEFAULT_GIVE_UP)?,
            kill_grace: secs(ENV_KILL_GRACE_SECS, DEFAULT_KILL_GRACE)?,
            isolation_error: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config_from(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|k| vars.get(k).cloned(), PathBuf::from("/srv/work"))
    }

    #[test]
    fn defaults_apply_when_only_the_required_variables_are_set() {
        let config = config_from(&[(ENV_ENGINE_URL, "http://engine:8080/"), (ENV_TOKEN, "tok")])
            .expect("valid");
        assert_eq!(config.engine_url, "http://engine:8080");
        assert_eq!(config.workspace, PathBuf::from("/srv/work"));
        assert_eq!(config.give_up_after, DEFAULT_GIVE_UP);
        assert_eq!(config.kill_grace, DEFAULT_KILL_GRACE);
        assert!(!format!("{config:?}").contains("tok\""));
    }

    #[test]
    fn missing_token_names_the_variable() {
        let err = config_from(&[(ENV_ENGINE_URL, "http://e")]).expect_err("no token");
        assert_eq!(err, ConfigError::Missing(ENV_TOKEN));
        assert!(err.to_string().contains("GANTRY_RUNNER_TOKEN"));
    }

    #[test]
    fn knobs_and_relative_workspace_are_read() {
        let config = config_from(&[
            (ENV_ENGINE_URL, "http://e"),
            (ENV_TOKEN, "t"),
            (ENV_WORKSPACE, "ws"),
            (ENV_GIVE_UP_SECS, "5"),
            (ENV_KILL_GRACE_SECS, "1"),
        ])
        .expect("valid");
        assert_eq!(config.workspace, PathBuf::from("/srv/work/ws"));
        assert_eq!(config.give_up_after, Duration::from_secs(5));
        assert_eq!(config.kill_grace, Duration::from_secs(1));
    }

    #[test]
    fn bad_values_are_rejected() {
        assert!(matches!(
            config_from(&[(ENV_ENGINE_URL, "https://e"), (ENV_TOKEN, "t")]),
            Err(ConfigError::Invalid { .. })
        ));
        assert!(matches!(
            config_from(&[
                (ENV_ENGINE_URL, "http://e"),
                (ENV_TOKEN, "t"),
                (ENV_KILL_GRACE_SECS, "soon")
            ]),
            Err(ConfigError::Invalid { .. })
        ));
    }
}
