//! `fleetsync demo`: the whole pipeline in one process against simulated
//! Tailscale and TinyMDM APIs on 127.0.0.1, with a generated fleet, stored in
//! SQLite. Needs no credentials and no network beyond loopback.
//!
//! The simulated tailnet is rebuilt on every run; devices that an earlier demo
//! run pruned (removed in the database) are left out of it, as the real
//! tailnet would no longer have them, so a second run sees no new devices.

use crate::output::{print_plan_summary, sync_line};
use crate::progress::Bars;
use anyhow::{Context, Result, bail};
use chrono::Utc;
use clap::Args;
use fleetsync::config::Settings;
use fleetsync::deps::{Deps, Needs};
use fleetsync::model::Source;
use fleetsync::secrets::EnvSecrets;
use fleetsync::steps::plan_prune::{PlanPruneInput, PlanPruneOutput};
use fleetsync::steps::prune_devices::{PruneDevicesInput, PruneDevicesOutput};
use fleetsync::steps::sync_tailscale::SyncTailscaleOutput;
use fleetsync::steps::sync_tinymdm::{SyncTinymdmInput, SyncTinymdmOutput};
use fleetsync::steps::{plan_prune, prune_devices, sync_tailscale, sync_tinymdm};
use fleetsync::store::{SqliteStore, Store};
use fleetsync_sim::fleet::{FleetSpec, generate};
use fleetsync_sim::{TailscaleSim, TailscaleSimConfig, TinymdmSim, TinymdmSimConfig};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

#[derive(Args)]
pub struct DemoArgs {
    /// Tailscale devices in the simulated tailnet
    #[arg(long, default_value_t = 300)]
    tailscale_devices: usize,
    /// Devices in the simulated TinyMDM account (more than one page of 1000)
    #[arg(long, default_value_t = 1500)]
    tinymdm_devices: usize,
    /// Seed of the fleet generator
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Also sync TinyMDM apps (the simulator then allows 50 requests/second)
    #[arg(long)]
    include_apps: bool,
    /// Print the summary as JSON instead of text
    #[arg(long)]
    json: bool,
}

/// Everything the demo did, for people (text) and tests (`--json`).
#[derive(Serialize)]
pub struct DemoSummary {
    pub database: String,
    /// Generated Tailscale devices per kind (after leaving out earlier prunes).
    pub fleet_kinds: BTreeMap<String, usize>,
    pub tailscale_devices: usize,
    pub tinymdm_devices: usize,
    pub first_sync: SyncPair,
    pub plan: PlanPruneOutput,
    /// Protected devices of the plan (connected ones are only counted), by reason.
    pub protected_devices: BTreeMap<String, Vec<String>>,
    /// The candidate brought back online between plan and apply, if any.
    pub back_online: Option<String>,
    pub prune: Option<PruneDevicesOutput>,
    pub resync: SyncTailscaleOutput,
    /// Tailscale devices left in the simulated tailnet at the end.
    pub tailscale_remaining: usize,
}

#[derive(Serialize)]
pub struct SyncPair {
    pub tailscale: SyncTailscaleOutput,
    pub tinymdm: SyncTinymdmOutput,
}

