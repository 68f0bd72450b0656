//! `fleetsync`: runs the pipeline locally (against the real APIs or, with
//! `demo`, against simulators started in-process), and reads the store.

mod demo;
mod output;
mod progress;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use fleetsync::config::Settings;
use fleetsync::deps::{Deps, Needs};
use fleetsync::model::Source;
use fleetsync::secrets::{EnvSecrets, SecretKind, SecretSource};
use fleetsync::steps::{plan_prune, prune_devices, sync_tailscale, sync_tinymdm};
use fleetsync::store::{DynamoStore, SqliteStore, Store};
use output::Format;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Parser)]
#[command(
    name = "fleetsync",
    version,
    about = "Inventory of Tailscale and TinyMDM devices, with history, and safe pruning of inactive Tailscale devices",
    after_help = "Try it first: `fleetsync demo` runs the whole pipeline against simulated APIs."
)]
struct Cli {
    #[command(flatten)]
    store: StoreArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
struct StoreArgs {
    /// SQLite database file [default: ./fleetsync.db; ./fleetsync-demo.db for `demo`]
    #[arg(long, global = true, env = "FLEETSYNC_DB")]
    db: Option<PathBuf>,
    /// Use this DynamoDB table instead of SQLite (AWS configuration from the usual variables)
    #[arg(
        long,
        global = true,
        env = "FLEETSYNC_DYNAMODB_TABLE",
        conflicts_with = "db"
    )]
    dynamodb_table: Option<String>,
    /// DynamoDB endpoint, e.g. a local emulator
    #[arg(long, global = true, requires = "dynamodb_table")]
    endpoint_url: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the whole pipeline against simulated Tailscale and TinyMDM APIs (no credentials, loopback only)
    Demo(demo::DemoArgs),
    /// Sync both sources (and optionally prune) against the real APIs, configured from the environment
    Run(RunArgs),
    /// List stored devices
    Devices(DevicesArgs),
    /// List sync runs, newest first
    Runs(RunsArgs),
    /// List prune plans, or show one plan's devices with reasons and outcomes
    Prunes(PrunesArgs),
    /// Show the change history of one device
    History(HistoryArgs),
    /// Create the DynamoDB table (on-demand, with TTL) for `--dynamodb-table`
    InitTable,
}

#[derive(Args)]
struct RunArgs {
    /// Only this source [default: both]
    #[arg(long, value_enum)]
    source: Option<SourceArg>,
    /// Also fetch each TinyMDM device's installed apps (one request per device)
    #[arg(long)]
    include_apps: bool,
    /// Plan a prune of inactive Tailscale devices after the sync (a dry run unless --apply)
    #[arg(long)]
    prune: bool,
    /// Actually delete the plan's devices (with the prune OAuth client)
    #[arg(long, requires = "prune")]
    apply: bool,
    /// Apply this stored plan that needed approval (implies --prune --apply)
    #[arg(long, value_name = "PLAN_ID")]
    approve: Option<String>,
    /// Inactivity threshold in days [default: TAILSCALE_DEVICE_STALE_MINUTES, 90 days]
    #[arg(long)]
    inactive_days: Option<i64>,
    /// Never prune devices with this tag (repeatable)
    #[arg(long = "exclude-tag", value_name = "TAG")]
    exclude_tags: Vec<String>,
    /// Never prune devices whose hostname matches this glob (repeatable)
    #[arg(long = "exclude-hostname", value_name = "GLOB")]
    exclude_hostnames: Vec<String>,
    /// Plans with more candidates than this need approval [default: 50]
    #[arg(long)]
    max_deletions: Option<i64>,
    /// Plans pruning more than this fraction of the fleet need approval [default: 0.10]
    #[arg(long)]
    max_fraction: Option<f64>,
}

#[derive(Args)]
struct DevicesArgs {
    /// Only this source
    #[arg(long, value_enum)]
    source: Option<SourceArg>,
    /// Only devices last seen (Tailscale) or synced (TinyMDM) more than N days ago, or never
    #[arg(long, value_name = "N")]
    stale_days: Option<u32>,
    /// Include devices that have disappeared from the source
    #[arg(long)]
    include_removed: bool,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
}

#[derive(Args)]
struct RunsArgs {
    #[arg(long, value_enum)]
    source: Option<SourceArg>,
    /// At most this many runs per source and tenant
    #[arg(long, default_value_t = 20)]
    limit: usize,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
}

