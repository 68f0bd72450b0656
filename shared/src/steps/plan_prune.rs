//! plan-prune: decides, from the latest complete Tailscale snapshot, which
//! devices are stale and which are protected (and why), and stores the plan.
//! Dry run unless the input says `"dry_run": false`; a plan over the caps waits
//! for approval; `approve_plan_id` approves a stored plan without widening it.

use crate::deps::Deps;
use crate::error::StepError;
use crate::model::{PlanEntry, PlanSettings, PlanStatus, PrunePlan, Reason, RunStatus, Source};
use crate::policy::{self, Policy};
use crate::steps::{expiry, new_run_id, non_empty};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use tracing::{info, instrument};

/// Event of plan-prune. Every field is optional.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PlanPruneInput {
    /// Plan from this sync run (it must have succeeded); default the latest succeeded run.
    #[serde(default)]
    pub run_id: Option<String>,
    /// Default `TAILSCALE_TAILNET`, else the only tailnet in the store.
    #[serde(default)]
    pub tailnet: Option<String>,
    /// Threshold in days; or `stale_minutes`; default `TAILSCALE_DEVICE_STALE_MINUTES`.
    #[serde(default)]
    pub inactive_days: Option<i64>,
    #[serde(default)]
    pub stale_minutes: Option<i64>,
    #[serde(default)]
    pub exclude_tags: Option<Vec<String>>,
    /// If set, only devices carrying one of these tags may be candidates.
    #[serde(default)]
    pub only_tags: Option<Vec<String>>,
    /// Hostname globs (case-insensitive) never to prune.
    #[serde(default)]
    pub exclude_hostnames: Option<Vec<String>>,
    #[serde(default)]
    pub max_deletions: Option<i64>,
    #[serde(default)]
    pub max_fraction: Option<f64>,
    /// Default true: only `false` makes a plan prune-devices will apply.
    #[serde(default)]
    pub dry_run: Option<bool>,
    /// Approve this stored plan (one that needs approval) instead of planning.
    #[serde(default)]
    pub approve_plan_id: Option<String>,
}

/// Result of plan-prune.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct PlanPruneOutput {
    pub plan_id: String,
    pub tailnet: String,
    pub snapshot_run_id: String,
    pub fleet_size: u64,
    pub candidates: u64,
    /// Protected devices per reason.
    pub protected: BTreeMap<String, u64>,
    pub needs_approval: bool,
    /// Which cap the plan exceeds, and how to approve it.
    #[serde(default)]
    pub approval_hint: Option<String>,
    pub dry_run: bool,
    pub status: PlanStatus,
}

const MAX_DAYS: i64 = 3650;

fn invalid(field: &str, why: impl std::fmt::Display) -> StepError {
    StepError::InvalidInput(format!("invalid input field {field}: {why}"))
}

/// Checks the input and resolves it against the defaults.
fn settings(deps: &Deps, input: &PlanPruneInput) -> Result<PlanSettings, StepError> {
    let s = &deps.settings;
    let stale_minutes = match (input.inactive_days, input.stale_minutes) {
        (Some(_), Some(_)) => {
            return Err(StepError::InvalidInput(
                "invalid input: give inactive_days or stale_minutes, not both".into(),
            ));
        }
        (Some(d), None) if !(1..=MAX_DAYS).contains(&d) => {
            return Err(invalid(
                "inactive_days",
                format!("{d} is not between 1 and {MAX_DAYS}"),
            ));
        }
        (Some(d), None) => d as u64 * 24 * 60,
        (None, Some(m)) if !(1..=MAX_DAYS * 24 * 60).contains(&m) => {
            return Err(invalid(
                "stale_minutes",
                format!("{m} is not between 1 and {}", MAX_DAYS * 24 * 60),
            ));
        }
        (None, Some(m)) => m as u64,
        (None, None) => s.stale_minutes,
    };
    let max_deletions = match input.max_deletions {
        Some(n) if !(0..=100_000).contains(&n) => {
            return Err(invalid(
                "max_deletions",
                format!("{n} is not between 0 and 100000"),
            ));
        }
        Some(n) => n as u64,
        None => s.prune_max_deletions,
    };
    let max_fraction = match input.max_fraction {
        Some(f) if !(f > 0.0 && f <= 1.0) => {
            return Err(invalid(
                "max_fraction",
                format!("{f} is not greater than 0 and at most 1"),
            ));
        }
        Some(f) => f,
        None => s.prune_max_fraction,
    };
    let tags = |field: &str, v: &Option<Vec<String>>| -> Result<Vec<String>, StepError> {
        let v = v.clone().unwrap_or_default();
        for t in &v {
            if !t.starts_with("tag:") || t.len() <= 4 || t.contains(char::is_whitespace) {
                return Err(invalid(
                    field,
                    format!("{t:?} is not a tag like \"tag:server\""),
                ));
            }
        }
        Ok(v)
    };
    let exclude_hostnames = input.exclude_hostnames.clone().unwrap_or_default();
    for p in &exclude_hostnames {
        if p.trim().is_empty() || !policy::valid_glob(p) {
            return Err(invalid(
                "exclude_hostnames",
                format!("{p:?} is not a valid glob"),
            ));
        }
    }
    Ok(PlanSettings {
        stale_minutes,
        exclude_tags: tags("exclude_tags", &input.exclude_tags)?,
        only_tags: tags("only_tags", &input.only_tags)?,
        exclude_hostnames,
        max_deletions,
        max_fraction,
    })
}

