//! The diff at the heart of both syncs: what a fresh listing means for the
//! stored current state. Pure: takes the previous records and the observed
//! devices, returns the records to write, the history to add and the counters.
//!
//! Rules:
//! - a new device is `added`; a device whose content fingerprint changed is
//!   `changed` (with the top-level fields that differ); both make history;
//! - a device whose only movement is presence (last seen moved by more than the
//!   resolution, or connected/disconnected) has its record refreshed but counts
//!   as `unchanged` and makes no history;
//! - a stored device missing from a *complete* listing is marked `removed`
//!   (never deleted); the caller does not call this for incomplete listings, and
//!   a listing with unreadable devices removes nothing (`allow_removals`);
//! - a record already written by this same run (a retry after a crash) is
//!   counted as what that run did to it and not written again.

use crate::model::{ChangeKind, DeviceRecord, DeviceState, HistoryEntry, Source, SyncCounts};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::time::Duration;

/// A device as seen in this sync, normalised across sources.
#[derive(Debug, Clone)]
pub struct Observed {
    pub device_id: String,
    pub name: String,
    pub last_seen: Option<DateTime<Utc>>,
    pub connected: bool,
    pub fingerprint: String,
    pub attrs: Value,
    pub raw: String,
}

/// The fixed facts of one sync.
#[derive(Debug, Clone)]
pub struct SyncContext<'a> {
    pub source: Source,
    pub tenant: &'a str,
    pub run_id: &'a str,
    /// The time of the sync; every record and entry written carries it.
    pub synced_at: DateTime<Utc>,
    pub last_seen_resolution: Duration,
    pub history_expires_at: i64,
    /// Top-level raw keys ignored when listing changed fields.
    pub volatile_keys: &'a [&'a str],
    /// False when the listing held devices that could not be read: any stored
    /// device missing from it might be one of them, so nothing is marked removed.
    pub allow_removals: bool,
}

/// What to write.
#[derive(Debug, Default)]
pub struct Changes {
    pub records: Vec<DeviceRecord>,
    pub history: Vec<HistoryEntry>,
    pub counts: SyncCounts,
}

/// Compares a complete listing with the stored records.
pub fn diff(ctx: &SyncContext<'_>, prev: Vec<DeviceRecord>, now: Vec<Observed>) -> Changes {
    let mut prev: HashMap<String, DeviceRecord> =
        prev.into_iter().map(|r| (r.device_id.clone(), r)).collect();
    let mut out = Changes::default();
    out.counts.devices = now.len() as u64;
    for obs in now {
        match prev.remove(&obs.device_id) {
            None => {
                out.counts.added += 1;
                let rec = new_record(ctx, obs, None, ChangeKind::Added);
                out.history
                    .push(history(ctx, &rec, ChangeKind::Added, Vec::new()));
                out.records.push(rec);
            }
            Some(p) if p.last_run_id == ctx.run_id => count(&mut out.counts, p.last_change),
            Some(p) if p.is_removed() => {
                out.counts.added += 1;
                let rec = new_record(ctx, obs, Some(&p), ChangeKind::Added);
                out.history
                    .push(history(ctx, &rec, ChangeKind::Added, Vec::new()));
                out.records.push(rec);
            }
            Some(p) if p.fingerprint != obs.fingerprint => {
                out.counts.changed += 1;
                let fields = changed_fields(&p.raw, &obs.raw, ctx.volatile_keys);
                let rec = new_record(ctx, obs, Some(&p), ChangeKind::Changed);
                out.history
                    .push(history(ctx, &rec, ChangeKind::Changed, fields));
                out.records.push(rec);
            }
            Some(p) => {
                out.counts.unchanged += 1;
                if presence_moved(&p, &obs, ctx.last_seen_resolution) {
                    out.records
                        .push(new_record(ctx, obs, Some(&p), ChangeKind::Unchanged));
                }
            }
        }
    }
    // A retry of this run (same run id) counts the removals it already wrote.
    out.counts.removed += prev
        .values()
        .filter(|p| removed_by(ctx.run_id, p.last_run_id.as_str(), p.last_change))
        .count() as u64;
    if !ctx.allow_removals {
        return out;
    }
    let mut gone: Vec<DeviceRecord> = prev.into_values().filter(|p| !p.is_removed()).collect();
    gone.sort_by(|a, b| a.device_id.cmp(&b.device_id));
    for mut p in gone {
        out.counts.removed += 1;
        p.removed_at = Some(ctx.synced_at);
        p.updated_at = ctx.synced_at;
        p.connected = false;
        p.last_run_id = ctx.run_id.to_string();
        p.last_change = ChangeKind::Removed;
        out.history
            .push(history(ctx, &p, ChangeKind::Removed, Vec::new()));
        out.records.push(p);
    }
    out
}

