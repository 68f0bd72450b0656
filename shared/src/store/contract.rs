//! The `Store` contract suite: the behaviour every backend must show, written
//! once and run against `SqliteStore` here and against `DynamoStore` on an
//! emulated DynamoDB in the `fleetsync-tests` crate.
//!
//! Each behaviour is one public async function taking a fresh, empty store.
//! `store_contract_tests!` expands to one `#[tokio::test]` per behaviour, so a
//! backend runs the whole suite with one line. The `sample_*` builders make
//! realistic values for these and other tests.

use super::{Recorded, Store, StoreError};
use crate::model::{
    ChangeKind, DeviceRecord, DeviceState, HistoryEntry, Outcome, PlanEntry, PlanSettings,
    PlanStatus, PruneCounts, PrunePlan, Reason, RunStatus, Source, SyncCommit, SyncCounts, SyncRun,
};
use chrono::{DateTime, Duration, TimeZone, Utc};
use serde_json::json;
use std::collections::BTreeMap;

/// Expands to one `#[tokio::test]` per contract behaviour. `$make` is an
/// expression evaluating to a future that yields a fresh, empty store; it is
/// evaluated once per test.
///
/// ```text
/// fleetsync::store_contract_tests!(async { SqliteStore::in_memory().unwrap() });
/// ```
#[macro_export]
macro_rules! store_contract_tests {
    ($make:expr) => {
        $crate::store_contract_tests!(@cases $make;
            commit_round_trips_every_device_field,
            commit_twice_is_idempotent,
            commit_with_only_a_run_stores_the_run,
            history_is_oldest_first_and_hides_expired_entries,
            runs_are_listed_newest_first_with_limit,
            get_run_finds_only_the_asked_run,
            tenants_are_listed_per_source,
            tenants_do_not_see_each_others_data,
            plans_put_get_update_and_list_newest_first,
            plan_entries_are_ordered_by_device_id_without_expired,
            record_outcome_keeps_the_first_outcome,
            lease_acquire_conflict_takeover_and_release,
            large_commit_round_trips,
            device_states_and_chosen_records_match_current_devices,
        );
    };
    (@cases $make:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $case() {
                let store = $make.await;
                $crate::store::contract::$case(&store).await;
            }
        )*
    };
}

/// A fixed instant with sub-second precision, so timestamps must round-trip exactly.
pub fn base_time() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 14, 15, 9, 26).unwrap() + Duration::nanoseconds(535_897_932)
}

/// A UUIDv7 run or plan id for the instant `at`: ids of later instants sort
/// after, and the same instant always gives the same id.
pub fn id_at(at: DateTime<Utc>) -> String {
    let millis = u64::try_from(at.timestamp_millis()).unwrap_or(0);
    let sub_milli = at.timestamp_subsec_nanos() % 1_000_000;
    let mut rest = [0u8; 10];
    rest[6..].copy_from_slice(&sub_milli.to_be_bytes());
    uuid::Builder::from_unix_timestamp_millis(millis, &rest)
        .into_uuid()
        .to_string()
}

