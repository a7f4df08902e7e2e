//! Gantry: a CI/CD pipeline engine. This library holds everything the `gantry` binary does,
//! so tests and benchmarks reach it directly.

pub mod cli;
pub mod pipeline;
