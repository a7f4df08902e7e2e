//! The `on:` section: which events start a run.

use globset::GlobBuilder;

use super::reader::Reader;
use crate::pipeline::model::{
    Glob, PullRequestAction, PullRequestTrigger, PushTrigger, ScheduleTrigger, Spanned, Triggers,
    WebhookTrigger,
};
use crate::pipeline::yaml::{Node, Value};

pub const TRIGGER_KEYS: &[&str] = &["push", "pull_request", "schedule", "manual", "webhook"];
pub const PUSH_KEYS: &[&str] = &[
    "branches",
    "branches_ignore",
    "tags",
    "tags_ignore",
    "paths",
    "paths_ignore",
];
pub const PULL_REQUEST_KEYS: &[&str] = &[
    "branches",
    "branches_ignore",
    "types",
    "paths",
    "paths_ignore",
    "secrets_for_forks",
];
pub const SCHEDULE_KEYS: &[&str] = &["cron", "timezone", "branch", "params"];
pub const WEBHOOK_KEYS: &[&str] = &["secret"];

pub fn decode(r: &mut Reader<'_>, node: &Node) -> Triggers {
    let mut triggers = Triggers::default();
    // `on: push` and `on: [push, manual]` enable triggers with no filters.
    if let Value::Scalar(_) | Value::Seq(_) = &node.value {
        for name in r.strings(node, "`on`") {
            match name.value.as_str() {
                "push" => triggers.push = Some(PushTrigger::default()),
                "pull_request" => triggers.pull_request = Some(default_pull_request()),
                "manual" => triggers.manual = true,
                "schedule" | "webhook" => r.sink.error(
                    name.pos,
                    format!(
                        "`{}` needs settings: write it as a key under `on:`",
                        name.value
                    ),
                ),
                other => {
                    let hint = crate::pipeline::diagnostic::suggestion(
                        other,
                        TRIGGER_KEYS.iter().copied(),
                    )
                    .map(|s| format!("; did you mean `{s}`?"))
                    .unwrap_or_else(|| format!(" (expected one of: {})", TRIGGER_KEYS.join(", ")));
                    r.sink
                        .error(name.pos, format!("unknown trigger `{other}`{hint}"));
                }
            }
        }
        return triggers;
    }
    let Some(map) = r.map(node, "`on`", TRIGGER_KEYS) else {
        return triggers;
    };
    if let Some(n) = map.get("push") {
        triggers.push = decode_push(r, n);
    }
    if let Some(n) = map.get("pull_request") {
        triggers.pull_request = decode_pull_request(r, n);
    }
    if let Some(n) = map.get("schedule") {
        triggers.schedule = match &n.value {
            Value::Seq(items) => items.iter().filter_map(|i| decode_schedule(r, i)).collect(),
            _ => decode_schedule(r, n).into_iter().collect(),
        };
    }
    if let Some(n) = map.get("manual") {
        triggers.manual = if n.is_null() {
            true
        } else {
            r.bool(n, "`manual`").unwrap_or(false)
        };
    }
    if let Some(n) = map.get("webhook")
        && let Some(m) = r.map(n, "`webhook`", WEBHOOK_KEYS)
    {
        match m
            .get("secret")
            .and_then(|s| r.non_empty_string(s, "`secret`"))
        {
            Some(secret) => triggers.webhook = Some(WebhookTrigger { secret }),
            None if !m.has("secret") => r.error(
                n,
                "`webhook` needs `secret`: the name of the Gantry secret holding its token",
            ),
            None => {}
        }
    }
    triggers
}

fn default_pull_request() -> PullRequestTrigger {
    PullRequestTrigger {
        branches: Vec::new(),
        branches_ignore: Vec::new(),
        types: PullRequestAction::DEFAULT.to_vec(),
        paths: Vec::new(),
        paths_ignore: Vec::new(),
        secrets_for_forks: false,
    }
}

/// Globs where `*` stays within one path segment and `**` crosses them, as in GitHub Actions.
pub fn globs(r: &mut Reader<'_>, node: &Node, what: &str) -> Vec<Glob> {
    r.strings(node, what)
        .into_iter()
        .filter_map(|pattern| {
            match GlobBuilder::new(&pattern.value)
                .literal_separator(true)
                .build()
            {
                Ok(glob) => Some(Glob {
                    matcher: glob.compile_matcher(),
                    pattern,
                }),
                Err(e) => {
                    r.sink.error(
                        pattern.pos,
                        format!("bad glob `{}` in {what}: {}", pattern.value, e.kind()),
                    );
                    None
                }
            }
        })
        .collect()
}

fn decode_push(r: &mut Reader<'_>, node: &Node) -> Option<PushTrigger> {
    if node.is_null() {
        return Some(PushTrigger::default());
    }
    let map = r.map(node, "`push`", PUSH_KEYS)?;
    let mut get = |key: &str| {
        map.get(key)
            .map(|n| globs(r, n, &format!("`{key}`")))
            .unwrap_or_default()
    };
    Some(PushTrigger {
        branches: get("branches"),
        branches_ignore: get("branches_ignore"),
        tags: get("tags"),
        tags_ignore: get("tags_ignore"),
        paths: get("paths"),
        paths_ignore: get("paths_ignore"),
    })
}

