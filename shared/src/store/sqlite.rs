//! `SqliteStore`: the `Store` for the CLI and local runs, one SQLite file (or an
//! in-memory database for tests).
//!
//! The tables mirror the DynamoDB item kinds: key columns plus a `body` column
//! holding the struct as JSON. One connection sits behind a mutex and every call
//! runs on tokio's blocking pool. Expired history and plan entries stay on disk
//! until overwritten but are filtered on read by their `expires_at`, as DynamoDB
//! TTL deletes lazily too.

use super::{Recorded, Store, StoreError, redact};
use crate::model::{
    DeviceRecord, DeviceState, HistoryEntry, Outcome, PlanEntry, PrunePlan, Source, SyncCommit,
    SyncRun,
};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, Transaction, params};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Plans are made for Tailscale only; the column keeps the key shape of DynamoDB.
const PLAN_SOURCE: &str = "tailscale";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS devices (
    source TEXT NOT NULL,
    tenant TEXT NOT NULL,
    device_id TEXT NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (source, tenant, device_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS history (
    source TEXT NOT NULL,
    tenant TEXT NOT NULL,
    device_id TEXT NOT NULL,
    run_id TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (source, tenant, device_id, run_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS runs (
    source TEXT NOT NULL,
    tenant TEXT NOT NULL,
    run_id TEXT NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (source, tenant, run_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS tenants (
    source TEXT NOT NULL,
    tenant TEXT NOT NULL,
    PRIMARY KEY (source, tenant)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS plans (
    source TEXT NOT NULL,
    tenant TEXT NOT NULL,
    plan_id TEXT NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (source, tenant, plan_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS plan_entries (
    source TEXT NOT NULL,
    tenant TEXT NOT NULL,
    plan_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    outcome TEXT,
    body TEXT NOT NULL,
    PRIMARY KEY (source, tenant, plan_id, device_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS leases (
    name TEXT PRIMARY KEY NOT NULL,
    holder TEXT NOT NULL,
    until_ms INTEGER NOT NULL,
    until TEXT NOT NULL
) WITHOUT ROWID;
";

/// The SQLite backend of `Store`.
#[derive(Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (or creates) the database file at `path`, in WAL mode with a busy
    /// timeout, and creates the schema if it is missing.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path = path.as_ref();
        let conn = Connection::open(path).map_err(|e| {
            StoreError::Unavailable(format!("could not open {}: {e}", path.display()))
        })?;
        Self::init(conn)
    }

    /// A private in-memory database, for tests.
    pub fn in_memory() -> Result<Self, StoreError> {
        let conn = Connection::open_in_memory()
            .map_err(|e| StoreError::Unavailable(format!("could not open in-memory db: {e}")))?;
        Self::init(conn)
    }

    fn init(conn: Connection) -> Result<Self, StoreError> {
        conn.busy_timeout(Duration::from_secs(5)).map_err(db_err)?;
        // `journal_mode` answers with a row, so it is queried rather than executed.
        let _mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(db_err)?;
        conn.execute_batch("PRAGMA synchronous = NORMAL;")
            .map_err(db_err)?;
        conn.execute_batch(SCHEMA).map_err(db_err)?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// Every device row of a source and tenant in id order, each body decoded
    /// as `T` (a whole record, or only the state a sync compares).
    async fn device_rows<T: DeserializeOwned + Send + 'static>(
        &self,
        source: Source,
        tenant: &str,
        what: &'static str,
    ) -> Result<Vec<T>, StoreError> {
        let tenant = tenant.to_string();
        self.with_conn(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT device_id, body FROM devices WHERE source = ?1 AND tenant = ?2 \
                     ORDER BY device_id",
                )
                .map_err(db_err)?;
            let rows = stmt
                .query_map(params![source.as_str(), tenant], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
                })
                .map_err(db_err)?;
            rows.map(|row| {
                let (id, body) = row.map_err(db_err)?;
                decode(what, &id, &body)
            })
            .collect()
        })
        .await
    }

    async fn with_conn<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        tokio::task::spawn_blocking(move || {
            // A panic while holding the lock leaves no open transaction behind
            // (rusqlite rolls back on drop), so a poisoned lock is still usable.
            let mut guard = conn.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut guard)
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("sqlite task failed: {e}")))?
    }
}

fn db_err(e: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode;
    match &e {
        rusqlite::Error::SqliteFailure(f, _) => match f.code {
            ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => {
                StoreError::Unavailable(format!("sqlite is busy: {}", code_name(f)))
            }
            ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase => {
                StoreError::Corrupt(format!("sqlite database is damaged: {}", code_name(f)))
            }
            ErrorCode::CannotOpen | ErrorCode::DiskFull | ErrorCode::SystemIoFailure => {
                StoreError::Unavailable(format!("sqlite io failure: {}", code_name(f)))
            }
            _ => StoreError::Rejected(format!("sqlite refused the statement: {}", code_name(f))),
        },
        _ => StoreError::Rejected(format!("sqlite error: {}", redact(&e.to_string()))),
    }
}

fn code_name(e: &rusqlite::ffi::Error) -> String {
    format!("{:?} ({})", e.code, e.extended_code)
}

fn encode<T: Serialize>(what: &str, value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| {
        StoreError::Rejected(format!(
            "could not encode {what}: {}",
            redact(&e.to_string())
        ))
    })
}

fn decode<T: DeserializeOwned>(what: &str, key: &str, body: &str) -> Result<T, StoreError> {
    serde_json::from_str(body)
        .map_err(|e| StoreError::Corrupt(format!("{what} {key}: {}", redact(&e.to_string()))))
}

fn put_run_tx(tx: &Transaction<'_>, run: &SyncRun) -> Result<(), StoreError> {
    let body = encode("run", run)?;
    tx.execute(
        "INSERT OR REPLACE INTO runs (source, tenant, run_id, body) VALUES (?1, ?2, ?3, ?4)",
        params![run.source.as_str(), run.tenant, run.run_id, body],
    )
    .map_err(db_err)?;
    tx.execute(
        "INSERT OR IGNORE INTO tenants (source, tenant) VALUES (?1, ?2)",
        params![run.source.as_str(), run.tenant],
    )
    .map_err(db_err)?;
    Ok(())
}

fn outcome_name(outcome: Option<Outcome>) -> Option<&'static str> {
    outcome.map(Outcome::as_str)
}

#[async_trait]
impl Store for SqliteStore {
    async fn current_devices(
        &self,
        source: Source,
        tenant: &str,
    ) -> Result<Vec<DeviceRecord>, StoreError> {
        self.device_rows(source, tenant, "device").await
    }

    /// Decodes each row's body straight into the state, so the raw JSON and
    /// attrs of a large fleet are never held.
    async fn device_states(
        &self,
        source: Source,
        tenant: &str,
    ) -> Result<Vec<DeviceState>, StoreError> {
        self.device_rows(source, tenant, "device state").await
    }

    /// One primary-key lookup per id: a re-sync fetches only the records it
    /// rewrites, never the whole fleet.
    async fn devices_by_id(
        &self,
        source: Source,
        tenant: &str,
        ids: &[String],
    ) -> Result<Vec<DeviceRecord>, StoreError> {
        // Each record once, in id order, as the trait's default gives them.
        let ids: std::collections::BTreeSet<String> = ids.iter().cloned().collect();
        let tenant = tenant.to_string();
        self.with_conn(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT body FROM devices WHERE source = ?1 AND tenant = ?2 AND device_id = ?3",
                )
                .map_err(db_err)?;
            let mut out = Vec::with_capacity(ids.len());
            for id in &ids {
                let body: Option<String> = stmt
                    .query_row(params![source.as_str(), tenant, id], |r| r.get(0))
                    .optional()
                    .map_err(db_err)?;
                if let Some(body) = body {
                    out.push(decode("device", id, &body)?);
                }
            }
            Ok(out)
        })
        .await
    }

    async fn commit_sync(&self, commit: &SyncCommit) -> Result<u64, StoreError> {
        if commit.records.is_empty() && commit.history.is_empty() && commit.run.is_none() {
            return Ok(0);
        }
        let mut records = Vec::with_capacity(commit.records.len());
        for r in &commit.records {
            records.push((
                r.source,
                r.tenant.clone(),
                r.device_id.clone(),
                encode("device", r)?,
            ));
        }
        let mut history = Vec::with_capacity(commit.history.len());
        for h in &commit.history {
            history.push((
                h.source,
                h.tenant.clone(),
                h.device_id.clone(),
                h.run_id.clone(),
                h.expires_at,
                encode("history entry", h)?,
            ));
        }
        let run = commit.run.clone();
        self.with_conn(move |conn| {
            let tx = conn.transaction().map_err(db_err)?;
            {
                let mut put_device = tx
                    .prepare_cached(
                        "INSERT OR REPLACE INTO devices (source, tenant, device_id, body) \
                         VALUES (?1, ?2, ?3, ?4)",
                    )
                    .map_err(db_err)?;
                for (source, tenant, id, body) in &records {
                    put_device
                        .execute(params![source.as_str(), tenant, id, body])
                        .map_err(db_err)?;
                }
                let mut put_history = tx
                    .prepare_cached(
                        "INSERT OR REPLACE INTO history \
                         (source, tenant, device_id, run_id, expires_at, body) \
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    )
                    .map_err(db_err)?;
                for (source, tenant, id, run_id, expires_at, body) in &history {
                    put_history
                        .execute(params![
                            source.as_str(),
                            tenant,
                            id,
                            run_id,
                            expires_at,
                            body
                        ])
                        .map_err(db_err)?;
                }
            }
            if let Some(run) = &run {
                put_run_tx(&tx, run)?;
            }
            tx.commit().map_err(db_err)?;
            // One transaction is one write request, whatever it contains.
            Ok(1)
        })
        .await
    }

    async fn put_run(&self, run: &SyncRun) -> Result<(), StoreError> {
        let run = run.clone();
        self.with_conn(move |conn| {
            let tx = conn.transaction().map_err(db_err)?;
            put_run_tx(&tx, &run)?;
            tx.commit().map_err(db_err)
        })
        .await
    }

    async fn get_run(
        &self,
        source: Source,
        tenant: &str,
        run_id: &str,
    ) -> Result<Option<SyncRun>, StoreError> {
        let (tenant, run_id) = (tenant.to_string(), run_id.to_string());
        self.with_conn(move |conn| {
            let body: Option<String> = conn
                .query_row(
                    "SELECT body FROM runs WHERE source = ?1 AND tenant = ?2 AND run_id = ?3",
                    params![source.as_str(), tenant, run_id],
                    |r| r.get(0),
                )
                .optional()
                .map_err(db_err)?;
            body.map(|b| decode("run", &run_id, &b)).transpose()
        })
        .await
    }

    async fn list_runs(
        &self,
        source: Source,
        tenant: &str,
        limit: usize,
    ) -> Result<Vec<SyncRun>, StoreError> {
        let tenant = tenant.to_string();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.with_conn(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT run_id, body FROM runs WHERE source = ?1 AND tenant = ?2 \
                     ORDER BY run_id DESC LIMIT ?3",
                )
                .map_err(db_err)?;
            let rows = stmt
                .query_map(params![source.as_str(), tenant, limit], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
                })
                .map_err(db_err)?;
            rows.map(|row| {
                let (id, body) = row.map_err(db_err)?;
                decode("run", &id, &body)
            })
            .collect()
        })
        .await
    }

    async fn tenants(&self, source: Source) -> Result<Vec<String>, StoreError> {
        self.with_conn(move |conn| {
            let mut stmt = conn
                .prepare_cached("SELECT tenant FROM tenants WHERE source = ?1 ORDER BY tenant")
                .map_err(db_err)?;
            let rows = stmt
                .query_map(params![source.as_str()], |r| r.get::<_, String>(0))
                .map_err(db_err)?;
            rows.map(|row| row.map_err(db_err)).collect()
        })
        .await
    }

    async fn device_history(
        &self,
        source: Source,
        tenant: &str,
        device_id: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<HistoryEntry>, StoreError> {
        let (tenant, device_id) = (tenant.to_string(), device_id.to_string());
        let now = now.timestamp();
        self.with_conn(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT run_id, body FROM history \
                     WHERE source = ?1 AND tenant = ?2 AND device_id = ?3 AND expires_at > ?4 \
                     ORDER BY run_id",
                )
                .map_err(db_err)?;
            let rows = stmt
                .query_map(params![source.as_str(), tenant, device_id, now], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
                })
                .map_err(db_err)?;
            rows.map(|row| {
                let (id, body) = row.map_err(db_err)?;
                decode("history entry", &id, &body)
            })
            .collect()
        })
        .await
    }

    async fn put_plan(&self, plan: &PrunePlan, entries: &[PlanEntry]) -> Result<(), StoreError> {
        let tenant = plan.tenant.clone();
        let plan_id = plan.plan_id.clone();
        let header = encode("plan", plan)?;
        let mut rows = Vec::with_capacity(entries.len());
        for e in entries {
            rows.push((
                e.device_id.clone(),
                e.expires_at,
                outcome_name(e.outcome),
                encode("plan entry", e)?,
            ));
        }
        self.with_conn(move |conn| {
            let tx = conn.transaction().map_err(db_err)?;
            {
                let mut put_entry = tx
                    .prepare_cached(
                        "INSERT OR REPLACE INTO plan_entries \
                         (source, tenant, plan_id, device_id, expires_at, outcome, body) \
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    )
                    .map_err(db_err)?;
                for (device_id, expires_at, outcome, body) in &rows {
                    put_entry
                        .execute(params![
                            PLAN_SOURCE,
                            tenant,
                            plan_id,
                            device_id,
                            expires_at,
                            outcome,
                            body
                        ])
                        .map_err(db_err)?;
                }
            }
            tx.execute(
                "INSERT OR REPLACE INTO plans (source, tenant, plan_id, body) \
                 VALUES (?1, ?2, ?3, ?4)",
                params![PLAN_SOURCE, tenant, plan_id, header],
            )
            .map_err(db_err)?;
            tx.commit().map_err(db_err)
        })
        .await
    }

    async fn update_plan(&self, plan: &PrunePlan) -> Result<(), StoreError> {
        let tenant = plan.tenant.clone();
        let plan_id = plan.plan_id.clone();
        let header = encode("plan", plan)?;
        self.with_conn(move |conn| {
            conn.execute(
                "INSERT OR REPLACE INTO plans (source, tenant, plan_id, body) \
                 VALUES (?1, ?2, ?3, ?4)",
                params![PLAN_SOURCE, tenant, plan_id, header],
            )
            .map_err(db_err)?;
            Ok(())
        })
        .await
    }

    async fn get_plan(&self, tenant: &str, plan_id: &str) -> Result<Option<PrunePlan>, StoreError> {
        let (tenant, plan_id) = (tenant.to_string(), plan_id.to_string());
        self.with_conn(move |conn| {
            let body: Option<String> = conn
                .query_row(
                    "SELECT body FROM plans WHERE source = ?1 AND tenant = ?2 AND plan_id = ?3",
                    params![PLAN_SOURCE, tenant, plan_id],
                    |r| r.get(0),
                )
                .optional()
                .map_err(db_err)?;
            body.map(|b| decode("plan", &plan_id, &b)).transpose()
        })
        .await
    }

    async fn list_plans(&self, tenant: &str, limit: usize) -> Result<Vec<PrunePlan>, StoreError> {
        let tenant = tenant.to_string();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.with_conn(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT plan_id, body FROM plans WHERE source = ?1 AND tenant = ?2 \
                     ORDER BY plan_id DESC LIMIT ?3",
                )
                .map_err(db_err)?;
            let rows = stmt
                .query_map(params![PLAN_SOURCE, tenant, limit], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
                })
                .map_err(db_err)?;
            rows.map(|row| {
                let (id, body) = row.map_err(db_err)?;
                decode("plan", &id, &body)
            })
            .collect()
        })
        .await
    }

    async fn plan_entries(
        &self,
        tenant: &str,
        plan_id: &str,
    ) -> Result<Vec<PlanEntry>, StoreError> {
        let (tenant, plan_id) = (tenant.to_string(), plan_id.to_string());
        // The trait gives no clock here: expiry is judged against the wall clock.
        let now = Utc::now().timestamp();
        self.with_conn(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT device_id, body FROM plan_entries \
                     WHERE source = ?1 AND tenant = ?2 AND plan_id = ?3 AND expires_at > ?4 \
                     ORDER BY device_id",
                )
                .map_err(db_err)?;
            let rows = stmt
                .query_map(params![PLAN_SOURCE, tenant, plan_id, now], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
                })
                .map_err(db_err)?;
            rows.map(|row| {
                let (id, body) = row.map_err(db_err)?;
                decode("plan entry", &id, &body)
            })
            .collect()
        })
        .await
    }

    async fn record_outcome(
        &self,
        tenant: &str,
        entry: &PlanEntry,
    ) -> Result<Recorded, StoreError> {
        let Some(outcome) = entry.outcome else {
            return Err(StoreError::Rejected(format!(
                "plan {} device {}: no outcome to record",
                entry.plan_id, entry.device_id
            )));
        };
        let tenant = tenant.to_string();
        let entry = entry.clone();
        let body = encode("plan entry", &entry)?;
        self.with_conn(move |conn| {
            let tx = conn.transaction().map_err(db_err)?;
            let stored: Option<(Option<String>, String)> = tx
                .query_row(
                    "SELECT outcome, body FROM plan_entries \
                     WHERE source = ?1 AND tenant = ?2 AND plan_id = ?3 AND device_id = ?4",
                    params![PLAN_SOURCE, tenant, entry.plan_id, entry.device_id],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()
                .map_err(db_err)?;
            if let Some((Some(_), body)) = stored {
                let prev: PlanEntry = decode("plan entry", &entry.device_id, &body)?;
                let prev = prev.outcome.ok_or_else(|| {
                    StoreError::Corrupt(format!(
                        "plan entry {}: outcome column set but body has none",
                        entry.device_id
                    ))
                })?;
                return Ok(Recorded::AlreadyRecorded(prev));
            }
            tx.execute(
                "INSERT OR REPLACE INTO plan_entries \
                 (source, tenant, plan_id, device_id, expires_at, outcome, body) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    PLAN_SOURCE,
                    tenant,
                    entry.plan_id,
                    entry.device_id,
                    entry.expires_at,
                    outcome.as_str(),
                    body
                ],
            )
            .map_err(db_err)?;
            tx.commit().map_err(db_err)?;
            Ok(Recorded::New)
        })
        .await
    }

    async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let (name, holder) = (name.to_string(), holder.to_string());
        let now_ms = now.timestamp_millis();
        let until_ms = until.timestamp_millis();
        let until_text = until.to_rfc3339();
        self.with_conn(move |conn| {
            let tx = conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .map_err(db_err)?;
            let current: Option<(String, i64, String)> = tx
                .query_row(
                    "SELECT holder, until_ms, until FROM leases WHERE name = ?1",
                    params![name],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()
                .map_err(db_err)?;
            if let Some((other, other_until_ms, other_until)) = current
                && other != holder
                && other_until_ms >= now_ms
            {
                return Err(StoreError::Conflict(format!(
                    "lease {name} is held by {other} until {other_until}"
                )));
            }
            tx.execute(
                "INSERT OR REPLACE INTO leases (name, holder, until_ms, until) \
                 VALUES (?1, ?2, ?3, ?4)",
                params![name, holder, until_ms, until_text],
            )
            .map_err(db_err)?;
            tx.commit().map_err(db_err)
        })
        .await
    }

    async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        let (name, holder) = (name.to_string(), holder.to_string());
        self.with_conn(move |conn| {
            conn.execute(
                "DELETE FROM leases WHERE name = ?1 AND holder = ?2",
                params![name, holder],
            )
            .map_err(db_err)?;
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    crate::store_contract_tests!(async { SqliteStore::in_memory().unwrap() });

    #[tokio::test]
    async fn open_creates_file_and_keeps_data_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fleetsync.db");
        let run = crate::store::contract::sample_run(Source::Tailscale, "example.com", 1);
        SqliteStore::open(&path)
            .unwrap()
            .put_run(&run)
            .await
            .unwrap();
        let reopened = SqliteStore::open(&path).unwrap();
        let got = reopened
            .get_run(Source::Tailscale, "example.com", &run.run_id)
            .await
            .unwrap();
        assert_eq!(got, Some(run));
    }

    #[tokio::test]
    async fn corrupt_body_is_reported_as_corrupt() {
        let store = SqliteStore::in_memory().unwrap();
        store
            .with_conn(|conn| {
                conn.execute(
                    "INSERT INTO devices (source, tenant, device_id, body) \
                     VALUES ('tailscale', 't', 'd1', '{\"name\": \"secret-host\"}')",
                    [],
                )
                .map_err(db_err)?;
                Ok(())
            })
            .await
            .unwrap();
        let err = store
            .current_devices(Source::Tailscale, "t")
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Corrupt(_)));
        assert!(!err.to_string().contains("secret-host"));
    }
}
