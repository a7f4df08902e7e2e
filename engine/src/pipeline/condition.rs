//! `when:` conditions, written in CEL (the Common Expression Language Kubernetes and Tekton
//! use), compiled once at validation time and evaluated when a run is planned.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use super::model::Spanned;

/// The names a condition may use.
pub const VARIABLES: [&str; 6] = ["event", "branch", "tag", "params", "env", "matrix"];

#[derive(Clone)]
pub struct Condition {
    pub source: Spanned<String>,
    program: Arc<cel::Program>,
}

impl fmt::Debug for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Condition")
            .field(&self.source.value)
            .finish()
    }
}

/// What a condition sees about the run. Absent branch or tag are empty strings, so
/// `branch == 'main'` is simply false on a tag push instead of an error.
#[derive(Clone, Debug, Default)]
pub struct Facts {
    pub event: String,
    pub branch: String,
    pub tag: String,
    pub params: BTreeMap<String, String>,
    pub env: BTreeMap<String, String>,
    pub matrix: BTreeMap<String, String>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConditionError {
    #[error("`when: {expression}` failed: {message}")]
    Execution { expression: String, message: String },
    #[error("`when: {expression}` gave {value} instead of true or false")]
    NotBool { expression: String, value: String },
}

impl Condition {
    pub fn compile(source: Spanned<String>) -> Result<Self, String> {
        let program = cel::Program::compile(&source.value).map_err(|errors| {
            let details: Vec<String> = errors
                .errors
                .iter()
                .map(|e| format!("column {}: {}", e.pos.1, e.msg))
                .collect();
            format!("invalid CEL in `when`: {}", details.join("; "))
        })?;
        let references = program.references();
        let bound = comprehension_variables(&source.value);
        let mut unknown: Vec<&str> = references
            .variables()
            .into_iter()
            .filter(|v| !VARIABLES.contains(v) && !bound.iter().any(|b| b == v))
            .collect();
        unknown.sort_unstable();
        if let Some(name) = unknown.first() {
            let hint = super::diagnostic::suggestion(name, VARIABLES)
                .map(|s| format!("; did you mean `{s}`?"))
                .unwrap_or_else(|| format!(" (known: {})", VARIABLES.join(", ")));
            return Err(format!("unknown variable `{name}` in `when`{hint}"));
        }
        Ok(Condition {
            source,
            program: Arc::new(program),
        })
    }

    pub fn evaluate(&self, facts: &Facts) -> Result<bool, ConditionError> {
        let mut context = cel::Context::default();
        context.add_variable_from_value("event", facts.event.clone());
        context.add_variable_from_value("branch", facts.branch.clone());
        context.add_variable_from_value("tag", facts.tag.clone());
        context.add_variable_from_value("params", to_map(&facts.params));
        context.add_variable_from_value("env", to_map(&facts.env));
        context.add_variable_from_value("matrix", to_map(&facts.matrix));
        match self.program.execute(&context) {
            Ok(cel::Value::Bool(b)) => Ok(b),
            Ok(other) => Err(ConditionError::NotBool {
                expression: self.source.value.clone(),
                value: format!("{other:?}"),
            }),
            Err(e) => Err(ConditionError::Execution {
                expression: self.source.value.clone(),
                message: e.to_string(),
            }),
        }
    }
}

/// Variables bound by CEL's comprehension macros (`list.exists(x, x > 1)`): not free variables.
fn comprehension_variables(source: &str) -> Vec<String> {
    let mut bound = Vec::new();
    for macro_name in ["exists_one(", "exists(", "all(", "map(", "filter("] {
        for (at, _) in source.match_indices(macro_name) {
            let rest = &source[at + macro_name.len()..];
            if let Some((var, _)) = rest.split_once(',') {
                let var = var.trim();
                if !var.is_empty() && var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    bound.push(var.to_owned());
                }
            }
        }
    }
    bound
}

fn to_map(map: &BTreeMap<String, String>) -> cel::Value {
    let converted: std::collections::HashMap<String, cel::Value> = map
        .iter()
        .map(|(k, v)| (k.clone(), cel::Value::from(v.clone())))
        .collect();
    cel::Value::from(converted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::yaml::Pos;

    fn compile(s: &str) -> Result<Condition, String> {
        Condition::compile(Spanned::new(s.to_owned(), Pos::new(1, 1)))
    }

    #[test]
    fn evaluates_over_the_run_facts() {
        let c = compile("branch == 'main' && event == 'push' && params.deploy == 'true'")
            .expect("compiles");
        let mut facts = Facts {
            event: "push".into(),
            branch: "main".into(),
            ..Facts::default()
        };
        facts.params.insert("deploy".into(), "true".into());
        assert_eq!(c.evaluate(&facts), Ok(true));
        facts.branch = "feature/x".into();
        assert_eq!(c.evaluate(&facts), Ok(false));
    }

    #[test]
    fn string_functions_work() {
        let c = compile("tag.startsWith('v') || branch.matches('^release/.*')").expect("compiles");
        let facts = Facts {
            branch: "release/1.2".into(),
            ..Facts::default()
        };
        assert_eq!(c.evaluate(&facts), Ok(true));
    }

    #[test]
    fn rejects_syntax_errors_and_unknown_variables() {
        assert!(
            compile("branch == ")
                .unwrap_err()
                .starts_with("invalid CEL")
        );
        assert!(
            compile("brnch == 'main'")
                .unwrap_err()
                .contains("did you mean `branch`")
        );
    }

    #[test]
    fn comprehension_variables_are_not_unknown() {
        let c = compile("params.targets.split(',').exists(t, t == 'prod')");
        assert!(c.is_ok(), "{c:?}");
        assert!(compile("[1, 2].all(n, n > m)").unwrap_err().contains("`m`"));
    }

    #[test]
    fn non_boolean_results_are_errors() {
        let c = compile("branch").expect("compiles");
        assert!(matches!(
            c.evaluate(&Facts::default()),
            Err(ConditionError::NotBool { .. })
        ));
    }
}
