//! The four steps end to end against the simulators, on SQLite and on
//! emulated DynamoDB, with the counts checked against the generated fleet.

use crate::support::dynamo_store;
use crate::world::{World, sqlite};
use chrono::{Duration, Utc};
use fleetsync::Deps;
use fleetsync::model::{PlanStatus, RunStatus, Source};
use fleetsync::steps::plan_prune::PlanPruneInput;
use fleetsync::steps::prune_devices::PruneDevicesInput;
use fleetsync::steps::sync_tinymdm::SyncTinymdmInput;
use fleetsync::steps::{plan_prune, prune_devices, sync_tailscale, sync_tinymdm};
use fleetsync::store::Store;
use fleetsync_sim::{Fault, Route, TsKind};
use std::collections::HashSet;
use std::sync::Arc;

fn count(w: &World, kind: TsKind) -> u64 {
    w.fleet.tailscale_of(kind).len() as u64
}

async fn apply(
    deps: &Deps,
) -> (
    plan_prune::PlanPruneOutput,
    prune_devices::PruneDevicesOutput,
) {
    let plan = plan_prune::run(
        deps,
        PlanPruneInput {
            dry_run: Some(false),
            max_fraction: Some(1.0),
            max_deletions: Some(10_000),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(plan.status, PlanStatus::Ready);
    let out = prune_devices::run(
        deps,
        PruneDevicesInput {
            plan_id: plan.plan_id.clone(),
        },
    )
    .await
    .unwrap();
    (plan, out)
}

async fn pipeline(store: Arc<dyn Store>) {
    let w = World::start(store.clone(), 200, 1100, Utc::now());
    let deps = w.deps().await;

    let ts = sync_tailscale::run(&deps, Default::default())
        .await
        .unwrap();
    assert_eq!(
        (ts.devices, ts.added, ts.changed, ts.removed),
        (200, 200, 0, 0)
    );
    let mdm = sync_tinymdm::run(&deps, SyncTinymdmInput::default())
        .await
        .unwrap();
    assert_eq!((mdm.devices, mdm.added, mdm.pages), (1100, 1100, 2));

    let (plan, out) = apply(&deps).await;
    let inactive = count(&w, TsKind::Inactive);
    assert!(inactive > 0);
    assert_eq!(plan.candidates, inactive);
    assert_eq!(
        plan.protected.get("shared_in").copied(),
        Some(count(&w, TsKind::Shared))
    );
    assert_eq!(
        plan.protected.get("no_last_seen").copied(),
        Some(count(&w, TsKind::NeverSeen))
    );
    let connected = w
        .fleet
        .tailscale
        .iter()
        .filter(|d| d.connected_to_control && !d.is_external)
        .count() as u64;
    assert_eq!(
        plan.protected.get("connected_now").copied().unwrap_or(0),
        connected
    );
    assert_eq!(
        (out.deleted, out.failed, out.skipped_now_active),
        (inactive, 0, 0)
    );

    let again = sync_tailscale::run(&deps, Default::default())
        .await
        .unwrap();
    assert_eq!(
        (again.removed, again.added, again.changed),
        (inactive, 0, 0)
    );
    assert_eq!(again.devices, 200 - inactive);

    let stored = store.current_devices(Source::Tailscale, "-").await.unwrap();
    assert_eq!(
        stored.len(),
        200,
        "removed devices are kept, marked removed"
    );
    let inactive_ids: HashSet<String> = w
        .fleet
        .tailscale_of(TsKind::Inactive)
        .iter()
        .map(|d| d.node_id.clone())
        .collect();
    for d in &stored {
        assert_eq!(
            d.is_removed(),
            inactive_ids.contains(&d.device_id),
            "{}",
            d.device_id
        );
    }
    let runs = store.list_runs(Source::Tailscale, "-", 10).await.unwrap();
    assert_eq!(runs.len(), 2);
    assert!(runs.iter().all(|r| r.status == RunStatus::Succeeded));
    let history = store
        .device_history(
            Source::Tailscale,
            "-",
            inactive_ids.iter().next().unwrap(),
            Utc::now(),
        )
        .await
        .unwrap();
    let kinds: Vec<&str> = history.iter().map(|h| h.kind.as_str()).collect();
    assert_eq!(kinds, vec!["added", "removed"]);
}

#[tokio::test]
async fn pipeline_on_sqlite_matches_the_generated_fleet() {
    pipeline(sqlite()).await;
}

#[tokio::test]
async fn pipeline_on_dynamodb_matches_the_generated_fleet() {
    pipeline(Arc::new(dynamo_store().await)).await;
}

#[tokio::test]
async fn stale_boundary_keeps_just_under_and_deletes_just_over() {
    let w = World::start(sqlite(), 30, 0, Utc::now());
    let ids: Vec<String> = w
        .fleet
        .tailscale_of(TsKind::Laptop)
        .iter()
        .map(|d| d.node_id.clone())
        .collect();
    let (under, over) = (&ids[0], &ids[1]);
    // A few seconds of margin for the time the test itself takes.
    let threshold = Duration::days(90);
    w.ts.set_connected(under, false);
    w.ts.set_connected(over, false);
    w.ts.set_last_seen(under, Some(Utc::now() - threshold + Duration::seconds(5)));
    w.ts.set_last_seen(over, Some(Utc::now() - threshold - Duration::seconds(1)));
    let deps = w.deps().await;
    sync_tailscale::run(&deps, Default::default())
        .await
        .unwrap();
    let (_, out) = apply(&deps).await;
    assert!(
        w.ts.device(under).is_some(),
        "90 days minus a moment is kept"
    );
    assert!(
        w.ts.device(over).is_none(),
        "90 days plus a second is deleted"
    );
    assert_eq!(out.deleted, count(&w, TsKind::Inactive) + 1);
}

#[tokio::test]
async fn stale_minutes_setting_is_honoured() {
    let mut w = World::start(sqlite(), 30, 0, Utc::now());
    w.settings.stale_minutes = 60;
    let laptop = w.fleet.tailscale_of(TsKind::Laptop)[0].node_id.clone();
    w.ts.set_connected(&laptop, false);
    w.ts.set_last_seen(&laptop, Some(Utc::now() - Duration::minutes(61)));
    let deps = w.deps().await;
    sync_tailscale::run(&deps, Default::default())
        .await
        .unwrap();
    let plan = plan_prune::run(&deps, PlanPruneInput::default())
        .await
        .unwrap();
    assert!(plan.dry_run, "dry run by default");
    let entries = deps.store.plan_entries("-", &plan.plan_id).await.unwrap();
    assert!(
        entries
            .iter()
            .any(|e| e.device_id == laptop && e.is_candidate())
    );
}

#[tokio::test]
async fn read_client_never_deletes_and_prune_client_never_syncs() {
    let w = World::start(sqlite(), 80, 0, Utc::now());
    let deps = w.deps().await;
    sync_tailscale::run(&deps, Default::default())
        .await
        .unwrap();
    let (_, out) = apply(&deps).await;
    assert!(out.deleted > 0);
    let (read, _) = w.ts.read_client();
    let (prune, _) = w.ts.prune_client();
    for r in w.ts.requests() {
        let who = r.principal.clone().unwrap_or_default();
        if r.method == "DELETE" || r.path.contains("/device/") {
            assert_eq!(who, prune, "{r:?}");
        }
        if r.path.ends_with("/devices") {
            assert_eq!(who, read, "{r:?}");
        }
    }
}

#[tokio::test]
async fn device_back_online_between_plan_and_apply_is_skipped() {
    let w = World::start(sqlite(), 60, 0, Utc::now());
    let deps = w.deps().await;
    sync_tailscale::run(&deps, Default::default())
        .await
        .unwrap();
    let plan = plan_prune::run(
        &deps,
        PlanPruneInput {
            dry_run: Some(false),
            max_fraction: Some(1.0),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let back = w.fleet.tailscale_of(TsKind::Inactive)[0].node_id.clone();
    w.ts.set_connected(&back, true);
    let out = prune_devices::run(
        &deps,
        PruneDevicesInput {
            plan_id: plan.plan_id.clone(),
        },
    )
    .await
    .unwrap();
    assert_eq!(out.skipped_now_active, 1);
    assert!(w.ts.device(&back).is_some());
    let entries = deps.store.plan_entries("-", &plan.plan_id).await.unwrap();
    let e = entries.iter().find(|e| e.device_id == back).unwrap();
    assert_eq!(e.outcome.unwrap().as_str(), "skipped_now_active");
}

#[tokio::test]
async fn failed_listing_stores_only_a_failed_run() {
    let w = World::start(sqlite(), 20, 0, Utc::now());
    let deps = w.deps().await;
    sync_tailscale::run(&deps, Default::default())
        .await
        .unwrap();
    let before = w
        .store
        .current_devices(Source::Tailscale, "-")
        .await
        .unwrap();
    w.ts.inject(Route::ListDevices, Fault::status(503), 50);
    let e = sync_tailscale::run(&deps, Default::default())
        .await
        .unwrap_err();
    assert_eq!(e.name(), "UpstreamUnavailable");
    let after = w
        .store
        .current_devices(Source::Tailscale, "-")
        .await
        .unwrap();
    assert_eq!(before, after, "nothing changed, nothing marked removed");
    let runs = w.store.list_runs(Source::Tailscale, "-", 5).await.unwrap();
    assert_eq!(runs[0].status, RunStatus::Failed);
    assert!(
        runs[0]
            .error
            .as_deref()
            .unwrap()
            .starts_with("UpstreamUnavailable")
    );
    let plan = plan_prune::run(
        &deps,
        PlanPruneInput {
            run_id: Some(runs[0].run_id.clone()),
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(plan.name(), "StaleSnapshot");
}

#[tokio::test]
async fn incomplete_tinymdm_listing_changes_nothing() {
    let mut w = World::start(sqlite(), 0, 30, Utc::now());
    w.settings.tinymdm_page_size = 10;
    let deps = w.deps().await;
    sync_tinymdm::run(&deps, SyncTinymdmInput::default())
        .await
        .unwrap();
    let before = w
        .store
        .current_devices(Source::Tinymdm, "sim-account")
        .await
        .unwrap();
    w.mdm.inject(Route::ListDevices, Fault::EmptyPage, 1);
    w.mdm.inject(Route::ListDevices, Fault::EmptyPage, 1);
    let e = sync_tinymdm::run(&deps, SyncTinymdmInput::default())
        .await
        .unwrap_err();
    assert_eq!(e.name(), "PartialFailure", "{e}");
    assert_eq!(
        before,
        w.store
            .current_devices(Source::Tinymdm, "sim-account")
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn tinymdm_apps_are_stored_and_kept_by_syncs_without_apps() {
    let fleet = fleetsync_sim::fleet::generate(fleetsync_sim::FleetSpec::new(3, 0, 25, Utc::now()));
    let w = World::with_fleet(sqlite(), fleet, 50);
    let deps = w.deps().await;
    let first = sync_tinymdm::run(
        &deps,
        SyncTinymdmInput {
            include_apps: true,
            run_id: None,
        },
    )
    .await
    .unwrap();
    assert_eq!(first.added, 25);
    let (id, apps) = w
        .fleet
        .tinymdm_apps
        .iter()
        .find(|(_, a)| !a.is_empty())
        .unwrap();
    let stored = w
        .store
        .current_devices(Source::Tinymdm, "sim-account")
        .await
        .unwrap();
    let d = stored.iter().find(|d| &d.device_id == id).unwrap();
    assert_eq!(d.attrs["apps"].as_array().unwrap().len(), apps.len());
    let again = sync_tinymdm::run(&deps, SyncTinymdmInput::default())
        .await
        .unwrap();
    assert_eq!(
        again.changed, 0,
        "a sync without apps keeps the stored apps"
    );
    let stored = w
        .store
        .current_devices(Source::Tinymdm, "sim-account")
        .await
        .unwrap();
    let d = stored.iter().find(|d| &d.device_id == id).unwrap();
    assert_eq!(d.attrs["apps"].as_array().unwrap().len(), apps.len());

    let stored_device = |id: &str| {
        let (store, ids) = (w.store.clone(), vec![id.to_string()]);
        async move {
            let mut found = store
                .devices_by_id(Source::Tinymdm, "sim-account", &ids)
                .await
                .unwrap();
            found.remove(0)
        }
    };
    // Content changes in a sync without apps: the stored apps stay.
    let mut changed = w.mdm.device(id).unwrap();
    changed.os_version = "99".into();
    w.mdm.add_device(changed);
    let no_apps = sync_tinymdm::run(&deps, SyncTinymdmInput::default())
        .await
        .unwrap();
    assert_eq!((no_apps.changed, no_apps.unchanged), (1, 24));
    let d = stored_device(id).await;
    assert_eq!(d.attrs["os_version"], "99");
    assert_eq!(d.attrs["apps"].as_array().unwrap().len(), apps.len());
    let history = w
        .store
        .device_history(Source::Tinymdm, "sim-account", id, Utc::now())
        .await
        .unwrap();
    let change = history.iter().find(|h| h.run_id == no_apps.run_id).unwrap();
    assert_eq!(change.changed_fields, vec!["os_version"]);

    // Only the apps change, in a sync with apps: changed, with the new apps.
    let mut fewer = w.mdm.apps(id);
    fewer.pop();
    w.mdm.set_apps(id, fewer.clone());
    let with_apps = || SyncTinymdmInput {
        include_apps: true,
        run_id: None,
    };
    let apps_run = sync_tinymdm::run(&deps, with_apps()).await.unwrap();
    assert_eq!((apps_run.changed, apps_run.unchanged), (1, 24));
    let d = stored_device(id).await;
    assert_eq!(d.attrs["apps"].as_array().unwrap().len(), fewer.len());
    let again = sync_tinymdm::run(&deps, with_apps()).await.unwrap();
    assert_eq!((again.changed, again.unchanged), (0, 25));
}
