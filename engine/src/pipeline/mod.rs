//! The pipeline-as-code format: parsing `.gantry.yaml` files into a typed [`Pipeline`],
//! checking them, and planning them into the DAG the scheduler runs.
//!
//! The flow is `yaml` (nodes with positions) → `decode` (typed model, per-node checks) →
//! `validate` (cross-stage rules) → `plan` (matrix expanded, topological order). Every step
//! reports all the problems it can find as `FILE:LINE:COL: message`.

pub mod condition;
pub mod decode;
pub mod diagnostic;
pub mod model;
pub mod plan;
pub mod schema;
pub mod template;
pub mod validate;
pub mod yaml;

use std::sync::Arc;

pub use diagnostic::{Diagnostic, Report};
pub use model::*;
pub use plan::{Plan, PlannedStage};

/// Largest pipeline file accepted (1 MiB). Pipelines are code, not data.
pub const MAX_FILE_BYTES: usize = 1 << 20;

/// Parses and validates one pipeline file. `file` is only used in messages.
pub fn parse(file: &str, text: &str) -> Result<Pipeline, Report> {
    let mut sink = diagnostic::Sink::default();
    if text.len() > MAX_FILE_BYTES {
        sink.error(
            decode::FILE_START,
            format!(
                "the file is {} bytes; pipeline files are limited to {MAX_FILE_BYTES}",
                text.len()
            ),
        );
        return Err(sink.into_report(file));
    }
    let root = match yaml::parse(text) {
        Ok((Some(root), duplicates)) => {
            for d in duplicates {
                sink.error(d.pos, d.message);
            }
            root
        }
        Ok((None, _)) => {
            sink.error(
                decode::FILE_START,
                "the file is empty; a pipeline needs `name` and `stages`",
            );
            return Err(sink.into_report(file));
        }
        Err(e) => {
            // A syntax error: report every one the parser can be brought to, not only the
            // first. (Other errors here, such as a second document, stand alone.)
            let syntax = yaml::syntax_errors(text);
            if syntax.is_empty() || !e.message.starts_with("YAML syntax error") {
                sink.error(e.pos, e.message);
            }
            for e in syntax {
                sink.error(e.pos, e.message);
            }
            return Err(sink.into_report(file));
        }
    };
    let pipeline = decode::decode(&root, &mut sink);
    if let Some(pipeline) = &pipeline {
        validate::validate(pipeline, &mut sink);
    }
    match pipeline {
        Some(p) if sink.is_empty() => Ok(p),
        _ => Err(sink.into_report(file)),
    }
}

/// Parses, validates and plans one pipeline file.
pub fn load(file: &str, text: &str) -> Result<Plan, Report> {
    let pipeline = parse(file, text)?;
    Ok(Plan::new(Arc::new(pipeline)))
}
