//! Rules that span stages: unique names, `needs` that exist and form no cycle, references
//! (`${{ stages.X.image }}`, `${{ params.Y }}`) that resolve, b2i artifacts that a needed stage
//! really keeps, and matrices within the size limit.

use std::collections::HashMap;

use super::diagnostic::Sink;
use super::model::{Pipeline, Stage, StageKind};
use super::template::{Reference, Template};

/// Most stage instances one matrix may expand to.
pub const MAX_MATRIX: usize = 256;
/// Most stage instances a whole plan may hold (matrices expanded).
pub const MAX_PLAN_STAGES: usize = 2000;

/// The dependency graph over all stages, `stages` first then `finally`, by index.
pub struct Graph<'p> {
    pub stages: Vec<&'p Stage>,
    pub main_len: usize,
    /// Direct dependencies of each stage, after applying "follows the one above it".
    pub deps: Vec<Vec<usize>>,
}

impl<'p> Graph<'p> {
    pub fn is_finally(&self, i: usize) -> bool {
        i >= self.main_len
    }

    /// Builds the graph, reporting unknown names; unresolved `needs` entries are dropped.
    pub fn build(pipeline: &'p Pipeline, sink: &mut Sink) -> Self {
        let stages: Vec<&Stage> = pipeline.stages.iter().chain(&pipeline.finally).collect();
        let main_len = pipeline.stages.len();
        let mut index: HashMap<&str, usize> = HashMap::new();
        for (i, stage) in stages.iter().enumerate() {
            let name = stage.name.value.as_str();
            if name.is_empty() {
                continue;
            }
            if let Some(&first) = index.get(name) {
                sink.error(
                    stage.name.pos,
                    format!(
                        "duplicate stage name `{name}` (first used at line {})",
                        stages[first].name.pos.line
                    ),
                );
            } else {
                index.insert(name, i);
            }
        }
        let mut deps = Vec::with_capacity(stages.len());
        for (i, stage) in stages.iter().enumerate() {
            let finally = i >= main_len;
            let mut d = Vec::new();
            match &stage.needs {
                // Follows the stage above it in the same list.
                None => {
                    if i > 0 && i != main_len {
                        d.push(i - 1);
                    }
                }
                Some(needs) => {
                    for need in needs {
                        match index.get(need.value.as_str()) {
                            Some(&j) if finally && j < main_len => sink.error(
                                need.pos,
                                format!(
                                    "`{}` is a regular stage; finally stages run after all of them anyway, so `needs` may only name other finally stages",
                                    need.value
                                ),
                            ),
                            Some(&j) if !finally && j >= main_len => sink.error(
                                need.pos,
                                format!("`{}` is a finally stage; regular stages cannot wait for it", need.value),
                            ),
                            Some(&j) => {
                                if d.contains(&j) {
                                    sink.error(need.pos, format!("`needs` lists `{}` twice", need.value));
                                } else {
                                    d.push(j);
                                }
                            }
                            None => {
                                let names = index.keys().copied();
                                let hint = sink.suggest(&need.value, names)
                                    .map(|s| format!("; did you mean `{s}`?"))
                                    .unwrap_or_default();
                                sink.error(
                                    need.pos,
                                    format!(
                                        "stage `{}` needs `{}`, which is not a stage in this pipeline{hint}",
                                        stage.name.value, need.value
                                    ),
                                );
                            }
                        }
                    }
                }
            }
            deps.push(d);
        }
        Graph {
            stages,
            main_len,
            deps,
        }
    }

