//! `fleetsync-bench`: whole-process benchmarks of fleetsync (scripts/bench.sh).
//!
//! Each measured sync runs in a process of its own (`sync`), so its wall time
//! and peak RSS are the process's and nothing else's; the simulators run in
//! another (`sims`), and `run` drives both, the baseline and the cold-start
//! measurement, then `report` merges everything into one table.

mod coldstart;
mod counter;
mod report;
mod runner;

use anyhow::{Context, Result, bail};
use aws_config::BehaviorVersion;
use aws_sdk_dynamodb::config::{Credentials, Region};
use chrono::{SubsecRound, Utc};
use clap::{Parser, Subcommand};
use fleetsync::config::Settings;
use fleetsync::deps::{Deps, Needs};
use fleetsync::secrets::EnvSecrets;
use fleetsync::steps::{sync_tailscale, sync_tinymdm};
use fleetsync::store::{DynamoStore, SqliteStore, Store};
use fleetsync_sim::{FleetSpec, TailscaleSim, TailscaleSimConfig, TinymdmSim, TinymdmSimConfig};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

#[derive(Parser)]
#[command(about = "Benchmarks of fleetsync against the simulators and emulated DynamoDB")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve both simulators with a generated fleet until stdin closes; prints
    /// one JSON line with the environment a sync needs.
    Sims(SimsArgs),
    /// Run one sync step in this process and print one JSON line of figures.
    Sync(SyncArgs),
    /// Run every scenario, the baseline and the cold-start measurement.
    Run(runner::RunArgs),
    /// Merge scenario, criterion and zip results into results.json and print the table.
    Report(report::ReportArgs),
}

#[derive(clap::Args)]
struct SimsArgs {
    #[arg(long, default_value_t = 0)]
    tailscale: usize,
    #[arg(long, default_value_t = 0)]
    tinymdm: usize,
    /// TinyMDM requests per second (0 = unlimited).
    #[arg(long, default_value_t = 5)]
    rate: u32,
    #[arg(long, default_value_t = 7)]
    seed: u64,
}

#[derive(clap::Args)]
struct SyncArgs {
    /// tailscale or tinymdm
    #[arg(long)]
    source: String,
    #[arg(long)]
    apps: bool,
    /// DynamoDB table (with --endpoint), or else...
    #[arg(long)]
    table: Option<String>,
    #[arg(long)]
    endpoint: Option<String>,
    /// ...an SQLite file.
    #[arg(long)]
    sqlite: Option<PathBuf>,
}

/// What `sims` prints: the variables of DESIGN.md pointing at the simulators.
#[derive(Debug, Serialize, Deserialize)]
pub struct SimsInfo {
    pub env: BTreeMap<String, String>,
}

/// What `sync` prints.
#[derive(Debug, Serialize, Deserialize)]
pub struct SyncReport {
    pub step_seconds: f64,
    pub devices: u64,
    pub added: u64,
    pub changed: u64,
    pub removed: u64,
    pub unchanged: u64,
    pub invalid: u64,
    pub ddb: counter::DdbTotals,
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Sims(a) => tokio_rt(1)?.block_on(sims(a)),
        Command::Sync(a) => tokio_rt(2)?.block_on(sync(a)),
        Command::Run(a) => tokio_rt(2)?.block_on(runner::run(a)),
        Command::Report(a) => report::report(a),
    }
}

fn tokio_rt(workers: usize) -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()?)
}

async fn sims(a: SimsArgs) -> Result<()> {
    let fleet = fleetsync_sim::fleet::generate(FleetSpec::new(
        a.seed,
        a.tailscale,
        a.tinymdm,
        Utc::now().trunc_subsecs(0),
    ));
    let ts = TailscaleSim::start(TailscaleSimConfig::default().with_fleet(&fleet))
        .context("starting the Tailscale simulator")?;
    let mdm = TinymdmSim::start(
        TinymdmSimConfig::default()
            .with_fleet(&fleet)
            .with_rate_limit(a.rate),
    )
    .context("starting the TinyMDM simulator")?;
    drop(fleet);
    let (read_id, read_secret) = ts.read_client();
    let (public, secret) = mdm.api_keys();
    let env: BTreeMap<String, String> = [
        ("TAILSCALE_API_BASE_URL", ts.base_url()),
        ("TAILSCALE_OAUTH_CLIENT_ID", read_id),
        ("TAILSCALE_OAUTH_CLIENT_SECRET", read_secret),
        ("TAILSCALE_TAILNET", ts.tailnet()),
        ("TINYMDM_API_BASE_URL", mdm.base_url()),
        ("TINYMDM_ACCOUNT_ID", mdm.account_id()),
        ("TINYMDM_APIKEY_PUBLIC", public),
        ("TINYMDM_APIKEY_SECRET", secret),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    println!("{}", serde_json::to_string(&SimsInfo { env })?);
    // Serve until the driver closes our stdin (or dies).
    tokio::task::spawn_blocking(|| {
        let stdin = std::io::stdin();
        for line in stdin.lock().lines() {
            if line.is_err() {
                break;
            }
        }
    })
    .await?;
    ts.shutdown();
    mdm.shutdown();
    Ok(())
}

/// A DynamoDB client for the emulator, with the counting interceptor if given.
pub async fn dynamo_client(
    endpoint: &str,
    counter: Option<counter::DdbCounter>,
) -> aws_sdk_dynamodb::Client {
    let conf = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new("test", "test", None, None, "bench"))
        .load()
        .await;
    let mut builder = aws_sdk_dynamodb::config::Builder::from(&conf);
    if let Some(c) = counter {
        builder = builder.interceptor(c);
    }
    aws_sdk_dynamodb::Client::from_conf(builder.build())
}

async fn sync(a: SyncArgs) -> Result<()> {
    let counter = counter::DdbCounter::default();
    let store: Arc<dyn Store> = match (&a.table, &a.endpoint, &a.sqlite) {
        (Some(table), Some(endpoint), None) => Arc::new(DynamoStore::new(
            dynamo_client(endpoint, Some(counter.clone())).await,
            table,
        )),
        (None, None, Some(path)) => Arc::new(SqliteStore::open(path)?),
        _ => bail!("give --table and --endpoint, or --sqlite"),
    };
    let settings = Settings::from_env()?;
    let needs = match a.source.as_str() {
        "tailscale" => Needs {
            tailscale: true,
            ..Needs::default()
        },
        "tinymdm" => Needs {
            tinymdm: true,
            ..Needs::default()
        },
        other => bail!("unknown source {other:?}"),
    };
    let deps = Deps::connect(store, settings, &EnvSecrets::new(), needs).await;
    let started = Instant::now();
    let report = if a.source == "tailscale" {
        let o = sync_tailscale::run(&deps, Default::default()).await?;
        SyncReport {
            step_seconds: 0.0,
            devices: o.devices,
            added: o.added,
            changed: o.changed,
            removed: o.removed,
            unchanged: o.unchanged,
            invalid: o.invalid,
            ddb: Default::default(),
        }
    } else {
        let input = sync_tinymdm::SyncTinymdmInput {
            include_apps: a.apps,
            run_id: None,
        };
        let o = sync_tinymdm::run(&deps, input).await?;
        SyncReport {
            step_seconds: 0.0,
            devices: o.devices,
            added: o.added,
            changed: o.changed,
            removed: o.removed,
            unchanged: o.unchanged,
            invalid: o.invalid,
            ddb: Default::default(),
        }
    };
    let report = SyncReport {
        step_seconds: started.elapsed().as_secs_f64(),
        ddb: counter.totals(),
        ..report
    };
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}
