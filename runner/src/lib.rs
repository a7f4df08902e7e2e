//! `gantry-runner`: executes one stage's steps wherever the stage runs (a local process or the
//! container of a Kubernetes Job) and streams logs and results back to the engine.
//!
//! The engine depends on this library for the wire types in [`wire`]; never the other way round.
//! [`stage::run`] is the whole runner; the other modules are its parts, each usable on its own.

pub mod artifact;
pub mod backoff;
pub mod checkout;
pub mod config;
pub mod engine;
pub mod exit;
pub mod heartbeat;
pub mod image;
pub mod isolation;
pub mod logs;
pub mod process;
pub mod source_layer;
pub mod stage;
pub mod step;
pub mod stop;
pub mod wire;