    /// Every cycle as a path of stage indices (first == last), each reported once.
    pub fn cycles(&self) -> Vec<Vec<usize>> {
        #[derive(Clone, Copy, PartialEq)]
        enum Mark {
            New,
            Active,
            Done,
        }
        let n = self.stages.len();
        let mut mark = vec![Mark::New; n];
        let mut cycles = Vec::new();
        // Iterative DFS (a hostile file may chain thousands of stages).
        for root in 0..n {
            if mark[root] != Mark::New {
                continue;
            }
            let mut stack: Vec<(usize, usize)> = vec![(root, 0)];
            mark[root] = Mark::Active;
            while let Some(&mut (node, ref mut next)) = stack.last_mut() {
                if let Some(&dep) = self.deps[node].get(*next) {
                    *next += 1;
                    match mark[dep] {
                        Mark::New => {
                            mark[dep] = Mark::Active;
                            stack.push((dep, 0));
                        }
                        Mark::Active => {
                            let start = stack.iter().position(|(s, _)| *s == dep).unwrap_or(0);
                            // The stack runs dependent -> dependency; print it the way the
                            // arrows in `needs` read.
                            let mut path: Vec<usize> =
                                stack[start..].iter().map(|(s, _)| *s).collect();
                            path.push(dep);
                            cycles.push(path);
                        }
                        Mark::Done => {}
                    }
                } else {
                    mark[node] = Mark::Done;
                    stack.pop();
                }
            }
        }
        cycles
    }

    /// Whether `ancestor` is reachable from `stage` through dependencies.
    pub fn depends_on(&self, stage: usize, ancestor: usize) -> bool {
        let mut seen = vec![false; self.stages.len()];
        let mut todo = self.deps[stage].clone();
        while let Some(s) = todo.pop() {
            if s == ancestor {
                return true;
            }
            if !std::mem::replace(&mut seen[s], true) {
                todo.extend(&self.deps[s]);
            }
        }
        // Finally stages run after every regular stage.
        self.is_finally(stage) && !self.is_finally(ancestor)
    }

    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.stages.iter().position(|s| s.name.value == name)
    }
}

pub fn validate(pipeline: &Pipeline, sink: &mut Sink) {
    let graph = Graph::build(pipeline, sink);
    for cycle in graph.cycles() {
        let names: Vec<&str> = cycle
            .iter()
            .map(|&i| graph.stages[i].name.value.as_str())
            .collect();
        let first = graph.stages[cycle[0]];
        let pos = first
            .needs
            .as_ref()
            .and_then(|needs| needs.iter().find(|n| n.value == names[1]))
            .map_or(first.name.pos, |n| n.pos);
        sink.error(pos, format!("`needs` form a cycle: {}", names.join(" -> ")));
    }

    check_pipeline_env(pipeline, sink);
    check_schedule_params(pipeline, sink);
    let mut total = 0usize;
    for (i, stage) in graph.stages.iter().enumerate() {
        if let Some(when) = &stage.when {
            check_when(pipeline, stage, when, sink);
        }
        total += check_matrix(stage, sink);
        check_references(pipeline, &graph, i, sink);
        if let StageKind::B2i(b2i) = &stage.kind {
            check_b2i_artifact(&graph, i, b2i, sink);
        }
        for (k, service) in stage.services.iter().enumerate() {
            if let Some(first) = stage.services[..k]
                .iter()
                .find(|s| s.name.value == service.name.value)
            {
                sink.error(
                    service.name.pos,
                    format!(
                        "duplicate service name `{}` (first used at line {})",
                        service.name.value, first.name.pos.line
                    ),
                );
            }
        }
    }
    if total > MAX_PLAN_STAGES {
        sink.error(
            pipeline.name.pos,
            format!(
                "the pipeline expands to {total} stage instances; the limit is {MAX_PLAN_STAGES}"
            ),
        );
    }
}

/// Pipeline-level env applies to every stage, so it may use params, git and run facts but not a
/// stage's matrix or another stage's image.
fn check_pipeline_env(pipeline: &Pipeline, sink: &mut Sink) {
    let env = pipeline
        .env
        .iter()
        .map(|(name, template)| (format!("pipeline `env` `{}`", name.value), template));
    let group = pipeline
        .concurrency
        .iter()
        .map(|c| ("`concurrency.group`".to_owned(), &c.group));
    for (name, template) in env.chain(group) {
        for reference in template.references() {
            match reference {
                Reference::Param(p) if pipeline.param(p).is_none() => {
                    let hint = sink
                        .suggest(p, pipeline.params.iter().map(|x| x.name.value.as_str()))
                        .map(|s| format!("; did you mean `params.{s}`?"))
                        .unwrap_or_default();
                    sink.error(
                        template.raw.pos,
                        format!("`${{{{ params.{p} }}}}`: no param `{p}` is declared{hint}"),
                    )
                }
                Reference::Matrix(_) | Reference::Stage { .. } => sink.error(
                    template.raw.pos,
                    format!("{name} cannot use `${{{{ {reference} }}}}`: it belongs to one stage",),
                ),
                _ => {}
            }
        }
    }
}

