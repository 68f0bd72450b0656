//! What the read commands print: tables for people, JSON and CSV for tools.

use anyhow::{Result, bail};
use chrono::{DateTime, Utc};
use clap::ValueEnum;
use comfy_table::{Table, presets::UTF8_BORDERS_ONLY};
use fleetsync::model::{DeviceRecord, Source};
use fleetsync::steps::plan_prune::PlanPruneOutput;
use fleetsync::store::Store;
use serde_json::{Value, json};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Json,
    Csv,
}

/// Rows with named columns, printed in the chosen format.
struct Rows {
    columns: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Rows {
    fn new(columns: &[&'static str]) -> Self {
        Rows {
            columns: columns.to_vec(),
            rows: Vec::new(),
        }
    }

    fn push(&mut self, row: Vec<String>) {
        self.rows.push(row);
    }

    fn print(self, format: Format) -> Result<()> {
        match format {
            Format::Table => {
                let mut t = Table::new();
                t.load_preset(UTF8_BORDERS_ONLY);
                t.set_header(self.columns.clone());
                for r in self.rows {
                    t.add_row(r);
                }
                println!("{t}");
            }
            Format::Csv => {
                let mut w = csv::Writer::from_writer(std::io::stdout());
                w.write_record(&self.columns)?;
                for r in self.rows {
                    w.write_record(&r)?;
                }
                w.flush()?;
            }
            Format::Json => unreachable!("JSON output is built from the records themselves"),
        }
        Ok(())
    }
}

fn time(t: Option<DateTime<Utc>>) -> String {
    t.map(|t| t.format("%Y-%m-%d %H:%M:%SZ").to_string())
        .unwrap_or_default()
}

fn print_json(v: &Value) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

async fn all_devices(store: &dyn Store, sources: &[Source]) -> Result<Vec<DeviceRecord>> {
    let mut out = Vec::new();
    for &source in sources {
        for tenant in store.tenants(source).await? {
            out.extend(store.current_devices(source, &tenant).await?);
        }
    }
    Ok(out)
}

fn attr<'a>(d: &'a DeviceRecord, key: &str) -> &'a str {
    d.attrs.get(key).and_then(|v| v.as_str()).unwrap_or("")
}

fn device_json(d: &DeviceRecord) -> Value {
    json!({
        "source": d.source,
        "tenant": d.tenant,
        "device_id": d.device_id,
        "name": d.name,
        "last_seen": d.last_seen,
        "connected": d.connected,
        "first_seen_at": d.first_seen_at,
        "updated_at": d.updated_at,
        "removed_at": d.removed_at,
        "attrs": d.attrs,
    })
}

/// `fleetsync devices`.
pub async fn devices(
    store: &dyn Store,
    sources: &[Source],
    stale_days: Option<u32>,
    include_removed: bool,
    format: Format,
) -> Result<()> {
    let now = Utc::now();
    let mut list: Vec<DeviceRecord> = all_devices(store, sources)
        .await?
        .into_iter()
        .filter(|d| include_removed || !d.is_removed())
        .filter(|d| match stale_days {
            None => true,
            Some(days) => {
                !d.connected
                    && d.last_seen
                        .is_none_or(|t| now - t > chrono::Duration::days(i64::from(days)))
            }
        })
        .collect();
    list.sort_by(|a, b| (a.source, &a.name, &a.device_id).cmp(&(b.source, &b.name, &b.device_id)));
    if format == Format::Json {
        return print_json(&Value::Array(list.iter().map(device_json).collect()));
    }
    let mut rows = Rows::new(&[
        "source",
        "id",
        "name",
        "os / model",
        "version",
        "last seen / sync",
        "status",
        "tags / user",
    ]);
    for d in &list {
        let (os, version, who) = match d.source {
            Source::Tailscale => (
                attr(d, "os").to_string(),
                attr(d, "client_version")
                    .split('-')
                    .next()
                    .unwrap_or("")
                    .to_string(),
                d.attrs
                    .get("tags")
                    .and_then(|t| t.as_array())
                    .filter(|t| !t.is_empty())
                    .map(|t| {
                        t.iter()
                            .filter_map(|x| x.as_str())
                            .collect::<Vec<_>>()
                            .join(" ")
                    })
                    .unwrap_or_else(|| attr(d, "user").to_string()),
            ),
            Source::Tinymdm => (
                format!("{} {}", attr(d, "manufacturer"), attr(d, "model"))
                    .trim()
                    .to_string(),
                attr(d, "os_version").to_string(),
                attr(d, "serial_number").to_string(),
            ),
        };
        let status = if d.is_removed() {
            "removed"
        } else if d.connected {
            "connected"
        } else {
            ""
        };
        rows.push(vec![
            d.source.to_string(),
            d.device_id.clone(),
            d.name.clone(),
            os,
            version,
            time(d.last_seen),
            status.into(),
            who,
        ]);
    }
    if format == Format::Table {
        eprintln!("{} devices", list.len());
    }
    rows.print(format)
}

