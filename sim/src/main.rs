//! `fleetsync-sim`: runs both simulators on 127.0.0.1 with a generated fleet,
//! prints `export VAR=value` lines for the fleetsync CLI, and serves until
//! Ctrl-C.

use anyhow::Context;
use chrono::{SubsecRound, Utc};
use clap::Parser;
use fleetsync_sim::{FleetSpec, TailscaleSim, TailscaleSimConfig, TinymdmSim, TinymdmSimConfig};

/// Simulated Tailscale and TinyMDM APIs for local runs of fleetsync.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Number of generated Tailscale devices.
    #[arg(long, default_value_t = 300)]
    tailscale_devices: usize,
    /// Number of generated TinyMDM devices.
    #[arg(long, default_value_t = 1500)]
    tinymdm_devices: usize,
    /// Seed of the fleet generator.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Port of the Tailscale simulator (0 picks a free one).
    #[arg(long, default_value_t = 0)]
    tailscale_port: u16,
    /// Port of the TinyMDM simulator (0 picks a free one).
    #[arg(long, default_value_t = 0)]
    tinymdm_port: u16,
    /// TinyMDM requests per second (0 = unlimited).
    #[arg(long, default_value_t = 5)]
    tinymdm_rate_limit: u32,
    /// Hide shared-in devices from OAuth tokens, as real Tailscale does.
    #[arg(long)]
    hide_external: bool,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let fleet = fleetsync_sim::fleet::generate(FleetSpec {
        seed: args.seed,
        tailscale_devices: args.tailscale_devices,
        tinymdm_devices: args.tinymdm_devices,
        now: Utc::now().trunc_subsecs(0),
        ..FleetSpec::default()
    });
    let tailscale = TailscaleSim::start(TailscaleSimConfig {
        port: args.tailscale_port,
        list_external_to_oauth: !args.hide_external,
        ..TailscaleSimConfig::default().with_fleet(&fleet)
    })
    .context("starting the Tailscale simulator")?;
    let tinymdm = TinymdmSim::start(TinymdmSimConfig {
        port: args.tinymdm_port,
        rate_limit: args.tinymdm_rate_limit,
        ..TinymdmSimConfig::default().with_fleet(&fleet)
    })
    .context("starting the TinyMDM simulator")?;

    let (read_id, read_secret) = tailscale.read_client();
    let (prune_id, prune_secret) = tailscale.prune_client();
    let (public, secret) = tinymdm.api_keys();
    let exports = [
        ("TAILSCALE_API_BASE_URL", tailscale.base_url()),
        ("TAILSCALE_OAUTH_CLIENT_ID", read_id),
        ("TAILSCALE_OAUTH_CLIENT_SECRET", read_secret),
        ("TAILSCALE_PRUNE_OAUTH_CLIENT_ID", prune_id),
        ("TAILSCALE_PRUNE_OAUTH_CLIENT_SECRET", prune_secret),
        ("TAILSCALE_TAILNET", tailscale.tailnet()),
        ("TINYMDM_API_BASE_URL", tinymdm.base_url()),
        ("TINYMDM_ACCOUNT_ID", tinymdm.account_id()),
        ("TINYMDM_APIKEY_PUBLIC", public),
        ("TINYMDM_APIKEY_SECRET", secret),
    ];
    for (name, value) in exports {
        println!("export {name}={value}");
    }
    let summary = fleet.summary();
    eprintln!(
        "# serving {} Tailscale and {} TinyMDM devices (seed {}); admin routes under /_sim/; Ctrl-C to stop",
        summary.tailscale_total, summary.tinymdm_total, args.seed
    );

    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    tailscale.shutdown();
    tinymdm.shutdown();
    Ok(())
}
