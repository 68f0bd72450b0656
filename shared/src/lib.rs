//! fleetsync: an inventory of every device in a Tailscale tailnet and a TinyMDM
//! account, with history, and safe pruning of inactive Tailscale devices.
//!
//! The four steps (`steps::sync_tailscale`, `steps::sync_tinymdm`,
//! `steps::plan_prune`, `steps::prune_devices`) are plain async functions over a
//! `Deps` bundle of ports (`Store`, `TailscaleApi`, `TinymdmApi`). The Lambda
//! functions and the `fleetsync` CLI call the same functions.

pub mod config;
pub mod error;
pub mod http;
pub mod model;
pub mod secrets;
pub mod store;

pub use error::StepError;