pub async fn run(args: DemoArgs, db: &Path) -> Result<()> {
    let store =
        Arc::new(SqliteStore::open(db).with_context(|| format!("opening {}", db.display()))?);
    let pruned_before: HashSet<String> = store
        .current_devices(Source::Tailscale, "-")
        .await?
        .into_iter()
        .filter(|d| d.is_removed())
        .map(|d| d.device_id)
        .collect();

    let mut fleet = generate(FleetSpec::new(
        args.seed,
        args.tailscale_devices,
        args.tinymdm_devices,
        Utc::now(),
    ));
    fleet
        .tailscale
        .retain(|d| !pruned_before.contains(&d.node_id));
    let mut fleet_kinds: BTreeMap<String, usize> = BTreeMap::new();
    for d in &fleet.tailscale {
        if let Some(kind) = fleet.kind(&d.node_id) {
            let name = serde_json::to_value(kind)?;
            *fleet_kinds
                .entry(name.as_str().unwrap_or("other").to_string())
                .or_default() += 1;
        }
    }
    let ts = TailscaleSim::start(TailscaleSimConfig::default().with_fleet(&fleet))
        .context("starting the Tailscale simulator")?;
    let mut mdm_config = TinymdmSimConfig::default().with_fleet(&fleet);
    let mut settings = Settings {
        tailscale_api_base_url: ts.base_url(),
        ..Settings::default()
    };
    if args.include_apps {
        mdm_config.rate_limit = 50;
        settings.tinymdm_rate_limit_per_second = 50;
    }
    let mdm = TinymdmSim::start(mdm_config).context("starting the TinyMDM simulator")?;
    settings.tinymdm_api_base_url = mdm.base_url();

    let (read_id, read_secret) = ts.read_client();
    let (prune_id, prune_secret) = ts.prune_client();
    let (mdm_public, mdm_secret) = mdm.api_keys();
    let vars: HashMap<&'static str, String> = HashMap::from([
        ("TAILSCALE_OAUTH_CLIENT_ID", read_id),
        ("TAILSCALE_OAUTH_CLIENT_SECRET", read_secret),
        ("TAILSCALE_PRUNE_OAUTH_CLIENT_ID", prune_id),
        ("TAILSCALE_PRUNE_OAUTH_CLIENT_SECRET", prune_secret),
        ("TINYMDM_ACCOUNT_ID", mdm.account_id()),
        ("TINYMDM_APIKEY_PUBLIC", mdm_public),
        ("TINYMDM_APIKEY_SECRET", mdm_secret),
    ]);
    let secrets = EnvSecrets::from_lookup(move |k| vars.get(k).cloned());
    let deps = Deps::connect(store.clone(), settings, &secrets, Needs::all())
        .await
        .with_progress(Arc::new(Bars::new()));

    if !args.json {
        println!(
            "fleetsync demo: simulated tailnet of {} devices at {}, TinyMDM account of {} devices at {}",
            fleet.tailscale.len(),
            ts.base_url(),
            fleet.tinymdm.len(),
            mdm.base_url()
        );
        if !pruned_before.is_empty() {
            println!(
                "  ({} devices pruned by an earlier demo run are left out of the simulated tailnet)",
                pruned_before.len()
            );
        }
    }

    let (tailscale, tinymdm) = tokio::join!(
        sync_tailscale::run(&deps, Default::default()),
        sync_tinymdm::run(
            &deps,
            SyncTinymdmInput {
                include_apps: args.include_apps,
                run_id: None
            }
        )
    );
    let first_sync = SyncPair {
        tailscale: tailscale.map_err(step_error("sync-tailscale"))?,
        tinymdm: tinymdm.map_err(step_error("sync-tinymdm"))?,
    };

    let mut plan = plan_prune::run(
        &deps,
        PlanPruneInput {
            dry_run: Some(false),
            ..Default::default()
        },
    )
    .await
    .map_err(step_error("plan-prune"))?;
    let first_plan = plan.clone();
    if plan.needs_approval {
        plan = plan_prune::run(
            &deps,
            PlanPruneInput {
                approve_plan_id: Some(plan.plan_id.clone()),
                ..Default::default()
            },
        )
        .await
        .map_err(step_error("plan-prune (approve)"))?;
    }

    let entries = store.plan_entries("-", &plan.plan_id).await?;
    let mut protected_devices: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for e in entries.iter().filter(|e| !e.is_candidate()) {
        protected_devices
            .entry(e.reason.as_str().to_string())
            .or_default()
            .push(e.name.clone());
    }
    // A device that reconnects between plan and apply: the live re-check must spare it.
    let candidates: Vec<_> = entries.into_iter().filter(|e| e.is_candidate()).collect();
    let back_online = candidates.first().map(|e| e.device_id.clone());
    if let Some(id) = &back_online
        && !ts.set_connected(id, true)
    {
        bail!("simulator lost device {id}");
    }
    let prune = if plan.candidates > 0 {
        Some(
            prune_devices::run(
                &deps,
                PruneDevicesInput {
                    plan_id: plan.plan_id.clone(),
                },
            )
            .await
            .map_err(step_error("prune-devices"))?,
        )
    } else {
        None
    };
    let resync = sync_tailscale::run(&deps, Default::default())
        .await
        .map_err(step_error("sync-tailscale (again)"))?;

    let summary = DemoSummary {
        database: db.display().to_string(),
        fleet_kinds,
        tailscale_devices: fleet.tailscale.len(),
        tinymdm_devices: fleet.tinymdm.len(),
        first_sync,
        plan: first_plan,
        protected_devices,
        back_online,
        prune,
        resync,
        tailscale_remaining: ts.device_count(),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print_summary(&summary, &plan);
    }
    Ok(())
}

fn step_error(step: &'static str) -> impl Fn(fleetsync::StepError) -> anyhow::Error {
    move |e| anyhow::anyhow!("{step} failed: {e} ({})", e.name())
}

fn print_summary(s: &DemoSummary, applied: &PlanPruneOutput) {
    let kinds: Vec<String> = s
        .fleet_kinds
        .iter()
        .map(|(k, n)| format!("{n} {k}"))
        .collect();
    println!("  tailnet mix: {}", kinds.join(", "));
    println!();
    println!("1. sync");
    let t = &s.first_sync.tailscale;
    println!(
        "   {}",
        sync_line(
            "tailscale",
            &t.tailnet,
            t.devices,
            t.added,
            t.changed,
            t.removed,
            t.unchanged,
            t.invalid
        )
    );
    let m = &s.first_sync.tinymdm;
    println!(
        "   {} in {} pages",
        sync_line(
            "tinymdm",
            &m.account_id,
            m.devices,
            m.added,
            m.changed,
            m.removed,
            m.unchanged,
            m.invalid
        ),
        m.pages
    );
    println!("2. plan (devices inactive for more than 90 days)");
    print_plan_summary(&s.plan, "   ");
    for (reason, names) in &s.protected_devices {
        println!("     {reason}: {}", names.join(", "));
    }
    if s.plan.needs_approval {
        println!("   approved by the demo (in production: a new execution with approve_plan_id)");
    }
    if let Some(id) = &s.back_online {
        println!("   device {id} reconnects before the prune is applied");
    }
    println!("3. prune (live re-check of each candidate, deletes with the prune client only)");
    match &s.prune {
        Some(p) => println!(
            "   deleted {}, skipped (active again) {}, already gone {}, failed {}",
            p.deleted, p.skipped_now_active, p.already_gone, p.failed
        ),
        None => println!("   nothing to delete"),
    }
    println!("4. sync again");
    let r = &s.resync;
    println!(
        "   {}",
        sync_line(
            "tailscale",
            &r.tailnet,
            r.devices,
            r.added,
            r.changed,
            r.removed,
            r.unchanged,
            r.invalid
        )
    );
    println!();
    println!("Stored in {}. Look around:", s.database);
    println!(
        "  fleetsync --db {} devices --source tailscale --stale-days 90",
        s.database
    );
    println!("  fleetsync --db {} runs", s.database);
    println!(
        "  fleetsync --db {} prunes show {}",
        s.database, applied.plan_id
    );
}
