//! Gantry: a CI/CD pipeline engine. This library holds everything the `gantry` binary does,
//! so tests and benchmarks reach it directly.

// The OpenAPI document is one large `json!` literal.
#![recursion_limit = "256"]

pub mod access;
pub mod artifact;
pub mod attempt;
pub mod cli;
pub mod client;
pub mod config;
pub mod deploy;
pub mod engine;
pub mod executor;
pub mod http;
pub mod images;
pub mod metrics;
pub mod oneshot;
pub mod pipeline;
pub mod run;
pub mod scheduler;
pub mod secret;
pub mod server;
pub mod spec;
pub mod store;
pub mod token;
pub mod ui;
pub mod webhook;
