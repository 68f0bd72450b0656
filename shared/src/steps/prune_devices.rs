//! prune-devices: applies a stored, ready prune plan with the prune OAuth client
//! (the only client allowed to delete). Each candidate is fetched live first and
//! skipped if it is no longer stale under the plan's own rules; every device acted
//! on gets one audit outcome. Idempotent: a re-run acts only on devices without
//! an outcome. A lease keeps two prunes of one tailnet from running at once.

use crate::deps::Deps;
use crate::error::StepError;
use crate::model::{
    ChangeKind, DeviceRecord, Outcome, PlanEntry, PlanStatus, PruneCounts, Reason, Source,
};
use crate::policy::Policy;
use crate::steps::sync_tailscale::observe;
use crate::store::Recorded;
use crate::tailscale::{Deleted, Device, TailscaleApi};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};
use tracing::{info, instrument, warn};

/// Event of prune-devices.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PruneDevicesInput {
    /// The plan to apply (from plan-prune).
    pub plan_id: String,
}

/// Result of prune-devices: what happened to the plan's candidates, this run
/// and earlier runs of the same plan together.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct PruneDevicesOutput {
    pub plan_id: String,
    pub tailnet: String,
    pub deleted: u64,
    pub skipped_now_active: u64,
    pub already_gone: u64,
    pub failed: u64,
}

/// How long the lease lasts: longer than a Lambda can run.
const LEASE_MINUTES: i64 = 20;

#[instrument(name = "prune_devices", skip_all, fields(plan_id = %input.plan_id))]
pub async fn run(deps: &Deps, input: PruneDevicesInput) -> Result<PruneDevicesOutput, StepError> {
    if input.plan_id.trim().is_empty() {
        return Err(StepError::InvalidInput(
            "invalid input field plan_id: must not be empty".into(),
        ));
    }
    let api = deps.tailscale_prune().await?;
    let tenant = api.tailnet().to_string();
    let plan_id = input.plan_id.trim();
    let mut plan = deps
        .store
        .get_plan(&tenant, plan_id)
        .await?
        .ok_or_else(|| {
            StepError::InvalidInput(format!(
                "invalid input field plan_id: no plan {plan_id} for tailnet {tenant}"
            ))
        })?;
    match plan.status {
        PlanStatus::Ready | PlanStatus::Applied => {}
        PlanStatus::DryRun => {
            return Err(StepError::InvalidInput(format!(
                "plan {plan_id} is a dry run and is never applied; plan again with \"dry_run\": false"
            )));
        }
        PlanStatus::NeedsApproval => {
            return Err(StepError::InvalidInput(format!(
                "plan {plan_id} needs approval ({}); start an execution with \"approve_plan_id\": \"{plan_id}\"",
                plan.approval_reason.as_deref().unwrap_or("over a cap")
            )));
        }
    }
    let now = deps.now();
    let oldest = plan.approved_at.unwrap_or(plan.created_at);
    let max_age = chrono::Duration::hours(deps.settings.plan_approval_max_age_hours as i64);
    if plan.status == PlanStatus::Ready && now - oldest > max_age {
        return Err(StepError::StaleSnapshot(format!(
            "plan {plan_id} is older than {} hours; plan again",
            max_age.num_hours()
        )));
    }
    let policy = Policy::new(
        plan.settings.stale_minutes,
        plan.settings.exclude_tags.clone(),
        plan.settings.only_tags.clone(),
        &plan.settings.exclude_hostnames,
    )
    .map_err(StepError::InvalidInput)?;

    let lease = format!("prune#{tenant}");
    let holder = format!("{plan_id}/{}", uuid::Uuid::new_v4());
    deps.store
        .acquire_lease(
            &lease,
            &holder,
            now,
            now + chrono::Duration::minutes(LEASE_MINUTES),
        )
        .await
        .map_err(|e| match e {
            crate::store::StoreError::Conflict(m) => StepError::StoreUnavailable(format!(
                "another prune of tailnet {tenant} is running ({m}); try again when it ends"
            )),
            other => other.into(),
        })?;
    let result = apply(deps, api.as_ref(), &policy, &tenant, plan_id).await;
    if let Err(e) = deps.store.release_lease(&lease, &holder).await {
        warn!(error = %e, "could not release the prune lease; it expires by itself");
    }
    let counts = result?;

    plan.status = PlanStatus::Applied;
    plan.applied_at = Some(deps.now());
    plan.outcome = Some(counts);
    deps.store.update_plan(&plan).await?;
    info!(
        tailnet = %tenant,
        plan_id = %plan_id,
        deleted = counts.deleted,
        skipped_now_active = counts.skipped_now_active,
        already_gone = counts.already_gone,
        failed = counts.failed,
        "prune applied"
    );
    if counts.failed > 0 {
        return Err(StepError::PartialFailure(format!(
            "{} of {} devices could not be deleted (see `fleetsync prunes show {plan_id}`); deleted {}, skipped {}, already gone {}",
            counts.failed,
            plan.candidates,
            counts.deleted,
            counts.skipped_now_active,
            counts.already_gone
        )));
    }
    Ok(PruneDevicesOutput {
        plan_id: plan_id.to_string(),
        tailnet: tenant,
        deleted: counts.deleted,
        skipped_now_active: counts.skipped_now_active,
        already_gone: counts.already_gone,
        failed: counts.failed,
    })
}

