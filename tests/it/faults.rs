//! Every simulator fault against the sync steps: either retried and
//! succeeded with exactly the state a clean run stores, or failed with the
//! named error and the stored state unchanged. Plus a crash between writes,
//! retried with the same run id.

use crate::support::dynamo_store;
use crate::world::{World, sqlite};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use fleetsync::Deps;
use fleetsync::model::{
    DeviceRecord, HistoryEntry, PlanEntry, PrunePlan, RunStatus, Source, SyncCommit, SyncRun,
};
use fleetsync::steps::sync_tailscale::SyncTailscaleInput;
use fleetsync::steps::sync_tinymdm::SyncTinymdmInput;
use fleetsync::steps::{new_run_id, sync_tailscale, sync_tinymdm};
use fleetsync::store::{Recorded, Store, StoreError};
use fleetsync_sim::{Fault, Route, TsKind};
use std::sync::Arc;
use std::time::Duration;

const MDM: &str = "sim-account";

async fn sync(deps: &Deps, source: Source, run_id: &str) -> Result<(), fleetsync::StepError> {
    let run_id = Some(run_id.to_string());
    match source {
        Source::Tailscale => sync_tailscale::run(
            deps,
            SyncTailscaleInput {
                tailnet: None,
                run_id,
            },
        )
        .await
        .map(drop),
        Source::Tinymdm => sync_tinymdm::run(
            deps,
            SyncTinymdmInput {
                include_apps: false,
                run_id,
            },
        )
        .await
        .map(drop),
    }
}

fn tenant(source: Source) -> &'static str {
    match source {
        Source::Tailscale => "-",
        Source::Tinymdm => MDM,
    }
}

/// The stored devices of a source, in id order.
async fn devices(store: &dyn Store, source: Source) -> Vec<DeviceRecord> {
    let mut d = store.current_devices(source, tenant(source)).await.unwrap();
    d.sort_by(|a, b| a.device_id.cmp(&b.device_id));
    d
}

fn world(tailscale: usize, tinymdm: usize, store: Arc<dyn Store>) -> World {
    let mut w = World::start(store, tailscale, tinymdm, Utc::now());
    w.settings.tinymdm_page_size = 20;
    w.settings.http.request_timeout = Duration::from_millis(800);
    w.mdm.set_rate_limit(0);
    w.settings.tinymdm_rate_limit_per_second = 1000;
    w
}

/// Injects `fault` into the listing of `source` and syncs: the run must
/// succeed and store exactly what a clean run with the same id stores.
async fn recovers(source: Source, route: Route, fault: Fault, times: usize) {
    let w = world(40, 50, Arc::new(dynamo_store().await));
    let at: DateTime<Utc> = Utc::now();
    let run_id = new_run_id();
    let clean_store = sqlite();
    let clean = World::with_fleet(clean_store.clone(), w.fleet.clone(), 0);
    let clean_deps = clean.deps().await.with_clock(move || at);
    sync(&clean_deps, source, &run_id).await.unwrap();

    match source {
        Source::Tailscale => w.ts.inject(route, fault.clone(), times),
        Source::Tinymdm => w.mdm.inject(route, fault.clone(), times),
    }
    let deps = w.deps().await.with_clock(move || at);
    sync(&deps, source, &run_id)
        .await
        .unwrap_or_else(|e| panic!("{fault:?}: {e}"));
    assert_eq!(
        devices(w.store.as_ref(), source).await,
        devices(clean_store.as_ref(), source).await,
        "{fault:?}"
    );
    let runs = w.store.list_runs(source, tenant(source), 5).await.unwrap();
    let clean_runs = clean_store
        .list_runs(source, tenant(source), 5)
        .await
        .unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].counts, clean_runs[0].counts, "{fault:?}");
}

