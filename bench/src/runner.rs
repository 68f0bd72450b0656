//! `fleetsync-bench run`: every scenario, each sync in a fresh process of its
//! own measured from the outside (wall time from spawn to exit, peak RSS from
//! `wait4`), the HTTP requests counted by the simulator that served them, and
//! the DynamoDB traffic counted by the sync's own client (see `counter`). The
//! baseline runs on the same simulator state right after fleetsync.

use crate::counter::DdbTotals;
use crate::{SimsInfo, SyncReport, coldstart, dynamo_client};
use anyhow::{Context, Result, bail};
use fleetsync::model::{RunStatus, Source};
use fleetsync::store::{DynamoStore, SqliteStore, Store as _};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(clap::Args, Clone)]
pub struct RunArgs {
    /// DynamoDB endpoint (the emulator).
    #[arg(long)]
    endpoint: String,
    /// Where to write the scenario results.
    #[arg(long, default_value = "target/bench/scenarios.json")]
    out: PathBuf,
    /// The baseline script (shared/bench/baseline_sync.py); skipped if absent.
    #[arg(long)]
    baseline: Option<PathBuf>,
    /// Python with requests and boto3, for the baseline.
    #[arg(long, default_value = "python3")]
    python: PathBuf,
    /// Folder holding the release handler binaries, for the cold-start runs.
    #[arg(long)]
    functions_dir: Option<PathBuf>,
    /// Cold starts per function.
    #[arg(long, default_value_t = 7)]
    cold_starts: usize,
    /// Small fleets only (a smoke test of the bench itself).
    #[arg(long)]
    quick: bool,
    /// Only the groups whose name contains this.
    #[arg(long)]
    only: Option<String>,
    /// Run the baseline on the first sync only (its re-syncs cost the same).
    #[arg(long)]
    baseline_first_only: bool,
    /// Also the re-syncs of the largest DynamoDB groups (adds over 30 minutes).
    #[arg(long)]
    full: bool,
    /// Fraction of devices the churn phase changes.
    #[arg(long, default_value_t = 0.01)]
    churn: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Store {
    Dynamodb,
    Sqlite,
}

/// One fleet, synced three times (first, no change, churn).
#[derive(Debug, Clone)]
struct Group {
    name: String,
    source: &'static str,
    devices: usize,
    apps: bool,
    /// TinyMDM requests per second, client and simulator.
    rate: u32,
    store: Store,
    baseline: bool,
    phases: &'static [&'static str],
    /// Phases the baseline also runs (when it runs at all).
    baseline_phases: &'static [&'static str],
}

const ALL_PHASES: &[&str] = &["first", "nochange", "churn"];

/// The scenario groups. Re-syncs of the two largest fleets on DynamoDB are
/// left to `--full`: the emulator's Query re-reads and deep-copies the whole
/// table for every 1 MB page, so reading 50,000 records back takes it over ten
/// minutes (the SQLite groups cover those re-syncs in every run).
fn groups(quick: bool, full: bool) -> Vec<Group> {
    let g = |source: &'static str, devices: usize, apps: bool, rate: u32, store: Store| {
        let kind = match (source, apps) {
            ("tailscale", _) => "ts".to_string(),
            (_, false) => "mdm".to_string(),
            (_, true) => format!("mdm-apps@{rate}/s"),
        };
        let store_name = match store {
            Store::Dynamodb => "ddb",
            Store::Sqlite => "sqlite",
        };
        Group {
            name: format!("{kind}-{}-{store_name}", human(devices)),
            source,
            devices,
            apps,
            rate,
            store,
            // The baseline paces apps at 5/s itself.
            baseline: store == Store::Dynamodb && !(apps && rate != 5),
            phases: ALL_PHASES,
            baseline_phases: ALL_PHASES,
        }
    };
    let first_only = |mut g: Group| {
        if !full {
            g.phases = &["first"];
        }
        g.baseline_phases = &["first"];
        g
    };
    use Store::*;
    if quick {
        return vec![
            g("tailscale", 1_000, false, 0, Dynamodb),
            g("tinymdm", 2_000, false, 0, Dynamodb),
            g("tinymdm", 20, true, 5, Dynamodb),
            g("tailscale", 1_000, false, 0, Sqlite),
        ];
    }
    let mut apps = g("tinymdm", 200, true, 5, Dynamodb);
    // The baseline's re-syncs cost what its first sync does (it rewrites everything).
    apps.baseline_phases = &["first"];
    let mut apps_fast = g("tinymdm", 2_000, true, 50, Dynamodb);
    apps_fast.phases = &["first"];
    vec![
        g("tailscale", 1_000, false, 0, Dynamodb),
        g("tailscale", 10_000, false, 0, Dynamodb),
        first_only(g("tailscale", 50_000, false, 0, Dynamodb)),
        g("tinymdm", 2_000, false, 0, Dynamodb),
        first_only(g("tinymdm", 20_000, false, 0, Dynamodb)),
        apps,
        apps_fast,
        g("tailscale", 10_000, false, 0, Sqlite),
        g("tailscale", 50_000, false, 0, Sqlite),
        g("tinymdm", 20_000, false, 0, Sqlite),
    ]
}

