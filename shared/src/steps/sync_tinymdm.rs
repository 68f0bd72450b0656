//! sync-tinymdm: pages through every TinyMDM device (and, on request, each
//! device's apps) and stores the snapshot. An incomplete listing changes
//! nothing: it is recorded as a failed run and reported as `PartialFailure`.

use crate::deps::Deps;
use crate::error::StepError;
use crate::model::{DeviceRecord, Source};
use crate::steps::RunFrame;
use crate::sync::Observed;
use crate::tinymdm::{self, App, Device};
use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::HashMap;
use tracing::instrument;

/// Event of sync-tinymdm.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SyncTinymdmInput {
    /// Also fetch each device's installed apps (one request per device).
    #[serde(default)]
    pub include_apps: bool,
    /// A UUIDv7 to reuse (a retry of the same run writes nothing twice).
    #[serde(default)]
    pub run_id: Option<String>,
}

/// Result of sync-tinymdm.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct SyncTinymdmOutput {
    pub source: Source,
    pub account_id: String,
    pub run_id: String,
    pub synced_at: DateTime<Utc>,
    pub devices: u64,
    pub added: u64,
    pub changed: u64,
    pub removed: u64,
    pub unchanged: u64,
    pub invalid: u64,
    pub pages: u64,
}

/// A listed device as the diff sees it. `apps` are this run's, or else the
/// ones stored before (so a sync without apps does not erase them).
pub fn observe(d: Device, apps: Option<Value>) -> Observed {
    let apps_list: Option<Vec<App>> = apps
        .as_ref()
        .and_then(|a| serde_json::from_value(a.clone()).ok());
    let fingerprint = match &apps {
        Some(a) => {
            let mut obj = serde_json::Map::new();
            obj.insert("device".into(), Value::String(d.fingerprint.clone()));
            crate::lenient::fingerprint(&obj, &[], Some(a))
        }
        None => d.fingerprint.clone(),
    };
    Observed {
        attrs: d.attrs(apps_list.as_deref()),
        device_id: d.id.clone(),
        name: d.display_name().to_string(),
        last_seen: d.last_sync,
        connected: false,
        fingerprint,
        raw: d.raw,
    }
}

fn stored_apps(rec: &DeviceRecord) -> Option<Value> {
    rec.attrs.get("apps").filter(|a| a.is_array()).cloned()
}

#[instrument(name = "sync_tinymdm", skip_all, fields(run_id))]
pub async fn run(deps: &Deps, input: SyncTinymdmInput) -> Result<SyncTinymdmOutput, StepError> {
    let api = deps.tinymdm().await?;
    let tenant = api.account_id().to_string();
    let (run_id, synced_at) = RunFrame::ids(input.run_id.as_deref())?;
    // The client counts for the whole process; this run's share is the difference.
    let requests_before = api.requests();
    let requests = || api.requests() - requests_before;
    tracing::Span::current().record("run_id", run_id.as_str());
    let frame = RunFrame {
        source: Source::Tinymdm,
        tenant: &tenant,
        run_id: &run_id,
        synced_at,
    };
    let progress = deps.progress.clone();
    let on_page = move |done: u64, total: Option<u64>| progress.listing("tinymdm", done, total);
    let list = match api.list_devices(&on_page).await {
        Ok(list) => list,
        Err(e) => return Err(frame.fail(deps, e.into(), requests()).await),
    };
    deps.progress.finish();
    if !list.is_complete() {
        let err = StepError::PartialFailure(format!(
            "tinymdm listing incomplete: got {} of {} devices in {} pages{}; nothing was changed",
            list.devices.len() + list.invalid.len(),
            list.announced.map_or("?".into(), |c| c.to_string()),
            list.pages,
            if list.truncated {
                " (page limit reached)"
            } else {
                ""
            },
        ));
        return Err(frame.fail(deps, err, requests()).await);
    }
    if list.duplicates > 0 {
        tracing::warn!(
            source = "tinymdm",
            duplicates = list.duplicates,
            "devices listed on more than one page were kept once"
        );
    }
    let apps = if input.include_apps {
        match fetch_apps(deps, &list.devices).await {
            Ok(apps) => Some(apps),
            Err(e) => return Err(frame.fail(deps, e, requests()).await),
        }
    } else {
        None
    };
    // Read once: the diff's previous state, and the apps to carry over when
    // this run fetches none.
    let prev = deps.store.current_devices(Source::Tinymdm, &tenant).await?;
    let mut stored: HashMap<String, Value> = HashMap::new();
    if apps.is_none() {
        for rec in &prev {
            if let Some(a) = stored_apps(rec) {
                stored.insert(rec.device_id.clone(), a);
            }
        }
    }
    let mut apps = apps.unwrap_or_default();
    let observed = list
        .devices
        .into_iter()
        .map(|d| {
            let a = apps.remove(&d.id).or_else(|| stored.remove(&d.id));
            observe(d, a)
        })
        .collect();
    let invalid: Vec<String> = list.invalid.iter().map(ToString::to_string).collect();
    let run = frame
        .commit(
            deps,
            prev,
            observed,
            invalid,
            list.pages,
            requests(),
            tinymdm::VOLATILE_KEYS,
        )
        .await?;
    let c = run.counts;
    Ok(SyncTinymdmOutput {
        source: Source::Tinymdm,
        account_id: tenant,
        run_id,
        synced_at,
        devices: c.devices,
        added: c.added,
        changed: c.changed,
        removed: c.removed,
        unchanged: c.unchanged,
        invalid: c.invalid,
        pages: run.pages,
    })
}

/// Apps of every device, requests in flight up to twice the rate limit (the
/// client's limiter does the pacing), so the run takes about requests ÷ rate.
async fn fetch_apps(deps: &Deps, devices: &[Device]) -> Result<HashMap<String, Value>, StepError> {
    let api = &deps.tinymdm().await?;
    let total = devices.len() as u64;
    let in_flight = (deps.settings.tinymdm_rate_limit_per_second as usize * 2).max(2);
    let done = std::sync::atomic::AtomicU64::new(0);
    let apps: HashMap<String, Value> = futures::stream::iter(devices)
        .map(|d| {
            let done = &done;
            async move {
                let apps = api.device_apps(&d.id).await?;
                let n = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                deps.progress.items("apps", n, total);
                let value = serde_json::to_value(&apps).unwrap_or(Value::Null);
                Ok::<_, StepError>((d.id.clone(), value))
            }
        })
        .buffer_unordered(in_flight)
        .try_collect()
        .await?;
    deps.progress.finish();
    Ok(apps)
}
