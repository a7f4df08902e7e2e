//! Small typed readers over YAML nodes that report problems to a [`Sink`] and carry on, so a
//! single pass finds every wrong type and unknown key in a file.

use std::time::Duration;

use crate::pipeline::diagnostic::{Sink, suggestion};
use crate::pipeline::model::{Env, Port, Spanned};
use crate::pipeline::template::Template;
use crate::pipeline::yaml::{Node, Resolved, Value};

pub struct Reader<'s> {
    pub sink: &'s mut Sink,
}

/// A mapping whose keys have been checked against the known ones.
pub struct Map<'n> {
    pub node: &'n Node,
    entries: Vec<(&'n str, &'n Node, &'n Node)>,
}

impl<'n> Map<'n> {
    pub fn get(&self, key: &str) -> Option<&'n Node> {
        self.entries
            .iter()
            .find(|(k, _, _)| *k == key)
            .map(|(_, _, v)| *v)
    }

    pub fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// Entries in the order written, with the key's node (for positions).
    pub fn entries(&self) -> impl Iterator<Item = (&'n str, &'n Node, &'n Node)> + '_ {
        self.entries.iter().copied()
    }

    pub fn key_node(&self, key: &str) -> Option<&'n Node> {
        self.entries
            .iter()
            .find(|(k, _, _)| *k == key)
            .map(|(_, k, _)| *k)
    }
}

impl Reader<'_> {
    pub fn error(&mut self, node: &Node, message: impl Into<String>) {
        self.sink.error(node.pos, message);
    }

    fn wrong_type(&mut self, node: &Node, what: &str, expected: &str) {
        let found = node.type_name();
        self.error(node, format!("{what} must be {expected}, found {found}"));
    }

    /// A mapping with only `known` keys. `what` names the thing for messages ("stage", "`on`").
    pub fn map<'n>(&mut self, node: &'n Node, what: &str, known: &[&str]) -> Option<Map<'n>> {
        let Value::Map(raw) = &node.value else {
            self.wrong_type(node, what, "a mapping");
            return None;
        };
        let mut entries = Vec::with_capacity(raw.len());
        for (k, v) in raw {
            let Some(key) = k.as_scalar().map(|s| s.text.as_str()) else {
                self.error(k, format!("keys of {what} must be strings"));
                continue;
            };
            if !known.is_empty() && !known.contains(&key) {
                let hint = suggestion(key, known.iter().copied())
                    .map(|s| format!("; did you mean `{s}`?"))
                    .unwrap_or_else(|| format!(" (expected one of: {})", known.join(", ")));
                self.error(k, format!("unknown key `{key}` in {what}{hint}"));
                continue;
            }
            entries.push((key, k, v));
        }
        Some(Map { node, entries })
    }

    /// A mapping with free-form keys (env, labels, matrix axes).
    pub fn open_map<'n>(&mut self, node: &'n Node, what: &str) -> Option<Map<'n>> {
        self.map(node, what, &[])
    }

    pub fn seq<'n>(&mut self, node: &'n Node, what: &str) -> Option<&'n [Node]> {
        match &node.value {
            Value::Seq(items) => Some(items),
            _ => {
                self.wrong_type(node, what, "a list");
                None
            }
        }
    }

    /// Any non-null scalar as text (`1.80` stays `1.80`, not `1.8`).
    pub fn string(&mut self, node: &Node, what: &str) -> Option<Spanned<String>> {
        match &node.value {
            Value::Scalar(s) if !matches!(s.resolve(), Resolved::Null) => {
                Some(Spanned::new(s.text.clone(), node.pos))
            }
            _ => {
                self.wrong_type(node, what, "a string");
                None
            }
        }
    }

    pub fn non_empty_string(&mut self, node: &Node, what: &str) -> Option<Spanned<String>> {
        let s = self.string(node, what)?;
        if s.value.trim().is_empty() {
            self.error(node, format!("{what} must not be empty"));
            return None;
        }
        Some(s)
    }

    pub fn bool(&mut self, node: &Node, what: &str) -> Option<bool> {
        match node.as_scalar().map(|s| s.resolve()) {
            Some(Resolved::Bool(b)) => Some(b),
            _ => {
                self.wrong_type(node, what, "true or false");
                None
            }
        }
    }

    pub fn int_in(&mut self, node: &Node, what: &str, min: i64, max: i64) -> Option<i64> {
        match node.as_scalar().map(|s| s.resolve()) {
            Some(Resolved::Int(i)) if (min..=max).contains(&i) => Some(i),
            Some(Resolved::Int(i)) => {
                self.error(
                    node,
                    format!("{what} must be between {min} and {max}, found {i}"),
                );
                None
            }
            _ => {
                self.wrong_type(node, what, "an integer");
                None
            }
        }
    }

    /// A string or a list of strings (`branches: main` is the same as `branches: [main]`).
    pub fn strings(&mut self, node: &Node, what: &str) -> Vec<Spanned<String>> {
        match &node.value {
            Value::Seq(items) => items
                .iter()
                .filter_map(|item| self.non_empty_string(item, what))
                .collect(),
            Value::Scalar(_) => self.non_empty_string(node, what).into_iter().collect(),
            Value::Map(_) => {
                self.wrong_type(node, what, "a string or a list of strings");
                Vec::new()
            }
        }
    }

    pub fn template(&mut self, node: &Node, what: &str) -> Option<Template> {
        let raw = self.non_empty_string(node, what)?;
        match Template::parse(raw) {
            Ok(t) => Some(t),
            Err(message) => {
                self.error(node, format!("{what}: {message}"));
                None
            }
        }
    }

    pub fn duration(&mut self, node: &Node, what: &str) -> Option<Spanned<Duration>> {
        let text = match node.as_scalar().map(|s| s.resolve()) {
            Some(Resolved::Str(s)) => s.to_owned(),
            Some(Resolved::Int(_)) => {
                self.error(
                    node,
                    format!(
                        "{what} needs a unit: write `{}s` for seconds (units: s, m, h, d)",
                        node.as_scalar().map(|s| s.text.as_str()).unwrap_or("")
                    ),
                );
                return None;
            }
            _ => {
                self.wrong_type(node, what, "a duration such as `30s`, `10m` or `1h30m`");
                return None;
            }
        };
        match parse_duration(&text) {
            Ok(d) => Some(Spanned::new(d, node.pos)),
            Err(message) => {
                self.error(node, format!("{what}: {message}"));
                None
            }
        }
    }

    /// `NAME: value` pairs; values are templates. Names follow POSIX shell rules and may not
    /// claim Gantry's own `GANTRY_` prefix.
    pub fn env(&mut self, node: &Node, what: &str) -> Env {
        let Some(map) = self.open_map(node, what) else {
            return Vec::new();
        };
        let mut env = Vec::new();
        for (key, key_node, value) in map.entries() {
            if !is_env_name(key) {
                self.error(
                    key_node,
                    format!(
                        "`{key}` is not a valid environment variable name \
                         (letters, digits and `_`, not starting with a digit)"
                    ),
                );
                continue;
            }
            if key.starts_with("GANTRY_") {
                self.error(
                    key_node,
                    format!("`{key}`: names starting with `GANTRY_` are set by Gantry itself"),
                );
                continue;
            }
            if value.is_null() {
                self.error(
                    value,
                    format!("{what} `{key}` has no value; write `{key}: \"\"` for an empty one"),
                );
                continue;
            }
            if let Value::Scalar(_) = &value.value {
                let raw = Spanned::new(
                    value
                        .as_scalar()
                        .map(|s| s.text.clone())
                        .unwrap_or_default(),
                    value.pos,
                );
                match Template::parse(raw) {
                    Ok(t) => env.push((Spanned::new(key.to_owned(), key_node.pos), t)),
                    Err(message) => self.error(value, format!("{what} `{key}`: {message}")),
                }
            } else {
                self.wrong_type(value, &format!("{what} `{key}`"), "a string");
            }
        }
        env
    }

    /// `8080`, `"8080/tcp"` or `"53/udp"`.
    pub fn ports(&mut self, node: &Node, what: &str) -> Vec<Port> {
        let Some(items) = self.seq(node, what) else {
            return Vec::new();
        };
        let mut ports = Vec::new();
        for item in items {
            let Some(text) = item.as_scalar().map(|s| s.text.as_str()) else {
                self.wrong_type(item, "a port", "a number or `NUMBER/tcp|udp`");
                continue;
            };
            let (number, proto) = text.split_once('/').unwrap_or((text, "tcp"));
            match (number.parse::<u16>(), proto) {
                (Ok(n), "tcp" | "udp") if n > 0 => ports.push(Port {
                    number: n,
                    udp: proto == "udp",
                }),
                _ => self.error(
                    item,
                    format!("`{text}` is not a port: write a number 1-65535, optionally with /tcp or /udp"),
                ),
            }
        }
        ports
    }

    /// A command as a list of arguments, or a single string split on whitespace.
    pub fn command(&mut self, node: &Node, what: &str) -> Option<Vec<String>> {
        match &node.value {
            Value::Seq(items) => Some(
                items
                    .iter()
                    .filter_map(|i| self.string(i, what).map(|s| s.value))
                    .collect(),
            ),
            Value::Scalar(_) => self
                .non_empty_string(node, what)
                .map(|s| s.value.split_whitespace().map(str::to_owned).collect()),
            Value::Map(_) => {
                self.wrong_type(node, what, "a list of arguments");
                None
            }
        }
    }
}