fn human(n: usize) -> String {
    if n >= 1000 && n.is_multiple_of(1000) {
        format!("{}k", n / 1000)
    } else {
        n.to_string()
    }
}

/// One measured run of fleetsync or the baseline.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunResult {
    pub group: String,
    pub source: String,
    pub devices: usize,
    pub apps: bool,
    pub rate: u32,
    pub store: Store,
    pub phase: String,
    /// `fleetsync` or `baseline`.
    pub implementation: String,
    /// Spawn to exit of the process.
    pub wall_seconds: f64,
    /// The step alone, as the process timed it (fleetsync only).
    pub step_seconds: Option<f64>,
    pub peak_rss_mb: f64,
    /// User + system CPU time of the process.
    pub cpu_seconds: f64,
    /// Requests the simulator served (retries and 429s included).
    pub http_requests: u64,
    pub http_429: u64,
    /// Devices the churn changed in the simulator.
    pub churned: Option<u64>,
    /// What the sync reported (fleetsync only).
    pub counts: Option<Value>,
    pub ddb: Option<DdbTotals>,
    /// requests ÷ rate, for rate-limited runs.
    pub rate_bound_seconds: Option<f64>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Scenarios {
    pub machine: String,
    pub started_at: String,
    pub churn_fraction: f64,
    pub runs: Vec<RunResult>,
    pub cold_starts: Vec<coldstart::ColdStart>,
}