/// A listed device as the lean sync path sees it: the fields `plan` compares,
/// and the raw JSON only for devices that will be written.
#[derive(Debug, Clone, PartialEq)]
pub struct Listed {
    pub device_id: String,
    pub fingerprint: String,
    pub last_seen: Option<DateTime<Utc>>,
    pub connected: bool,
    pub raw: Option<String>,
}

/// Turns a listed device (raw JSON kept) into an `Observed`, given its full
/// stored record where the build read one.
pub type Observe<'a> = dyn Fn(&Listed, Option<&DeviceRecord>) -> Result<Observed, String> + 'a;

/// What a sync does to one device; indices point into the listing (`now`)
/// and the stored states (`prev`) given to `plan`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// New, or back after being removed (`prev`: its stored state).
    Add { now: usize, prev: Option<usize> },
    /// Content changed: a new record and a history entry.
    Change { now: usize, prev: usize },
    /// Only presence moved: the record is refreshed, no history.
    Refresh { now: usize, prev: usize },
    /// Missing from a complete listing: marked removed.
    Remove { prev: usize },
}

/// Which actions read the full stored record before they are built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoredRecords {
    /// Changed and removed devices: the changed fields and the removal need
    /// the old record; the rest is built from the listing.
    ChangedAndRemoved,
    /// Every action on a stored device: the record keeps something the
    /// listing does not carry (TinyMDM apps in a sync without apps).
    EveryStored,
}

impl Action {
    /// The stored state whose full record building this action needs.
    pub fn needs_stored_record(self, which: StoredRecords) -> Option<usize> {
        match (self, which) {
            (Action::Change { prev, .. } | Action::Remove { prev }, _) => Some(prev),
            (Action::Refresh { prev, .. }, StoredRecords::EveryStored) => Some(prev),
            (Action::Add { prev, .. }, StoredRecords::EveryStored) => prev,
            _ => None,
        }
    }
}

/// The outcome of `plan`: the actions, in the order `diff` would write, and
/// the counters.
#[derive(Debug, Default)]
pub struct Plan {
    pub actions: Vec<Action>,
    pub counts: SyncCounts,
}

/// The stored states of a source and tenant, sorted by device id, looked up
/// by id: what a sync compares its listing with before it keeps raw JSON.
#[derive(Debug, Default)]
pub struct States(Vec<DeviceState>);

impl States {
    pub fn new(mut states: Vec<DeviceState>) -> Self {
        states.sort_by(|a, b| a.device_id.cmp(&b.device_id));
        States(states)
    }

    pub fn get(&self, id: &str) -> Option<&DeviceState> {
        self.0
            .binary_search_by(|p| p.device_id.as_str().cmp(id))
            .ok()
            .map(|i| &self.0[i])
    }

    pub fn as_slice(&self) -> &[DeviceState] {
        &self.0
    }
}

/// Whether a sync writes this listed device, given its stored state: the rule
/// of `diff`, so a listing can drop the raw JSON of every other device.
pub fn writes(
    run_id: &str,
    last_seen_resolution: Duration,
    prev: Option<&DeviceState>,
    now: &Listed,
) -> bool {
    match prev {
        None => true,
        Some(p) if p.last_run_id == run_id => false,
        Some(p) if p.removed_at.is_some() => true,
        Some(p) if p.fingerprint != now.fingerprint => true,
        Some(p) => presence_moved_state(p, now, last_seen_resolution),
    }
}