#[instrument(name = "plan_prune", skip_all)]
pub async fn run(deps: &Deps, input: PlanPruneInput) -> Result<PlanPruneOutput, StepError> {
    non_empty("tailnet", &input.tailnet)?;
    non_empty("run_id", &input.run_id)?;
    non_empty("approve_plan_id", &input.approve_plan_id)?;
    let plan_settings = settings(deps, &input)?;
    let tenant = tailnet(deps, &input).await?;
    if let Some(plan_id) = &input.approve_plan_id {
        if input.dry_run == Some(true) {
            return Err(StepError::InvalidInput(
                "invalid input: approve_plan_id cannot be combined with \"dry_run\": true".into(),
            ));
        }
        return approve(deps, &tenant, plan_id).await;
    }
    let now = deps.now();
    let run = match &input.run_id {
        Some(id) => deps
            .store
            .get_run(Source::Tailscale, &tenant, id)
            .await?
            .ok_or_else(|| {
                StepError::StaleSnapshot(format!("sync run {id} of tailnet {tenant} not found"))
            })?,
        None => deps
            .store
            .list_runs(Source::Tailscale, &tenant, 50)
            .await?
            .into_iter()
            .find(|r| r.status == RunStatus::Succeeded)
            .ok_or_else(|| {
                StepError::StaleSnapshot(format!(
                    "no completed tailscale sync of tailnet {tenant}: run sync-tailscale first"
                ))
            })?,
    };
    if run.status != RunStatus::Succeeded {
        return Err(StepError::StaleSnapshot(format!(
            "sync run {} did not complete ({}); refusing to plan from it",
            run.run_id,
            run.error.as_deref().unwrap_or("failed")
        )));
    }
    let age = now - run.finished_at;
    let max_age = chrono::Duration::minutes(deps.settings.snapshot_max_age_minutes as i64);
    if age > max_age {
        return Err(StepError::StaleSnapshot(format!(
            "the latest tailscale snapshot ({}) is {} minutes old, more than {} allowed; sync first",
            run.run_id,
            age.num_minutes(),
            max_age.num_minutes()
        )));
    }
    let policy = Policy::new(
        plan_settings.stale_minutes,
        plan_settings.exclude_tags.clone(),
        plan_settings.only_tags.clone(),
        &plan_settings.exclude_hostnames,
    )
    .map_err(StepError::InvalidInput)?;
    let devices = deps
        .store
        .current_devices(Source::Tailscale, &tenant)
        .await?;
    let fleet_size = devices.iter().filter(|d| !d.is_removed()).count() as u64;
    let verdicts = policy::evaluate(&policy, &devices, now);
    let plan_id = new_run_id();
    let expires_at = expiry(now, deps.settings.audit_retention_days);
    let mut protected: BTreeMap<String, u64> = BTreeMap::new();
    let mut entries = Vec::new();
    let mut candidates = 0u64;
    for v in &verdicts {
        if v.reason == Reason::Stale {
            candidates += 1;
        } else {
            *protected.entry(v.reason.as_str().to_string()).or_default() += 1;
        }
        // Connected devices are counted, not listed: they are most of a fleet
        // and never in doubt.
        if v.reason != Reason::ConnectedNow {
            entries.push(PlanEntry {
                plan_id: plan_id.clone(),
                device_id: v.device.device_id.clone(),
                name: v.device.name.clone(),
                last_seen: v.device.last_seen,
                tags: tags_of(v.device),
                reason: v.reason,
                outcome: None,
                detail: None,
                acted_at: None,
                expires_at,
            });
        }
    }
    let over_count = candidates > plan_settings.max_deletions;
    let fraction = if fleet_size == 0 {
        0.0
    } else {
        candidates as f64 / fleet_size as f64
    };
    let over_fraction = fraction > plan_settings.max_fraction;
    let approval_reason = match (over_count, over_fraction) {
        (true, _) => Some(format!(
            "{candidates} candidates exceed max_deletions {}",
            plan_settings.max_deletions
        )),
        (false, true) => Some(format!(
            "{candidates} candidates are {:.1}% of {fleet_size} devices, over max_fraction {}",
            fraction * 100.0,
            plan_settings.max_fraction
        )),
        _ => None,
    };
    let needs_approval = approval_reason.is_some();
    let dry_run = input.dry_run.unwrap_or(true);
    let status = if dry_run {
        PlanStatus::DryRun
    } else if needs_approval {
        PlanStatus::NeedsApproval
    } else {
        PlanStatus::Ready
    };
    let plan = PrunePlan {
        plan_id: plan_id.clone(),
        tenant: tenant.clone(),
        created_at: now,
        snapshot_run_id: run.run_id.clone(),
        settings: plan_settings,
        fleet_size,
        candidates,
        protected: protected.clone(),
        dry_run,
        needs_approval,
        approval_reason: approval_reason.clone(),
        approved_at: None,
        status,
        applied_at: None,
        outcome: None,
    };
    deps.store.put_plan(&plan, &entries).await?;
    info!(
        tailnet = %tenant,
        plan_id = %plan_id,
        fleet_size,
        candidates,
        needs_approval,
        dry_run,
        "prune plan stored"
    );
    Ok(PlanPruneOutput {
        approval_hint: approval_reason.map(|r| hint(&r, &plan_id, dry_run)),
        plan_id,
        tailnet: tenant,
        snapshot_run_id: run.run_id,
        fleet_size,
        candidates,
        protected,
        needs_approval,
        dry_run,
        status,
    })
}

