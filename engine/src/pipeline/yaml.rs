//! A YAML document as a tree of nodes that remember where they were written.
//!
//! We build our own tree from `saphyr-parser` events instead of using a generic loader so that
//! every node keeps its line and column (semantic errors must point at the right place),
//! duplicate keys are reported instead of silently overwritten, merge keys (`<<`) work, and
//! aliases are expanded under a size bound so a "billion laughs" file cannot exhaust memory.

use std::collections::{HashMap, HashSet};
use std::fmt;

use saphyr_parser::{Event, Parser, ScalarStyle, Span};

/// Deepest nesting accepted. Real pipelines nest a handful of levels; the bound keeps
/// recursive consumers (and `Drop`) far from the stack limit on hostile input.
pub const MAX_DEPTH: usize = 64;
/// Most nodes a document may expand to, aliases included.
pub const MAX_NODES: usize = 200_000;

/// A 1-based line and column, as editors count them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Pos {
    pub line: u32,
    pub col: u32,
}

impl Pos {
    pub fn new(line: u32, col: u32) -> Self {
        Pos { line, col }
    }

    fn from_span(span: &Span) -> Self {
        Pos {
            line: u32::try_from(span.start.line()).unwrap_or(u32::MAX),
            col: u32::try_from(span.start.col() + 1).unwrap_or(u32::MAX),
        }
    }
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub pos: Pos,
    pub value: Value,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Scalar(Scalar),
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Scalar {
    pub text: String,
    /// Plain (unquoted) scalars are resolved by the YAML 1.2 core schema (`true`, `42`, `null`);
    /// quoted and block scalars are always strings.
    pub plain: bool,
}

/// What a scalar means under the YAML 1.2 core schema.
#[derive(Clone, Debug, PartialEq)]
pub enum Resolved<'a> {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(&'a str),
}

impl Scalar {
    pub fn resolve(&self) -> Resolved<'_> {
        if !self.plain {
            return Resolved::Str(&self.text);
        }
        let t = self.text.as_str();
        match t {
            "" | "~" | "null" | "Null" | "NULL" => return Resolved::Null,
            "true" | "True" | "TRUE" => return Resolved::Bool(true),
            "false" | "False" | "FALSE" => return Resolved::Bool(false),
            _ => {}
        }
        if let Some(i) = parse_int(t) {
            return Resolved::Int(i);
        }
        if looks_like_float(t)
            && let Ok(f) = t.parse::<f64>()
        {
            return Resolved::Float(f);
        }
        Resolved::Str(t)
    }
}

fn parse_int(t: &str) -> Option<i64> {
    let (neg, digits) = match t.as_bytes().first()? {
        b'-' => (true, &t[1..]),
        b'+' => (false, &t[1..]),
        _ => (false, t),
    };
    let value = if let Some(hex) = digits.strip_prefix("0x") {
        i64::from_str_radix(hex, 16).ok()?
    } else if let Some(oct) = digits.strip_prefix("0o") {
        i64::from_str_radix(oct, 8).ok()?
    } else if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        digits.parse::<i64>().ok()?
    } else {
        return None;
    };
    Some(if neg { -value } else { value })
}

fn looks_like_float(t: &str) -> bool {
    let body = t.trim_start_matches(['-', '+']);
    matches!(body, ".inf" | ".Inf" | ".INF" | ".nan" | ".NaN" | ".NAN")
        || (body.bytes().any(|b| b.is_ascii_digit())
            && body
                .bytes()
                .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'-' | b'+')))
}

impl Node {
    /// A short name for the node's type, used in "expected X, found Y" messages.
    pub fn type_name(&self) -> &'static str {
        match &self.value {
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
            Value::Scalar(s) => match s.resolve() {
                Resolved::Null => "null",
                Resolved::Bool(_) => "a boolean",
                Resolved::Int(_) => "an integer",
                Resolved::Float(_) => "a number",
                Resolved::Str(_) => "a string",
            },
        }
    }

    pub fn as_scalar(&self) -> Option<&Scalar> {
        match &self.value {
            Value::Scalar(s) => Some(s),
            _ => None,
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self.as_scalar().map(Scalar::resolve), Some(Resolved::Null))
    }

    /// Converts to JSON by the core schema (used to check documents against the JSON Schema).
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match &self.value {
            Value::Scalar(s) => match s.resolve() {
                Resolved::Null => J::Null,
                Resolved::Bool(b) => J::Bool(b),
                Resolved::Int(i) => J::from(i),
                Resolved::Float(f) => serde_json::Number::from_f64(f).map_or(J::Null, J::Number),
                Resolved::Str(s) => J::String(s.to_owned()),
            },
            Value::Seq(items) => J::Array(items.iter().map(Node::to_json).collect()),
            Value::Map(entries) => J::Object(
                entries
                    .iter()
                    .map(|(k, v)| (key_text(k), v.to_json()))
                    .collect(),
            ),
        }
    }
}

