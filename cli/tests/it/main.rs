//! The `fleetsync` binary end to end: the demo (twice, on one database), the
//! read commands on its database, and `run` configured from the environment
//! against simulators started here.

use fleetsync_sim::fleet::{FleetSpec, generate};
use fleetsync_sim::{TailscaleSim, TailscaleSimConfig, TinymdmSim, TinymdmSimConfig, TsKind};
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};

fn fleetsync(db: &Path, args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_fleetsync"))
        .arg("--db")
        .arg(db)
        .args(args)
        .env_remove("FLEETSYNC_DB")
        .env_remove("FLEETSYNC_DYNAMODB_TABLE")
        .output()
        .expect("run fleetsync");
    assert!(
        out.status.success(),
        "fleetsync {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

#[test]
fn demo_reports_counts_of_the_generated_fleet_and_reruns_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("demo.db");
    let s = json(&fleetsync(&db, &["demo", "--json"]));
    let kinds = &s["fleet_kinds"];
    let kind = |k: &str| kinds[k].as_u64().unwrap_or(0);
    for k in [
        "phone",
        "tablet",
        "laptop",
        "server",
        "shared",
        "ephemeral",
        "never_seen",
        "inactive",
    ] {
        assert!(kind(k) > 0, "the demo fleet has {k} devices: {kinds}");
    }
    assert_eq!(s["tailscale_devices"], 300);
    assert_eq!(s["tinymdm_devices"], 1500);
    let ts = &s["first_sync"]["tailscale"];
    assert_eq!(ts["devices"], 300);
    assert_eq!(ts["added"], 300);
    let mdm = &s["first_sync"]["tinymdm"];
    assert_eq!(mdm["devices"], 1500);
    assert_eq!(mdm["pages"], 2, "1500 devices take two pages of 1000");
    let plan = &s["plan"];
    assert_eq!(plan["candidates"].as_u64(), Some(kind("inactive")));
    assert_eq!(
        plan["protected"]["shared_in"].as_u64(),
        Some(kind("shared"))
    );
    assert_eq!(
        plan["protected"]["no_last_seen"].as_u64(),
        Some(kind("never_seen"))
    );
    let listed = &s["protected_devices"];
    assert_eq!(
        listed["shared_in"].as_array().unwrap().len() as u64,
        kind("shared")
    );
    assert_eq!(
        listed["no_last_seen"].as_array().unwrap().len() as u64,
        kind("never_seen")
    );
    let prune = &s["prune"];
    assert_eq!(
        prune["skipped_now_active"], 1,
        "the device back online is spared"
    );
    assert_eq!(prune["deleted"].as_u64(), Some(kind("inactive") - 1));
    assert_eq!(prune["failed"], 0);
    assert_eq!(s["resync"]["removed"], prune["deleted"]);
    let deleted = prune["deleted"].as_u64().unwrap();

    let devices = json(&fleetsync(&db, &["devices", "--format", "json"]));
    let devices = devices.as_array().unwrap();
    assert_eq!(devices.len() as u64, 300 - deleted + 1500);
    let tinymdm: Vec<&Value> = devices
        .iter()
        .filter(|d| d["source"] == "tinymdm")
        .collect();
    assert_eq!(tinymdm.len(), 1500);
    assert!(
        tinymdm.iter().all(|d| d["last_seen"].is_string()),
        "every TinyMDM device has its last sync time"
    );
    let tailscale: Vec<&Value> = devices
        .iter()
        .filter(|d| d["source"] == "tailscale")
        .collect();
    for d in &tailscale {
        let connected = d["connected"].as_bool().unwrap();
        let never = d["attrs"]["authorized"] == false && !connected;
        assert!(connected || never || d["last_seen"].is_string(), "{d}");
    }
    let with_removed = json(&fleetsync(
        &db,
        &[
            "devices",
            "--include-removed",
            "--source",
            "tailscale",
            "--format",
            "json",
        ],
    ));
    let removed = with_removed
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["removed_at"].is_string())
        .count() as u64;
    assert_eq!(
        removed, deleted,
        "pruned devices stay in the store, marked removed"
    );

    let again = json(&fleetsync(&db, &["demo", "--json"]));
    let ts2 = &again["first_sync"]["tailscale"];
    assert_eq!(ts2["added"], 0, "the second run sees no new devices");
    assert_eq!(ts2["removed"], 0);
    assert_eq!(ts2["changed"], 0, "same seed, same content");
    assert_eq!(again["first_sync"]["tinymdm"]["changed"], 0);
    assert_eq!(ts2["devices"].as_u64(), Some(300 - deleted));
    assert_eq!(again["first_sync"]["tinymdm"]["added"], 0);

    let csv = fleetsync(&db, &["runs", "--format", "csv"]);
    let csv = String::from_utf8(csv.stdout).unwrap();
    assert!(csv.starts_with("started,source,tenant,status"), "{csv}");
    assert_eq!(csv.lines().count(), 1 + 6, "three syncs per demo run");
    let plans = json(&fleetsync(&db, &["prunes", "--format", "json"]));
    let plan_id = plans[0]["plan_id"].as_str().unwrap().to_string();
    let shown = json(&fleetsync(
        &db,
        &["prunes", "show", &plan_id, "--format", "json"],
    ));
    assert_eq!(shown["plan"]["plan_id"], plan_id.as_str());
    assert!(
        shown["devices"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["reason"] == "shared_in")
    );
}