/// The lean form of `diff`: the same decisions and counters from stored
/// states and a reduced listing, without building any record yet (see
/// `build`), so a large fleet is never held more than once.
pub fn plan(ctx: &SyncContext<'_>, prev: &[DeviceState], now: &[Listed]) -> Plan {
    let index: HashMap<&str, usize> = prev
        .iter()
        .enumerate()
        .map(|(i, p)| (p.device_id.as_str(), i))
        .collect();
    let mut matched = vec![false; prev.len()];
    let mut out = Plan::default();
    out.counts.devices = now.len() as u64;
    for (n, obs) in now.iter().enumerate() {
        let Some(&i) = index.get(obs.device_id.as_str()) else {
            out.counts.added += 1;
            out.actions.push(Action::Add { now: n, prev: None });
            continue;
        };
        if std::mem::replace(&mut matched[i], true) {
            // Listed twice: the listing already reports it; the first wins.
            continue;
        }
        let p = &prev[i];
        if p.last_run_id == ctx.run_id {
            count(&mut out.counts, p.last_change);
        } else if p.removed_at.is_some() {
            out.counts.added += 1;
            out.actions.push(Action::Add {
                now: n,
                prev: Some(i),
            });
        } else if p.fingerprint != obs.fingerprint {
            out.counts.changed += 1;
            out.actions.push(Action::Change { now: n, prev: i });
        } else {
            out.counts.unchanged += 1;
            if presence_moved_state(p, obs, ctx.last_seen_resolution) {
                out.actions.push(Action::Refresh { now: n, prev: i });
            }
        }
    }
    // A retry of this run (same run id) counts the removals it already wrote.
    out.counts.removed += (0..prev.len())
        .filter(|&i| {
            !matched[i]
                && removed_by(
                    ctx.run_id,
                    prev[i].last_run_id.as_str(),
                    prev[i].last_change,
                )
        })
        .count() as u64;
    if !ctx.allow_removals {
        return out;
    }
    let mut gone: Vec<usize> = (0..prev.len())
        .filter(|&i| !matched[i] && prev[i].removed_at.is_none())
        .collect();
    gone.sort_by(|&a, &b| prev[a].device_id.cmp(&prev[b].device_id));
    for i in gone {
        out.counts.removed += 1;
        out.actions.push(Action::Remove { prev: i });
    }
    out
}

/// Builds the records and history entries of `actions` (a slice of a plan).
/// `observe` turns a listed device whose raw JSON was kept into an
/// `Observed`, given its full stored record where one was read; `stored`
/// holds the full stored records of the actions that need one
/// (`Action::needs_stored_record`), by device id.
pub fn build(
    ctx: &SyncContext<'_>,
    actions: &[Action],
    prev: &[DeviceState],
    now: &[Listed],
    stored: &HashMap<String, DeviceRecord>,
    observe: &Observe<'_>,
) -> Result<Changes, String> {
    let mut out = Changes::default();
    let stored_record = |i: usize| {
        stored
            .get(&prev[i].device_id)
            .ok_or_else(|| format!("stored record of device {} not found", prev[i].device_id))
    };
    for action in actions {
        match *action {
            Action::Add { now: n, prev: p } => {
                let times = p.map(|i| (prev[i].first_seen_at, prev[i].updated_at));
                let old = p.and_then(|i| stored.get(&prev[i].device_id));
                let rec = record_from(ctx, observe(&now[n], old)?, times, ChangeKind::Added);
                out.history
                    .push(history(ctx, &rec, ChangeKind::Added, Vec::new()));
                out.records.push(rec);
            }
            Action::Change { now: n, prev: i } => {
                let p = stored_record(i)?;
                let obs = observe(&now[n], Some(p))?;
                let fields = changed_fields(&p.raw, &obs.raw, ctx.volatile_keys);
                let rec = new_record(ctx, obs, Some(p), ChangeKind::Changed);
                out.history
                    .push(history(ctx, &rec, ChangeKind::Changed, fields));
                out.records.push(rec);
            }
            Action::Refresh { now: n, prev: i } => {
                let times = Some((prev[i].first_seen_at, prev[i].updated_at));
                out.records.push(record_from(
                    ctx,
                    observe(&now[n], stored.get(&prev[i].device_id))?,
                    times,
                    ChangeKind::Unchanged,
                ));
            }
            Action::Remove { prev: i } => {
                let mut p = stored_record(i)?.clone();
                p.removed_at = Some(ctx.synced_at);
                p.updated_at = ctx.synced_at;
                p.connected = false;
                p.last_run_id = ctx.run_id.to_string();
                p.last_change = ChangeKind::Removed;
                out.history
                    .push(history(ctx, &p, ChangeKind::Removed, Vec::new()));
                out.records.push(p);
            }
        }
    }
    Ok(out)
}