fn key_text(node: &Node) -> String {
    match &node.value {
        Value::Scalar(s) => s.text.clone(),
        _ => String::from("<complex key>"),
    }
}

/// A syntax error (or a structural one such as a duplicate key) with its position.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct YamlError {
    pub pos: Pos,
    pub message: String,
}

/// Parses one YAML document. `Ok(None)` means the file holds no document at all.
///
/// Duplicate keys do not stop the parse: the document is returned together with them so the
/// caller can report every problem at once. Syntax errors do stop it (the parser cannot
/// resynchronise), and come back as the first error in `Err`; [`syntax_errors`] finds the
/// others it can.
pub fn parse(text: &str) -> Result<(Option<Node>, Vec<YamlError>), YamlError> {
    let mut builder = Builder::default();
    for item in Parser::new_from_str(text) {
        let (event, span) = item.map_err(|e| {
            let pos = Pos {
                line: u32::try_from(e.marker().line()).unwrap_or(u32::MAX),
                col: u32::try_from(e.marker().col() + 1).unwrap_or(u32::MAX),
            };
            YamlError {
                pos,
                message: syntax_message(text, pos, e.info()),
            }
        })?;
        builder.event(event, &span)?;
    }
    Ok((builder.document, builder.warnings))
}

/// Most syntax errors reported for one file; past that, fixing the first ones comes first.
pub const MAX_SYNTAX_ERRORS: usize = 20;

/// The first syntax error the parser meets in `text`, if any.
fn first_syntax_error(text: &str) -> Option<YamlError> {
    for item in Parser::new_from_str(text) {
        if let Err(e) = item {
            let mut pos = Pos {
                line: u32::try_from(e.marker().line()).unwrap_or(u32::MAX),
                col: u32::try_from(e.marker().col() + 1).unwrap_or(u32::MAX),
            };
            if e.info().contains("tab") {
                pos = tab_after(text, pos).unwrap_or(pos);
            }
            return Some(YamlError {
                pos,
                message: syntax_message(text, pos, e.info()),
            });
        }
    }
    None
}

/// The tab an error about a tab is about: the first on the error's line, else on the next
/// one. The parser reports a tab just after it, or where the scalar before it ended.
fn tab_after(text: &str, pos: Pos) -> Option<Pos> {
    let first = usize::try_from(pos.line).ok()?.checked_sub(1)?;
    for (i, line) in text.split('\n').enumerate().skip(first).take(2) {
        if let Some(col) = line.chars().position(|c| c == '\t') {
            return Some(Pos {
                line: u32::try_from(i + 1).ok()?,
                col: u32::try_from(col + 1).ok()?,
            });
        }
    }
    None
}

/// The parser's words, with what they usually mean in a pipeline file and what to do.
fn syntax_message(text: &str, pos: Pos, info: &str) -> String {
    let at = text
        .split('\n')
        .nth(pos.line.saturating_sub(1) as usize)
        .and_then(|line| line.chars().nth(pos.col.saturating_sub(1) as usize));
    let hint = if at == Some('\t') || info.contains("found a tab") {
        "a tab: YAML indents with spaces only"
    } else if info.contains("mapping values are not allowed") {
        "a value holding `: ` must be quoted (`\"echo a: b\"`), or this line is indented wrongly"
    } else if info.contains("did not find expected key")
        || info.contains("did not find expected '-' indicator")
    {
        "check this line's indentation against the lines above it"
    } else if info.contains("cannot start any token") {
        "quote a value that starts with `@`, `` ` `` or `%`"
    } else if info.contains("expected ',' or ']'") {
        "a `[` list is not closed"
    } else if info.contains("expected ',' or '}'") {
        "a `{` mapping is not closed"
    } else if info.contains("quoted scalar, found unexpected end of stream") {
        "a quoted string is not closed"
    } else if info.contains("indentation in quoted scalar") {
        "a quoted string is not closed, or its next line is indented less than it"
    } else if info.contains("illegal placement of ':'") {
        "an earlier `[` or `{` is not closed, or a `:` here needs quoting"
    } else {
        ""
    };
    if hint.is_empty() {
        format!("YAML syntax error: {info}")
    } else {
        format!("YAML syntax error: {info} ({hint})")
    }
}