pub fn is_env_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Longest accepted duration: a week. Anything longer is surely a typo (`10h` for `10m`).
pub const MAX_DURATION: Duration = Duration::from_secs(7 * 24 * 3600);

/// `30s`, `10m`, `1h30m`, `2d`, `1.5h`. Units are required: a bare `30` is ambiguous.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || {
        format!("`{text}` is not a duration; write e.g. `30s`, `10m`, `1h30m` (units: s, m, h, d)")
    };
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        if digits == 0 {
            return Err(bad());
        }
        let number: f64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "d" => 86400.0,
            _ => return Err(bad()),
        };
        total += number * seconds;
        rest = &rest[unit_len..];
    }
    if total > MAX_DURATION.as_secs_f64() {
        return Err(format!("`{text}` is longer than the 7 day maximum"));
    }
    let duration = Duration::try_from_secs_f64(total).map_err(|_| bad())?;
    if duration.is_zero() {
        return Err(format!("`{text}` is zero; a duration must be positive"));
    }
    if duration > MAX_DURATION {
        return Err(format!("`{text}` is longer than the 7 day maximum"));
    }
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_need_units_and_stay_in_range() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("10 minutes").is_err());
        assert!(parse_duration("0s").unwrap_err().contains("zero"));
        assert!(parse_duration("8d").unwrap_err().contains("7 day"));
        assert!(parse_duration("m").is_err());
    }

    #[test]
    fn env_names_follow_shell_rules() {
        assert!(is_env_name("RUST_LOG"));
        assert!(is_env_name("_x1"));
        assert!(!is_env_name("1X"));
        assert!(!is_env_name("A-B"));
        assert!(!is_env_name(""));
    }
}