fn decode_pull_request(r: &mut Reader<'_>, node: &Node) -> Option<PullRequestTrigger> {
    if node.is_null() {
        return Some(default_pull_request());
    }
    let map = r.map(node, "`pull_request`", PULL_REQUEST_KEYS)?;
    let mut trigger = default_pull_request();
    for (key, target) in [
        ("branches", &mut trigger.branches),
        ("branches_ignore", &mut trigger.branches_ignore),
        ("paths", &mut trigger.paths),
        ("paths_ignore", &mut trigger.paths_ignore),
    ] {
        if let Some(n) = map.get(key) {
            *target = globs(r, n, &format!("`{key}`"));
        }
    }
    if let Some(n) = map.get("types") {
        trigger.types = r
            .strings(n, "`types`")
            .into_iter()
            .filter_map(|t| {
                let found = PullRequestAction::ALL
                    .iter()
                    .find(|(name, _)| *name == t.value)
                    .map(|(_, a)| *a);
                if found.is_none() {
                    let names: Vec<&str> = PullRequestAction::ALL.iter().map(|(n, _)| *n).collect();
                    r.sink.error(
                        t.pos,
                        format!(
                            "unknown pull request type `{}` (expected one of: {})",
                            t.value,
                            names.join(", ")
                        ),
                    );
                }
                found
            })
            .collect();
    }
    if let Some(n) = map.get("secrets_for_forks") {
        trigger.secrets_for_forks = r.bool(n, "`secrets_for_forks`").unwrap_or(false);
    }
    Some(trigger)
}

fn decode_schedule(r: &mut Reader<'_>, node: &Node) -> Option<ScheduleTrigger> {
    let map = r.map(node, "a `schedule` entry", SCHEDULE_KEYS)?;
    let Some(cron_node) = map.get("cron") else {
        r.error(
            node,
            "a `schedule` entry needs `cron`, e.g. `cron: \"0 3 * * *\"`",
        );
        return None;
    };
    let cron = r.non_empty_string(cron_node, "`cron`")?;
    let schedule = match parse_cron(&cron.value) {
        Ok(s) => Some(s),
        Err(message) => {
            r.error(cron_node, message);
            None
        }
    };
    let timezone = match map.get("timezone") {
        None => Some(chrono_tz::UTC),
        Some(n) => r.string(n, "`timezone`").and_then(|tz| match tz.value.parse::<chrono_tz::Tz>() {
            Ok(tz) => Some(tz),
            Err(_) => {
                r.error(
                    n,
                    format!("unknown time zone `{}`; use an IANA name such as `Europe/Berlin` or `UTC`", tz.value),
                );
                None
            }
        }),
    };
    let branch = map
        .get("branch")
        .and_then(|n| r.non_empty_string(n, "`branch`"))
        .map(|s| s.value);
    let params = map
        .get("params")
        .and_then(|n| r.open_map(n, "schedule `params`"))
        .map(|m| {
            m.entries()
                .filter_map(|(k, key_node, v)| {
                    let value = r.string(v, &format!("param `{k}`"))?;
                    Some((Spanned::new(k.to_owned(), key_node.pos), value.value))
                })
                .collect()
        })
        .unwrap_or_default();
    Some(ScheduleTrigger {
        cron: Spanned::new(cron.value, cron.pos),
        schedule: schedule?,
        timezone: timezone?,
        branch,
        params,
    })
}

/// Standard five-field cron (minute hour day-of-month month day-of-week) or a nickname such
/// as `@daily`. Seconds are not accepted: Gantry does not schedule below a minute.
pub fn parse_cron(text: &str) -> Result<croner::Cron, String> {
    let fields = text.split_whitespace().count();
    if !text.trim_start().starts_with('@') && fields != 5 {
        return Err(format!(
            "bad cron `{text}`: expected 5 fields (minute hour day-of-month month day-of-week), found {fields}"
        ));
    }
    if let Some(message) = cron_range_error(text) {
        return Err(format!("bad cron `{text}`: {message}"));
    }
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Disallowed)
        .build()
        .parse(text)
        .map_err(|e| {
            if text.trim_start().starts_with('@') {
                format!("bad cron `{text}`: supported nicknames are @yearly, @annually, @monthly, @weekly, @daily and @hourly")
            } else {
                format!("bad cron `{text}`: {e}")
            }
        })
}

/// A clearer message than the cron library's for the common mistake of a number out of range.
fn cron_range_error(text: &str) -> Option<String> {
    const FIELDS: [(&str, u32, u32); 5] = [
        ("minute", 0, 59),
        ("hour", 0, 23),
        ("day of month", 1, 31),
        ("month", 1, 12),
        ("day of week", 0, 7),
    ];
    for (field, (name, min, max)) in text.split_whitespace().zip(FIELDS) {
        let numbers = field
            .split([',', '-', '/'])
            .enumerate()
            .filter(|(i, part)| !(field.contains('/') && *i > 0 && field.ends_with(part)));
        for (_, part) in numbers {
            if let Ok(n) = part.parse::<u32>()
                && (n < min || n > max)
            {
                return Some(format!("{name} `{n}` is out of range ({min}-{max})"));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cron_accepts_five_fields_and_nicknames() {
        assert!(parse_cron("0 3 * * 1-5").is_ok());
        assert!(parse_cron("*/15 * * * *").is_ok());
        assert!(parse_cron("@daily").is_ok());
        assert!(
            parse_cron("0 0 3 * * *")
                .unwrap_err()
                .contains("expected 5 fields")
        );
        assert!(
            parse_cron("@reboot")
                .unwrap_err()
                .contains("supported nicknames")
        );
    }

    #[test]
    fn out_of_range_numbers_are_named() {
        assert_eq!(
            parse_cron("0 25 * * *").unwrap_err(),
            "bad cron `0 25 * * *`: hour `25` is out of range (0-23)"
        );
        assert!(
            parse_cron("61 * * * *")
                .unwrap_err()
                .contains("minute `61`")
        );
        assert!(parse_cron("0 0 * 13 *").unwrap_err().contains("month `13`"));
    }
}
