//! The engine's module picture, checked: which module imports which, read from the source
//! (`crate::a::b` paths, and `super::x` within a directory module), one node per top-level
//! module or per submodule of a directory module. The core knows nothing of HTTP, the web UI,
//! start-up or a particular executor, and no imports go round in a circle but the two
//! documented in docs/development.md.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn source_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("engine/src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            source_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `webhook/intake.rs` → `webhook::intake`, `webhook/mod.rs` → `webhook`, `run.rs` → `run`.
fn node_of(relative: &Path) -> String {
    let mut parts: Vec<String> = relative
        .with_extension("")
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts.truncate(2);
    parts.join("::")
}

/// The source without comments and without its `#[cfg(test)]` tail.
fn code_of(text: &str) -> String {
    let code = text.split("#[cfg(test)]").next().unwrap_or_default();
    code.lines()
        .map(|line| match line.find("//") {
            Some(i) => &line[..i],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every `prefix` path in `code`, as its first two segments.
fn paths_after<'a>(code: &'a str, prefix: &str) -> Vec<(&'a str, Option<&'a str>)> {
    let ident = |s: &'a str| {
        let end = s
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(s.len());
        &s[..end]
    };
    code.match_indices(prefix)
        .map(|(i, _)| {
            let rest = &code[i + prefix.len()..];
            let first = ident(rest);
            let second = rest[first.len()..].strip_prefix("::").map(ident);
            (first, second.filter(|s| !s.is_empty()))
        })
        .filter(|(first, _)| !first.is_empty())
        .collect()
}

fn module_graph() -> BTreeMap<String, BTreeSet<String>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    source_files(&root, &mut files);
    let mut sources = Vec::new();
    for file in &files {
        let relative = file.strip_prefix(&root).expect("under src");
        if relative == Path::new("lib.rs") || relative == Path::new("main.rs") {
            continue;
        }
        let text = std::fs::read_to_string(file).expect("read");
        sources.push((node_of(relative), code_of(&text)));
    }
    let nodes: BTreeSet<String> = sources.iter().map(|(n, _)| n.clone()).collect();
    let resolve = |first: &str, second: Option<&str>| -> Option<String> {
        if let Some(second) = second {
            let sub = format!("{first}::{second}");
            if nodes.contains(&sub) {
                return Some(sub);
            }
        }
        nodes.contains(first).then(|| first.to_owned())
    };
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (node, code) in &sources {
        let mut targets = BTreeSet::new();
        for (first, second) in paths_after(code, "crate::") {
            targets.extend(resolve(first, second));
        }
        // `super::x` inside a directory module names a sibling (or the directory's own mod.rs).
        if let Some((top, _)) = node.split_once("::") {
            for (first, _) in paths_after(code, "super::") {
                targets.extend(resolve(top, Some(first)).or_else(|| resolve(top, None)));
            }
        }
        targets.remove(node);
        edges.entry(node.clone()).or_default().extend(targets);
    }
    edges
}

/// The strongly connected components with more than one module (Tarjan).
fn cycles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<BTreeSet<String>> {
    struct State<'a> {
        edges: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        found: Vec<BTreeSet<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a str) {
        let n = s.index.len();
        s.index.insert(v, n);
        s.low.insert(v, n);
        s.stack.push(v);
        for w in s.edges.get(v).into_iter().flatten() {
            let w = w.as_str();
            if !s.index.contains_key(w) {
                visit(s, w);
                let low = s.low[v].min(s.low[w]);
                s.low.insert(v, low);
            } else if s.stack.contains(&w) {
                let low = s.low[v].min(s.index[w]);
                s.low.insert(v, low);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = BTreeSet::new();
            while let Some(w) = s.stack.pop() {
                component.insert(w.to_owned());
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                s.found.push(component);
            }
        }
    }
    let mut state = State {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        found: Vec::new(),
    };
    for v in edges.keys() {
        if !state.index.contains_key(v.as_str()) {
            visit(&mut state, v);
        }
    }
    state.found
}

#[test]
fn the_core_knows_nothing_of_http_the_ui_start_up_or_a_particular_executor() {
    let edges = module_graph();
    let core = [
        "store",
        "pipeline",
        "engine",
        "config",
        "run",
        "scheduler",
        "attempt",
        "artifact",
        "spec",
        "deploy",
        "webhook",
        "metrics",
        "access",
        "secret",
        "token",
        "images",
    ];
    let above = ["http", "ui", "server", "cli", "client", "oneshot"];
    let specific = ["executor::local", "executor::kubernetes", "executor::steps"];
    let mut upward = Vec::new();
    for (from, targets) in &edges {
        let top = from.split("::").next().unwrap_or_default();
        if !core.contains(&top) {
            continue;
        }
        for to in targets {
            let to_top = to.split("::").next().unwrap_or_default();
            if above.contains(&to_top) || (top != "executor" && specific.contains(&to.as_str())) {
                upward.push(format!("{from} -> {to}"));
            }
        }
    }
    // Configuration names the cluster a Kubernetes executor connects to: data, not behaviour.
    upward.retain(|e| e != "config -> executor::kubernetes");
    assert!(upward.is_empty(), "upward imports: {upward:#?}");
    for (front, other) in [("http", "ui"), ("ui", "server"), ("http", "server")] {
        for (from, targets) in &edges {
            if from.split("::").next() == Some(front) {
                assert!(
                    !targets.iter().any(|t| t.split("::").next() == Some(other)),
                    "{from} imports {other}: {targets:?}"
                );
            }
        }
    }
}

#[test]
fn no_imports_go_round_in_a_circle_but_the_documented_ones() {
    let found = cycles(&module_graph());
    // Documented in docs/development.md ("The module picture"): the pipeline format's model
    // and the expressions it holds, and its planner and validator; the command line and the
    // commands it dispatches.
    let known: Vec<BTreeSet<String>> = [
        &[
            "pipeline::condition",
            "pipeline::model",
            "pipeline::template",
        ][..],
        &["pipeline::plan", "pipeline::validate"],
        &["cli", "client::commands", "oneshot"],
    ]
    .iter()
    .map(|c| c.iter().map(|s| (*s).to_owned()).collect())
    .collect();
    let unexpected: Vec<_> = found.iter().filter(|c| !known.contains(c)).collect();
    assert!(unexpected.is_empty(), "import cycles: {unexpected:#?}");
}

#[test]
fn the_checker_reads_the_imports_it_is_meant_to() {
    let edges = module_graph();
    let of = |node: &str| edges.get(node).cloned().unwrap_or_default();
    // Known imports: `crate::` paths, a submodule, and `super::` within a directory module.
    assert!(
        of("http::runner").contains("attempt"),
        "{:?}",
        of("http::runner")
    );
    assert!(of("webhook::process").contains("webhook::source"));
    assert!(
        of("webhook::process").contains("store::deliveries")
            || of("webhook::process").contains("store")
    );
    let mut with_cycle = BTreeMap::new();
    with_cycle.insert("a".to_owned(), BTreeSet::from(["b".to_owned()]));
    with_cycle.insert("b".to_owned(), BTreeSet::from(["a".to_owned()]));
    assert_eq!(cycles(&with_cycle).len(), 1, "a cycle is found");
}
