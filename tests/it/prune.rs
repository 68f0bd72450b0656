//! Pruning rules end to end: simulator + emulated DynamoDB, one test per rule.

use crate::support::dynamo_store;
use crate::world::World;
use chrono::{DateTime, Duration, Utc};
use fleetsync::Deps;
use fleetsync::model::{Outcome, PlanStatus};
use fleetsync::steps::plan_prune::{PlanPruneInput, PlanPruneOutput};
use fleetsync::steps::prune_devices::{PruneDevicesInput, PruneDevicesOutput};
use fleetsync::steps::{plan_prune, prune_devices, sync_tailscale};
use fleetsync::{StepError, model::PlanEntry};
use fleetsync_sim::{Fault, Route, TsKind};
use std::sync::Arc;

async fn world(devices: usize) -> World {
    World::start(Arc::new(dynamo_store().await), devices, 0, Utc::now())
}

fn inactive(w: &World) -> Vec<String> {
    w.fleet
        .tailscale_of(TsKind::Inactive)
        .iter()
        .map(|d| d.node_id.clone())
        .collect()
}

/// Plans with caps out of the way unless the input sets them.
async fn plan(deps: &Deps, input: PlanPruneInput) -> PlanPruneOutput {
    let input = PlanPruneInput {
        dry_run: input.dry_run.or(Some(false)),
        max_fraction: input.max_fraction.or(Some(1.0)),
        max_deletions: input.max_deletions.or(Some(10_000)),
        ..input
    };
    plan_prune::run(deps, input).await.unwrap()
}

async fn prune(deps: &Deps, plan_id: &str) -> Result<PruneDevicesOutput, StepError> {
    prune_devices::run(
        deps,
        PruneDevicesInput {
            plan_id: plan_id.to_string(),
        },
    )
    .await
}

async fn entries(deps: &Deps, plan_id: &str) -> Vec<PlanEntry> {
    deps.store.plan_entries("-", plan_id).await.unwrap()
}

fn deletes(w: &World) -> usize {
    w.ts.requests()
        .iter()
        .filter(|r| r.method == "DELETE")
        .count()
}

#[tokio::test]
async fn every_protection_reason_keeps_its_device() {
    let w = world(120).await;
    let stale = inactive(&w);
    let long_ago = Utc::now() - Duration::days(200);
    let edit = |id: &str, f: &dyn Fn(&mut fleetsync_sim::TailscaleDevice)| {
        let mut d = w.ts.device(id).unwrap();
        f(&mut d);
        w.ts.add_device(d);
    };
    // Make stale devices look protected, one reason each.
    edit(&stale[0], &|d| d.tags = vec!["tag:keep".into()]);
    edit(&stale[1], &|d| d.hostname = "build-agent-7".into());
    w.ts.set_last_seen(&stale[2], Some(Utc::now() + Duration::hours(2)));
    w.ts.set_connected(&stale[3], true);
    w.ts.set_last_seen(&stale[4], None);
    let shared = w.fleet.tailscale_of(TsKind::Shared)[0].node_id.clone();
    w.ts.set_last_seen(&shared, Some(long_ago));
    let deps = w.deps().await;
    sync_tailscale::run(&deps, Default::default())
        .await
        .unwrap();
    let p = plan(
        &deps,
        PlanPruneInput {
            exclude_tags: Some(vec!["tag:keep".into()]),
            exclude_hostnames: Some(vec!["build-*".into()]),
            ..Default::default()
        },
    )
    .await;
    let es = entries(&deps, &p.plan_id).await;
    let reason = |id: &str| {
        es.iter()
            .find(|e| e.device_id == id)
            .map(|e| e.reason.as_str())
    };
    assert_eq!(reason(&stale[0]), Some("excluded_tag"));
    assert_eq!(reason(&stale[1]), Some("excluded_hostname"));
    assert_eq!(reason(&stale[2]), Some("last_seen_in_future"));
    assert_eq!(
        reason(&stale[3]),
        None,
        "connected devices are counted, not listed"
    );
    assert!(p.protected["connected_now"] >= 1);
    assert_eq!(reason(&stale[4]), Some("no_last_seen"));
    assert_eq!(reason(&shared), Some("shared_in"));
    prune(&deps, &p.plan_id).await.unwrap();
    for id in stale[..5].iter().chain([&shared]) {
        assert!(w.ts.device(id).is_some(), "{id} was protected but deleted");
    }
    for id in &stale[5..] {
        assert!(w.ts.device(id).is_none(), "{id} was a candidate but kept");
    }

    // only_tags: only devices carrying one of them may go.
    let lab: Vec<String> = stale[5..].to_vec();
    assert!(!lab.is_empty());
    let w2 = world(120).await;
    let stale2 = inactive(&w2);
    let mut d = w2.ts.device(&stale2[0]).unwrap();
    d.tags = vec!["tag:lab".into()];
    w2.ts.add_device(d);
    let deps2 = w2.deps().await;
    sync_tailscale::run(&deps2, Default::default())
        .await
        .unwrap();
    let p2 = plan(
        &deps2,
        PlanPruneInput {
            only_tags: Some(vec!["tag:lab".into()]),
            ..Default::default()
        },
    )
    .await;
    let es2 = entries(&deps2, &p2.plan_id).await;
    let cands: Vec<&str> = es2
        .iter()
        .filter(|e| e.is_candidate())
        .map(|e| e.device_id.as_str())
        .collect();
    assert!(cands.contains(&stale2[0].as_str()));
    assert!(es2.iter().any(|e| e.reason.as_str() == "not_in_only_tags"));
    assert!(cands.iter().all(|c| {
        w2.ts
            .device(c)
            .unwrap()
            .tags
            .contains(&"tag:lab".to_string())
    }));
}

