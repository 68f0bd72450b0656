//! The four steps as plain async functions, shared by the Lambda handlers and
//! the CLI, plus input parsing that turns any malformed event into
//! `InvalidInput` naming the offending field.

use crate::deps::Deps;
use crate::error::StepError;
use crate::model::{DeviceState, RunStatus, Source, SyncCommit, SyncCounts, SyncRun};
use crate::sync::{self, Listed, SyncContext};
use chrono::{DateTime, TimeZone, Utc};
use serde::de::DeserializeOwned;
use std::collections::HashMap;

pub mod plan_prune;
pub mod prune_devices;
pub mod sync_tailscale;
pub mod sync_tinymdm;

/// Parses a step's event. Unknown fields, wrong types and malformed JSON are
/// `InvalidInput` with the path of the field at fault.
pub fn parse_input<T: DeserializeOwned>(event: serde_json::Value) -> Result<T, StepError> {
    // Step Functions may pass `null` for an empty input.
    let event = match event {
        serde_json::Value::Null => serde_json::Value::Object(Default::default()),
        serde_json::Value::Object(_) => event,
        // serde would read an array positionally into the struct's fields
        // (`["p-1"]` as a plan id), which no caller means: only objects.
        other => {
            return Err(StepError::InvalidInput(format!(
                "invalid input: expected a JSON object (or null), got {}",
                json_kind(&other)
            )));
        }
    };
    serde_path_to_error::deserialize(event).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        if path == "." || path.is_empty() {
            StepError::InvalidInput(format!("invalid input: {inner}"))
        } else {
            StepError::InvalidInput(format!("invalid input field {path}: {inner}"))
        }
    })
}

fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// A new run id: a UUIDv7, so ids sort by time.
pub fn new_run_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// Checks a caller-supplied run id and returns the time embedded in it, which
/// is the sync time of every item the run writes (so a retry of the same run
/// writes byte-identical items).
pub fn run_time(field: &str, run_id: &str) -> Result<DateTime<Utc>, StepError> {
    let bad = || {
        StepError::InvalidInput(format!(
            "invalid input field {field}: {run_id:?} is not a UUIDv7 run id"
        ))
    };
    let id = uuid::Uuid::parse_str(run_id).map_err(|_| bad())?;
    if id.get_version_num() != 7 {
        return Err(bad());
    }
    let (secs, nanos) = id.get_timestamp().ok_or_else(bad)?.to_unix();
    Utc.timestamp_opt(secs as i64, nanos - nanos % 1_000_000)
        .single()
        .ok_or_else(bad)
}

/// Unix seconds `days` after `from`, for `ttl` attributes.
pub(crate) fn expiry(from: DateTime<Utc>, days: u32) -> i64 {
    from.timestamp() + i64::from(days) * 86_400
}

/// Devices per store commit on the lean path: a multiple of the 25 items of
/// a DynamoDB batch, small enough that the records being written stay a few MB.
const COMMIT_CHUNK: usize = 250;

/// What a listing said besides its devices, for the run record.
pub(crate) struct ListingFacts {
    /// One line per device that could not be read.
    pub invalid_reasons: Vec<String>,
    pub pages: u64,
    pub http_requests: u64,
}

/// How a source's listed devices become records.
pub(crate) struct Builder<'a> {
    /// Top-level raw keys that are not content (see `sync::SyncContext`).
    pub volatile_keys: &'a [&'a str],
    /// Which actions read the full stored record first.
    pub stored: sync::StoredRecords,
    pub observe: &'a sync::Observe<'a>,
}

/// The fixed part of one sync run: who, which run, and when.
pub(crate) struct RunFrame<'a> {
    pub source: Source,
    pub tenant: &'a str,
    pub run_id: &'a str,
    pub synced_at: DateTime<Utc>,
}

