//! sync-tailscale: lists every device of the tailnet with the read-only OAuth
//! client and stores the snapshot (current state, history of changes, run record).

use crate::deps::Deps;
use crate::error::StepError;
use crate::model::Source;
use crate::steps::{RunFrame, non_empty};
use crate::sync::Observed;
use crate::tailscale::{self, Device};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tracing::{info, instrument};

/// Event of sync-tailscale.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SyncTailscaleInput {
    /// Must match the tailnet of the read client if given.
    #[serde(default)]
    pub tailnet: Option<String>,
    /// A UUIDv7 to reuse (a retry of the same run writes nothing twice).
    #[serde(default)]
    pub run_id: Option<String>,
}

/// Result of sync-tailscale.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct SyncTailscaleOutput {
    pub source: Source,
    pub tailnet: String,
    pub run_id: String,
    pub synced_at: DateTime<Utc>,
    pub devices: u64,
    pub added: u64,
    pub changed: u64,
    pub removed: u64,
    pub unchanged: u64,
    pub invalid: u64,
}

/// A listed device as the diff sees it.
pub fn observe(d: Device) -> Observed {
    Observed {
        attrs: d.attrs(),
        device_id: d.node_id,
        name: d.hostname,
        last_seen: d.last_seen,
        connected: d.connected_to_control,
        fingerprint: d.fingerprint,
        raw: d.raw,
    }
}

#[instrument(name = "sync_tailscale", skip_all, fields(run_id))]
pub async fn run(deps: &Deps, input: SyncTailscaleInput) -> Result<SyncTailscaleOutput, StepError> {
    non_empty("tailnet", &input.tailnet)?;
    let api = deps.tailscale()?;
    let tenant = api.tailnet().to_string();
    if let Some(t) = &input.tailnet
        && t != &tenant
    {
        return Err(StepError::InvalidInput(format!(
            "invalid input field tailnet: {t:?} is not the tailnet of the configured read client ({tenant:?})"
        )));
    }
    let (run_id, synced_at) = RunFrame::ids(input.run_id.as_deref())?;
    // The client counts for the whole process; this run's share is the difference.
    let requests_before = api.requests();
    let requests = || api.requests() - requests_before;
    tracing::Span::current().record("run_id", run_id.as_str());
    let frame = RunFrame {
        source: Source::Tailscale,
        tenant: &tenant,
        run_id: &run_id,
        synced_at,
    };
    deps.progress.listing("tailscale", 0, None);
    let list = match api.list_devices().await {
        Ok(list) => list,
        Err(e) => return Err(frame.fail(deps, e.into(), requests()).await),
    };
    deps.progress.listing(
        "tailscale",
        list.devices.len() as u64,
        Some(list.devices.len() as u64),
    );
    deps.progress.finish();
    let invalid: Vec<String> = list.invalid.iter().map(ToString::to_string).collect();
    for reason in &invalid {
        tracing::warn!(source = "tailscale", run_id = %run_id, reason = %reason, "skipped an invalid device");
    }
    let observed = list.devices.into_iter().map(observe).collect();
    let run = frame
        .commit(
            deps,
            observed,
            invalid,
            1,
            requests(),
            tailscale::VOLATILE_KEYS,
        )
        .await?;
    let c = run.counts;
    info!(
        source = "tailscale",
        tailnet = %tenant,
        run_id = %run_id,
        devices = c.devices,
        added = c.added,
        changed = c.changed,
        removed = c.removed,
        unchanged = c.unchanged,
        invalid = c.invalid,
        "sync complete"
    );
    Ok(SyncTailscaleOutput {
        source: Source::Tailscale,
        tailnet: tenant,
        run_id,
        synced_at,
        devices: c.devices,
        added: c.added,
        changed: c.changed,
        removed: c.removed,
        unchanged: c.unchanged,
        invalid: c.invalid,
    })
}