/// `fleetsync runs`.
pub async fn runs(
    store: &dyn Store,
    sources: &[Source],
    limit: usize,
    format: Format,
) -> Result<()> {
    let mut runs = Vec::new();
    for &source in sources {
        for tenant in store.tenants(source).await? {
            runs.extend(store.list_runs(source, &tenant, limit).await?);
        }
    }
    runs.sort_by_key(|r| std::cmp::Reverse(r.started_at));
    if format == Format::Json {
        return print_json(&serde_json::to_value(&runs)?);
    }
    let mut rows = Rows::new(&[
        "started",
        "source",
        "tenant",
        "status",
        "devices",
        "added",
        "changed",
        "removed",
        "unchanged",
        "invalid",
        "run id",
        "error",
    ]);
    for r in &runs {
        let c = r.counts;
        rows.push(vec![
            time(Some(r.started_at)),
            r.source.to_string(),
            r.tenant.clone(),
            format!("{:?}", r.status).to_lowercase(),
            c.devices.to_string(),
            c.added.to_string(),
            c.changed.to_string(),
            c.removed.to_string(),
            c.unchanged.to_string(),
            c.invalid.to_string(),
            r.run_id.clone(),
            r.error.clone().unwrap_or_default(),
        ]);
    }
    rows.print(format)
}

async fn tailnets(store: &dyn Store, tailnet: Option<&str>) -> Result<Vec<String>> {
    Ok(match tailnet {
        Some(t) => vec![t.to_string()],
        None => store.tenants(Source::Tailscale).await?,
    })
}

/// `fleetsync prunes`.
pub async fn plans(
    store: &dyn Store,
    tailnet: Option<&str>,
    limit: usize,
    format: Format,
) -> Result<()> {
    let mut plans = Vec::new();
    for t in tailnets(store, tailnet).await? {
        plans.extend(store.list_plans(&t, limit).await?);
    }
    plans.sort_by_key(|p| std::cmp::Reverse(p.created_at));
    if format == Format::Json {
        return print_json(&serde_json::to_value(&plans)?);
    }
    let mut rows = Rows::new(&[
        "created",
        "plan id",
        "tailnet",
        "threshold (days)",
        "fleet",
        "candidates",
        "status",
        "approved",
        "deleted",
        "skipped",
        "gone",
        "failed",
    ]);
    for p in &plans {
        let o = p.outcome.unwrap_or_default();
        rows.push(vec![
            time(Some(p.created_at)),
            p.plan_id.clone(),
            p.tenant.clone(),
            format!("{:.1}", p.settings.stale_minutes as f64 / 1440.0),
            p.fleet_size.to_string(),
            p.candidates.to_string(),
            serde_json::to_value(p.status)?
                .as_str()
                .unwrap_or("")
                .to_string(),
            time(p.approved_at),
            o.deleted.to_string(),
            o.skipped_now_active.to_string(),
            o.already_gone.to_string(),
            o.failed.to_string(),
        ]);
    }
    rows.print(format)
}