/// Whether the parser can be brought past an error by skipping its line: not when the error
/// is about something spanning lines (an open list, mapping or quote), which would make every
/// later line look wrong.
fn skippable(error: &YamlError) -> bool {
    // The parser's own words, before the hint in parentheses.
    let info = error.message.split(" (").next().unwrap_or_default();
    // `:` misplaced is what every line inside an unclosed `[` looks like.
    ![
        "flow",
        "quoted",
        "end of stream",
        "block scalar",
        "document",
        "illegal placement",
    ]
    .iter()
    .any(|w| info.contains(w))
}

/// Every syntax error of `text` the parser can be brought to report, in order. The parser
/// stops at its first error and cannot resynchronise, so each further one is found by parsing
/// again with the lines of the errors before it blanked (the numbering stays). When that
/// cannot work, the last error says the parser cannot continue past it.
pub fn syntax_errors(text: &str) -> Vec<YamlError> {
    const STOPPED: &str =
        " (the YAML parser cannot continue past this error: fix it to see any problems after it)";
    let mut lines: Vec<&str> = text.split('\n').collect();
    let mut errors: Vec<YamlError> = Vec::new();
    let last_line = lines
        .iter()
        .rposition(|l| !l.trim().is_empty())
        .map_or(0, |i| i + 1);
    while let Some(error) = first_syntax_error(&lines.join("\n")) {
        let line = error.pos.line as usize;
        let progressed = errors.last().is_none_or(|e| error.pos.line > e.pos.line);
        if !progressed {
            if let Some(previous) = errors.last_mut() {
                previous.message.push_str(STOPPED);
            }
            break;
        }
        if errors.len() + 1 == MAX_SYNTAX_ERRORS {
            errors.push(error);
            if let Some(last) = errors.last_mut() {
                last.message.push_str(&format!(
                    " (the first {MAX_SYNTAX_ERRORS} syntax errors are shown: fix them to see any after)"
                ));
            }
            break;
        }
        let stop = !skippable(&error) || line == 0;
        errors.push(error);
        if stop {
            if line < last_line
                && let Some(last) = errors.last_mut()
            {
                last.message.push_str(STOPPED);
            }
            break;
        }
        match lines.get_mut(line - 1) {
            Some(l) => *l = "",
            None => break,
        }
    }
    errors
}

enum Frame {
    Seq {
        pos: Pos,
        anchor: usize,
        items: Vec<Node>,
    },
    Map {
        pos: Pos,
        anchor: usize,
        entries: Vec<(Node, Node)>,
        pending_key: Option<Node>,
        /// Indices of entries that came from a merge key; keys written explicitly replace them.
        merged: HashSet<usize>,
        /// Entry index by key text: duplicate checks stay O(1) however many keys a mapping has.
        index: HashMap<String, usize>,
    },
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    anchors: HashMap<usize, Node>,
    document: Option<Node>,
    documents: usize,
    nodes: usize,
    warnings: Vec<YamlError>,
}

impl Builder {
    fn event(&mut self, event: Event<'_>, span: &Span) -> Result<(), YamlError> {
        let pos = Pos::from_span(span);
        match event {
            Event::DocumentStart(_) => {
                self.documents += 1;
                if self.documents > 1 {
                    return Err(YamlError {
                        pos,
                        message: "a pipeline file holds one YAML document; found a second one"
                            .into(),
                    });
                }
            }
            Event::Scalar(text, style, anchor, _tag) => {
                let node = Node {
                    pos,
                    value: Value::Scalar(Scalar {
                        text: text.into_owned(),
                        plain: style == ScalarStyle::Plain,
                    }),
                };
                self.finish(node, anchor)?;
            }
            Event::Alias(id) => {
                let target = self.anchors.get(&id).ok_or_else(|| YamlError {
                    pos,
                    message: "alias refers to an unknown anchor".into(),
                })?;
                // Count before cloning, so an alias bomb fails before it allocates.
                self.nodes += count_nodes(target);
                if self.nodes > MAX_NODES {
                    return Err(YamlError {
                        pos,
                        message: format!("document expands to more than {MAX_NODES} nodes"),
                    });
                }
                let mut node = target.clone();
                node.pos = pos;
                self.finish(node, 0)?;
            }
            Event::SequenceStart(anchor, _) => {
                self.push(
                    Frame::Seq {
                        pos,
                        anchor,
                        items: Vec::new(),
                    },
                    pos,
                )?;
            }
            Event::MappingStart(anchor, _) => {
                self.push(
                    Frame::Map {
                        pos,
                        anchor,
                        entries: Vec::new(),
                        pending_key: None,
                        merged: HashSet::new(),
                        index: HashMap::new(),
                    },
                    pos,
                )?;
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let (node, anchor) = match self.stack.pop() {
                    Some(Frame::Seq { pos, anchor, items }) => (
                        Node {
                            pos,
                            value: Value::Seq(items),
                        },
                        anchor,
                    ),
                    Some(Frame::Map {
                        pos,
                        anchor,
                        entries,
                        ..
                    }) => (
                        Node {
                            pos,
                            value: Value::Map(entries),
                        },
                        anchor,
                    ),
                    None => return Ok(()),
                };
                self.finish(node, anchor)?;
            }
            Event::Nothing | Event::StreamStart | Event::StreamEnd | Event::DocumentEnd => {}
        }
        Ok(())
    }

