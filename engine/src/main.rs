use clap::Parser;

fn main() -> std::process::ExitCode {
    gantry::cli::run(gantry::cli::Cli::parse())
}