impl RunFrame<'_> {
    /// Resolves the run id (given or new) and its time.
    pub fn ids(given: Option<&str>) -> Result<(String, DateTime<Utc>), StepError> {
        match given {
            Some(id) => Ok((id.to_string(), run_time("run_id", id)?)),
            None => {
                let id = new_run_id();
                let at = run_time("run_id", &id)?;
                Ok((id, at))
            }
        }
    }

    fn run(&self, deps: &Deps, status: RunStatus, counts: SyncCounts) -> SyncRun {
        SyncRun {
            source: self.source,
            tenant: self.tenant.to_string(),
            run_id: self.run_id.to_string(),
            started_at: self.synced_at,
            finished_at: deps.now(),
            status,
            counts,
            pages: 0,
            http_requests: 0,
            store_writes: 0,
            error: None,
            invalid_reasons: Vec::new(),
        }
    }

    /// Records a failed run (best effort: the step's own error is what matters)
    /// and returns the error. No device is touched.
    ///
    /// A retry of a run that already succeeded (same run id) keeps that
    /// success on record: its devices point at it.
    pub async fn fail(&self, deps: &Deps, err: StepError, http_requests: u64) -> StepError {
        let mut run = self.run(deps, RunStatus::Failed, SyncCounts::default());
        run.error = Some(format!("{}: {err}", err.name()));
        run.http_requests = http_requests;
        let record = match deps
            .store
            .get_run(self.source, self.tenant, self.run_id)
            .await
        {
            Ok(Some(done)) if done.status == RunStatus::Succeeded => {
                tracing::warn!(source = %self.source, run_id = self.run_id, "this run already succeeded once: its record stays");
                Ok(())
            }
            _ => deps.store.put_run(&run).await,
        };
        if let Err(store_err) = record {
            tracing::error!(source = %self.source, run_id = self.run_id, error = %store_err, "could not record the failed run");
        }
        tracing::warn!(source = %self.source, run_id = self.run_id, error = %err, error_name = err.name(), "sync failed");
        err
    }

    /// The run record of a sync that is about to commit.
    fn succeeded(
        &self,
        deps: &Deps,
        mut counts: SyncCounts,
        invalid_reasons: Vec<String>,
        pages: u64,
        http_requests: u64,
    ) -> SyncRun {
        counts.invalid = invalid_reasons.len() as u64;
        let mut run = self.run(deps, RunStatus::Succeeded, counts);
        run.pages = pages;
        run.http_requests = http_requests;
        run.invalid_reasons = invalid_reasons;
        run
    }

    /// Logs each device the listing could not use, and that this run
    /// therefore marks no device removed.
    fn report_invalid(&self, invalid_reasons: &[String]) {
        for reason in invalid_reasons {
            tracing::warn!(source = %self.source, run_id = self.run_id, reason = %reason, "skipped an invalid device");
        }
        if !invalid_reasons.is_empty() {
            tracing::warn!(source = %self.source, invalid = invalid_reasons.len(), "unreadable devices in the listing: no device is marked removed this run");
        }
    }

    fn log_complete(&self, run: &SyncRun) {
        let c = &run.counts;
        tracing::info!(
            source = %self.source,
            tenant = self.tenant,
            run_id = self.run_id,
            devices = c.devices,
            added = c.added,
            changed = c.changed,
            removed = c.removed,
            unchanged = c.unchanged,
            invalid = c.invalid,
            pages = run.pages,
            "sync complete"
        );
    }
}

