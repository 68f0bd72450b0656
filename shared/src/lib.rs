//! fleetsync: an inventory of every device in a Tailscale tailnet and a TinyMDM
//! account, with history, and safe pruning of inactive Tailscale devices.
//!
//! The four steps (`steps::sync_tailscale`, `steps::sync_tinymdm`,
//! `steps::plan_prune`, `steps::prune_devices`) are plain async functions over a
//! `Deps` bundle of ports (`Store`, `TailscaleApi`, `TinymdmApi`). The Lambda
//! functions and the `fleetsync` CLI call the same functions.

pub mod config;
pub mod deps;
pub mod error;
pub mod http;
pub mod json_split;
#[cfg(feature = "lambda")]
pub mod lambda;
pub mod lenient;
pub mod model;
pub mod policy;
pub mod secrets;
pub mod steps;
pub mod store;
pub mod sync;
pub mod tailscale;
pub mod tinymdm;

pub use deps::{Deps, LambdaConfig, StepName};
pub use error::StepError;
