//! `fleetsync-bench report`: merges the scenario runs, the criterion estimates
//! and the Lambda zip sizes into `results.json`, checks the targets of issue 6,
//! and prints everything as Markdown tables.

use crate::coldstart::ColdStart;
use crate::runner::{RunResult, Scenarios, Store};
use anyhow::{Context, Result};
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct ReportArgs {
    #[arg(long, default_value = "target/bench/scenarios.json")]
    scenarios: PathBuf,
    #[arg(long, default_value = "target/criterion")]
    criterion: PathBuf,
    /// Folder with `<function>/bootstrap.zip` (cargo lambda's output).
    #[arg(long, default_value = "target/lambda")]
    zips: PathBuf,
    #[arg(long, default_value = "target/bench/results.json")]
    out: PathBuf,
    /// Also write the tables here (Markdown).
    #[arg(long, default_value = "target/bench/results.md")]
    markdown: PathBuf,
}

#[derive(Serialize)]
struct Target {
    target: String,
    measured: String,
    met: Option<bool>,
}

#[derive(Serialize)]
struct Results<'a> {
    machine: &'a str,
    started_at: &'a str,
    churn_fraction: f64,
    runs: &'a [RunResult],
    cold_starts: &'a [ColdStart],
    criterion_ns: BTreeMap<String, f64>,
    zip_bytes: BTreeMap<String, u64>,
    targets: Vec<Target>,
}

pub fn report(a: ReportArgs) -> Result<()> {
    let text = std::fs::read_to_string(&a.scenarios)
        .with_context(|| format!("reading {}", a.scenarios.display()))?;
    let sc: Scenarios = serde_json::from_str(&text)?;
    let criterion = criterion_estimates(&a.criterion);
    let zips = zip_sizes(&a.zips);
    let targets = targets(&sc, &zips);
    let md = markdown(&sc, &criterion, &zips, &targets);
    print!("{md}");
    if let Some(dir) = a.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&a.markdown, &md)?;
    let results = Results {
        machine: &sc.machine,
        started_at: &sc.started_at,
        churn_fraction: sc.churn_fraction,
        runs: &sc.runs,
        cold_starts: &sc.cold_starts,
        criterion_ns: criterion,
        zip_bytes: zips,
        targets,
    };
    std::fs::write(&a.out, serde_json::to_string_pretty(&results)?)?;
    eprintln!("==> wrote {} and {}", a.out.display(), a.markdown.display());
    Ok(())
}

/// Mean time per iteration of each criterion benchmark, in nanoseconds.
fn criterion_estimates(dir: &std::path::Path) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let path = e.path().join("new/estimates.json");
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        if let Ok(v) = serde_json::from_str::<Value>(&text)
            && let Some(ns) = v["mean"]["point_estimate"].as_f64()
        {
            out.insert(e.file_name().to_string_lossy().into_owned(), ns);
        }
    }
    out
}

fn zip_sizes(dir: &std::path::Path) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for f in [
        "sync-tailscale",
        "sync-tinymdm",
        "plan-prune",
        "prune-devices",
    ] {
        if let Ok(m) = std::fs::metadata(dir.join(f).join("bootstrap.zip")) {
            out.insert(f.to_string(), m.len());
        }
    }
    out
}

fn find<'a>(
    sc: &'a Scenarios,
    group_prefix: &str,
    phase: &str,
    implementation: &str,
) -> Option<&'a RunResult> {
    sc.runs.iter().find(|r| {
        r.group.starts_with(group_prefix) && r.phase == phase && r.implementation == implementation
    })
}