/// The stored device was marked removed by the run `run_id` itself (an
/// earlier attempt of the same run).
fn removed_by(run_id: &str, last_run_id: &str, last_change: ChangeKind) -> bool {
    last_run_id == run_id && last_change == ChangeKind::Removed
}

fn presence_moved_state(p: &DeviceState, now: &Listed, resolution: Duration) -> bool {
    if p.connected != now.connected {
        return true;
    }
    match (p.last_seen, now.last_seen) {
        (None, None) => false,
        (Some(a), Some(b)) => (b - a).abs().to_std().unwrap_or_default() > resolution,
        _ => true,
    }
}

fn count(c: &mut SyncCounts, kind: ChangeKind) {
    match kind {
        ChangeKind::Added => c.added += 1,
        ChangeKind::Changed => c.changed += 1,
        ChangeKind::Removed => c.removed += 1,
        ChangeKind::Unchanged => c.unchanged += 1,
    }
}

fn presence_moved(p: &DeviceRecord, obs: &Observed, resolution: Duration) -> bool {
    if p.connected != obs.connected {
        return true;
    }
    match (p.last_seen, obs.last_seen) {
        (None, None) => false,
        (Some(a), Some(b)) => (b - a).abs().to_std().unwrap_or_default() > resolution,
        _ => true,
    }
}

fn new_record(
    ctx: &SyncContext<'_>,
    obs: Observed,
    prev: Option<&DeviceRecord>,
    kind: ChangeKind,
) -> DeviceRecord {
    record_from(
        ctx,
        obs,
        prev.map(|p| (p.first_seen_at, p.updated_at)),
        kind,
    )
}

/// A record for `obs`; `prev` holds the stored first-seen and updated times.
fn record_from(
    ctx: &SyncContext<'_>,
    obs: Observed,
    prev: Option<(DateTime<Utc>, DateTime<Utc>)>,
    kind: ChangeKind,
) -> DeviceRecord {
    let updated_at = match (kind, prev) {
        (ChangeKind::Unchanged, Some((_, updated_at))) => updated_at,
        _ => ctx.synced_at,
    };
    DeviceRecord {
        source: ctx.source,
        tenant: ctx.tenant.to_string(),
        device_id: obs.device_id,
        name: obs.name,
        last_seen: obs.last_seen,
        connected: obs.connected,
        fingerprint: obs.fingerprint,
        attrs: obs.attrs,
        raw: obs.raw,
        first_seen_at: prev.map_or(ctx.synced_at, |(first_seen_at, _)| first_seen_at),
        updated_at,
        removed_at: None,
        last_run_id: ctx.run_id.to_string(),
        last_change: kind,
    }
}

fn history(
    ctx: &SyncContext<'_>,
    rec: &DeviceRecord,
    kind: ChangeKind,
    changed_fields: Vec<String>,
) -> HistoryEntry {
    HistoryEntry {
        source: ctx.source,
        tenant: ctx.tenant.to_string(),
        device_id: rec.device_id.clone(),
        run_id: ctx.run_id.to_string(),
        at: ctx.synced_at,
        kind,
        name: rec.name.clone(),
        changed_fields,
        last_seen: rec.last_seen,
        attrs: rec.attrs.clone(),
        expires_at: ctx.history_expires_at,
    }
}

