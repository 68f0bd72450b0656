//! Criterion benches of the pure parts at 50,000 Tailscale devices: parsing
//! the list body (the full parser, and the lean one the sync uses), the diff
//! (first sync and a 1% churn re-sync; `diff` as TinyMDM uses it, `plan` as
//! the Tailscale sync does), and the stale policy over the stored snapshot.

use chrono::{Duration, Utc};
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use fleetsync::model::{DeviceRecord, DeviceState, Source};
use fleetsync::policy::{Policy, evaluate};
use fleetsync::steps::sync_tailscale::observe;
use fleetsync::sync::{Listed, Observed, SyncContext, diff, plan};
use fleetsync::tailscale::{KeepRaw, parse_device_list, parse_lean_list};
use fleetsync_sim::fleet::{churn_tailscale, generate};
use fleetsync_sim::{Fields, FleetSpec};
use std::hint::black_box;

const DEVICES: usize = 50_000;

fn body(devices: &[fleetsync_sim::TailscaleDevice]) -> Vec<u8> {
    let wire: Vec<_> = devices.iter().map(|d| d.wire(Fields::All)).collect();
    serde_json::to_vec(&serde_json::json!({ "devices": wire })).expect("serialisable")
}

fn observed(body: &[u8]) -> Vec<Observed> {
    parse_device_list(body)
        .expect("valid body")
        .devices
        .into_iter()
        .map(observe)
        .collect()
}

fn ctx(run_id: &str) -> SyncContext<'_> {
    SyncContext {
        source: Source::Tailscale,
        tenant: "-",
        run_id,
        synced_at: Utc::now(),
        last_seen_resolution: std::time::Duration::from_secs(3600),
        history_expires_at: 0,
        volatile_keys: fleetsync::tailscale::VOLATILE_KEYS,
        allow_removals: true,
    }
}

fn benches(c: &mut Criterion) {
    let now = Utc::now();
    let mut fleet = generate(FleetSpec::new(7, DEVICES, 0, now));
    let first_body = body(&fleet.tailscale);
    churn_tailscale(&mut fleet.tailscale, 0.01, 11);
    let churned_body = body(&fleet.tailscale);
    eprintln!(
        "50k Tailscale list body: {:.1} MB",
        first_body.len() as f64 / 1e6
    );

    c.bench_function("parse_tailscale_50k", |b| {
        b.iter(|| parse_device_list(black_box(&first_body)).expect("valid"))
    });

    let keep_all: KeepRaw = std::sync::Arc::new(|_: &Listed| true);
    c.bench_function("parse_lean_tailscale_50k", |b| {
        b.iter(|| parse_lean_list(black_box(&first_body[..]), &keep_all).expect("valid"))
    });

    let first = observed(&first_body);
    c.bench_function("diff_50k_first_sync", |b| {
        b.iter_batched(
            || first.clone(),
            |now| diff(&ctx("run-1"), Vec::new(), now),
            BatchSize::LargeInput,
        )
    });

    let stored: Vec<DeviceRecord> = diff(&ctx("run-1"), Vec::new(), first.clone()).records;
    let churned = observed(&churned_body);
    c.bench_function("diff_50k_resync_1pct_churn", |b| {
        b.iter_batched(
            || (stored.clone(), churned.clone()),
            |(prev, now)| diff(&ctx("run-2"), prev, now),
            BatchSize::LargeInput,
        )
    });

    let states: Vec<DeviceState> = stored.iter().map(DeviceState::from).collect();
    let listed = parse_lean_list(&churned_body[..], &keep_all)
        .expect("valid")
        .devices;
    c.bench_function("plan_50k_resync_1pct_churn", |b| {
        b.iter(|| plan(&ctx("run-2"), black_box(&states), black_box(&listed)))
    });

    let policy = Policy::new(90 * 24 * 60, vec!["tag:server".into()], vec![], &[]).expect("valid");
    let at = now + Duration::minutes(5);
    c.bench_function("stale_policy_50k", |b| {
        b.iter(|| evaluate(&policy, black_box(&stored), at))
    });
}

criterion_group! {
    name = pure;
    config = Criterion::default().sample_size(10).measurement_time(std::time::Duration::from_secs(8));
    targets = benches
}
criterion_main!(pure);