fn targets(sc: &Scenarios, zips: &BTreeMap<String, u64>) -> Vec<Target> {
    let mut t = Vec::new();
    let nochange: Vec<&RunResult> = sc
        .runs
        .iter()
        .filter(|r| {
            r.implementation == "fleetsync" && r.phase == "nochange" && r.store == Store::Dynamodb
        })
        .collect();
    if !nochange.is_empty() {
        let worst = nochange
            .iter()
            .filter_map(|r| r.ddb.map(|d| (d.write_requests, d.items_written, &r.group)))
            .max();
        let met = nochange.iter().all(|r| {
            r.ddb
                .is_some_and(|d| d.write_requests == 1 && d.items_written <= 2)
        });
        t.push(Target {
            target: "no-change re-sync writes only the run record".into(),
            measured: match worst {
                Some((w, i, g)) => format!(
                    "at most {w} write request(s), {i} items (run record + tenant marker) ({g})"
                ),
                None => "-".into(),
            },
            met: Some(met),
        });
    }
    if let Some(r) = find(sc, "ts-10k-ddb", "churn", "fleetsync")
        && let Some(d) = r.ddb
    {
        let changed = r.counts.as_ref().map_or(0, |c| {
            c["changed"].as_u64().unwrap_or(0)
                + c["added"].as_u64().unwrap_or(0)
                + c["removed"].as_u64().unwrap_or(0)
        });
        let limit = (2 * changed).div_ceil(25) + 2;
        t.push(Target {
            target: "1% churn of 10k: write requests ≤ ceil(2×changed/25)+2".into(),
            measured: format!(
                "{} requests for {changed} changed (limit {limit})",
                d.write_requests
            ),
            met: Some(d.write_requests <= limit),
        });
    }
    let rss: Vec<&RunResult> = sc
        .runs
        .iter()
        .filter(|r| r.group.starts_with("ts-50k-ddb") && r.implementation == "fleetsync")
        .collect();
    if let Some(worst) = rss
        .iter()
        .max_by(|a, b| a.peak_rss_mb.total_cmp(&b.peak_rss_mb))
    {
        t.push(Target {
            target: "peak RSS of a 50k Tailscale sync ≤ 100 MB".into(),
            measured: format!("{:.1} MB ({} sync)", worst.peak_rss_mb, worst.phase),
            met: Some(worst.peak_rss_mb <= 100.0),
        });
    }
    for r in sc
        .runs
        .iter()
        .filter(|r| r.implementation == "fleetsync" && r.rate_bound_seconds.is_some())
    {
        let bound = r.rate_bound_seconds.unwrap_or(0.0);
        let ratio = r.wall_seconds / bound.max(f64::EPSILON);
        t.push(Target {
            target: format!(
                "TinyMDM with apps within 10% of the rate bound ({}, {})",
                r.group, r.phase
            ),
            measured: format!(
                "{:.1} s process ({:.1} s step) vs {:.1} s bound ({} requests at {}/s): {:+.1}%",
                r.wall_seconds,
                r.step_seconds.unwrap_or(0.0),
                bound,
                r.http_requests,
                r.rate,
                (ratio - 1.0) * 100.0
            ),
            met: Some(ratio <= 1.10),
        });
    }
    if !zips.is_empty() {
        let (f, max) = zips.iter().max_by_key(|(_, b)| **b).expect("not empty");
        t.push(Target {
            target: "each arm64 zip ≤ 8 MB".into(),
            measured: format!("largest {f}: {:.2} MB", *max as f64 / 1e6),
            met: Some(zips.len() == 4 && *max <= 8_000_000),
        });
    }
    let cold: Vec<&ColdStart> = sc
        .cold_starts
        .iter()
        .filter(|c| c.error.is_none())
        .collect();
    if let Some(worst) = cold
        .iter()
        .max_by(|a, b| a.median_ms.total_cmp(&b.median_ms))
    {
        t.push(Target {
            target: "cold start to ready ≤ 50 ms".into(),
            measured: format!(
                "slowest median {}: {:.1} ms (max of any run {:.1} ms)",
                worst.function,
                worst.median_ms,
                cold.iter().map(|c| c.max_ms).fold(0.0, f64::max)
            ),
            met: Some(
                cold.len() == sc.cold_starts.len() && cold.iter().all(|c| c.median_ms <= 50.0),
            ),
        });
    }
    t
}

fn ratio(base: f64, ours: f64) -> String {
    if ours <= 0.0 && base <= 0.0 {
        "=".into()
    } else if ours <= 0.0 {
        "∞".into()
    } else {
        format!("{:.1}", base / ours)
    }
}

