//! sync-tailscale: lists every device of the tailnet with the read-only OAuth
//! client and stores the snapshot (current state, history of changes, run record).

use crate::deps::Deps;
use crate::error::StepError;
use crate::model::{DeviceRecord, Source};
use crate::steps::{Builder, ListingFacts, RunFrame, non_empty};
use crate::sync::{self, Listed, Observed, States, StoredRecords};
use crate::tailscale::{self, Device, KeepRaw};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::sync::Arc;
use tracing::instrument;

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

/// A listed device whose raw JSON was kept, parsed again for writing.
fn observe_listed(d: &Listed, _stored: Option<&DeviceRecord>) -> Result<Observed, String> {
    let raw = d
        .raw
        .clone()
        .ok_or_else(|| format!("device {}: raw JSON was not kept", d.device_id))?;
    let raw = RawValue::from_string(raw).map_err(|e| format!("device {}: {e}", d.device_id))?;
    Device::from_raw(&raw)
        .map(observe)
        .map_err(|e| e.to_string())
}

#[instrument(name = "sync_tailscale", skip_all, fields(run_id))]
pub async fn run(deps: &Deps, input: SyncTailscaleInput) -> Result<SyncTailscaleOutput, StepError> {
    non_empty("tailnet", &input.tailnet)?;
    let api = deps.tailscale().await?;
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
    // The stored states first, so the listing keeps the raw JSON of only the
    // devices this run writes: a large tailnet is never held twice.
    let prev = Arc::new(States::new(
        deps.store.device_states(Source::Tailscale, &tenant).await?,
    ));
    let keep: KeepRaw = {
        let (prev, run_id) = (prev.clone(), run_id.clone());
        let resolution = deps.settings.last_seen_resolution();
        Arc::new(move |d: &Listed| sync::writes(&run_id, resolution, prev.get(&d.device_id), d))
    };
    deps.progress.listing("tailscale", 0, None);
    let list = match api.list_devices_lean(keep).await {
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
    let run = frame
        .commit_planned(
            deps,
            prev.as_slice(),
            &list.devices,
            ListingFacts {
                invalid_reasons: invalid,
                pages: 1,
                http_requests: requests(),
            },
            Builder {
                volatile_keys: tailscale::VOLATILE_KEYS,
                stored: StoredRecords::ChangedAndRemoved,
                observe: &observe_listed,
            },
        )
        .await?;
    let c = run.counts;
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