/// Injects `fault` after a clean first sync: the second sync must fail with
/// `name`, leave every stored device as it was and record a failed run.
async fn fails_cleanly(source: Source, route: Route, fault: Fault, times: usize, name: &str) {
    let w = world(40, 50, Arc::new(dynamo_store().await));
    let deps = w.deps().await;
    sync(&deps, source, &new_run_id()).await.unwrap();
    let before = devices(w.store.as_ref(), source).await;
    match source {
        Source::Tailscale => {
            // A change upstream that a failed sync must not half-apply.
            let id = w.fleet.tailscale_of(TsKind::Laptop)[0].node_id.clone();
            w.ts.remove_device(&id);
            // A fresh token is needed, so faults on the token endpoint bite too.
            w.ts.expire_tokens();
            w.ts.inject(route, fault.clone(), times);
        }
        Source::Tinymdm => {
            let id = w.fleet.tinymdm[0].id.clone();
            w.mdm.remove_device(&id);
            w.mdm.inject(route, fault.clone(), times);
        }
    }
    let e = sync(&deps, source, &new_run_id()).await.unwrap_err();
    assert_eq!(e.name(), name, "{fault:?}: {e}");
    assert_eq!(
        devices(w.store.as_ref(), source).await,
        before,
        "{fault:?} changed stored state"
    );
    let runs = w.store.list_runs(source, tenant(source), 5).await.unwrap();
    assert_eq!(runs[0].status, RunStatus::Failed);
    assert!(runs[0].error.as_deref().unwrap().starts_with(name));
}

#[tokio::test]
async fn rate_limited_then_success_is_exact() {
    recovers(
        Source::Tailscale,
        Route::ListDevices,
        Fault::status_retry_after(429, "1"),
        2,
    )
    .await;
    recovers(
        Source::Tinymdm,
        Route::ListDevices,
        Fault::status_retry_after(429, "1"),
        2,
    )
    .await;
}

#[tokio::test]
async fn server_errors_then_success_are_exact() {
    for status in [500, 502, 503] {
        recovers(
            Source::Tailscale,
            Route::ListDevices,
            Fault::status(status),
            2,
        )
        .await;
        recovers(
            Source::Tinymdm,
            Route::ListDevices,
            Fault::status(status),
            1,
        )
        .await;
    }
}

#[tokio::test]
async fn hang_past_the_timeout_is_retried() {
    let hang = Fault::delay(Duration::from_millis(2000));
    recovers(Source::Tailscale, Route::ListDevices, hang.clone(), 1).await;
    recovers(Source::Tinymdm, Route::ListDevices, hang, 1).await;
}

#[tokio::test]
async fn connection_reset_is_retried() {
    recovers(Source::Tailscale, Route::ListDevices, Fault::Reset, 2).await;
    recovers(Source::Tinymdm, Route::ListDevices, Fault::Reset, 1).await;
}

#[tokio::test]
async fn truncated_body_is_retried() {
    recovers(Source::Tailscale, Route::ListDevices, Fault::Truncated, 1).await;
    recovers(Source::Tinymdm, Route::ListDevices, Fault::Truncated, 2).await;
}

#[tokio::test]
async fn body_cut_inside_a_number_is_retried() {
    // serde_json reports `"latency": 12.` at the end as "invalid number", not
    // as EOF; the transport still takes it for a cut body. Tailscale's list is
    // parsed as it streams, TinyMDM's pages whole: both paths are covered.
    recovers(
        Source::Tailscale,
        Route::ListDevices,
        Fault::TruncatedInNumber,
        1,
    )
    .await;
    recovers(
        Source::Tinymdm,
        Route::ListDevices,
        Fault::TruncatedInNumber,
        2,
    )
    .await;
}

#[tokio::test]
async fn early_token_expiry_refreshes_once() {
    recovers(
        Source::Tailscale,
        Route::ListDevices,
        Fault::ExpireTokens,
        1,
    )
    .await;
}

#[tokio::test]
async fn repeated_device_across_pages_is_kept_once() {
    recovers(Source::Tinymdm, Route::ListDevices, Fault::RepeatDevice, 1).await;
}

