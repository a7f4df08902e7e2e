//! Log lines from a step's pipes to the engine: split and sanitised ([`line`]), secrets masked
//! ([`mask`]), numbered and held until acknowledged ([`queue`]), sent in batches ([`sender`]).
//!
//! Line numbers run across the whole stage attempt, starting after the lines the engine already
//! has, so the engine can store and deduplicate them without knowing about steps.

pub mod line;
pub mod mask;
pub mod queue;
pub mod reader;
pub mod sender;

pub use mask::Masker;
pub use queue::LogQueue;
pub use reader::{log_system, read_into_queue};
pub use sender::{LogError, send_logs};