/// Device `n` of a tenant; even devices have a last-seen time, every third is removed.
pub fn sample_device(source: Source, tenant: &str, n: usize) -> DeviceRecord {
    let t = base_time();
    DeviceRecord {
        source,
        tenant: tenant.to_string(),
        device_id: format!("dev{n:05}"),
        name: format!("host-{n}.{tenant}"),
        last_seen: n.is_multiple_of(2).then(|| t - Duration::minutes(n as i64)),
        connected: n.is_multiple_of(5),
        fingerprint: format!("{:016x}", n * 7919),
        attrs: json!({
            "os": "linux",
            "tags": ["tag:server", format!("tag:n{n}")],
            "addresses": ["100.64.0.1", "fd7a:115c:a1e0::1"],
            "client_version": "1.80.3",
            "update_available": n.is_multiple_of(3),
            "key_expiry_disabled": false,
            "user": null,
            "empty": "",
            "none": [],
            "nested": {"count": n, "label": "x"},
        }),
        raw: format!(r#"{{"nodeId":"dev{n:05}","hostname":"host-{n}","os":"linux"}}"#),
        first_seen_at: t - Duration::days(30),
        updated_at: t,
        removed_at: n.is_multiple_of(3).then(|| t - Duration::seconds(1)),
        last_run_id: id_at(t),
        last_change: if n.is_multiple_of(3) {
            ChangeKind::Removed
        } else {
            ChangeKind::Added
        },
    }
}

/// A succeeded run of a tenant, `seq` minutes after `base_time()`.
pub fn sample_run(source: Source, tenant: &str, seq: i64) -> SyncRun {
    let started = base_time() + Duration::minutes(seq);
    SyncRun {
        source,
        tenant: tenant.to_string(),
        run_id: id_at(started),
        started_at: started,
        finished_at: started + Duration::milliseconds(1234),
        status: RunStatus::Succeeded,
        counts: SyncCounts {
            devices: 10,
            added: 3,
            changed: 2,
            removed: 1,
            unchanged: 4,
            invalid: 1,
        },
        pages: 2,
        http_requests: 3,
        store_writes: 4,
        error: None,
        invalid_reasons: vec!["dev-x: missing nodeId".to_string()],
    }
}

/// The history entry a run records for a device, expiring at `expires_at`.
pub fn sample_history(device: &DeviceRecord, run: &SyncRun, expires_at: i64) -> HistoryEntry {
    HistoryEntry {
        source: device.source,
        tenant: device.tenant.clone(),
        device_id: device.device_id.clone(),
        run_id: run.run_id.clone(),
        at: run.started_at,
        kind: ChangeKind::Changed,
        name: device.name.clone(),
        changed_fields: vec!["os".to_string(), "tags".to_string()],
        last_seen: device.last_seen,
        attrs: device.attrs.clone(),
        expires_at,
    }
}

/// A plan of a tenant made `seq` minutes after `base_time()`.
pub fn sample_plan(tenant: &str, seq: i64) -> PrunePlan {
    let created = base_time() + Duration::minutes(seq);
    PrunePlan {
        plan_id: id_at(created),
        tenant: tenant.to_string(),
        created_at: created,
        snapshot_run_id: id_at(created - Duration::seconds(30)),
        settings: PlanSettings {
            stale_minutes: 129_600,
            exclude_tags: vec!["tag:keep".to_string()],
            only_tags: vec![],
            exclude_hostnames: vec!["build-*".to_string()],
            max_deletions: 50,
            max_fraction: 0.25,
        },
        fleet_size: 120,
        candidates: 3,
        protected: BTreeMap::from([
            ("connected_now".to_string(), 7),
            ("no_last_seen".to_string(), 2),
        ]),
        dry_run: false,
        needs_approval: false,
        approval_reason: None,
        approved_at: None,
        status: PlanStatus::Ready,
        applied_at: None,
        outcome: None,
    }
}

/// A candidate entry of a plan without an outcome, expiring 90 days from now
/// (the wall clock: `Store::plan_entries` takes no clock).
pub fn sample_entry(plan: &PrunePlan, device_id: &str) -> PlanEntry {
    PlanEntry {
        plan_id: plan.plan_id.clone(),
        device_id: device_id.to_string(),
        name: format!("host-{device_id}"),
        last_seen: Some(plan.created_at - Duration::days(200)),
        tags: vec!["tag:server".to_string()],
        reason: Reason::Stale,
        outcome: None,
        detail: None,
        acted_at: None,
        expires_at: (Utc::now() + Duration::days(90)).timestamp(),
    }
}

fn sorted_by_id(mut devices: Vec<DeviceRecord>) -> Vec<DeviceRecord> {
    devices.sort_by(|a, b| a.device_id.cmp(&b.device_id));
    devices
}

fn far_future() -> i64 {
    (base_time() + Duration::days(3650)).timestamp()
}

/// Every field of a device record survives a commit and read-back, including
/// `None` and `Some` options, sub-second times, JSON attrs and `removed_at`.
pub async fn commit_round_trips_every_device_field(store: &dyn Store) {
    let tenant = "example.com";
    let run = sample_run(Source::Tailscale, tenant, 0);
    let devices: Vec<_> = (0..6)
        .map(|n| sample_device(Source::Tailscale, tenant, n))
        .collect();
    assert!(devices.iter().any(|d| d.last_seen.is_none()));
    assert!(devices.iter().any(|d| d.removed_at.is_some()));
    let history = devices
        .iter()
        .map(|d| sample_history(d, &run, far_future()))
        .collect();
    let commit = SyncCommit {
        records: devices.clone(),
        history,
        run: Some(run.clone()),
    };
    let writes = store.commit_sync(&commit).await.unwrap();
    assert!(writes >= 1);

    let got = store
        .current_devices(Source::Tailscale, tenant)
        .await
        .unwrap();
    assert_eq!(sorted_by_id(got), devices);
    assert_eq!(
        store
            .get_run(Source::Tailscale, tenant, &run.run_id)
            .await
            .unwrap(),
        Some(run.clone())
    );
    let hist = store
        .device_history(
            Source::Tailscale,
            tenant,
            &devices[1].device_id,
            base_time(),
        )
        .await
        .unwrap();
    assert_eq!(hist, vec![sample_history(&devices[1], &run, far_future())]);
    assert!(
        store
            .current_devices(Source::Tinymdm, tenant)
            .await
            .unwrap()
            .is_empty()
    );
}

/// Writing the same commit twice leaves one record, one history entry per
/// device and one run.
pub async fn commit_twice_is_idempotent(store: &dyn Store) {
    let tenant = "acct-1";
    let run = sample_run(Source::Tinymdm, tenant, 0);
    let devices: Vec<_> = (0..4)
        .map(|n| sample_device(Source::Tinymdm, tenant, n))
        .collect();
    let commit = SyncCommit {
        records: devices.clone(),
        history: devices
            .iter()
            .map(|d| sample_history(d, &run, far_future()))
            .collect(),
        run: Some(run.clone()),
    };
    store.commit_sync(&commit).await.unwrap();
    store.commit_sync(&commit).await.unwrap();

    let got = store
        .current_devices(Source::Tinymdm, tenant)
        .await
        .unwrap();
    assert_eq!(sorted_by_id(got), devices);
    for d in &devices {
        let hist = store
            .device_history(Source::Tinymdm, tenant, &d.device_id, base_time())
            .await
            .unwrap();
        assert_eq!(hist.len(), 1, "history of {}", d.device_id);
    }
    assert_eq!(
        store.list_runs(Source::Tinymdm, tenant, 10).await.unwrap(),
        vec![run]
    );
}

/// A sync that changed nothing stores its run record and lists its tenant.
pub async fn commit_with_only_a_run_stores_the_run(store: &dyn Store) {
    let run = sample_run(Source::Tailscale, "quiet.example", 0);
    let commit = SyncCommit {
        records: vec![],
        history: vec![],
        run: Some(run.clone()),
    };
    let writes = store.commit_sync(&commit).await.unwrap();
    assert_eq!(writes, 1, "a sync with no change costs one write request");
    assert_eq!(
        store
            .list_runs(Source::Tailscale, "quiet.example", 5)
            .await
            .unwrap(),
        vec![run]
    );
    assert_eq!(
        store.tenants(Source::Tailscale).await.unwrap(),
        vec!["quiet.example".to_string()]
    );
    assert!(
        store
            .current_devices(Source::Tailscale, "quiet.example")
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.commit_sync(&SyncCommit::default()).await.unwrap(), 0);
}

/// History comes back oldest first; entries past `expires_at` are left out.
pub async fn history_is_oldest_first_and_hides_expired_entries(store: &dyn Store) {
    let tenant = "example.com";
    let device = sample_device(Source::Tailscale, tenant, 1);
    let now = base_time() + Duration::days(1);
    let runs: Vec<_> = (0..4)
        .map(|seq| sample_run(Source::Tailscale, tenant, seq))
        .collect();
    let entries: Vec<_> = runs
        .iter()
        .enumerate()
        .map(|(i, run)| {
            let expires = if i == 1 {
                now.timestamp() - 1
            } else {
                now.timestamp() + 3600
            };
            let mut e = sample_history(&device, run, expires);
            e.kind = if i == 0 {
                ChangeKind::Added
            } else {
                ChangeKind::Changed
            };
            e
        })
        .collect();
    // Committed newest first, so order on read comes from the store.
    for (run, entry) in runs.iter().zip(&entries).rev() {
        let commit = SyncCommit {
            records: vec![device.clone()],
            history: vec![entry.clone()],
            run: Some(run.clone()),
        };
        store.commit_sync(&commit).await.unwrap();
    }
    let got = store
        .device_history(Source::Tailscale, tenant, &device.device_id, now)
        .await
        .unwrap();
    assert_eq!(
        got,
        vec![entries[0].clone(), entries[2].clone(), entries[3].clone()]
    );
    let other = store
        .device_history(Source::Tailscale, tenant, "dev99999", now)
        .await
        .unwrap();
    assert!(other.is_empty());
}

/// `list_runs` is newest first and honours the limit.
pub async fn runs_are_listed_newest_first_with_limit(store: &dyn Store) {
    let tenant = "example.com";
    let runs: Vec<_> = (0..7)
        .map(|seq| sample_run(Source::Tailscale, tenant, seq))
        .collect();
    for run in [
        &runs[3], &runs[0], &runs[6], &runs[1], &runs[5], &runs[2], &runs[4],
    ] {
        store.put_run(run).await.unwrap();
    }
    let got = store.list_runs(Source::Tailscale, tenant, 3).await.unwrap();
    assert_eq!(got, vec![runs[6].clone(), runs[5].clone(), runs[4].clone()]);
    let all = store
        .list_runs(Source::Tailscale, tenant, 100)
        .await
        .unwrap();
    let mut expected = runs.clone();
    expected.reverse();
    assert_eq!(all, expected);
    assert!(
        store
            .list_runs(Source::Tailscale, tenant, 0)
            .await
            .unwrap()
            .is_empty()
    );
}

/// `get_run` finds a run by source, tenant and id, and nothing under another key.
pub async fn get_run_finds_only_the_asked_run(store: &dyn Store) {
    let mut failed = sample_run(Source::Tinymdm, "acct-1", 0);
    failed.status = RunStatus::Failed;
    failed.error = Some("UpstreamUnavailable: 503 from tinymdm".to_string());
    failed.invalid_reasons = vec![];
    store.put_run(&failed).await.unwrap();
    assert_eq!(
        store
            .get_run(Source::Tinymdm, "acct-1", &failed.run_id)
            .await
            .unwrap(),
        Some(failed.clone())
    );
    assert_eq!(
        store
            .get_run(Source::Tailscale, "acct-1", &failed.run_id)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .get_run(Source::Tinymdm, "acct-2", &failed.run_id)
            .await
            .unwrap(),
        None
    );
    let missing = id_at(base_time() + Duration::hours(5));
    assert_eq!(
        store
            .get_run(Source::Tinymdm, "acct-1", &missing)
            .await
            .unwrap(),
        None
    );
}

/// `tenants` lists each tenant with a run once, per source.
pub async fn tenants_are_listed_per_source(store: &dyn Store) {
    assert!(store.tenants(Source::Tailscale).await.unwrap().is_empty());
    store
        .put_run(&sample_run(Source::Tailscale, "b.example", 0))
        .await
        .unwrap();
    store
        .put_run(&sample_run(Source::Tailscale, "a.example", 1))
        .await
        .unwrap();
    store
        .put_run(&sample_run(Source::Tailscale, "a.example", 2))
        .await
        .unwrap();
    let commit = SyncCommit {
        records: vec![sample_device(Source::Tinymdm, "acct-9", 1)],
        history: vec![],
        run: Some(sample_run(Source::Tinymdm, "acct-9", 3)),
    };
    store.commit_sync(&commit).await.unwrap();

    let mut ts = store.tenants(Source::Tailscale).await.unwrap();
    ts.sort();
    assert_eq!(ts, vec!["a.example".to_string(), "b.example".to_string()]);
    assert_eq!(
        store.tenants(Source::Tinymdm).await.unwrap(),
        vec!["acct-9".to_string()]
    );
}

/// Two tenants (and two sources) in one store never see each other's devices,
/// runs or history.
pub async fn tenants_do_not_see_each_others_data(store: &dyn Store) {
    let mut commits = Vec::new();
    for (source, tenant) in [
        (Source::Tailscale, "one.example"),
        (Source::Tailscale, "two.example"),
        (Source::Tinymdm, "one.example"),
    ] {
        let run = sample_run(source, tenant, 0);
        let devices: Vec<_> = (0..3)
            .map(|n| {
                let mut d = sample_device(source, tenant, n);
                d.name = format!("{source}-{tenant}-{n}");
                d
            })
            .collect();
        let commit = SyncCommit {
            history: devices
                .iter()
                .map(|d| sample_history(d, &run, far_future()))
                .collect(),
            records: devices,
            run: Some(run),
        };
        store.commit_sync(&commit).await.unwrap();
        commits.push((source, tenant, commit));
    }
    for (source, tenant, commit) in &commits {
        let got = store.current_devices(*source, tenant).await.unwrap();
        assert_eq!(sorted_by_id(got), commit.records, "{source} {tenant}");
        let runs = store.list_runs(*source, tenant, 10).await.unwrap();
        assert_eq!(runs, vec![commit.run.clone().unwrap()]);
        let hist = store
            .device_history(*source, tenant, &commit.records[0].device_id, base_time())
            .await
            .unwrap();
        assert_eq!(hist, vec![commit.history[0].clone()]);
    }
    assert!(
        store
            .current_devices(Source::Tinymdm, "two.example")
            .await
            .unwrap()
            .is_empty()
    );
}

/// Plans are stored, read, rewritten and listed newest first, per tenant.
pub async fn plans_put_get_update_and_list_newest_first(store: &dyn Store) {
    let tenant = "example.com";
    let plans: Vec<_> = (0..3).map(|seq| sample_plan(tenant, seq)).collect();
    for plan in [&plans[1], &plans[0], &plans[2]] {
        store.put_plan(plan, &[]).await.unwrap();
    }
    assert_eq!(
        store.get_plan(tenant, &plans[1].plan_id).await.unwrap(),
        Some(plans[1].clone())
    );
    assert_eq!(
        store
            .get_plan("other.example", &plans[1].plan_id)
            .await
            .unwrap(),
        None
    );

    let mut applied = plans[0].clone();
    applied.status = PlanStatus::Applied;
    applied.needs_approval = true;
    applied.approval_reason = Some("3 candidates exceed max_fraction 0.25".to_string());
    applied.approved_at = Some(base_time() + Duration::hours(1));
    applied.applied_at = Some(base_time() + Duration::hours(2));
    applied.outcome = Some(PruneCounts {
        deleted: 2,
        skipped_now_active: 1,
        already_gone: 0,
        failed: 0,
    });
    store.update_plan(&applied).await.unwrap();
    assert_eq!(
        store.get_plan(tenant, &applied.plan_id).await.unwrap(),
        Some(applied.clone())
    );

    let listed = store.list_plans(tenant, 2).await.unwrap();
    assert_eq!(listed, vec![plans[2].clone(), plans[1].clone()]);
    let all = store.list_plans(tenant, 10).await.unwrap();
    assert_eq!(all, vec![plans[2].clone(), plans[1].clone(), applied]);
    assert!(
        store
            .list_plans("other.example", 10)
            .await
            .unwrap()
            .is_empty()
    );
}

/// A plan's entries come back ordered by device id; expired ones are left out.
pub async fn plan_entries_are_ordered_by_device_id_without_expired(store: &dyn Store) {
    let tenant = "example.com";
    let plan = sample_plan(tenant, 0);
    let mut entries: Vec<_> = ["n-3", "n-1", "n-2", "a-9"]
        .iter()
        .map(|id| sample_entry(&plan, id))
        .collect();
    entries[2].reason = Reason::ConnectedNow;
    entries[2].last_seen = None;
    entries[2].tags = vec![];
    let mut expired = sample_entry(&plan, "n-0");
    expired.expires_at = (Utc::now() - Duration::days(1)).timestamp();
    let mut all = entries.clone();
    all.push(expired);
    store.put_plan(&plan, &all).await.unwrap();

    let got = store.plan_entries(tenant, &plan.plan_id).await.unwrap();
    let mut expected = entries.clone();
    expected.sort_by(|a, b| a.device_id.cmp(&b.device_id));
    assert_eq!(got, expected);

    let other = sample_plan(tenant, 1);
    store.put_plan(&other, &[]).await.unwrap();
    assert!(
        store
            .plan_entries(tenant, &other.plan_id)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .plan_entries("other.example", &plan.plan_id)
            .await
            .unwrap()
            .is_empty()
    );
}

/// The first outcome recorded for an entry is kept; a second one is refused
/// with the first outcome.
pub async fn record_outcome_keeps_the_first_outcome(store: &dyn Store) {
    let tenant = "example.com";
    let plan = sample_plan(tenant, 0);
    let entries = vec![sample_entry(&plan, "d1"), sample_entry(&plan, "d2")];
    store.put_plan(&plan, &entries).await.unwrap();

    let mut first = entries[0].clone();
    first.outcome = Some(Outcome::Deleted);
    first.detail = Some("deleted after re-check".to_string());
    first.acted_at = Some(base_time() + Duration::minutes(3));
    assert_eq!(
        store.record_outcome(tenant, &first).await.unwrap(),
        Recorded::New
    );

    let mut second = entries[0].clone();
    second.outcome = Some(Outcome::Failed);
    second.detail = Some("500 from tailscale".to_string());
    second.acted_at = Some(base_time() + Duration::minutes(4));
    assert_eq!(
        store.record_outcome(tenant, &second).await.unwrap(),
        Recorded::AlreadyRecorded(Outcome::Deleted)
    );

    let mut other = entries[1].clone();
    other.outcome = Some(Outcome::SkippedNowActive);
    other.acted_at = Some(base_time() + Duration::minutes(5));
    assert_eq!(
        store.record_outcome(tenant, &other).await.unwrap(),
        Recorded::New
    );

    let got = store.plan_entries(tenant, &plan.plan_id).await.unwrap();
    assert_eq!(got, vec![first, other]);
}

/// A lease is exclusive until it expires, renewable by its holder, taken over
/// once expired, and released only by its holder.
pub async fn lease_acquire_conflict_takeover_and_release(store: &dyn Store) {
    let t0 = base_time();
    let until = t0 + Duration::seconds(60);
    store
        .acquire_lease("prune", "worker-a", t0, until)
        .await
        .unwrap();

    let err = store
        .acquire_lease(
            "prune",
            "worker-b",
            t0 + Duration::seconds(1),
            t0 + Duration::seconds(90),
        )
        .await
        .unwrap_err();
    match err {
        StoreError::Conflict(msg) => assert!(msg.contains("worker-a"), "{msg}"),
        other => panic!("expected a conflict, got {other}"),
    }

    store
        .acquire_lease("sync", "worker-b", t0, until)
        .await
        .unwrap();
    store
        .acquire_lease("prune", "worker-a", t0 + Duration::seconds(2), until)
        .await
        .unwrap();

    let later = t0 + Duration::seconds(61);
    store
        .acquire_lease("prune", "worker-b", later, later + Duration::seconds(60))
        .await
        .unwrap();

    store.release_lease("prune", "worker-a").await.unwrap();
    let err = store
        .acquire_lease("prune", "worker-c", later, later + Duration::seconds(60))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::Conflict(m) if m.contains("worker-b")),
        "{err}"
    );

    store.release_lease("prune", "worker-b").await.unwrap();
    store
        .acquire_lease("prune", "worker-c", later, later + Duration::seconds(60))
        .await
        .unwrap();
}