fn check_schedule_params(pipeline: &Pipeline, sink: &mut Sink) {
    for schedule in &pipeline.on.schedule {
        for (name, value) in &schedule.params {
            let (pos, name) = (name.pos, name.value.as_str());
            match pipeline.param(name).map(|p| &p.kind) {
                None => {
                    let hint = sink.suggest(name, pipeline.params.iter().map(|p| p.name.value.as_str()))
                        .map(|s| format!("; did you mean `{s}`?"))
                        .unwrap_or_default();
                    sink.error(pos, format!("schedule param `{name}` is not declared under `params`{hint}"))
                }
                Some(super::model::ParamKind::Bool { .. }) if value != "true" && value != "false" => {
                    sink.error(pos, format!("schedule sets bool param `{name}` to `{value}`; use true or false"))
                }
                Some(super::model::ParamKind::Choice { options, .. }) if !options.contains(value) => sink.error(
                    pos,
                    format!("schedule sets param `{name}` to `{value}`, which is not one of its options ({})", options.join(", ")),
                ),
                _ => {}
            }
        }
    }
}

/// Names after `params.` (or `matrix.`) in a CEL source, skipping string literals.
fn cel_fields<'a>(source: &'a str, root: &str) -> Vec<&'a str> {
    let bytes = source.as_bytes();
    let mut found = Vec::new();
    let mut i = 0;
    let mut quote: Option<u8> = None;
    while i < bytes.len() {
        let b = bytes[i];
        match quote {
            Some(q) => {
                if b == b'\\' {
                    i += 1;
                } else if b == q {
                    quote = None;
                }
            }
            None if b == b'\'' || b == b'"' => quote = Some(b),
            None => {
                let starts_word = i == 0
                    || !(bytes[i - 1].is_ascii_alphanumeric()
                        || bytes[i - 1] == b'_'
                        || bytes[i - 1] == b'.');
                if starts_word
                    && source[i..].starts_with(root)
                    && source[i + root.len()..].starts_with('.')
                {
                    let rest = &source[i + root.len() + 1..];
                    let end = rest
                        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                        .unwrap_or(rest.len());
                    if end > 0 {
                        found.push(&rest[..end]);
                    }
                    i += root.len() + 1 + end;
                    continue;
                }
            }
        }
        i += 1;
    }
    found
}

/// `when: params.x == 'y'` with no param `x` would fail at run time; catch it now.
fn check_when(
    pipeline: &Pipeline,
    stage: &Stage,
    when: &super::condition::Condition,
    sink: &mut Sink,
) {
    let source = &when.source.value;
    for name in cel_fields(source, "params") {
        if pipeline.param(name).is_none() {
            let hint = sink
                .suggest(name, pipeline.params.iter().map(|p| p.name.value.as_str()))
                .map(|s| format!("; did you mean `params.{s}`?"))
                .unwrap_or_default();
            sink.error(
                when.source.pos,
                format!("`when` uses `params.{name}`, but no param `{name}` is declared{hint}"),
            );
        }
    }
    for axis in cel_fields(source, "matrix") {
        let known = stage
            .matrix
            .as_ref()
            .is_some_and(|m| m.axes.iter().any(|(a, _)| a.value == axis));
        if !known {
            sink.error(
                when.source.pos,
                format!(
                    "`when` uses `matrix.{axis}`, but stage `{}` has no matrix axis `{axis}`",
                    stage.name.value
                ),
            );
        }
    }
}