#[tokio::test]
async fn errors_past_the_retries_fail_without_touching_state() {
    fails_cleanly(
        Source::Tailscale,
        Route::ListDevices,
        Fault::status(503),
        10,
        "UpstreamUnavailable",
    )
    .await;
    fails_cleanly(
        Source::Tinymdm,
        Route::ListDevices,
        Fault::status(500),
        10,
        "UpstreamUnavailable",
    )
    .await;
    fails_cleanly(
        Source::Tailscale,
        Route::Token,
        Fault::status(401),
        1,
        "AuthError",
    )
    .await;
    fails_cleanly(
        Source::Tinymdm,
        Route::ListDevices,
        Fault::status(403),
        1,
        "AuthError",
    )
    .await;
    fails_cleanly(
        Source::Tailscale,
        Route::ListDevices,
        Fault::Reset,
        10,
        "UpstreamUnavailable",
    )
    .await;
}

/// A token response that never arrives whole: the step fails as upstream
/// trouble, and neither the error nor the run record quotes the part of the
/// body that did arrive (it holds the access token).
#[tokio::test]
async fn cut_token_response_fails_without_quoting_the_token() {
    fails_cleanly(
        Source::Tailscale,
        Route::Token,
        Fault::Truncated,
        10,
        "UpstreamUnavailable",
    )
    .await;
    let w = world(5, 5, sqlite());
    let deps = w.deps().await;
    w.ts.inject(Route::Token, Fault::Truncated, 10);
    let e = sync(&deps, Source::Tailscale, &new_run_id())
        .await
        .unwrap_err();
    let runs = w.store.list_runs(Source::Tailscale, "-", 1).await.unwrap();
    for text in [e.to_string(), runs[0].error.clone().unwrap()] {
        assert!(text.contains("oauth token"), "{text}");
        assert!(!text.contains("tskey-"), "the token is quoted: {text}");
    }
}

/// A device deleted upstream while the sync pages through the account
/// shifts the later pages, so another device slips between two pages. The
/// changed count gives it away: the listing starts over and the stored
/// state matches the account exactly (only the deleted device is removed).
#[tokio::test]
async fn device_deleted_while_paging_lists_again_and_removes_only_it() {
    let w = world(0, 50, sqlite());
    let deps = w.deps().await;
    sync(&deps, Source::Tinymdm, &new_run_id()).await.unwrap();
    w.mdm.inject(Route::ListDevices, Fault::DeleteBeforePage, 1);
    sync(&deps, Source::Tinymdm, &new_run_id()).await.unwrap();
    assert_eq!(w.mdm.device_count(), 49, "the fault deleted one device");
    let mut upstream: Vec<String> = w.mdm.devices().into_iter().map(|d| d.id).collect();
    upstream.sort();
    let stored = devices(w.store.as_ref(), Source::Tinymdm).await;
    let present: Vec<String> = stored
        .iter()
        .filter(|d| !d.is_removed())
        .map(|d| d.device_id.clone())
        .collect();
    assert_eq!(present, upstream, "stored devices are the account's");
    let run = &w.store.list_runs(Source::Tinymdm, MDM, 1).await.unwrap()[0];
    assert_eq!((run.counts.removed, run.counts.added), (1, 0));
    // Two passes of 3 pages (20 a page); the run keeps the second.
    assert_eq!((run.pages, run.http_requests), (3, 6), "{run:?}");
}

/// The count changes on the second pass too: nothing is stored but a
/// failed run naming the cause.
#[tokio::test]
async fn device_count_changing_on_every_pass_fails_without_touching_state() {
    fails_cleanly(
        Source::Tinymdm,
        Route::ListDevices,
        Fault::DeleteBeforePage,
        10,
        "PartialFailure",
    )
    .await;
}

#[tokio::test]
async fn non_json_body_fails_without_touching_state() {
    fails_cleanly(
        Source::Tailscale,
        Route::ListDevices,
        Fault::NonJson,
        1,
        "UpstreamRejected",
    )
    .await;
    fails_cleanly(
        Source::Tinymdm,
        Route::ListDevices,
        Fault::NonJson,
        1,
        "UpstreamRejected",
    )
    .await;
}

#[tokio::test]
async fn empty_page_before_the_count_fails_without_touching_state() {
    fails_cleanly(
        Source::Tinymdm,
        Route::ListDevices,
        Fault::EmptyPage,
        1,
        "PartialFailure",
    )
    .await;
}