    fn push(&mut self, frame: Frame, pos: Pos) -> Result<(), YamlError> {
        if self.stack.len() >= MAX_DEPTH {
            return Err(YamlError {
                pos,
                message: format!("nesting deeper than {MAX_DEPTH} levels"),
            });
        }
        self.stack.push(frame);
        Ok(())
    }

    /// Places a completed node into its parent (or makes it the document).
    fn finish(&mut self, node: Node, anchor: usize) -> Result<(), YamlError> {
        self.nodes += 1;
        if self.nodes > MAX_NODES {
            return Err(YamlError {
                pos: node.pos,
                message: format!("document expands to more than {MAX_NODES} nodes"),
            });
        }
        if anchor != 0 {
            self.anchors.insert(anchor, node.clone());
        }
        match self.stack.last_mut() {
            None => self.document = Some(node),
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map {
                entries,
                pending_key,
                merged,
                index,
                ..
            }) => match pending_key.take() {
                None => *pending_key = Some(node),
                Some(key) => {
                    let existing = key
                        .as_scalar()
                        .and_then(|s| find_key(entries, index, &s.text));
                    if is_merge_key(&key) {
                        merge_into(entries, merged, index, &node);
                    } else if let Some(i) = existing.filter(|i| merged.contains(i)) {
                        entries[i] = (key, node);
                        merged.remove(&i);
                    } else if let Some(i) = existing {
                        self.warnings.push(YamlError {
                            pos: key.pos,
                            message: format!(
                                "duplicate key `{}` (first defined at line {})",
                                key_text(&key),
                                entries[i].0.pos.line
                            ),
                        });
                    } else {
                        entries.push((key, node));
                        index_last(entries, index);
                    }
                }
            },
        }
        Ok(())
    }
}

fn count_nodes(node: &Node) -> usize {
    match &node.value {
        Value::Scalar(_) => 1,
        Value::Seq(items) => 1 + items.iter().map(count_nodes).sum::<usize>(),
        Value::Map(entries) => {
            1 + entries
                .iter()
                .map(|(k, v)| count_nodes(k) + count_nodes(v))
                .sum::<usize>()
        }
    }
}

fn is_merge_key(key: &Node) -> bool {
    matches!(&key.value, Value::Scalar(s) if s.plain && s.text == "<<")
}

/// `<<: *base` (or a list of them): keys of the merged mappings that the mapping does not set
/// itself are added, as YAML 1.1 merge keys do. Keys set before or after the merge win.
/// Mappings up to this size are searched linearly; larger ones get a key index, so duplicate
/// checks stay cheap for the common small mapping and linear (not quadratic) for huge ones.
const INDEX_FROM: usize = 16;

fn find_key(entries: &[(Node, Node)], index: &HashMap<String, usize>, key: &str) -> Option<usize> {
    if entries.len() < INDEX_FROM {
        entries
            .iter()
            .position(|(k, _)| k.as_scalar().is_some_and(|s| s.text == key))
    } else {
        index.get(key).copied()
    }
}

/// Keeps the index in step after a push (building it once the mapping reaches `INDEX_FROM`).
fn index_last(entries: &[(Node, Node)], index: &mut HashMap<String, usize>) {
    if entries.len() < INDEX_FROM {
        return;
    }
    let from = if index.is_empty() {
        0
    } else {
        entries.len() - 1
    };
    for (i, (k, _)) in entries.iter().enumerate().skip(from) {
        if let Some(s) = k.as_scalar() {
            index.entry(s.text.clone()).or_insert(i);
        }
    }
}