pub async fn run(a: RunArgs) -> Result<()> {
    let exe = std::env::current_exe()?;
    let http = reqwest::Client::new();
    let ddb = dynamo_client(&a.endpoint, None).await;
    let baseline = a.baseline.as_ref().filter(|p| p.exists());
    if a.baseline.is_some() && baseline.is_none() {
        eprintln!("==> baseline script not found: running fleetsync only");
    }
    let mut runs = Vec::new();
    let started_at = chrono::Utc::now().to_rfc3339();
    for group in groups(a.quick, a.full) {
        if let Some(only) = &a.only
            && !group.name.contains(only.as_str())
        {
            continue;
        }
        eprintln!("==> {}", group.name);
        let (ts, mdm) = match group.source {
            "tailscale" => (group.devices, 0),
            _ => (0, group.devices),
        };
        let mut sims = Sims::start(&exe, ts, mdm, group.rate)?;
        let sim_base = sims.info.env[match group.source {
            "tailscale" => "TAILSCALE_API_BASE_URL",
            _ => "TINYMDM_API_BASE_URL",
        }]
        .clone();
        let tag = format!(
            "{}-{}",
            group.name.replace(['@', '/'], "-"),
            std::process::id()
        );
        let table = format!("bench-{tag}");
        let sqlite = std::env::temp_dir().join(format!("fleetsync-bench-{tag}.db"));
        let baseline_table = format!("baseline-{tag}");
        match group.store {
            Store::Dynamodb => DynamoStore::create_table(&ddb, &table).await?,
            Store::Sqlite => {
                let _ = std::fs::remove_file(&sqlite);
            }
        }
        // History entries written so far (see `check_items`).
        let mut history = 0u64;
        for (i, phase) in group.phases.iter().enumerate() {
            let churned = if *phase == "churn" {
                let r: Value = http
                    .post(format!("{sim_base}/_sim/churn"))
                    .json(&json!({"fraction": a.churn, "seed": 11 + i as u64}))
                    .send()
                    .await?
                    .error_for_status()?
                    .json()
                    .await?;
                Some(r["changed"].as_u64().unwrap_or(0))
            } else {
                None
            };
            let mut env = sims.info.env.clone();
            if group.rate > 0 {
                env.insert(
                    "TINYMDM_RATE_LIMIT_PER_SECOND".into(),
                    group.rate.to_string(),
                );
            }
            let mut cmd = Command::new(&exe);
            cmd.arg("sync").arg("--source").arg(group.source);
            if group.apps {
                cmd.arg("--apps");
            }
            match group.store {
                Store::Dynamodb => {
                    cmd.args(["--table", &table, "--endpoint", &a.endpoint]);
                }
                Store::Sqlite => {
                    cmd.arg("--sqlite").arg(&sqlite);
                }
            }
            cmd.env_clear()
                .env("PATH", std::env::var("PATH").unwrap_or_default())
                .envs(&env);
            clear_requests(&http, &sim_base).await?;
            let m = tokio::task::spawn_blocking(move || measure(cmd)).await??;
            let (http_requests, http_429) = served(&http, &sim_base).await?;
            let report: SyncReport = serde_json::from_str(m.stdout.trim())
                .with_context(|| format!("sync output: {}", m.stdout))?;
            let rate_bound = (group.rate > 0 && group.apps)
                .then(|| http_requests as f64 / f64::from(group.rate));
            let r = RunResult {
                group: group.name.clone(),
                source: group.source.into(),
                devices: group.devices,
                apps: group.apps,
                rate: group.rate,
                store: group.store,
                phase: phase.to_string(),
                implementation: "fleetsync".into(),
                wall_seconds: m.wall.as_secs_f64(),
                step_seconds: Some(report.step_seconds),
                peak_rss_mb: m.max_rss_kb as f64 / 1024.0,
                cpu_seconds: m.cpu_seconds,
                http_requests,
                http_429,
                churned,
                counts: Some(json!({
                    "devices": report.devices, "added": report.added, "changed": report.changed,
                    "removed": report.removed, "unchanged": report.unchanged, "invalid": report.invalid,
                })),
                ddb: (group.store == Store::Dynamodb).then_some(report.ddb),
                rate_bound_seconds: rate_bound,
            };
            eprintln!("    {}", line(&r));
            check_counts(&group, phase, &report, churned)?;
            history += report.added + report.changed + report.removed;
            // No phase removes a device (the churn only changes some), so the
            // table holds one record per device of the fleet, the history, a
            // run record per phase and the tenant marker.
            let phases_done = i as u64 + 1;
            match group.store {
                Store::Dynamodb => {
                    let expected = group.devices as u64 + history + phases_done + 1;
                    check_items(&ddb, &table, expected).await?
                }
                Store::Sqlite => check_sqlite(&group, &sqlite, phases_done).await?,
            }
            runs.push(r);
            if let Some(script) = baseline
                && group.baseline
                && group.baseline_phases.contains(phase)
                && (i == 0 || !a.baseline_first_only)
            {
                let what = match (group.source, group.apps) {
                    ("tailscale", _) => "tailscale",
                    (_, false) => "tinymdm",
                    (_, true) => "tinymdm-apps",
                };
                let mut cmd = Command::new(&a.python);
                cmd.arg(wrapper_path()?)
                    .arg(script)
                    .arg(what)
                    .env_clear()
                    .env("PATH", std::env::var("PATH").unwrap_or_default())
                    .envs(&sims.info.env)
                    .env("AWS_ENDPOINT_URL", &a.endpoint)
                    .env("AWS_ACCESS_KEY_ID", "test")
                    .env("AWS_SECRET_ACCESS_KEY", "test")
                    .env("AWS_REGION", "us-east-1")
                    .env("BASELINE_TABLE", &baseline_table);
                clear_requests(&http, &sim_base).await?;
                let m = tokio::task::spawn_blocking(move || measure(cmd)).await??;
                let (http_requests, http_429) = served(&http, &sim_base).await?;
                let mut lines = m.stdout.lines().filter(|l| l.starts_with('{'));
                let out: Value = serde_json::from_str(lines.next().unwrap_or("{}"))?;
                let sized: Value = serde_json::from_str(lines.next().unwrap_or("{}"))?;
                let get = |v: &Value, k: &str| v[k].as_u64().unwrap_or(0);
                let r = RunResult {
                    implementation: "baseline".into(),
                    wall_seconds: m.wall.as_secs_f64(),
                    step_seconds: out["seconds"].as_f64(),
                    peak_rss_mb: m.max_rss_kb as f64 / 1024.0,
                    cpu_seconds: m.cpu_seconds,
                    http_requests,
                    http_429,
                    counts: Some(json!({"devices": out["devices"]})),
                    ddb: Some(DdbTotals {
                        write_requests: get(&out, "write_requests"),
                        items_written: get(&sized, "items_written"),
                        wcu: get(&sized, "wcu"),
                        read_requests: get(&sized, "read_requests"),
                        ..DdbTotals::default()
                    }),
                    rate_bound_seconds: (group.apps)
                        .then(|| http_requests as f64 / f64::from(group.rate.max(1))),
                    ..r_template(&group, phase, churned)
                };
                eprintln!("    {}", line(&r));
                runs.push(r);
            }
        }
        sims.stop();
        if group.store == Store::Dynamodb {
            for t in [&table, &baseline_table] {
                let _ = ddb.delete_table().table_name(t.as_str()).send().await;
            }
        }
        let _ = std::fs::remove_file(&sqlite);
    }
    let cold_starts = match &a.functions_dir {
        Some(dir) => coldstart::measure(dir, &a.endpoint, a.cold_starts).await?,
        None => Vec::new(),
    };
    let out = Scenarios {
        machine: machine(),
        started_at,
        churn_fraction: a.churn,
        runs,
        cold_starts,
    };
    if let Some(dir) = a.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&a.out, serde_json::to_string_pretty(&out)?)?;
    eprintln!("==> wrote {}", a.out.display());
    Ok(())
}