/// Acts on every candidate without an outcome, a few at a time, then counts
/// the outcomes of all candidates (earlier runs included).
async fn apply(
    deps: &Deps,
    api: &dyn TailscaleApi,
    policy: &Policy,
    tenant: &str,
    plan_id: &str,
) -> Result<PruneCounts, StepError> {
    let entries = deps.store.plan_entries(tenant, plan_id).await?;
    let todo: Vec<PlanEntry> = entries
        .iter()
        .filter(|e| e.is_candidate() && e.outcome.is_none())
        .cloned()
        .collect();
    let total = todo.len() as u64;
    let done = AtomicU64::new(0);
    let results: Vec<Result<(String, Outcome), StepError>> = futures::stream::iter(todo)
        .map(|entry| {
            let done = &done;
            async move {
                let (outcome, detail) = act(api, policy, &entry.device_id, deps.now()).await;
                let mut audited = entry.clone();
                audited.outcome = Some(outcome);
                audited.detail = detail;
                audited.acted_at = Some(deps.now());
                let recorded = deps.store.record_outcome(tenant, &audited).await?;
                let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                deps.progress.items("prune", n, total);
                let outcome = match recorded {
                    Recorded::New => outcome,
                    Recorded::AlreadyRecorded(first) => first,
                };
                info!(device_id = %entry.device_id, name = %entry.name, outcome = outcome.as_str(), "prune outcome");
                Ok((entry.device_id, outcome))
            }
        })
        .buffer_unordered(deps.settings.prune_concurrency.max(1))
        .collect()
        .await;
    deps.progress.finish();
    let mut now_recorded = std::collections::HashMap::new();
    for r in results {
        let (id, outcome) = r?;
        now_recorded.insert(id, outcome);
    }
    let mut counts = PruneCounts::default();
    for e in entries.iter().filter(|e| e.is_candidate()) {
        match e
            .outcome
            .or_else(|| now_recorded.get(&e.device_id).copied())
        {
            Some(Outcome::Deleted) => counts.deleted += 1,
            Some(Outcome::SkippedNowActive) => counts.skipped_now_active += 1,
            Some(Outcome::AlreadyGone) => counts.already_gone += 1,
            Some(Outcome::Failed) => counts.failed += 1,
            None => {}
        }
    }
    Ok(counts)
}

/// Re-checks one device live and deletes it if it is still a candidate.
async fn act(
    api: &dyn TailscaleApi,
    policy: &Policy,
    device_id: &str,
    now: DateTime<Utc>,
) -> (Outcome, Option<String>) {
    let live = match api.get_device(device_id).await {
        Ok(Some(d)) => d,
        Ok(None) => return (Outcome::AlreadyGone, Some("not found before delete".into())),
        Err(e) => return (Outcome::Failed, Some(e.to_string())),
    };
    if let Some(why) = still_protected(policy, live, now) {
        return (Outcome::SkippedNowActive, Some(why));
    }
    match api.delete_device(device_id).await {
        Ok(Deleted::Deleted) => (Outcome::Deleted, None),
        Ok(Deleted::AlreadyGone) => (Outcome::AlreadyGone, Some("not found at delete".into())),
        Err(e) => (Outcome::Failed, Some(e.to_string())),
    }
}

/// Why a live device must not be deleted now, if it must not.
pub fn still_protected(policy: &Policy, live: Device, now: DateTime<Utc>) -> Option<String> {
    let rec = live_record(live, now);
    match policy.classify(&rec, now) {
        Some(Reason::Stale) => None,
        Some(reason) => Some(format!("live check: {}", reason.as_str())),
        None => Some(format!(
            "live check: seen {} (within the threshold)",
            rec.last_seen
                .map_or("recently".to_string(), |t| t.to_rfc3339())
        )),
    }
}

fn live_record(live: Device, now: DateTime<Utc>) -> DeviceRecord {
    let o = observe(live);
    DeviceRecord {
        source: Source::Tailscale,
        tenant: String::new(),
        device_id: o.device_id,
        name: o.name,
        last_seen: o.last_seen,
        connected: o.connected,
        fingerprint: o.fingerprint,
        attrs: o.attrs,
        raw: o.raw,
        first_seen_at: now,
        updated_at: now,
        removed_at: None,
        last_run_id: String::new(),
        last_change: ChangeKind::Unchanged,
    }
}