/// `fleetsync prunes show PLAN_ID`.
pub async fn plan(
    store: &dyn Store,
    tailnet: Option<&str>,
    plan_id: &str,
    format: Format,
) -> Result<()> {
    for t in tailnets(store, tailnet).await? {
        let Some(plan) = store.get_plan(&t, plan_id).await? else {
            continue;
        };
        let entries = store.plan_entries(&t, plan_id).await?;
        if format == Format::Json {
            return print_json(&json!({"plan": plan, "devices": entries}));
        }
        if format == Format::Table {
            println!(
                "plan {} of tailnet {} made {} from sync {}: {} candidates of {} devices, status {}",
                plan.plan_id,
                plan.tenant,
                time(Some(plan.created_at)),
                plan.snapshot_run_id,
                plan.candidates,
                plan.fleet_size,
                serde_json::to_value(plan.status)?.as_str().unwrap_or("")
            );
        }
        let mut rows = Rows::new(&[
            "device id",
            "name",
            "last seen",
            "tags",
            "reason",
            "outcome",
            "detail",
            "acted at",
        ]);
        for e in &entries {
            rows.push(vec![
                e.device_id.clone(),
                e.name.clone(),
                time(e.last_seen),
                e.tags.join(" "),
                e.reason.as_str().into(),
                e.outcome.map(|o| o.as_str()).unwrap_or("").into(),
                e.detail.clone().unwrap_or_default(),
                time(e.acted_at),
            ]);
        }
        return rows.print(format);
    }
    bail!("no plan {plan_id} in the store")
}

/// `fleetsync history DEVICE_ID`.
pub async fn history(
    store: &dyn Store,
    sources: &[Source],
    device_id: &str,
    format: Format,
) -> Result<()> {
    let mut entries = Vec::new();
    for &source in sources {
        for tenant in store.tenants(source).await? {
            entries.extend(
                store
                    .device_history(source, &tenant, device_id, Utc::now())
                    .await?,
            );
        }
    }
    if entries.is_empty() {
        bail!("no history for device {device_id}");
    }
    if format == Format::Json {
        return print_json(&serde_json::to_value(&entries)?);
    }
    let mut rows = Rows::new(&[
        "at",
        "source",
        "change",
        "name",
        "fields",
        "last seen",
        "run id",
    ]);
    for h in &entries {
        rows.push(vec![
            time(Some(h.at)),
            h.source.to_string(),
            h.kind.as_str().into(),
            h.name.clone(),
            h.changed_fields.join(" "),
            time(h.last_seen),
            h.run_id.clone(),
        ]);
    }
    rows.print(format)
}

/// One line summarising a sync.
#[allow(clippy::too_many_arguments)]
pub fn sync_line(
    source: &str,
    tenant: &str,
    devices: u64,
    added: u64,
    changed: u64,
    removed: u64,
    unchanged: u64,
    invalid: u64,
) -> String {
    let mut s = format!(
        "{source} ({tenant}): {devices} devices: {added} added, {changed} changed, {removed} removed, {unchanged} unchanged"
    );
    if invalid > 0 {
        s.push_str(&format!(", {invalid} invalid (skipped)"));
    }
    s
}

/// The plan part of `run` and `demo`, each line starting with `indent`.
pub fn print_plan_summary(p: &PlanPruneOutput, indent: &str) {
    println!(
        "{indent}prune plan {}: {} candidates of {} devices{}",
        p.plan_id,
        p.candidates,
        p.fleet_size,
        if p.dry_run { " (dry run)" } else { "" }
    );
    if !p.protected.is_empty() {
        let parts: Vec<String> = p
            .protected
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        println!("{indent}  protected: {}", parts.join(", "));
    }
    if let Some(h) = &p.approval_hint {
        println!("{indent}  needs approval: {h}");
    }
}
