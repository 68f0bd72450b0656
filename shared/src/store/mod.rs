//! The `Store` port: everything fleetsync persists, behind one narrow trait, with
//! a DynamoDB implementation for Lambda and an SQLite one for the CLI.
//!
//! Both backends pass the same contract suite (`store::contract`). Keys carry the
//! source and the tenant (tailnet or TinyMDM account id) so that several tenants
//! can share one table; README documents the key design.

use crate::model::{
    DeviceRecord, DeviceState, HistoryEntry, Outcome, PlanEntry, PrunePlan, Source, SyncCommit,
    SyncRun,
};
use async_trait::async_trait;
use chrono::{DateTime, Utc};

#[cfg(any(test, feature = "test-support"))]
pub mod contract;
pub mod dynamo;
pub mod sqlite;

pub use dynamo::DynamoStore;
pub use sqlite::SqliteStore;

/// Errors of a store backend. Messages never contain item contents.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend could not be reached, throttled us past the retry budget, or timed out.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The backend answered but refused the request (bad key, validation, missing table).
    #[error("store rejected the request: {0}")]
    Rejected(String),
    /// Stored data could not be decoded into the expected type.
    #[error("stored item could not be decoded: {0}")]
    Corrupt(String),
    /// A conditional write lost (lease held by someone else, plan already claimed).
    #[error("conflict: {0}")]
    Conflict(String),
}

/// A decode error's message without the offending value: serde quotes the value
/// it rejects, and stored values must never reach an error message.
pub(crate) fn redact(msg: &str) -> String {
    match msg.find(['"', '\'']) {
        Some(i) => format!("{}[value redacted]", &msg[..i]),
        None => msg.to_string(),
    }
}

/// Result of recording an audit outcome for one plan entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// The outcome was stored now.
    New,
    /// The entry already had a final outcome; nothing was written.
    AlreadyRecorded(Outcome),
}

/// Persistence of snapshots, runs, plans and audit entries.
#[async_trait]
pub trait Store: Send + Sync {
    /// Every stored device of a source and tenant, removed ones included.
    async fn current_devices(
        &self,
        source: Source,
        tenant: &str,
    ) -> Result<Vec<DeviceRecord>, StoreError>;

    /// The diff-relevant state of every stored device of a source and tenant,
    /// removed ones included (no raw JSON, no attrs): what a sync of a large
    /// fleet compares against. The default reads `current_devices`.
    async fn device_states(
        &self,
        source: Source,
        tenant: &str,
    ) -> Result<Vec<DeviceState>, StoreError> {
        let records = self.current_devices(source, tenant).await?;
        Ok(records.iter().map(DeviceState::from).collect())
    }

    /// The full records of the devices in `ids`, each once; unknown ids are
    /// left out. The default reads `current_devices`.
    async fn devices_by_id(
        &self,
        source: Source,
        tenant: &str,
        ids: &[String],
    ) -> Result<Vec<DeviceRecord>, StoreError> {
        let wanted: std::collections::HashSet<&str> = ids.iter().map(String::as_str).collect();
        let records = self.current_devices(source, tenant).await?;
        Ok(records
            .into_iter()
            .filter(|r| wanted.contains(r.device_id.as_str()))
            .collect())
    }

    /// Writes the history entries, then the changed records, then the run record
    /// last (or all at once, atomically): a stored record of a run implies its
    /// history is stored, and a succeeded run record implies everything before
    /// it is. Idempotent:
    /// writing the same commit twice leaves the same state as writing it once.
    /// Returns the number of write requests issued.
    async fn commit_sync(&self, commit: &SyncCommit) -> Result<u64, StoreError>;

    /// Stores a run record alone (a failed run, which changes no device).
    async fn put_run(&self, run: &SyncRun) -> Result<(), StoreError>;

    async fn get_run(
        &self,
        source: Source,
        tenant: &str,
        run_id: &str,
    ) -> Result<Option<SyncRun>, StoreError>;

    /// Newest first, at most `limit`.
    async fn list_runs(
        &self,
        source: Source,
        tenant: &str,
        limit: usize,
    ) -> Result<Vec<SyncRun>, StoreError>;

    /// Tenants that have at least one run of this source.
    async fn tenants(&self, source: Source) -> Result<Vec<String>, StoreError>;

    /// Oldest first. Entries past their `expires_at` are not returned.
    async fn device_history(
        &self,
        source: Source,
        tenant: &str,
        device_id: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<HistoryEntry>, StoreError>;

    /// Stores a new plan header and its entries.
    async fn put_plan(&self, plan: &PrunePlan, entries: &[PlanEntry]) -> Result<(), StoreError>;

    /// Rewrites a plan header (status, approval, outcome).
    async fn update_plan(&self, plan: &PrunePlan) -> Result<(), StoreError>;

    async fn get_plan(&self, tenant: &str, plan_id: &str) -> Result<Option<PrunePlan>, StoreError>;

    /// Newest first, at most `limit`.
    async fn list_plans(&self, tenant: &str, limit: usize) -> Result<Vec<PrunePlan>, StoreError>;

    /// Every entry of a plan, ordered by device id.
    async fn plan_entries(&self, tenant: &str, plan_id: &str)
    -> Result<Vec<PlanEntry>, StoreError>;

    /// Records the outcome of acting on one entry, only if it has none yet
    /// (conditional write), so a retried prune never audits a device twice.
    async fn record_outcome(&self, tenant: &str, entry: &PlanEntry)
    -> Result<Recorded, StoreError>;

    /// Takes the named lease for `holder` until `until`, if it is free or expired.
    /// Fails with `StoreError::Conflict` naming the current holder otherwise.
    async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<(), StoreError>;

    /// Releases the lease if `holder` still holds it.
    async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError>;
}
