//! Stand-ins for the Tailscale and TinyMDM HTTP APIs on 127.0.0.1, for tests,
//! demos and benchmarks of fleetsync: stateful simulators ([`TailscaleSim`],
//! [`TinymdmSim`]) with a request log and fault injection, and a seeded fleet
//! generator ([`fleet::generate`]). Independent of the `fleetsync` crate, so
//! they check its clients against the documented API rather than against
//! themselves.
//!
//! Each simulator also serves admin routes under `/_sim/` (not logged, not
//! authenticated, not rate limited) for use from other processes:
//! `GET|DELETE /_sim/requests`, `GET|POST|DELETE /_sim/faults`,
//! `GET|POST /_sim/devices`, `GET|DELETE /_sim/devices/{id}`, `GET /_sim/count`
//! and `POST /_sim/churn`; Tailscale adds `POST /_sim/devices/{id}/presence`
//! and `POST /_sim/expire-tokens`, TinyMDM `POST /_sim/devices/{id}/last_sync`
//! and `POST /_sim/rate-limit`.

pub mod fleet;
mod harness;
pub mod model;
pub mod tailscale;
pub mod tinymdm;

pub use fleet::{Fleet, FleetSpec, FleetSummary, TsKind};
pub use harness::{Fault, PendingFault, RecordedRequest, Route};
pub use model::{Fields, TailscaleDevice, TinymdmApp, TinymdmDevice, TinymdmGroup};
pub use tailscale::{OAuthClient, TailscaleSim, TailscaleSimConfig};
pub use tinymdm::{TinymdmSim, TinymdmSimConfig};