/// Checks what a fleetsync phase reported against the fleet the simulator
/// serves and the changes it made, so a run that completes has synced every
/// device (the load scenarios of issue 5: 50,000 Tailscale devices and 20,000
/// TinyMDM devices into emulated DynamoDB).
fn check_counts(group: &Group, phase: &str, r: &SyncReport, churned: Option<u64>) -> Result<()> {
    let n = group.devices as u64;
    let churned = churned.unwrap_or(0);
    let (added, changed_ok, unchanged_ok) = match phase {
        "first" => (n, r.changed == 0, r.unchanged == 0),
        "nochange" => (0, r.changed == 0, r.unchanged == n),
        // Tailscale's churn changes the client version (content) of each
        // device it picks; TinyMDM's changes the battery (volatile, not a
        // change) and only sometimes the OS version.
        _ if group.source == "tailscale" => (0, r.changed == churned, r.unchanged + churned == n),
        _ => (0, r.changed <= churned, r.unchanged + r.changed == n),
    };
    if r.devices != n
        || r.added != added
        || r.removed != 0
        || r.invalid != 0
        || !changed_ok
        || !unchanged_ok
    {
        bail!(
            "{} {phase}: wrong counts for a fleet of {n} ({churned} churned): {} devices, \
             {} added, {} changed, {} unchanged, {} removed, {} invalid",
            group.name,
            r.devices,
            r.added,
            r.changed,
            r.unchanged,
            r.removed,
            r.invalid
        );
    }
    Ok(())
}

/// Checks the number of items in the bench's DynamoDB table: one record per
/// device, one history entry per added/changed/removed device, one run record
/// per sync and the tenant marker. The emulator's `ItemCount` is exact (real
/// DynamoDB refreshes it about every six hours), and it costs one request
/// where reading 50,000 records back costs the emulator many minutes.
async fn check_items(ddb: &aws_sdk_dynamodb::Client, table: &str, expected: u64) -> Result<()> {
    let described = ddb.describe_table().table_name(table).send().await?;
    let count = described
        .table()
        .and_then(|t| t.item_count())
        .context("DescribeTable without ItemCount")?;
    if u64::try_from(count).ok() != Some(expected) {
        bail!("table {table} holds {count} items, expected {expected}");
    }
    Ok(())
}

/// Checks that the SQLite store holds one current record per device and one
/// succeeded run record per phase.
async fn check_sqlite(group: &Group, path: &std::path::Path, runs: u64) -> Result<()> {
    let store = SqliteStore::open(path)?;
    let source = match group.source {
        "tailscale" => Source::Tailscale,
        _ => Source::Tinymdm,
    };
    let tenants = store.tenants(source).await?;
    let [tenant] = tenants.as_slice() else {
        bail!("{}: expected one tenant, found {tenants:?}", group.name);
    };
    let stored_runs = store.list_runs(source, tenant, runs as usize + 1).await?;
    let succeeded = stored_runs
        .iter()
        .filter(|r| r.status == RunStatus::Succeeded)
        .count();
    if stored_runs.len() as u64 != runs || succeeded as u64 != runs {
        bail!(
            "{}: the store holds {} run records ({succeeded} succeeded), expected {runs}",
            group.name,
            stored_runs.len()
        );
    }
    let states = store.device_states(source, tenant).await?;
    let current = states.iter().filter(|s| s.removed_at.is_none()).count();
    if current != group.devices {
        bail!(
            "{}: the store holds {current} current devices, expected {}",
            group.name,
            group.devices
        );
    }
    Ok(())
}