fn merge_into(
    entries: &mut Vec<(Node, Node)>,
    merged_indices: &mut HashSet<usize>,
    index: &mut HashMap<String, usize>,
    value: &Node,
) {
    let sources: Vec<&Node> = match &value.value {
        Value::Seq(items) => items.iter().collect(),
        _ => vec![value],
    };
    for source in sources {
        if let Value::Map(merged) = &source.value {
            for (k, v) in merged {
                let Some(text) = k.as_scalar().map(|s| s.text.as_str()) else {
                    continue;
                };
                if find_key(entries, index, text).is_none() {
                    merged_indices.insert(entries.len());
                    entries.push((k.clone(), v.clone()));
                    index_last(entries, index);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(text: &str) -> Node {
        parse(text).expect("parses").0.expect("has a document")
    }

    #[test]
    fn nodes_carry_one_based_line_and_column() {
        let node = doc("name: x\nstages:\n  - name: build\n");
        let Value::Map(entries) = &node.value else {
            panic!("not a map")
        };
        assert_eq!(entries[0].0.pos, Pos::new(1, 1));
        assert_eq!(entries[0].1.pos, Pos::new(1, 7));
        let Value::Seq(items) = &entries[1].1.value else {
            panic!("not a seq")
        };
        assert_eq!(items[0].pos, Pos::new(3, 5));
    }

    #[test]
    fn duplicate_keys_are_reported_not_overwritten() {
        let (node, warnings) = parse("a: 1\nb: 2\na: 3\n").expect("parses");
        assert_eq!(warnings.len(), 1);
        assert_eq!(warnings[0].pos, Pos::new(3, 1));
        assert!(warnings[0].message.contains("first defined at line 1"));
        assert_eq!(
            node.expect("doc").to_json(),
            serde_json::json!({"a": 1, "b": 2})
        );
    }

    #[test]
    fn duplicates_are_found_in_large_mappings_too() {
        let mut text: String = (0..40).map(|i| format!("k{i}: {i}\n")).collect();
        text.push_str("k3: again\nk39: again\n");
        let (node, warnings) = parse(&text).expect("parses");
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings[0].message.contains("`k3`"));
        assert_eq!(node.expect("doc").to_json()["k39"], serde_json::json!(39));
    }

    #[test]
    fn merge_keys_fill_in_missing_entries() {
        let node = doc("base: &b {x: 1, y: 2}\nderived:\n  <<: *b\n  y: 3\n");
        assert_eq!(
            node.to_json()["derived"],
            serde_json::json!({"x": 1, "y": 3})
        );
    }

    #[test]
    fn core_schema_resolution_respects_quotes() {
        let node = doc("a: true\nb: 'true'\nc: 1.80\nd: 0x1f\ne: ~\nf: v1\n");
        assert_eq!(
            node.to_json(),
            serde_json::json!({"a": true, "b": "true", "c": 1.8, "d": 31, "e": null, "f": "v1"})
        );
    }

    #[test]
    fn syntax_errors_have_a_position() {
        let err = parse("a: [1, 2\nb: 3\n").expect_err("unterminated flow sequence");
        assert!(err.pos.line >= 1 && err.pos.col >= 1, "{err:?}");
        assert!(err.message.starts_with("YAML syntax error"));
    }

    #[test]
    fn syntax_errors_go_on_past_a_line_they_can_skip_and_say_when_they_cannot() {
        let errors = syntax_errors("a: b: c\nd: 1\ne: f: g\n");
        let lines: Vec<u32> = errors.iter().map(|e| e.pos.line).collect();
        assert_eq!(lines, [1, 3], "{errors:?}");
        assert!(
            errors
                .iter()
                .all(|e| !e.message.contains("cannot continue"))
        );

        let stuck = syntax_errors("a: \"open\nb: 1\nc: 2\n");
        assert_eq!(stuck.len(), 1, "{stuck:?}");
        assert!(
            stuck[0].message.contains("cannot continue past this error"),
            "{stuck:?}"
        );

        let tab = syntax_errors("a:\n  b: 1\n\tc: 2\n");
        assert_eq!(tab.first().map(|e| e.pos), Some(Pos::new(3, 1)), "{tab:?}");
        assert!(syntax_errors("a: 1\n").is_empty());
    }

    #[test]
    fn alias_bombs_are_bounded() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..12 {
            let p = i - 1;
            text.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        let err = parse(&text).expect_err("too large");
        assert!(err.message.contains("more than"), "{}", err.message);
    }

    #[test]
    fn deep_nesting_is_refused() {
        let text = "[".repeat(MAX_DEPTH + 1);
        let err = parse(&text).expect_err("too deep");
        assert!(
            err.message.contains("nesting deeper than"),
            "{}",
            err.message
        );
        // Far deeper input is stopped by the parser's own recursion limit.
        assert!(parse(&"[".repeat(100_000)).is_err());
    }

    #[test]
    fn second_document_is_an_error() {
        let err = parse("a: 1\n---\nb: 2\n").expect_err("two docs");
        assert_eq!(err.pos.line, 2);
    }
}