#[tokio::test]
async fn threshold_boundary_is_exact_to_the_second() {
    let w = world(20).await;
    let now: DateTime<Utc> = Utc::now();
    let laptops: Vec<String> = w
        .fleet
        .tailscale_of(TsKind::Laptop)
        .iter()
        .map(|d| d.node_id.clone())
        .collect();
    let (under, over) = (&laptops[0], &laptops[1]);
    for id in [under, over] {
        w.ts.set_connected(id, false);
    }
    w.ts.set_last_seen(under, Some(now - Duration::days(90) + Duration::seconds(1)));
    w.ts.set_last_seen(over, Some(now - Duration::days(90) - Duration::seconds(1)));
    let deps = w.deps().await.with_clock(move || now);
    sync_tailscale::run(&deps, Default::default())
        .await
        .unwrap();
    let p = plan(
        &deps,
        PlanPruneInput {
            inactive_days: Some(90),
            ..Default::default()
        },
    )
    .await;
    prune(&deps, &p.plan_id).await.unwrap();
    assert!(
        w.ts.device(under).is_some(),
        "90 days minus 1 second is kept"
    );
    assert!(
        w.ts.device(over).is_none(),
        "90 days plus 1 second is deleted"
    );
}

#[tokio::test]
async fn plan_over_a_cap_waits_for_approval_which_never_widens_it() {
    let w = world(80).await;
    let deps = w.deps().await;
    sync_tailscale::run(&deps, Default::default())
        .await
        .unwrap();
    let p = plan(
        &deps,
        PlanPruneInput {
            max_deletions: Some(2),
            ..Default::default()
        },
    )
    .await;
    assert!(p.needs_approval);
    assert_eq!(p.status, PlanStatus::NeedsApproval);
    assert!(p.approval_hint.as_deref().unwrap().contains(&p.plan_id));
    let refused = prune(&deps, &p.plan_id).await.unwrap_err();
    assert_eq!(refused.name(), "InvalidInput");
    assert!(refused.to_string().contains("approve_plan_id"), "{refused}");
    assert_eq!(deletes(&w), 0);

    // A device goes stale after planning: approval must not add it.
    let late = w.fleet.tailscale_of(TsKind::Laptop)[0].node_id.clone();
    w.ts.set_connected(&late, false);
    w.ts.set_last_seen(&late, Some(Utc::now() - Duration::days(300)));
    sync_tailscale::run(&deps, Default::default())
        .await
        .unwrap();

    let approved = plan_prune::run(
        &deps,
        PlanPruneInput {
            approve_plan_id: Some(p.plan_id.clone()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(approved.status, PlanStatus::Ready);
    assert_eq!(approved.candidates, p.candidates);
    let out = prune(&deps, &p.plan_id).await.unwrap();
    assert_eq!(out.deleted, p.candidates);
    assert!(w.ts.device(&late).is_some(), "approval never widens a plan");

    let dry = plan(
        &deps,
        PlanPruneInput {
            dry_run: Some(true),
            ..Default::default()
        },
    )
    .await;
    let e = plan_prune::run(
        &deps,
        PlanPruneInput {
            approve_plan_id: Some(dry.plan_id),
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(e.name(), "InvalidInput", "a dry run cannot be approved");
}

#[tokio::test]
async fn not_found_before_or_during_delete_is_already_gone() {
    let w = world(60).await;
    let stale = inactive(&w);
    let deps = w.deps().await;
    sync_tailscale::run(&deps, Default::default())
        .await
        .unwrap();
    let p = plan(&deps, Default::default()).await;
    w.ts.remove_device(&stale[0]);
    w.ts.inject(Route::DeleteDevice, Fault::status(404), 1);
    let out = prune(&deps, &p.plan_id).await.unwrap();
    assert_eq!(out.already_gone, 2);
    assert_eq!(out.deleted, stale.len() as u64 - 2);
    assert_eq!(out.failed, 0);
}

#[tokio::test]
async fn server_error_on_delete_is_a_partial_failure_after_the_rest() {
    let mut w = world(60).await;
    w.settings.prune_concurrency = 1;
    let stale = inactive(&w);
    let deps = w.deps().await;
    sync_tailscale::run(&deps, Default::default())
        .await
        .unwrap();
    let p = plan(&deps, Default::default()).await;
    // One device's every attempt (1 + 4 retries) fails.
    w.ts.inject(Route::DeleteDevice, Fault::status(500), 5);
    let e = prune(&deps, &p.plan_id).await.unwrap_err();
    assert_eq!(e.name(), "PartialFailure", "{e}");
    let left: Vec<&String> = stale
        .iter()
        .filter(|id| w.ts.device(id).is_some())
        .collect();
    assert_eq!(left.len(), 1, "the others were deleted");
    let es = entries(&deps, &p.plan_id).await;
    let failed = es
        .iter()
        .find(|e| e.outcome == Some(Outcome::Failed))
        .unwrap();
    assert_eq!(&&failed.device_id, left.first().unwrap());
    assert!(
        failed.detail.as_deref().unwrap().contains("HTTP 500"),
        "{failed:?}"
    );
    let stored = deps.store.get_plan("-", &p.plan_id).await.unwrap().unwrap();
    assert_eq!(stored.outcome.unwrap().failed, 1);
}

#[tokio::test]
async fn applying_the_same_plan_twice_deletes_nothing_twice() {
    let w = world(60).await;
    let deps = w.deps().await;
    sync_tailscale::run(&deps, Default::default())
        .await
        .unwrap();
    let p = plan(&deps, Default::default()).await;
    let first = prune(&deps, &p.plan_id).await.unwrap();
    let deleted_requests = deletes(&w);
    let second = prune(&deps, &p.plan_id).await.unwrap();
    assert_eq!(first, second, "the same counters, from the audit");
    assert_eq!(deletes(&w), deleted_requests, "no delete sent again");
    let es = entries(&deps, &p.plan_id).await;
    let audited = es.iter().filter(|e| e.outcome.is_some()).count() as u64;
    assert_eq!(audited, p.candidates, "one audit outcome per candidate");
}

#[tokio::test]
async fn two_concurrent_prunes_cannot_both_act() {
    let w = world(60).await;
    let deps = w.deps().await;
    sync_tailscale::run(&deps, Default::default())
        .await
        .unwrap();
    let p = plan(&deps, Default::default()).await;
    // The first prune holds the lease while its live checks are slow.
    w.ts.inject(
        Route::GetDevice,
        Fault::delay(std::time::Duration::from_millis(1500)),
        1,
    );
    let slow = prune(&deps, &p.plan_id);
    let late = async {
        tokio::time::sleep(std::time::Duration::from_millis(400)).await;
        prune(&deps, &p.plan_id).await
    };
    let (a, b) = tokio::join!(slow, late);
    let a = a.unwrap();
    let e = b.unwrap_err();
    assert!(e.to_string().contains("another prune"), "{e}");
    assert_eq!(a.deleted, p.candidates);
    assert_eq!(deletes(&w) as u64, p.candidates);
}

#[tokio::test]
async fn old_snapshots_and_old_plans_are_refused() {
    let w = world(30).await;
    let deps = w.deps().await;
    sync_tailscale::run(&deps, Default::default())
        .await
        .unwrap();
    let later = Utc::now() + Duration::minutes(121);
    let e = plan_prune::run(
        &deps.clone().with_clock(move || later),
        PlanPruneInput::default(),
    )
    .await
    .unwrap_err();
    assert_eq!(e.name(), "StaleSnapshot", "{e}");
    assert!(e.to_string().contains("sync first"), "{e}");

    let p = plan(
        &deps,
        PlanPruneInput {
            max_deletions: Some(0),
            ..Default::default()
        },
    )
    .await;
    assert!(p.needs_approval);
    let next_day = Utc::now() + Duration::hours(25);
    let e = plan_prune::run(
        &deps.clone().with_clock(move || next_day),
        PlanPruneInput {
            approve_plan_id: Some(p.plan_id.clone()),
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(e.name(), "StaleSnapshot", "{e}");
    assert_eq!(deletes(&w), 0);
}

#[tokio::test]
async fn rate_limited_deletes_wait_and_succeed() {
    let w = world(40).await;
    let deps = w.deps().await;
    sync_tailscale::run(&deps, Default::default())
        .await
        .unwrap();
    let p = plan(&deps, Default::default()).await;
    w.ts.inject(Route::DeleteDevice, Fault::status_retry_after(429, "1"), 2);
    let out = prune(&deps, &p.plan_id).await.unwrap();
    assert_eq!(out.deleted, p.candidates);
    let statuses: Vec<u16> =
        w.ts.requests()
            .iter()
            .filter(|r| r.method == "DELETE")
            .map(|r| r.status)
            .collect();
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 2);
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count() as u64,
        p.candidates
    );
}