impl RunFrame<'_> {
    /// The sync context of this run (see `sync::SyncContext`).
    pub fn context<'a>(
        &'a self,
        deps: &Deps,
        volatile_keys: &'a [&'a str],
        allow_removals: bool,
    ) -> SyncContext<'a> {
        SyncContext {
            source: self.source,
            tenant: self.tenant,
            run_id: self.run_id,
            synced_at: self.synced_at,
            last_seen_resolution: deps.settings.last_seen_resolution(),
            history_expires_at: expiry(self.synced_at, deps.settings.history_retention_days),
            volatile_keys,
            allow_removals,
        }
    }

    /// Commits a complete listing: plans against the stored states (no raw
    /// JSON, no attrs), then builds and writes the records chunk by chunk
    /// (history before records, the run record last), reading full stored
    /// records only where `builder.stored` says. A plan that fits one chunk is
    /// written in one commit, with the run record.
    ///
    /// A failure part way (the store, most likely) is recorded as a failed
    /// run; what was written is idempotent, so a retry with the same run id
    /// ends as one clean run would.
    pub async fn commit_planned(
        &self,
        deps: &Deps,
        prev: &[DeviceState],
        listed: &[Listed],
        listing: ListingFacts,
        builder: Builder<'_>,
    ) -> Result<SyncRun, StepError> {
        let http_requests = listing.http_requests;
        match self
            .write_planned(deps, prev, listed, listing, builder)
            .await
        {
            Ok(run) => Ok(run),
            Err(e) => Err(self.fail(deps, e, http_requests).await),
        }
    }

    async fn write_planned(
        &self,
        deps: &Deps,
        prev: &[DeviceState],
        listed: &[Listed],
        listing: ListingFacts,
        builder: Builder<'_>,
    ) -> Result<SyncRun, StepError> {
        let ListingFacts {
            invalid_reasons,
            pages,
            http_requests,
        } = listing;
        self.report_invalid(&invalid_reasons);
        let ctx = self.context(deps, builder.volatile_keys, invalid_reasons.is_empty());
        let plan = sync::plan(&ctx, prev, listed);
        let mut run = self.succeeded(deps, plan.counts, invalid_reasons, pages, http_requests);
        let internal = |e: String| StepError::Internal(format!("internal error: {e}"));
        let mut writes = 0;
        let chunks: Vec<&[sync::Action]> = plan.actions.chunks(COMMIT_CHUNK).collect();
        let last = chunks.len().saturating_sub(1);
        for (i, chunk) in chunks.iter().enumerate() {
            let ids: Vec<String> = chunk
                .iter()
                .filter_map(|a| a.needs_stored_record(builder.stored))
                .map(|p| prev[p].device_id.clone())
                .collect();
            let stored: HashMap<String, _> = if ids.is_empty() {
                HashMap::new()
            } else {
                deps.store
                    .devices_by_id(self.source, self.tenant, &ids)
                    .await?
                    .into_iter()
                    .map(|r| (r.device_id.clone(), r))
                    .collect()
            };
            let changes = sync::build(&ctx, chunk, prev, listed, &stored, builder.observe)
                .map_err(internal)?;
            let with_run = chunks.len() == 1 && i == last;
            if with_run {
                run.store_writes =
                    ((changes.records.len() + changes.history.len()).div_ceil(25) + 1) as u64;
            }
            let commit = SyncCommit {
                records: changes.records,
                history: changes.history,
                run: with_run.then(|| run.clone()),
            };
            writes += deps.store.commit_sync(&commit).await?;
        }
        if chunks.len() != 1 {
            run.store_writes = writes + 1;
            let commit = SyncCommit {
                run: Some(run.clone()),
                ..SyncCommit::default()
            };
            deps.store.commit_sync(&commit).await?;
        }
        self.log_complete(&run);
        Ok(run)
    }
}

/// Rejects an empty or whitespace-only string field.
pub(crate) fn non_empty(field: &str, value: &Option<String>) -> Result<(), StepError> {
    match value {
        Some(v) if v.trim().is_empty() => Err(StepError::InvalidInput(format!(
            "invalid input field {field}: must not be empty"
        ))),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Sample {
        count: Option<i64>,
        name: Option<String>,
    }

    #[test]
    fn parse_errors_name_the_field() {
        let e = parse_input::<Sample>(serde_json::json!({"count": "x"})).unwrap_err();
        assert_eq!(e.name(), "InvalidInput");
        assert!(e.to_string().contains("count"), "{e}");
        let e = parse_input::<Sample>(serde_json::json!({"bogus": 1})).unwrap_err();
        assert!(e.to_string().contains("bogus"), "{e}");
        assert!(parse_input::<Sample>(serde_json::Value::Null).is_ok());
        let e = parse_input::<Sample>(serde_json::json!([1])).unwrap_err();
        assert_eq!(e.name(), "InvalidInput");
    }

    #[test]
    fn run_ids_are_v7_and_carry_their_time() {
        let id = new_run_id();
        let t = run_time("run_id", &id).unwrap();
        assert!((Utc::now() - t).num_seconds().abs() < 5);
        assert!(run_time("run_id", "not-a-uuid").is_err());
        let v4 = uuid::Uuid::new_v4().to_string();
        assert!(
            run_time("run_id", &v4)
                .unwrap_err()
                .to_string()
                .contains("UUIDv7")
        );
    }
}