fn markdown(
    sc: &Scenarios,
    criterion: &BTreeMap<String, f64>,
    zips: &BTreeMap<String, u64>,
    targets: &[Target],
) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Machine: {}. Run started {}. Churn phase: {}% of devices changed in the simulator.\n",
        sc.machine,
        sc.started_at,
        sc.churn_fraction * 100.0
    );
    let _ = writeln!(
        s,
        "| scenario | sync | wall s | CPU s | peak RSS MB | HTTP req | DDB write req | WCU | items read | added/changed/removed |"
    );
    let _ = writeln!(s, "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|");
    for r in sc.runs.iter().filter(|r| r.implementation == "fleetsync") {
        let d = r.ddb.unwrap_or_default();
        let (w, wcu, read) = if r.store == Store::Dynamodb {
            (
                d.write_requests.to_string(),
                d.wcu.to_string(),
                d.items_read.to_string(),
            )
        } else {
            ("-".into(), "-".into(), "-".into())
        };
        let c = r.counts.clone().unwrap_or_default();
        let n = |k: &str| c[k].as_u64().unwrap_or(0);
        let _ = writeln!(
            s,
            "| {} | {} | {:.2} | {:.2} | {:.1} | {} | {} | {} | {} | {}/{}/{} |",
            r.group,
            r.phase,
            r.wall_seconds,
            r.cpu_seconds,
            r.peak_rss_mb,
            r.http_requests,
            w,
            wcu,
            read,
            n("added"),
            n("changed"),
            n("removed")
        );
    }
    let baseline: Vec<&RunResult> = sc
        .runs
        .iter()
        .filter(|r| r.implementation == "baseline")
        .collect();
    if !baseline.is_empty() {
        let _ = writeln!(
            s,
            "\nBaseline (shared/bench/baseline_sync.py) on the same simulator state, and the ratio baseline ÷ fleetsync for each figure (higher is better for fleetsync):\n"
        );
        let _ = writeln!(
            s,
            "| scenario | sync | devices stored | wall s (×) | CPU s (×) | peak RSS MB (×) | HTTP req (×) | DDB write req (×) | WCU (×) |"
        );
        let _ = writeln!(s, "|---|---|--:|--:|--:|--:|--:|--:|--:|");
        for b in baseline {
            let Some(f) = find(sc, &b.group, &b.phase, "fleetsync") else {
                continue;
            };
            let (bd, fd) = (b.ddb.unwrap_or_default(), f.ddb.unwrap_or_default());
            let devices = b
                .counts
                .as_ref()
                .and_then(|c| c["devices"].as_u64())
                .unwrap_or(0);
            let _ = writeln!(
                s,
                "| {} | {} | {} of {} | {:.2} ({}) | {:.2} ({}) | {:.1} ({}) | {} ({}) | {} ({}) | {} ({}) |",
                b.group,
                b.phase,
                devices,
                b.devices,
                b.wall_seconds,
                ratio(b.wall_seconds, f.wall_seconds),
                b.cpu_seconds,
                ratio(b.cpu_seconds, f.cpu_seconds),
                b.peak_rss_mb,
                ratio(b.peak_rss_mb, f.peak_rss_mb),
                b.http_requests,
                ratio(b.http_requests as f64, f.http_requests as f64),
                bd.write_requests,
                ratio(bd.write_requests as f64, fd.write_requests as f64),
                bd.wcu,
                ratio(bd.wcu as f64, fd.wcu as f64),
            );
        }
    }
    if !criterion.is_empty() {
        let _ = writeln!(s, "\n| criterion bench | mean |\n|---|--:|");
        for (k, ns) in criterion {
            let _ = writeln!(s, "| {k} | {} |", human_ns(*ns));
        }
    }
    if !zips.is_empty() {
        let _ = writeln!(s, "\n| function | arm64 zip MB |\n|---|--:|");
        for (k, b) in zips {
            let _ = writeln!(s, "| {k} | {:.2} |", *b as f64 / 1e6);
        }
    }
    if !sc.cold_starts.is_empty() {
        let _ = writeln!(
            s,
            "\n| function | cold start to ready, median ms | max ms | runs |\n|---|--:|--:|--:|"
        );
        for c in &sc.cold_starts {
            match &c.error {
                None => {
                    let _ = writeln!(
                        s,
                        "| {} | {:.1} | {:.1} | {} |",
                        c.function,
                        c.median_ms,
                        c.max_ms,
                        c.runs_ms.len()
                    );
                }
                Some(e) => {
                    let _ = writeln!(s, "| {} | failed: {e} | | |", c.function);
                }
            }
        }
    }
    let _ = writeln!(s, "\n| target | measured | met |\n|---|---|---|");
    for t in targets {
        let met = match t.met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "?",
        };
        let _ = writeln!(s, "| {} | {} | {met} |", t.target, t.measured);
    }
    s
}

fn human_ns(ns: f64) -> String {
    if ns >= 1e9 {
        format!("{:.2} s", ns / 1e9)
    } else if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.2} µs", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}