fn r_template(group: &Group, phase: &str, churned: Option<u64>) -> RunResult {
    RunResult {
        group: group.name.clone(),
        source: group.source.into(),
        devices: group.devices,
        apps: group.apps,
        rate: group.rate,
        store: group.store,
        phase: phase.to_string(),
        implementation: String::new(),
        wall_seconds: 0.0,
        step_seconds: None,
        peak_rss_mb: 0.0,
        cpu_seconds: 0.0,
        http_requests: 0,
        http_429: 0,
        churned,
        counts: None,
        ddb: None,
        rate_bound_seconds: None,
    }
}

fn line(r: &RunResult) -> String {
    let d = r.ddb.unwrap_or_default();
    format!(
        "{:<9} {:<8} wall {:>7.2}s cpu {:>6.2}s rss {:>6.1} MB http {:>5} writes {:>5} wcu {:>6} read {:>6} {}",
        r.implementation,
        r.phase,
        r.wall_seconds,
        r.cpu_seconds,
        r.peak_rss_mb,
        r.http_requests,
        d.write_requests,
        d.wcu,
        d.items_read,
        r.counts.as_ref().map(Value::to_string).unwrap_or_default()
    )
}

/// The Python wrapper that sizes the baseline's writes, next to this crate.
fn wrapper_path() -> Result<PathBuf> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("baseline_wrap.py");
    if !p.exists() {
        bail!("missing {}", p.display());
    }
    Ok(p)
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cores} cores ({cpu}), shared with other work")
}

async fn clear_requests(http: &reqwest::Client, base: &str) -> Result<()> {
    http.delete(format!("{base}/_sim/requests"))
        .send()
        .await?
        .error_for_status()?;
    Ok(())
}

/// Requests the simulator served since the last clear, and how many were 429.
async fn served(http: &reqwest::Client, base: &str) -> Result<(u64, u64)> {
    let log: Vec<Value> = http
        .get(format!("{base}/_sim/requests"))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let throttled = log.iter().filter(|r| r["status"] == 429).count();
    Ok((log.len() as u64, throttled as u64))
}

struct Measured {
    stdout: String,
    wall: Duration,
    max_rss_kb: i64,
    cpu_seconds: f64,
}

/// Runs `cmd` to completion; wall time from spawn to reaping, peak RSS from
/// the kernel's accounting of that one child (`wait4`).
fn measure(mut cmd: Command) -> Result<Measured> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let start = Instant::now();
    let mut child = cmd.spawn().context("spawning a measured process")?;
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .context("no stdout")?
        .read_to_string(&mut stdout)?;
    let pid = child.id() as libc::pid_t;
    let mut status: libc::c_int = 0;
    // SAFETY: rusage is plain data; wait4 fills it for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let wall = start.elapsed();
    if rc != pid {
        bail!("wait4 failed: {}", std::io::Error::last_os_error());
    }
    if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
        bail!("measured process failed (status {status}); its output: {stdout}");
    }
    Ok(Measured {
        stdout,
        wall,
        max_rss_kb: usage.ru_maxrss,
        cpu_seconds: seconds(usage.ru_utime) + seconds(usage.ru_stime),
    })
}

fn seconds(t: libc::timeval) -> f64 {
    t.tv_sec as f64 + t.tv_usec as f64 / 1e6
}

/// The simulators in a process of their own.
struct Sims {
    child: Child,
    stdin: Option<ChildStdin>,
    info: SimsInfo,
}

impl Sims {
    fn start(exe: &std::path::Path, tailscale: usize, tinymdm: usize, rate: u32) -> Result<Sims> {
        let mut child = Command::new(exe)
            .args(["sims", "--tailscale", &tailscale.to_string()])
            .args([
                "--tinymdm",
                &tinymdm.to_string(),
                "--rate",
                &rate.to_string(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting the simulators")?;
        let mut first = String::new();
        BufReader::new(child.stdout.take().context("no stdout")?).read_line(&mut first)?;
        let info: SimsInfo = serde_json::from_str(first.trim())
            .with_context(|| format!("simulator output: {first:?}"))?;
        let stdin = child.stdin.take();
        Ok(Sims { child, stdin, info })
    }

    fn stop(&mut self) {
        drop(self.stdin.take());
        for _ in 0..50 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Sims {
    fn drop(&mut self) {
        self.stop();
    }
}