#[derive(Args)]
struct PrunesArgs {
    #[command(subcommand)]
    show: Option<PrunesCommand>,
    /// Tailnet [default: every tailnet in the store]
    #[arg(long)]
    tailnet: Option<String>,
    #[arg(long, default_value_t = 20)]
    limit: usize,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
}

#[derive(Subcommand)]
enum PrunesCommand {
    /// Every device of one plan with its reason and outcome
    Show {
        plan_id: String,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
}

#[derive(Args)]
struct HistoryArgs {
    /// Tailscale nodeId or TinyMDM device id
    device_id: String,
    #[arg(long, value_enum)]
    source: Option<SourceArg>,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
}

#[derive(Clone, Copy, ValueEnum)]
enum SourceArg {
    Tailscale,
    Tinymdm,
}

impl From<SourceArg> for Source {
    fn from(s: SourceArg) -> Source {
        match s {
            SourceArg::Tailscale => Source::Tailscale,
            SourceArg::Tinymdm => Source::Tinymdm,
        }
    }
}

fn sources(s: Option<SourceArg>) -> Vec<Source> {
    s.map_or(Source::ALL.to_vec(), |s| vec![s.into()])
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    match dispatch(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("RUST_LOG").unwrap_or_else(|_| EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}

async fn dispatch(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Demo(args) => {
            let path = cli
                .store
                .db
                .clone()
                .unwrap_or_else(|| PathBuf::from("fleetsync-demo.db"));
            if cli.store.dynamodb_table.is_some() {
                bail!("the demo stores into SQLite; drop --dynamodb-table");
            }
            demo::run(args, &path).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::InitTable => {
            let Some(table) = &cli.store.dynamodb_table else {
                bail!("init-table needs --dynamodb-table NAME");
            };
            let client = dynamo_client(cli.store.endpoint_url.as_deref()).await;
            DynamoStore::create_table(&client, table)
                .await
                .with_context(|| format!("creating table {table}"))?;
            println!("created table {table}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Run(args) => {
            let store = open_store(&cli.store, false).await?;
            run(store, args).await
        }
        Command::Devices(args) => {
            let store = open_store(&cli.store, true).await?;
            output::devices(
                store.as_ref(),
                &sources(args.source),
                args.stale_days,
                args.include_removed,
                args.format,
            )
            .await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Runs(args) => {
            let store = open_store(&cli.store, true).await?;
            output::runs(
                store.as_ref(),
                &sources(args.source),
                args.limit,
                args.format,
            )
            .await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Prunes(args) => {
            let store = open_store(&cli.store, true).await?;
            match args.show {
                Some(PrunesCommand::Show { plan_id, format }) => {
                    output::plan(store.as_ref(), args.tailnet.as_deref(), &plan_id, format).await?
                }
                None => {
                    output::plans(
                        store.as_ref(),
                        args.tailnet.as_deref(),
                        args.limit,
                        args.format,
                    )
                    .await?
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::History(args) => {
            let store = open_store(&cli.store, true).await?;
            output::history(
                store.as_ref(),
                &sources(args.source),
                &args.device_id,
                args.format,
            )
            .await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn dynamo_client(endpoint: Option<&str>) -> aws_sdk_dynamodb::Client {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
    if let Some(url) = endpoint {
        loader = loader.endpoint_url(url);
    }
    aws_sdk_dynamodb::Client::new(&loader.load().await)
}

async fn open_store(args: &StoreArgs, must_exist: bool) -> Result<Arc<dyn Store>> {
    if let Some(table) = &args.dynamodb_table {
        let client = dynamo_client(args.endpoint_url.as_deref()).await;
        return Ok(Arc::new(DynamoStore::new(client, table)));
    }
    let path = args
        .db
        .clone()
        .unwrap_or_else(|| PathBuf::from("fleetsync.db"));
    if must_exist && !path.exists() {
        bail!(
            "no database at {}: run `fleetsync run` (or `fleetsync demo`, then pass --db fleetsync-demo.db) first",
            path.display()
        );
    }
    let store = SqliteStore::open(&path).with_context(|| format!("opening {}", path.display()))?;
    Ok(Arc::new(store))
}

/// Whether any of a source's credential variables is set (to skip a source
/// that is not configured at all, but report one that is half configured).
fn configured(vars: &[&str]) -> bool {
    vars.iter()
        .any(|v| std::env::var(v).is_ok_and(|s| !s.trim().is_empty()))
}

async fn run(store: Arc<dyn Store>, args: RunArgs) -> Result<ExitCode> {
    let settings = Settings::from_env()?;
    let secrets = EnvSecrets::new();
    let prune = args.prune || args.approve.is_some();
    let apply = args.apply || args.approve.is_some();
    let want = sources(args.source);
    let ts_vars = ["TAILSCALE_OAUTH_CLIENT_ID", "TAILSCALE_OAUTH_CLIENT_SECRET"];
    let mdm_vars = [
        "TINYMDM_ACCOUNT_ID",
        "TINYMDM_APIKEY_PUBLIC",
        "TINYMDM_APIKEY_SECRET",
    ];
    let needs = Needs {
        tailscale: want.contains(&Source::Tailscale)
            && (args.source.is_some() || configured(&ts_vars)),
        tinymdm: want.contains(&Source::Tinymdm)
            && (args.source.is_some() || configured(&mdm_vars)),
        tailscale_prune: apply,
    };
    if !needs.tailscale && !needs.tinymdm && !prune {
        bail!(
            "nothing to sync: set the Tailscale variables ({}) and/or the TinyMDM ones ({}); see README",
            ts_vars.join(", "),
            mdm_vars.join(", ")
        );
    }
    if apply {
        // Fail before syncing if the prune client is missing.
        secrets.tailscale(SecretKind::TailscalePrune).await?;
    }
    let progress = Arc::new(progress::Bars::new());
    let deps = Deps::connect(store, settings, &secrets, needs)
        .await
        .with_progress(progress);
    let mut failed = false;
    let mut tailnet = None;
    let (ts, mdm) = tokio::join!(
        async {
            if needs.tailscale && args.approve.is_none() {
                Some(sync_tailscale::run(&deps, Default::default()).await)
            } else {
                None
            }
        },
        async {
            if needs.tinymdm && args.approve.is_none() {
                let input = sync_tinymdm::SyncTinymdmInput {
                    include_apps: args.include_apps,
                    run_id: None,
                };
                Some(sync_tinymdm::run(&deps, input).await)
            } else {
                None
            }
        }
    );
    match ts {
        Some(Ok(o)) => {
            println!(
                "{}",
                output::sync_line(
                    "tailscale",
                    &o.tailnet,
                    o.devices,
                    o.added,
                    o.changed,
                    o.removed,
                    o.unchanged,
                    o.invalid
                )
            );
            tailnet = Some(o.tailnet);
        }
        Some(Err(e)) => {
            eprintln!("tailscale sync failed: {} ({})", e, e.name());
            failed = true;
        }
        None => {}
    }
    match mdm {
        Some(Ok(o)) => println!(
            "{} in {} pages",
            output::sync_line(
                "tinymdm",
                &o.account_id,
                o.devices,
                o.added,
                o.changed,
                o.removed,
                o.unchanged,
                o.invalid
            ),
            o.pages
        ),
        Some(Err(e)) => {
            eprintln!("tinymdm sync failed: {} ({})", e, e.name());
            failed = true;
        }
        None => {}
    }
    if prune && !failed {
        let input = plan_prune::PlanPruneInput {
            tailnet,
            inactive_days: args.inactive_days,
            exclude_tags: Some(args.exclude_tags.clone()),
            exclude_hostnames: Some(args.exclude_hostnames.clone()),
            max_deletions: args.max_deletions,
            max_fraction: args.max_fraction,
            dry_run: Some(!apply),
            approve_plan_id: args.approve.clone(),
            ..Default::default()
        };
        let plan = plan_prune::run(&deps, input)
            .await
            .map_err(|e| anyhow::anyhow!("plan-prune: {e} ({})", e.name()))?;
        output::print_plan_summary(&plan, "");
        if plan.dry_run {
            println!("dry run: nothing deleted. Add --apply to delete the candidates.");
        } else if plan.needs_approval {
            println!(
                "not applied: the plan needs approval. To apply it: fleetsync run --approve {}",
                plan.plan_id
            );
        } else if plan.candidates > 0 {
            let out = prune_devices::run(
                &deps,
                prune_devices::PruneDevicesInput {
                    plan_id: plan.plan_id.clone(),
                },
            )
            .await;
            match out {
                Ok(o) => println!(
                    "prune: deleted {}, skipped (active again) {}, already gone {}, failed {}",
                    o.deleted, o.skipped_now_active, o.already_gone, o.failed
                ),
                Err(e) => {
                    eprintln!("prune-devices: {e} ({})", e.name());
                    failed = true;
                }
            }
        } else {
            println!("nothing to prune.");
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
