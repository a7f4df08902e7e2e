//! The `gantry` command line.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "gantry", version, about = "Gantry CI/CD engine")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Check pipeline files and print every problem as FILE:LINE:COL: message.
    Validate {
        /// Pipeline files (e.g. .gantry.yaml).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Also print each valid file's plan (stage instances and what they need).
        #[arg(long)]
        plan: bool,
    },
    /// Print the JSON Schema of the pipeline format (for editors' YAML language servers).
    Schema,
}

pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Validate { files, plan } => validate(&files, plan),
        Command::Schema => {
            let schema = crate::pipeline::schema::schema();
            let text = serde_json::to_string_pretty(&schema).unwrap_or_default();
            // Ignore write errors: `gantry schema | head` closing the pipe is not a failure.
            let _ = writeln!(std::io::stdout(), "{text}");
            ExitCode::SUCCESS
        }
    }
}

fn validate(files: &[PathBuf], show_plan: bool) -> ExitCode {
    let mut ok = true;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for path in files {
        let file = path.display().to_string();
        let text = match std::fs::read(path) {
            Ok(bytes) => match String::from_utf8(bytes) {
                Ok(text) => text,
                Err(e) => {
                    ok = false;
                    let _ = writeln!(
                        out,
                        "{file}:1:1: the file is not UTF-8 text (byte {})",
                        e.utf8_error().valid_up_to()
                    );
                    continue;
                }
            },
            Err(e) => {
                ok = false;
                let _ = writeln!(out, "{file}: cannot read: {e}");
                continue;
            }
        };
        match crate::pipeline::load(&file, &text) {
            Ok(plan) => {
                if show_plan {
                    let _ = writeln!(out, "{file}: ok, {} stage instance(s)", plan.stages.len());
                    for s in &plan.stages {
                        let needs: Vec<&str> = s
                            .needs
                            .iter()
                            .map(|&n| plan.stages[n].key.as_str())
                            .collect();
                        let _ = writeln!(
                            out,
                            "  {}{} <- [{}]",
                            s.key,
                            if s.finally { " (finally)" } else { "" },
                            needs.join(", ")
                        );
                    }
                }
            }
            Err(report) => {
                ok = false;
                for line in report.lines() {
                    let _ = writeln!(out, "{line}");
                }
            }
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
