//! Domain types shared by the steps and the stores: stored device records,
//! history entries, sync run records, prune plans and their audit entries.
//!
//! Everything here is plain data with serde derives; the stores decide how it is
//! laid out on disk, and the steps decide how it is computed.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// Where a device comes from. Part of every storage key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Tailscale,
    Tinymdm,
}

impl Source {
    pub const ALL: [Source; 2] = [Source::Tailscale, Source::Tinymdm];

    /// The lowercase name used in keys, events and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Tailscale => "tailscale",
            Source::Tinymdm => "tinymdm",
        }
    }

    pub fn parse(s: &str) -> Option<Source> {
        match s {
            "tailscale" => Some(Source::Tailscale),
            "tinymdm" => Some(Source::Tinymdm),
            _ => None,
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What happened to a device in one sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    Added,
    Changed,
    Removed,
    Unchanged,
}

impl ChangeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Added => "added",
            ChangeKind::Changed => "changed",
            ChangeKind::Removed => "removed",
            ChangeKind::Unchanged => "unchanged",
        }
    }
}

/// The current state of one device of one source and tenant, as stored.
///
/// A record is rewritten only when its fingerprint changes or its last-seen time
/// moves by more than the configured resolution, so `last_seen` may lag the live
/// value by up to that resolution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceRecord {
    pub source: Source,
    /// The tailnet (Tailscale) or account id (TinyMDM).
    pub tenant: String,
    /// Tailscale `nodeId` or TinyMDM `id`.
    pub device_id: String,
    /// Human-readable name: Tailscale hostname, TinyMDM nickname or name.
    pub name: String,
    /// Tailscale `lastSeen` or TinyMDM `last_sync_timestamp`.
    pub last_seen: Option<DateTime<Utc>>,
    /// Tailscale `connectedToControl`; always false for TinyMDM.
    #[serde(default)]
    pub connected: bool,
    /// Hash of everything that counts as content (raw JSON without the last-seen field, plus apps).
    pub fingerprint: String,
    /// Normalised fields for queries and display (see `tailscale::Device::attrs`, `tinymdm::Device::attrs`).
    pub attrs: serde_json::Value,
    /// The device exactly as the API returned it, compact JSON.
    pub raw: String,
    pub first_seen_at: DateTime<Utc>,
    /// When this record last changed (added, changed or removed).
    pub updated_at: DateTime<Utc>,
    /// Set when the device disappeared from a complete listing; cleared if it comes back.
    #[serde(default)]
    pub removed_at: Option<DateTime<Utc>>,
    /// The run that last wrote this record, and what that run did to it. A retry of
    /// the same run uses this to report the same counters without writing twice.
    pub last_run_id: String,
    pub last_change: ChangeKind,
}

impl DeviceRecord {
    pub fn is_removed(&self) -> bool {
        self.removed_at.is_some()
    }
}

/// The part of a stored device record a sync compares against: no raw JSON,
/// no attrs, so a large fleet's state fits in little memory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceState {
    pub device_id: String,
    pub last_seen: Option<DateTime<Utc>>,
    #[serde(default)]
    pub connected: bool,
    pub fingerprint: String,
    pub first_seen_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    #[serde(default)]
    pub removed_at: Option<DateTime<Utc>>,
    pub last_run_id: String,
    pub last_change: ChangeKind,
}

impl From<&DeviceRecord> for DeviceState {
    fn from(r: &DeviceRecord) -> Self {
        DeviceState {
            device_id: r.device_id.clone(),
            last_seen: r.last_seen,
            connected: r.connected,
            fingerprint: r.fingerprint.clone(),
            first_seen_at: r.first_seen_at,
            updated_at: r.updated_at,
            removed_at: r.removed_at,
            last_run_id: r.last_run_id.clone(),
            last_change: r.last_change,
        }
    }
}

/// One change of one device, kept for `HISTORY_RETENTION_DAYS`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub source: Source,
    pub tenant: String,
    pub device_id: String,
    pub run_id: String,
    pub at: DateTime<Utc>,
    pub kind: ChangeKind,
    pub name: String,
    /// Top-level fields whose value differs from the previous record (empty for added/removed).
    #[serde(default)]
    pub changed_fields: Vec<String>,
    pub last_seen: Option<DateTime<Utc>>,
    /// The normalised fields after the change (before it, for a removal).
    pub attrs: serde_json::Value,
    /// Unix seconds after which the store may drop the entry.
    pub expires_at: i64,
}

/// Outcome of a sync run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Succeeded,
    Failed,
}

/// Counters of one sync.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncCounts {
    pub devices: u64,
    pub added: u64,
    pub changed: u64,
    pub removed: u64,
    pub unchanged: u64,
    /// Devices the API returned that could not be parsed; skipped and reported.
    #[serde(default)]
    pub invalid: u64,
}

/// The record of one sync run, written last: its presence with status `succeeded`
/// means the snapshot it describes is complete.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyncRun {
    pub source: Source,
    pub tenant: String,
    pub run_id: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub status: RunStatus,
    pub counts: SyncCounts,
    /// Pages fetched (TinyMDM) or 1 (Tailscale).
    #[serde(default)]
    pub pages: u64,
    #[serde(default)]
    pub http_requests: u64,
    /// Write requests this run issued to the store (for cost tracking).
    #[serde(default)]
    pub store_writes: u64,
    /// Error name and message of a failed run.
    #[serde(default)]
    pub error: Option<String>,
    /// One line per invalid device: its id if known, and why it was rejected.
    #[serde(default)]
    pub invalid_reasons: Vec<String>,
}