/// The tailnet to plan for: the input's, else `TAILSCALE_TAILNET`, else the
/// only tailnet the store has synced (plan-prune holds no credentials to ask).
async fn tailnet(deps: &Deps, input: &PlanPruneInput) -> Result<String, StepError> {
    if let Some(t) = input
        .tailnet
        .clone()
        .or_else(|| deps.settings.tailnet.clone())
    {
        return Ok(t);
    }
    let mut known = deps.store.tenants(Source::Tailscale).await?;
    match known.len() {
        1 => Ok(known.remove(0)),
        0 => Err(StepError::StaleSnapshot(
            "no completed tailscale sync in the store: run sync-tailscale first".into(),
        )),
        _ => Err(StepError::InvalidInput(format!(
            "invalid input field tailnet: the store holds several tailnets ({}); name one",
            known.join(", ")
        ))),
    }
}

fn hint(reason: &str, plan_id: &str, dry_run: bool) -> String {
    if dry_run {
        format!("{reason}; a real run would need approval")
    } else {
        format!(
            "{reason}; to apply it, start an execution with {{\"prune\": true, \"dry_run\": false, \"approve_plan_id\": \"{plan_id}\"}}"
        )
    }
}

fn tags_of(d: &crate::model::DeviceRecord) -> Vec<String> {
    d.attrs
        .get("tags")
        .and_then(|t| t.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|t| t.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Marks a stored plan that needs approval as ready. The plan's candidates are
/// not recomputed: approval never widens it, and prune-devices still re-checks
/// each device live.
async fn approve(deps: &Deps, tenant: &str, plan_id: &str) -> Result<PlanPruneOutput, StepError> {
    let now = deps.now();
    let mut plan = deps.store.get_plan(tenant, plan_id).await?.ok_or_else(|| {
        invalid(
            "approve_plan_id",
            format!("no plan {plan_id} for tailnet {tenant}"),
        )
    })?;
    let max_age = chrono::Duration::hours(deps.settings.plan_approval_max_age_hours as i64);
    if now - plan.created_at > max_age {
        return Err(StepError::StaleSnapshot(format!(
            "plan {plan_id} was made {} hours ago, more than {} allowed for approval; plan again",
            (now - plan.created_at).num_hours(),
            max_age.num_hours()
        )));
    }
    match plan.status {
        PlanStatus::NeedsApproval | PlanStatus::Ready => {}
        PlanStatus::DryRun => {
            return Err(invalid(
                "approve_plan_id",
                format!("plan {plan_id} is a dry run; plan again with \"dry_run\": false"),
            ));
        }
        PlanStatus::Applied => {
            return Err(invalid(
                "approve_plan_id",
                format!("plan {plan_id} was already applied"),
            ));
        }
    }
    plan.status = PlanStatus::Ready;
    plan.approved_at = Some(now);
    deps.store.update_plan(&plan).await?;
    info!(tailnet = %tenant, plan_id = %plan_id, candidates = plan.candidates, "prune plan approved");
    Ok(PlanPruneOutput {
        plan_id: plan.plan_id,
        tailnet: plan.tenant,
        snapshot_run_id: plan.snapshot_run_id,
        fleet_size: plan.fleet_size,
        candidates: plan.candidates,
        protected: plan.protected,
        needs_approval: false,
        approval_hint: None,
        dry_run: false,
        status: plan.status,
    })
}