#[tokio::test]
async fn a_malformed_device_is_skipped_reported_and_removes_nothing() {
    for source in [Source::Tailscale, Source::Tinymdm] {
        let w = world(40, 50, Arc::new(dynamo_store().await));
        let deps = w.deps().await;
        sync(&deps, source, &new_run_id()).await.unwrap();
        let before = devices(w.store.as_ref(), source).await;
        match source {
            Source::Tailscale => w.ts.inject(Route::ListDevices, Fault::CorruptDevice, 1),
            Source::Tinymdm => w.mdm.inject(Route::ListDevices, Fault::CorruptDevice, 1),
        }
        sync(&deps, source, &new_run_id()).await.unwrap();
        let run = &w.store.list_runs(source, tenant(source), 1).await.unwrap()[0];
        assert_eq!(run.status, RunStatus::Succeeded);
        assert_eq!(run.counts.invalid, 1, "{source}");
        assert_eq!(run.invalid_reasons.len(), 1);
        assert_eq!(
            run.counts.removed, 0,
            "the unreadable device is not taken for removed"
        );
        let after = devices(w.store.as_ref(), source).await;
        assert_eq!(after.len(), before.len());
        assert!(after.iter().all(|d| !d.is_removed()));
    }
}

/// A store that writes part of a commit, then fails, as a Lambda killed
/// between batches would: the history and some records (`all`: every
/// record), no run record.
struct CrashingStore {
    inner: Arc<dyn Store>,
    all: bool,
}

