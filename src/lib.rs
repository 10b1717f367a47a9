//! Ferrostack: a GPU cluster manager for AI models, in one binary.
//!
//! Modules in layering order, bottom first (see ARCHITECTURE.md; a lower layer never imports a
//! higher one, and `tests/it/tidy.rs` checks it).

pub mod api;
pub mod backends;
pub mod cli;
pub mod client;
pub mod config;
pub mod control;
pub mod db;
pub mod estimate;
pub mod gateway;
pub mod placement;
pub mod server;
pub mod worker;