/// A commit larger than any backend batch (260 devices plus history) round-trips.
pub async fn large_commit_round_trips(store: &dyn Store) {
    let tenant = "big.example";
    let run = sample_run(Source::Tailscale, tenant, 0);
    let devices: Vec<_> = (0..260)
        .map(|n| sample_device(Source::Tailscale, tenant, n))
        .collect();
    let commit = SyncCommit {
        history: devices
            .iter()
            .map(|d| sample_history(d, &run, far_future()))
            .collect(),
        records: devices.clone(),
        run: Some(run.clone()),
    };
    store.commit_sync(&commit).await.unwrap();
    let got = store
        .current_devices(Source::Tailscale, tenant)
        .await
        .unwrap();
    assert_eq!(got.len(), 260);
    assert_eq!(sorted_by_id(got), devices);
    let hist = store
        .device_history(
            Source::Tailscale,
            tenant,
            &devices[259].device_id,
            base_time(),
        )
        .await
        .unwrap();
    assert_eq!(hist.len(), 1);
    assert_eq!(
        store
            .get_run(Source::Tailscale, tenant, &run.run_id)
            .await
            .unwrap(),
        Some(run)
    );
}

/// The lean reads of a sync see what `current_devices` sees: every device's
/// state, removed ones included, and the full records of chosen ids only.
pub async fn device_states_and_chosen_records_match_current_devices(store: &dyn Store) {
    let tenant = "lean.example";
    let devices: Vec<_> = (0..30)
        .map(|n| sample_device(Source::Tailscale, tenant, n))
        .collect();
    let commit = SyncCommit {
        records: devices.clone(),
        ..SyncCommit::default()
    };
    store.commit_sync(&commit).await.unwrap();
    let mut states = store
        .device_states(Source::Tailscale, tenant)
        .await
        .unwrap();
    states.sort_by(|a, b| a.device_id.cmp(&b.device_id));
    let expected: Vec<DeviceState> = devices.iter().map(DeviceState::from).collect();
    assert_eq!(states, expected);
    let ids = vec![
        devices[17].device_id.clone(),
        "no-such-device".to_string(),
        devices[3].device_id.clone(),
        devices[17].device_id.clone(),
    ];
    let got = store
        .devices_by_id(Source::Tailscale, tenant, &ids)
        .await
        .unwrap();
    assert_eq!(
        sorted_by_id(got),
        vec![devices[3].clone(), devices[17].clone()]
    );
    assert!(
        store
            .device_states(Source::Tinymdm, tenant)
            .await
            .unwrap()
            .is_empty()
    );
}