/// Reports an oversized matrix; returns how many instances the stage expands to.
fn check_matrix(stage: &Stage, sink: &mut Sink) -> usize {
    let Some(matrix) = &stage.matrix else {
        return 1;
    };
    let size = matrix
        .axes
        .iter()
        .try_fold(1usize, |acc, (_, values)| {
            acc.checked_mul(values.len().max(1))
        })
        .unwrap_or(usize::MAX);
    if size > MAX_MATRIX {
        sink.error(
            matrix.pos,
            format!(
                "matrix of stage `{}` has {} combinations; the limit is {MAX_MATRIX}",
                stage.name.value,
                if size == usize::MAX {
                    "too many".to_owned()
                } else {
                    size.to_string()
                }
            ),
        );
    }
    if size <= MAX_MATRIX && super::plan::combinations(stage).is_empty() {
        sink.error(
            matrix.pos,
            format!(
                "`exclude` leaves no combination of stage `{}`'s matrix to run",
                stage.name.value
            ),
        );
    }
    size.min(MAX_MATRIX)
}

fn stage_templates(stage: &Stage) -> Vec<&Template> {
    let mut out: Vec<&Template> = Vec::new();
    out.extend(stage.image.iter());
    out.extend(stage.env.iter().map(|(_, t)| t));
    out.extend(
        stage
            .services
            .iter()
            .flat_map(|s| std::iter::once(&s.image).chain(s.env.iter().map(|(_, t)| t))),
    );
    out.extend(stage.cache.iter().map(|c| &c.key));
    out.extend(stage.approval.iter().filter_map(|a| a.message.as_ref()));
    match &stage.kind {
        StageKind::Steps(steps) => {
            out.extend(steps.iter().flat_map(|s| s.env.iter().map(|(_, t)| t)))
        }
        StageKind::S2i(s) => {
            out.push(&s.builder);
            out.push(&s.output);
            out.extend(s.env.iter().map(|(_, t)| t));
        }
        StageKind::B2i(b) => {
            out.push(&b.base);
            out.push(&b.output);
            out.extend(b.env.iter().map(|(_, t)| t));
            out.extend(b.labels.iter().map(|(_, t)| t));
        }
        StageKind::Deploy(d) => {
            out.push(&d.image);
            out.extend(d.change_cause.iter());
        }
        StageKind::Gate => {}
    }
    out
}

fn check_references(pipeline: &Pipeline, graph: &Graph<'_>, i: usize, sink: &mut Sink) {
    let stage = graph.stages[i];
    for template in stage_templates(stage) {
        for reference in template.references() {
            let pos = template.raw.pos;
            match reference {
                Reference::Param(name) => {
                    if pipeline.param(name).is_none() {
                        let hint = sink.suggest(name, pipeline.params.iter().map(|p| p.name.value.as_str()))
                            .map(|s| format!("; did you mean `params.{s}`?"))
                            .unwrap_or_default();
                        sink.error(pos, format!("`${{{{ params.{name} }}}}`: no param `{name}` is declared{hint}"));
                    }
                }
                Reference::Matrix(axis) => {
                    let known = stage
                        .matrix
                        .as_ref()
                        .is_some_and(|m| m.axes.iter().any(|(a, _)| a.value == *axis));
                    if !known {
                        sink.error(
                            pos,
                            format!("`${{{{ matrix.{axis} }}}}`: stage `{}` has no matrix axis `{axis}`", stage.name.value),
                        );
                    }
                }
                Reference::Stage { name, .. } => match graph.index_of(name) {
                    None => {
                        let hint = sink.suggest(name, graph.stages.iter().map(|s| s.name.value.as_str()))
                            .map(|s| format!("; did you mean `{s}`?"))
                            .unwrap_or_default();
                        sink.error(pos, format!("`${{{{ {reference} }}}}`: there is no stage `{name}`{hint}"));
                    }
                    Some(j) if j == i => sink.error(
                        pos,
                        format!("`${{{{ {reference} }}}}`: stage `{name}` cannot use its own image"),
                    ),
                    // A stage whose kind failed to decode was already reported.
                    Some(j) if graph.stages[j].kind.is_placeholder() => {}
                    Some(j) if !graph.stages[j].kind.produces_image() => sink.error(
                        pos,
                        format!(
                            "`${{{{ {reference} }}}}`: stage `{name}` is a `{}` stage and builds no image (only s2i and b2i stages do)",
                            graph.stages[j].kind.label()
                        ),
                    ),
                    Some(j) if graph.stages[j].matrix.is_some() => sink.error(
                        pos,
                        format!("`${{{{ {reference} }}}}`: stage `{name}` has a matrix, so it builds several images"),
                    ),
                    Some(j) if !graph.depends_on(i, j) => sink.error(
                        pos,
                        format!(
                            "`${{{{ {reference} }}}}`: stage `{}` must need `{name}` (directly or through other stages) to use its image",
                            stage.name.value
                        ),
                    ),
                    Some(_) => {}
                },
                Reference::Git(_) | Reference::Run(_) => {}
            }
        }
    }
}

