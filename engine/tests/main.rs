//! The engine's integration tests (its public library and the `gantry` binary), one module
//! per area, in one test binary.

mod architecture;
mod cli_validate;
mod docs_examples;
mod embedded_postgres;
mod schema;
mod webhook_payloads;