#[test]
fn read_commands_refuse_a_missing_database() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_fleetsync"))
        .arg("--db")
        .arg(dir.path().join("nope.db"))
        .arg("devices")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no database at"));
}

#[test]
fn run_uses_the_environment_and_prunes_only_with_apply() {
    let fleet = generate(FleetSpec::new(11, 60, 20, chrono::Utc::now()));
    let inactive = fleet.tailscale_of(TsKind::Inactive).len();
    let ts = TailscaleSim::start(TailscaleSimConfig::default().with_fleet(&fleet)).unwrap();
    let mdm = TinymdmSim::start(TinymdmSimConfig::default().with_fleet(&fleet)).unwrap();
    let (rid, rsecret) = ts.read_client();
    let (pid, psecret) = ts.prune_client();
    let (public, secret) = mdm.api_keys();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("run.db");
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_fleetsync"))
            .arg("--db")
            .arg(&db)
            .arg("run")
            .args(args)
            .env("TAILSCALE_API_BASE_URL", ts.base_url())
            .env("TAILSCALE_OAUTH_CLIENT_ID", &rid)
            .env("TAILSCALE_OAUTH_CLIENT_SECRET", &rsecret)
            .env("TAILSCALE_PRUNE_OAUTH_CLIENT_ID", &pid)
            .env("TAILSCALE_PRUNE_OAUTH_CLIENT_SECRET", &psecret)
            .env("TINYMDM_API_BASE_URL", mdm.base_url())
            .env("TINYMDM_ACCOUNT_ID", mdm.account_id())
            .env("TINYMDM_APIKEY_PUBLIC", &public)
            .env("TINYMDM_APIKEY_SECRET", &secret)
            .env_remove("FLEETSYNC_DB")
            .output()
            .unwrap()
    };
    let dry = run(&["--prune"]);
    let stdout = String::from_utf8_lossy(&dry.stdout).to_string();
    assert!(
        dry.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&dry.stderr)
    );
    assert!(
        stdout.contains("tailscale (-): 60 devices: 60 added"),
        "{stdout}"
    );
    assert!(
        stdout.contains("tinymdm (sim-account): 20 devices: 20 added"),
        "{stdout}"
    );
    assert!(stdout.contains("dry run: nothing deleted"), "{stdout}");
    assert_eq!(ts.device_count(), 60, "a dry run deletes nothing");

    let real = run(&["--prune", "--apply", "--max-fraction", "1"]);
    let stdout = String::from_utf8_lossy(&real.stdout).to_string();
    assert!(
        real.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&real.stderr)
    );
    assert!(stdout.contains(&format!("deleted {inactive},")), "{stdout}");
    assert_eq!(ts.device_count(), 60 - inactive);
}