/// Whether `artifact` (a file path) lies within one of `kept` (paths, directories or globs).
pub fn artifact_covered(kept: &str, artifact: &str) -> bool {
    let kept = kept.trim_end_matches('/');
    if kept == artifact || kept == "." {
        return true;
    }
    if artifact
        .strip_prefix(kept)
        .is_some_and(|rest| rest.starts_with('/'))
    {
        return true;
    }
    globset::GlobBuilder::new(kept)
        .literal_separator(true)
        .build()
        .map(|g| g.compile_matcher().is_match(artifact))
        .unwrap_or(false)
}

fn check_b2i_artifact(graph: &Graph<'_>, i: usize, b2i: &super::model::B2i, sink: &mut Sink) {
    let stage = graph.stages[i];
    let path = &b2i.artifact.value;
    // A needed stage whose kind failed to decode was already reported; its artifacts are unknown.
    if graph.deps[i]
        .iter()
        .any(|&j| graph.stages[j].kind.is_placeholder())
    {
        return;
    }
    let produces = |j: usize| {
        graph.stages[j]
            .artifacts
            .iter()
            .any(|kept| artifact_covered(&kept.value, path))
    };
    if let Some(from) = &b2i.from {
        let Some(j) = graph.index_of(&from.value) else {
            sink.error(
                from.pos,
                format!("b2i `from`: there is no stage `{}`", from.value),
            );
            return;
        };
        if !graph.depends_on(i, j) {
            sink.error(
                from.pos,
                format!(
                    "b2i `from: {}`: stage `{}` must need `{}` to receive its artifacts",
                    from.value, stage.name.value, from.value
                ),
            );
        } else if !produces(j) {
            let kept: Vec<&str> = graph.stages[j]
                .artifacts
                .iter()
                .map(|a| a.value.as_str())
                .collect();
            sink.error(
                b2i.artifact.pos,
                format!(
                    "b2i artifact `{path}` is not among the artifacts stage `{}` keeps ({})",
                    from.value,
                    if kept.is_empty() {
                        "none".to_owned()
                    } else {
                        kept.join(", ")
                    }
                ),
            );
        }
        return;
    }
    let providers: Vec<usize> = graph.deps[i]
        .iter()
        .copied()
        .filter(|&j| produces(j))
        .collect();
    if providers.is_empty() {
        let needed: Vec<&str> = graph.deps[i]
            .iter()
            .map(|&j| graph.stages[j].name.value.as_str())
            .collect();
        sink.error(
            b2i.artifact.pos,
            format!(
                "b2i artifact `{path}` is not produced by any stage `{}` needs ({}); list it under that stage's `artifacts`",
                stage.name.value,
                if needed.is_empty() { "it needs none".to_owned() } else { format!("needs: {}", needed.join(", ")) }
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cel_field_scan_skips_string_literals() {
        assert_eq!(
            cel_fields(
                "params.a == 'params.b' && xparams.c == params.d_1",
                "params"
            ),
            vec!["a", "d_1"]
        );
        assert_eq!(
            cel_fields(r#"matrix.os == "x\\" || matrix.rust"#, "matrix"),
            vec!["os", "rust"]
        );
    }

    #[test]
    fn artifact_paths_cover_files_directories_and_globs() {
        assert!(artifact_covered("target/app", "target/app"));
        assert!(artifact_covered("target/", "target/release/app"));
        assert!(artifact_covered("target/*.jar", "target/app.jar"));
        assert!(!artifact_covered("target/*.jar", "target/lib/app.jar"));
        assert!(!artifact_covered("target/app", "target/application"));
        assert!(!artifact_covered("dist", "target/app"));
    }
}
