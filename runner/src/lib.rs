//! `gantry-runner`: executes one stage's steps wherever the stage runs (a local process or the
//! container of a Kubernetes Job) and streams logs and results back to the engine.
//!
//! The engine depends on this library for the wire types in [`wire`]; never the other way round.

pub mod wire;