fn changed_fields(old_raw: &str, new_raw: &str, volatile: &[&str]) -> Vec<String> {
    let parse = |s: &str| match serde_json::from_str::<Value>(s) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    };
    crate::lenient::changed_keys(&parse(old_raw), &parse(new_raw), volatile)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use serde_json::json;

    fn ctx<'a>(run_id: &'a str, at: i64) -> SyncContext<'a> {
        SyncContext {
            source: Source::Tailscale,
            tenant: "-",
            run_id,
            synced_at: Utc.timestamp_opt(at, 0).unwrap(),
            last_seen_resolution: Duration::from_secs(3600),
            history_expires_at: at + 86_400,
            volatile_keys: &["lastSeen"],
            allow_removals: true,
        }
    }

    fn obs(id: &str, fp: &str, last_seen: Option<i64>) -> Observed {
        Observed {
            device_id: id.into(),
            name: id.into(),
            last_seen: last_seen.map(|s| Utc.timestamp_opt(s, 0).unwrap()),
            connected: false,
            fingerprint: fp.into(),
            attrs: json!({}),
            raw: json!({"nodeId": id, "os": fp}).to_string(),
        }
    }

    #[test]
    fn first_sync_adds_everything() {
        let c = diff(
            &ctx("r1", 1000),
            vec![],
            vec![obs("a", "1", None), obs("b", "1", Some(5))],
        );
        assert_eq!((c.counts.added, c.counts.devices), (2, 2));
        assert_eq!(c.records.len(), 2);
        assert_eq!(c.history.len(), 2);
        assert!(c.history.iter().all(|h| h.kind == ChangeKind::Added));
    }

    #[test]
    fn unchanged_resync_writes_nothing() {
        let first = diff(&ctx("r1", 1000), vec![], vec![obs("a", "1", Some(5))]);
        let c = diff(
            &ctx("r2", 2000),
            first.records,
            vec![obs("a", "1", Some(5 + 3599))],
        );
        assert_eq!(c.counts.unchanged, 1);
        assert!(c.records.is_empty() && c.history.is_empty());
    }

    #[test]
    fn presence_past_resolution_refreshes_without_history() {
        let first = diff(&ctx("r1", 1000), vec![], vec![obs("a", "1", Some(5))]);
        let c = diff(
            &ctx("r2", 9000),
            first.records,
            vec![obs("a", "1", Some(5 + 3601))],
        );
        assert_eq!(c.counts.unchanged, 1);
        assert_eq!(c.records.len(), 1);
        assert!(c.history.is_empty());
        assert_eq!(
            c.records[0].updated_at.timestamp(),
            1000,
            "content did not change"
        );
        assert_eq!(c.records[0].last_seen.unwrap().timestamp(), 3606);
    }

    #[test]
    fn content_change_records_changed_fields() {
        let first = diff(&ctx("r1", 1000), vec![], vec![obs("a", "1", None)]);
        let c = diff(&ctx("r2", 2000), first.records, vec![obs("a", "2", None)]);
        assert_eq!(c.counts.changed, 1);
        assert_eq!(c.history[0].changed_fields, vec!["os"]);
        assert_eq!(c.records[0].first_seen_at.timestamp(), 1000);
        assert_eq!(c.records[0].updated_at.timestamp(), 2000);
    }

    #[test]
    fn missing_device_is_marked_removed_then_readded() {
        let first = diff(
            &ctx("r1", 1000),
            vec![],
            vec![obs("a", "1", None), obs("b", "1", None)],
        );
        let c = diff(
            &ctx("r2", 2000),
            first.records.clone(),
            vec![obs("a", "1", None)],
        );
        assert_eq!((c.counts.removed, c.counts.unchanged), (1, 1));
        let b = &c.records[0];
        assert_eq!(b.device_id, "b");
        assert_eq!(b.removed_at.unwrap().timestamp(), 2000);
        let mut stored = first.records;
        stored.retain(|r| r.device_id != "b");
        stored.push(b.clone());
        let again = diff(&ctx("r3", 3000), stored.clone(), vec![obs("a", "1", None)]);
        assert_eq!(
            again.counts.removed, 0,
            "already removed stays removed without a write"
        );
        assert!(again.records.is_empty());
        let back = diff(
            &ctx("r4", 4000),
            stored,
            vec![obs("a", "1", None), obs("b", "1", None)],
        );
        assert_eq!(back.counts.added, 1);
        assert_eq!(back.records[0].removed_at, None);
        assert_eq!(back.records[0].first_seen_at.timestamp(), 1000);
    }

    #[test]
    fn unreadable_devices_block_removals() {
        let first = diff(
            &ctx("r1", 1000),
            vec![],
            vec![obs("a", "1", None), obs("b", "1", None)],
        );
        let mut c = ctx("r2", 2000);
        c.allow_removals = false;
        let out = diff(&c, first.records, vec![obs("a", "1", None)]);
        assert_eq!(out.counts.removed, 0);
        assert!(out.records.is_empty() && out.history.is_empty());
    }

    fn listed(o: &Observed) -> Listed {
        Listed {
            device_id: o.device_id.clone(),
            fingerprint: o.fingerprint.clone(),
            last_seen: o.last_seen,
            connected: o.connected,
            raw: Some(o.raw.clone()),
        }
    }

    /// `plan` + `build` on stored states write exactly what `diff` writes.
    fn assert_lean_matches_diff(
        ctx: &SyncContext<'_>,
        prev: Vec<DeviceRecord>,
        now: Vec<Observed>,
    ) {
        let states: Vec<DeviceState> = prev.iter().map(DeviceState::from).collect();
        let stored: HashMap<String, DeviceRecord> = prev
            .iter()
            .map(|r| (r.device_id.clone(), r.clone()))
            .collect();
        let list: Vec<Listed> = now.iter().map(listed).collect();
        let by_id: HashMap<String, Observed> = now
            .iter()
            .map(|o| (o.device_id.clone(), o.clone()))
            .collect();
        let observe = |l: &Listed, _: Option<&DeviceRecord>| Ok(by_id[&l.device_id].clone());
        let plan = plan(ctx, &states, &list);
        let lean = build(ctx, &plan.actions, &states, &list, &stored, &observe).unwrap();
        let full = diff(ctx, prev, now);
        assert_eq!(plan.counts, full.counts);
        assert_eq!(lean.records, full.records);
        assert_eq!(lean.history, full.history);
        let written: Vec<&str> = full.records.iter().map(|r| r.device_id.as_str()).collect();
        for l in &list {
            let p = states.iter().find(|s| s.device_id == l.device_id);
            let w = writes(ctx.run_id, ctx.last_seen_resolution, p, l);
            let removed_again = p.is_some_and(|p| p.removed_at.is_some());
            assert_eq!(
                w,
                written.contains(&l.device_id.as_str()) || removed_again && w,
                "{}",
                l.device_id
            );
        }
    }

    #[test]
    fn lean_plan_writes_what_diff_writes() {
        let first = vec![
            obs("a", "1", Some(5)),
            obs("b", "1", None),
            obs("c", "1", Some(100)),
            obs("d", "1", None),
        ];
        assert_lean_matches_diff(&ctx("r1", 1000), vec![], first.clone());
        let stored = diff(&ctx("r1", 1000), vec![], first).records;
        // a: presence past resolution; b: changed; c: unchanged; d: gone; e: new.
        let now = vec![
            obs("a", "1", Some(5 + 7200)),
            obs("b", "2", None),
            obs("c", "1", Some(100)),
            obs("e", "1", None),
        ];
        assert_lean_matches_diff(&ctx("r2", 9000), stored.clone(), now.clone());
        let after = diff(&ctx("r2", 9000), stored.clone(), now.clone());
        let mut next: HashMap<String, DeviceRecord> = stored
            .into_iter()
            .map(|r| (r.device_id.clone(), r))
            .collect();
        for r in after.records {
            next.insert(r.device_id.clone(), r);
        }
        let next: Vec<DeviceRecord> = next.into_values().collect();
        // d comes back; the same run again counts without writing.
        let back = vec![obs("a", "1", Some(5 + 7200)), obs("d", "1", None)];
        assert_lean_matches_diff(&ctx("r3", 12000), next.clone(), back);
        assert_lean_matches_diff(&ctx("r2", 9000), next, now);
    }

    #[test]
    fn retry_of_same_run_counts_without_rewriting() {
        let first = diff(&ctx("r1", 1000), vec![], vec![obs("a", "1", None)]);
        let c1 = diff(
            &ctx("r2", 2000),
            first.records.clone(),
            vec![obs("a", "2", None), obs("b", "1", None)],
        );
        // The crash left only device a written.
        let mut partial = first.records;
        partial[0] = c1
            .records
            .iter()
            .find(|r| r.device_id == "a")
            .unwrap()
            .clone();
        let retry = diff(
            &ctx("r2", 2000),
            partial,
            vec![obs("a", "2", None), obs("b", "1", None)],
        );
        assert_eq!(retry.counts, c1.counts);
        assert_eq!(retry.records.len(), 1, "only b is still to write");
        assert_eq!(retry.records[0].device_id, "b");
    }
}
