//! Every complete pipeline in the format reference (docs/pipeline-format.md) must pass
//! validation, so the documentation cannot drift from the parser.
//!
//! A ```yaml block counts as a complete pipeline when it has a line starting with `name:` and
//! a line starting with `stages:` (both top-level keys); other ```yaml blocks are fragments and
//! are not checked.

use std::path::Path;

/// A fenced ```yaml block and the line (1-based) of its first content line.
struct Block {
    line: usize,
    text: String,
}

fn yaml_blocks(markdown: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut current: Option<Block> = None;
    for (i, line) in markdown.lines().enumerate() {
        let fence = line.trim_end();
        match current.as_mut() {
            None if fence == "```yaml" => {
                current = Some(Block {
                    line: i + 2,
                    text: String::new(),
                });
            }
            None => {}
            Some(_) if fence == "```" => blocks.extend(current.take()),
            Some(block) => {
                block.text.push_str(line);
                block.text.push('\n');
            }
        }
    }
    if let Some(block) = current {
        panic!(
            "docs/pipeline-format.md: the ```yaml block starting at line {} is never closed",
            block.line - 1
        );
    }
    blocks
}

fn is_complete_pipeline(text: &str) -> bool {
    text.lines().any(|l| l.starts_with("name:")) && text.lines().any(|l| l.starts_with("stages:"))
}

#[test]
fn complete_pipelines_in_the_format_reference_are_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/pipeline-format.md");
    let markdown = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));

    let pipelines: Vec<Block> = yaml_blocks(&markdown)
        .into_iter()
        .filter(|b| is_complete_pipeline(&b.text))
        .collect();
    assert!(
        !pipelines.is_empty(),
        "found no ```yaml block with top-level `name:` and `stages:` in {}",
        path.display()
    );

    let mut failures = Vec::new();
    for block in &pipelines {
        // Blank lines in front make the reported positions lines of the Markdown file.
        let padded = format!("{}{}", "\n".repeat(block.line - 1), block.text);
        if let Err(report) = gantry::pipeline::parse("docs/pipeline-format.md", &padded) {
            failures.push(format!(
                "block at line {}:\n{}--- report ---\n{report}\n",
                block.line, block.text
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} example pipelines in docs/pipeline-format.md do not validate:\n\n{}",
        failures.len(),
        pipelines.len(),
        failures.join("\n")
    );
}

#[test]
fn block_extraction_finds_only_yaml_fences() {
    let markdown = "text\n```yaml\nname: a\nstages: []\n```\n```sh\nname: b\nstages:\n```\n```yaml\nenv: {}\n```\n";
    let blocks = yaml_blocks(markdown);
    assert_eq!(blocks.len(), 2);
    assert_eq!(blocks[0].line, 3);
    assert!(is_complete_pipeline(&blocks[0].text));
    assert!(!is_complete_pipeline(&blocks[1].text));
}
