//! sync-tinymdm: pages through every TinyMDM device (and, on request, each
//! device's apps) and stores the snapshot. An incomplete listing changes
//! nothing: it is recorded as a failed run and reported as `PartialFailure`.

use crate::deps::Deps;
use crate::error::StepError;
use crate::model::{DeviceRecord, Source};
use crate::steps::{Builder, ListingFacts, RunFrame};
use crate::sync::{self, Listed, Observed, States, StoredRecords};
use crate::tinymdm::{self, App, Device};
use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;
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
/// ones stored before (so a sync without apps does not erase them), and
/// `fingerprint` the one `listed` gave it.
pub fn observe(d: Device, apps: Option<Value>, fingerprint: String) -> Observed {
    let apps_list: Option<Vec<App>> = apps.and_then(|a| serde_json::from_value(a).ok());
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

/// The fingerprint of a device with apps: its own, a dot, and the apps'. A
/// sync without apps keeps the stored apps part, so it compares content
/// without reading any stored apps.
pub fn fingerprint_with_apps(device: &str, apps: &Value) -> String {
    format!(
        "{device}.{}",
        crate::lenient::fingerprint(&serde_json::Map::new(), &[], Some(apps))
    )
}

/// The apps part of a stored fingerprint, if it has one.
fn apps_part(fingerprint: &str) -> Option<&str> {
    fingerprint.split_once('.').map(|(_, apps)| apps)
}

fn stored_apps(rec: &DeviceRecord) -> Option<Value> {
    rec.attrs.get("apps").filter(|a| a.is_array()).cloned()
}

/// This run's apps of one device: their fingerprint, and their JSON where
/// the sync writes the device.
struct FetchedApps {
    fingerprint: String,
    apps: Option<Value>,
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
            match (list.truncated, list.count_changed) {
                (true, _) => " (page limit reached)".to_string(),
                (false, Some((was, now))) => format!(
                    " (the account's device count changed from {was} to {now} while it was \
                     listed, also on a second try)"
                ),
                (false, None) => String::new(),
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
    // The stored states, without raw JSON or attrs.
    let prev = States::new(deps.store.device_states(Source::Tinymdm, &tenant).await?);
    let writes = |l: &Listed| {
        sync::writes(
            &run_id,
            deps.settings.last_seen_resolution(),
            prev.get(&l.device_id),
            l,
        )
    };
    let include_apps = input.include_apps;
    let mut fetched = if include_apps {
        match fetch_apps(deps, &list.devices, &writes).await {
            Ok(apps) => apps,
            Err(e) => return Err(frame.fail(deps, e, requests()).await),
        }
    } else {
        HashMap::new()
    };
    // One copy of the account: each device becomes what the plan compares,
    // keeping its raw JSON (and apps) only if this run writes it.
    let mut kept_apps: HashMap<String, Value> = HashMap::new();
    let mut listed = Vec::with_capacity(list.devices.len());
    for d in list.devices {
        let fingerprint = if include_apps {
            let f = fetched.remove(&d.id).ok_or_else(|| {
                StepError::Internal(format!(
                    "internal error: no apps fetched for device {}",
                    d.id
                ))
            })?;
            if let Some(a) = f.apps {
                kept_apps.insert(d.id.clone(), a);
            }
            f.fingerprint
        } else {
            match prev.get(&d.id).and_then(|p| apps_part(&p.fingerprint)) {
                Some(apps) => format!("{}.{apps}", d.fingerprint),
                None => d.fingerprint,
            }
        };
        let mut l = Listed {
            device_id: d.id,
            fingerprint,
            last_seen: d.last_sync,
            connected: false,
            raw: None,
        };
        if writes(&l) {
            l.raw = Some(d.raw);
        }
        listed.push(l);
    }
    let observe = |l: &Listed, stored: Option<&DeviceRecord>| -> Result<Observed, String> {
        let raw = l
            .raw
            .as_deref()
            .ok_or_else(|| format!("device {}: raw JSON was not kept", l.device_id))?;
        let raw: &RawValue =
            serde_json::from_str(raw).map_err(|e| format!("device {}: {e}", l.device_id))?;
        let d = Device::from_raw(raw).map_err(|e| e.to_string())?;
        let apps = if include_apps {
            kept_apps.get(&l.device_id).cloned()
        } else {
            stored.and_then(stored_apps)
        };
        Ok(observe(d, apps, l.fingerprint.clone()))
    };
    let invalid: Vec<String> = list.invalid.iter().map(ToString::to_string).collect();
    let run = frame
        .commit_planned(
            deps,
            prev.as_slice(),
            &listed,
            ListingFacts {
                invalid_reasons: invalid,
                pages: list.pages,
                http_requests: requests(),
            },
            Builder {
                volatile_keys: tinymdm::VOLATILE_KEYS,
                // Without apps this run, every written record keeps the stored apps.
                stored: if include_apps {
                    StoredRecords::ChangedAndRemoved
                } else {
                    StoredRecords::EveryStored
                },
                observe: &observe,
            },
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
/// Each device's apps are kept only if the sync writes that device (`writes`).
async fn fetch_apps(
    deps: &Deps,
    devices: &[Device],
    writes: &(dyn Fn(&Listed) -> bool + Sync),
) -> Result<HashMap<String, FetchedApps>, StepError> {
    let api = &deps.tinymdm().await?;
    let total = devices.len() as u64;
    let in_flight = (deps.settings.tinymdm_rate_limit_per_second as usize * 2).max(2);
    let done = std::sync::atomic::AtomicU64::new(0);
    let apps: HashMap<String, FetchedApps> = futures::stream::iter(devices)
        .map(|d| {
            let done = &done;
            async move {
                let apps = api.device_apps(&d.id).await?;
                let n = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                deps.progress.items("apps", n, total);
                let value = serde_json::to_value(&apps).unwrap_or(Value::Null);
                let fingerprint = fingerprint_with_apps(&d.fingerprint, &value);
                let probe = Listed {
                    device_id: d.id.clone(),
                    fingerprint: fingerprint.clone(),
                    last_seen: d.last_sync,
                    connected: false,
                    raw: None,
                };
                let written = writes(&probe);
                let fetched = FetchedApps {
                    fingerprint,
                    apps: written.then_some(value),
                };
                Ok::<_, StepError>((d.id.clone(), fetched))
            }
        })
        .buffer_unordered(in_flight)
        .try_collect()
        .await?;
    deps.progress.finish();
    Ok(apps)
}