/// What a sync hands to the store in one go: changed records, their history and
/// the run record. Unchanged devices are not in it.
#[derive(Debug, Clone, Default)]
pub struct SyncCommit {
    pub records: Vec<DeviceRecord>,
    pub history: Vec<HistoryEntry>,
    pub run: Option<SyncRun>,
}

/// Why a device is or is not a prune candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// Candidate: last seen longer ago than the threshold.
    Stale,
    /// Protected: the API reports no last-seen time (never online).
    NoLastSeen,
    /// Protected: connected to the control server now.
    ConnectedNow,
    /// Protected: shared in from another tailnet.
    SharedIn,
    /// Protected: carries a tag in `exclude_tags`.
    ExcludedTag,
    /// Protected: `only_tags` is set and the device carries none of them.
    NotInOnlyTags,
    /// Protected: hostname matches a pattern in `exclude_hostnames`.
    ExcludedHostname,
    /// Protected: last seen in the future (clock skew); reported, never deleted.
    LastSeenInFuture,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Stale => "stale",
            Reason::NoLastSeen => "no_last_seen",
            Reason::ConnectedNow => "connected_now",
            Reason::SharedIn => "shared_in",
            Reason::ExcludedTag => "excluded_tag",
            Reason::NotInOnlyTags => "not_in_only_tags",
            Reason::ExcludedHostname => "excluded_hostname",
            Reason::LastSeenInFuture => "last_seen_in_future",
        }
    }
}

/// Where a prune plan stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlanStatus {
    /// Dry run: stored for reading, never applied.
    DryRun,
    /// Over a cap: waits for an execution with `approve_plan_id`.
    NeedsApproval,
    /// Ready for prune-devices.
    Ready,
    /// prune-devices finished it (see the outcome).
    Applied,
}

/// Counters of one prune-devices run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PruneCounts {
    pub deleted: u64,
    pub skipped_now_active: u64,
    pub already_gone: u64,
    pub failed: u64,
}

/// Settings a plan was made with, kept with it for the audit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanSettings {
    pub stale_minutes: u64,
    #[serde(default)]
    pub exclude_tags: Vec<String>,
    #[serde(default)]
    pub only_tags: Vec<String>,
    #[serde(default)]
    pub exclude_hostnames: Vec<String>,
    pub max_deletions: u64,
    pub max_fraction: f64,
}

/// A prune plan: the header item. Its devices are `PlanEntry` items.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PrunePlan {
    pub plan_id: String,
    pub tenant: String,
    pub created_at: DateTime<Utc>,
    /// The sync run whose snapshot the plan was made from.
    pub snapshot_run_id: String,
    pub settings: PlanSettings,
    /// Devices in the snapshot (not removed).
    pub fleet_size: u64,
    pub candidates: u64,
    /// Protected devices, counted per reason name.
    pub protected: BTreeMap<String, u64>,
    pub dry_run: bool,
    pub needs_approval: bool,
    /// Why the plan needs approval (which cap it exceeds).
    #[serde(default)]
    pub approval_reason: Option<String>,
    #[serde(default)]
    pub approved_at: Option<DateTime<Utc>>,
    pub status: PlanStatus,
    #[serde(default)]
    pub applied_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub outcome: Option<PruneCounts>,
}

/// What prune-devices did with one candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Deleted,
    SkippedNowActive,
    AlreadyGone,
    Failed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Deleted => "deleted",
            Outcome::SkippedNowActive => "skipped_now_active",
            Outcome::AlreadyGone => "already_gone",
            Outcome::Failed => "failed",
        }
    }
}

/// One device of a plan: a candidate or a protected device, with its reason, and
/// for candidates the outcome once prune-devices has acted (the audit item).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanEntry {
    pub plan_id: String,
    pub device_id: String,
    pub name: String,
    pub last_seen: Option<DateTime<Utc>>,
    #[serde(default)]
    pub tags: Vec<String>,
    pub reason: Reason,
    #[serde(default)]
    pub outcome: Option<Outcome>,
    /// Upstream status and message for `failed`, or why a device was skipped.
    #[serde(default)]
    pub detail: Option<String>,
    #[serde(default)]
    pub acted_at: Option<DateTime<Utc>>,
    /// Unix seconds after which the store may drop the entry (`AUDIT_RETENTION_DAYS`).
    pub expires_at: i64,
}

impl PlanEntry {
    pub fn is_candidate(&self) -> bool {
        self.reason == Reason::Stale
    }
}

/// A device object from either API that could not be used, with the reason.
/// Sync skips it, counts it as `invalid` and reports the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidDevice {
    /// The id, if one could be read.
    pub id: Option<String>,
    pub reason: String,
}

impl std::fmt::Display for InvalidDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.id {
            Some(id) => write!(f, "device {id}: {}", self.reason),
            None => write!(f, "device without id: {}", self.reason),
        }
    }
}