#[async_trait]
impl Store for CrashingStore {
    async fn current_devices(&self, s: Source, t: &str) -> Result<Vec<DeviceRecord>, StoreError> {
        self.inner.current_devices(s, t).await
    }
    async fn commit_sync(&self, commit: &SyncCommit) -> Result<u64, StoreError> {
        let keep = if self.all {
            commit.records.len()
        } else {
            commit.records.len() / 2
        };
        let partial = SyncCommit {
            records: commit.records[..keep].to_vec(),
            history: commit.history.clone(),
            run: None,
        };
        self.inner.commit_sync(&partial).await?;
        Err(StoreError::Unavailable(
            "simulated crash between writes".into(),
        ))
    }
    async fn put_run(&self, run: &SyncRun) -> Result<(), StoreError> {
        self.inner.put_run(run).await
    }
    async fn get_run(&self, s: Source, t: &str, id: &str) -> Result<Option<SyncRun>, StoreError> {
        self.inner.get_run(s, t, id).await
    }
    async fn list_runs(&self, s: Source, t: &str, n: usize) -> Result<Vec<SyncRun>, StoreError> {
        self.inner.list_runs(s, t, n).await
    }
    async fn tenants(&self, s: Source) -> Result<Vec<String>, StoreError> {
        self.inner.tenants(s).await
    }
    async fn device_history(
        &self,
        s: Source,
        t: &str,
        d: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<HistoryEntry>, StoreError> {
        self.inner.device_history(s, t, d, now).await
    }
    async fn put_plan(&self, p: &PrunePlan, e: &[PlanEntry]) -> Result<(), StoreError> {
        self.inner.put_plan(p, e).await
    }
    async fn update_plan(&self, p: &PrunePlan) -> Result<(), StoreError> {
        self.inner.update_plan(p).await
    }
    async fn get_plan(&self, t: &str, id: &str) -> Result<Option<PrunePlan>, StoreError> {
        self.inner.get_plan(t, id).await
    }
    async fn list_plans(&self, t: &str, n: usize) -> Result<Vec<PrunePlan>, StoreError> {
        self.inner.list_plans(t, n).await
    }
    async fn plan_entries(&self, t: &str, id: &str) -> Result<Vec<PlanEntry>, StoreError> {
        self.inner.plan_entries(t, id).await
    }
    async fn record_outcome(&self, t: &str, e: &PlanEntry) -> Result<Recorded, StoreError> {
        self.inner.record_outcome(t, e).await
    }
    async fn acquire_lease(
        &self,
        n: &str,
        h: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.inner.acquire_lease(n, h, now, until).await
    }
    async fn release_lease(&self, n: &str, h: &str) -> Result<(), StoreError> {
        self.inner.release_lease(n, h).await
    }
}

async fn everything(
    store: &dyn Store,
    w: &World,
) -> (Vec<DeviceRecord>, Vec<Vec<HistoryEntry>>, Vec<SyncRun>) {
    let devices = devices(store, Source::Tailscale).await;
    let mut history = Vec::new();
    for d in &w.fleet.tailscale {
        history.push(
            store
                .device_history(Source::Tailscale, "-", &d.node_id, Utc::now())
                .await
                .unwrap(),
        );
    }
    let runs = store.list_runs(Source::Tailscale, "-", 10).await.unwrap();
    (devices, history, runs)
}

/// Crashes the second of two syncs part way (`all`: after every device
/// write, before the run record), retries it with the same run id, and
/// compares everything stored with a world where it ran once, cleanly.
async fn crash_then_retry(all: bool) {
    let at: DateTime<Utc> = Utc::now();
    let crashed_store: Arc<dyn Store> = Arc::new(dynamo_store().await);
    let clean_store: Arc<dyn Store> = Arc::new(dynamo_store().await);
    let w = world(80, 0, crashed_store.clone());
    let clean = World::with_fleet(clean_store.clone(), w.fleet.clone(), 0);
    let deps = w.deps().await.with_clock(move || at);
    let clean_deps = clean.deps().await.with_clock(move || at);
    let first = new_run_id();
    sync(&deps, Source::Tailscale, &first).await.unwrap();
    sync(&clean_deps, Source::Tailscale, &first).await.unwrap();

    // Upstream changes: churn, removals, a new device; the same in both worlds.
    w.ts.churn(0.3, 9);
    clean.ts.churn(0.3, 9);
    for id in w
        .fleet
        .tailscale_of(TsKind::Phone)
        .iter()
        .take(3)
        .map(|d| d.node_id.clone())
    {
        w.ts.remove_device(&id);
        clean.ts.remove_device(&id);
    }
    let second = new_run_id();
    let mut crashing = deps.clone();
    crashing.store = Arc::new(CrashingStore {
        inner: crashed_store.clone(),
        all,
    });
    let e = sync(&crashing, Source::Tailscale, &second)
        .await
        .unwrap_err();
    assert_eq!(e.name(), "StoreUnavailable");
    let failed = crashed_store
        .get_run(Source::Tailscale, "-", &second)
        .await
        .unwrap()
        .expect("the crashed attempt left a failed run record");
    assert_eq!(failed.status, RunStatus::Failed);
    sync(&deps, Source::Tailscale, &second).await.unwrap();
    sync(&clean_deps, Source::Tailscale, &second).await.unwrap();

    let (d1, h1, r1) = everything(crashed_store.as_ref(), &w).await;
    let (d2, h2, r2) = everything(clean_store.as_ref(), &w).await;
    assert_eq!(d1, d2, "current state (all: {all})");
    assert_eq!(
        h1, h2,
        "history: nothing twice, nothing missing (all: {all})"
    );
    let mut r1_seen = r1.clone();
    if all {
        // The retry found every device written and wrote only the run
        // record: `store_writes` tells what this attempt wrote.
        assert_eq!(r1_seen[0].store_writes, 1);
        r1_seen[0].store_writes = r2[0].store_writes;
    }
    assert_eq!(r1_seen, r2, "run records, counters included (all: {all})");
    assert!(r1[0].counts.changed > 0 && r1[0].counts.removed == 3);

    // A third attempt of the run that succeeded, whose listing now fails,
    // leaves the success on record.
    w.ts.inject(Route::ListDevices, Fault::status(400), 1);
    let e = sync(&deps, Source::Tailscale, &second).await.unwrap_err();
    assert_ne!(e.name(), "Internal");
    let (d3, _, r3) = everything(crashed_store.as_ref(), &w).await;
    assert_eq!(
        (d3, r3),
        (d1, r1),
        "a failed retry of a done run changes nothing"
    );
}

#[tokio::test]
async fn retry_with_the_same_run_id_after_a_crash_ends_as_one_clean_run() {
    crash_then_retry(false).await;
}

#[tokio::test]
async fn retry_after_a_crash_before_the_run_record_counts_its_removals() {
    crash_then_retry(true).await;
}
