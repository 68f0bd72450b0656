//! `DynamoStore`: the `Store` on one DynamoDB table, for the Lambda functions.
//!
//! Single-table design: string keys `pk` and `sk`, a numeric `ttl` (Unix seconds)
//! on the kinds that expire, and the struct's fields as item attributes (mapped
//! with `serde_dynamo`). Every key carries the source and the tenant, so several
//! tailnets and TinyMDM accounts can share the table. A tenant must not contain
//! `#`, which separates key parts.
//!
//! | kind | `pk` | `sk` | `ttl` |
//! |---|---|---|---|
//! | current device | `DEV#{source}#{tenant}` | `{device_id}` | |
//! | history entry | `HIST#{source}#{tenant}#{device_id}` | `{run_id}` | `expires_at` |
//! | sync run | `RUN#{source}#{tenant}` | `{run_id}` | |
//! | tenant marker | `TENANT#{source}` | `{tenant}` | |
//! | plan header | `PLAN#tailscale#{tenant}` | `{plan_id}` | |
//! | plan entry / audit | `PLANDEV#tailscale#{tenant}#{plan_id}` | `{device_id}` | `expires_at` |
//! | lease | `LEASE` | `{name}` | an hour after it ends |
//!
//! Run and plan ids are UUIDv7, so sort keys order them by time: newest first is
//! a Query with `ScanIndexForward=false`, and a retry of a run rewrites the same
//! history keys, which keeps `commit_sync` idempotent.
//!
//! `commit_sync` writes records and history with `BatchWriteItem` in chunks of at
//! most 25, a few chunks in flight, re-sending `UnprocessedItems` with jittered
//! exponential backoff; then one last batch holds the run record and the tenant
//! marker, so a sync that changed nothing costs one write request and a stored
//! run record means everything before it is stored. Reads are strongly
//! consistent and every Query follows `LastEvaluatedKey` to the end. DynamoDB
//! deletes expired items lazily, so reads filter on `expires_at` as well.

use super::{Recorded, Store, StoreError, redact};
use crate::model::{
    DeviceRecord, DeviceState, HistoryEntry, PlanEntry, PrunePlan, Source, SyncCommit, SyncRun,
};
use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::delete_item::DeleteItemError;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType, PutRequest,
    ReturnValuesOnConditionCheckFailure, ScalarAttributeType, TimeToLiveSpecification,
    WriteRequest,
};
use backon::{BackoffBuilder, ExponentialBuilder};
use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::{HashMap, HashSet};
use std::time::Duration;

/// A DynamoDB item.
type Item = HashMap<String, AttributeValue>;

/// DynamoDB's limit on requests in one `BatchWriteItem`.
const MAX_BATCH: usize = 25;
/// Chunks in flight at once: enough to hide latency, few enough not to provoke
/// throttling on a freshly created on-demand table.
const BATCH_CONCURRENCY: usize = 4;
/// Items encoded and sent per step of a commit: a multiple of `MAX_BATCH`,
/// large enough to keep `BATCH_CONCURRENCY` batches in flight.
const ENCODE_SLICE: usize = 500;
/// GetItem requests in flight at once when fetching chosen records.
const GET_CONCURRENCY: usize = 8;
/// The attributes of a device record that `DeviceState` holds.
const STATE_ATTRIBUTES: [&str; 9] = [
    "device_id",
    "last_seen",
    "connected",
    "fingerprint",
    "first_seen_at",
    "updated_at",
    "removed_at",
    "last_run_id",
    "last_change",
];
const LEASE_PK: &str = "LEASE";
/// Plans are made for Tailscale only; the key still names the source.
const PLAN_SOURCE: &str = "tailscale";
/// Error codes DynamoDB uses for load, throttling and its own failures: worth retrying later.
const TRANSIENT_CODES: [&str; 8] = [
    "ThrottlingException",
    "ProvisionedThroughputExceededException",
    "RequestLimitExceeded",
    "InternalServerError",
    "ServiceUnavailable",
    "LimitExceededException",
    "ReplicatedWriteConflictException",
    "TransactionConflictException",
];

/// The DynamoDB backend of `Store`.
#[derive(Debug, Clone)]
pub struct DynamoStore {
    client: Client,
    table: String,
    batch_backoff: ExponentialBuilder,
}

impl DynamoStore {
    /// A store on an existing table (see `create_table` for its shape).
    pub fn new(client: Client, table_name: impl Into<String>) -> Self {
        Self {
            client,
            table: table_name.into(),
            batch_backoff: ExponentialBuilder::new()
                .with_jitter()
                .with_min_delay(Duration::from_millis(50))
                .with_max_delay(Duration::from_secs(5))
                .with_max_times(10)
                .with_total_delay(Some(Duration::from_secs(30))),
        }
    }

    /// Changes how often and how long unprocessed batch items are re-sent before
    /// `commit_sync` gives up with `StoreError::Unavailable`: at most `retries`
    /// re-sends, waiting from `min_delay` doubling up to `max_delay`, with jitter.
    pub fn with_batch_retry(
        mut self,
        retries: usize,
        min_delay: Duration,
        max_delay: Duration,
    ) -> Self {
        self.batch_backoff = ExponentialBuilder::new()
            .with_jitter()
            .with_min_delay(min_delay)
            .with_max_delay(max_delay)
            .with_max_times(retries);
        self
    }

    /// The table this store reads and writes.
    pub fn table_name(&self) -> &str {
        &self.table
    }

    /// Creates a table with the fleetsync key schema (string `pk` hash key,
    /// string `sk` range key, on-demand capacity) and turns on TTL on `ttl`.
    pub async fn create_table(client: &Client, name: &str) -> Result<(), StoreError> {
        let attr = |n: &str| {
            AttributeDefinition::builder()
                .attribute_name(n)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .map_err(build_err)
        };
        let key = |n: &str, t: KeyType| {
            KeySchemaElement::builder()
                .attribute_name(n)
                .key_type(t)
                .build()
                .map_err(build_err)
        };
        client
            .create_table()
            .table_name(name)
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(attr("pk")?)
            .attribute_definitions(attr("sk")?)
            .key_schema(key("pk", KeyType::Hash)?)
            .key_schema(key("sk", KeyType::Range)?)
            .send()
            .await
            .map_err(|e| sdk_err("CreateTable", name, e))?;
        client
            .update_time_to_live()
            .table_name(name)
            .time_to_live_specification(
                TimeToLiveSpecification::builder()
                    .enabled(true)
                    .attribute_name("ttl")
                    .build()
                    .map_err(build_err)?,
            )
            .send()
            .await
            .map_err(|e| sdk_err("UpdateTimeToLive", name, e))?;
        Ok(())
    }

    /// Every item under `pk`, following `LastEvaluatedKey` page by page, in sort
    /// key order (`forward`) or reverse, stopping after `limit` items if given.
    async fn query(
        &self,
        pk: &str,
        forward: bool,
        limit: Option<usize>,
    ) -> Result<Vec<Item>, StoreError> {
        let mut items = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let mut req = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk")
                .expression_attribute_values(":pk", s(pk))
                .consistent_read(true)
                .scan_index_forward(forward)
                .set_exclusive_start_key(start.take());
            if let Some(limit) = limit {
                let left = limit.saturating_sub(items.len());
                req = req.limit(i32::try_from(left).unwrap_or(i32::MAX));
            }
            let out = req
                .send()
                .await
                .map_err(|e| sdk_err("Query", &self.table, e))?;
            items.extend(out.items.unwrap_or_default());
            if let Some(limit) = limit
                && items.len() >= limit
            {
                items.truncate(limit);
                return Ok(items);
            }
            // AWS may end with a LastEvaluatedKey and an empty page after it: only
            // an absent key means the end.
            match out.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => return Ok(items),
            }
        }
    }

    async fn get(&self, pk: &str, sk: &str) -> Result<Option<Item>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(pk))
            .key("sk", s(sk))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| sdk_err("GetItem", &self.table, e))?;
        Ok(out.item)
    }

    async fn put(&self, item: Item) -> Result<(), StoreError> {
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(|e| sdk_err("PutItem", &self.table, e))?;
        Ok(())
    }

    /// Writes `items` in chunks of at most 25, a few chunks at once. Returns the
    /// number of `BatchWriteItem` requests sent, re-sends included.
    async fn write_items(&self, items: Vec<Item>) -> Result<u64, StoreError> {
        let requests = dedup_by_key(items)
            .into_iter()
            .map(put_request)
            .collect::<Result<Vec<_>, _>>()?;
        let chunks: Vec<Vec<WriteRequest>> =
            requests.chunks(MAX_BATCH).map(<[_]>::to_vec).collect();
        futures::stream::iter(chunks.into_iter().map(|chunk| self.write_batch(chunk)))
            .buffer_unordered(BATCH_CONCURRENCY)
            .try_fold(0, |sum, n| async move { Ok(sum + n) })
            .await
    }

    /// Sends one batch of at most 25 requests until DynamoDB has processed all of
    /// them, re-sending `UnprocessedItems` with backoff.
    async fn write_batch(&self, batch: Vec<WriteRequest>) -> Result<u64, StoreError> {
        debug_assert!(batch.len() <= MAX_BATCH);
        let mut pending = batch;
        let mut sent = 0u64;
        let mut delays = self.batch_backoff.build();
        loop {
            let out = self
                .client
                .batch_write_item()
                .request_items(&self.table, pending)
                .send()
                .await
                .map_err(|e| sdk_err("BatchWriteItem", &self.table, e))?;
            sent += 1;
            let left = out
                .unprocessed_items
                .and_then(|mut m| m.remove(&self.table))
                .unwrap_or_default();
            if left.is_empty() {
                return Ok(sent);
            }
            let Some(delay) = delays.next() else {
                return Err(StoreError::Unavailable(format!(
                    "dynamodb BatchWriteItem on table {}: {} items still unprocessed after {sent} requests",
                    self.table,
                    left.len()
                )));
            };
            tracing::debug!(table = %self.table, unprocessed = left.len(), ?delay, "re-sending unprocessed items");
            tokio::time::sleep(delay).await;
            pending = left;
        }
    }

    fn run_items(&self, run: &SyncRun) -> Result<Vec<Item>, StoreError> {
        check_tenant(&run.tenant)?;
        let run_item = encode(
            "run",
            run,
            run_pk(run.source, &run.tenant),
            run.run_id.clone(),
            None,
        )?;
        let mut marker = Item::new();
        marker.insert("pk".into(), s(&tenant_pk(run.source)));
        marker.insert("sk".into(), s(&run.tenant));
        marker.insert("source".into(), s(run.source.as_str()));
        marker.insert("tenant".into(), s(&run.tenant));
        Ok(vec![run_item, marker])
    }

    fn entry_item(&self, tenant: &str, entry: &PlanEntry) -> Result<Item, StoreError> {
        encode(
            "plan entry",
            entry,
            plan_dev_pk(tenant, &entry.plan_id),
            entry.device_id.clone(),
            Some(entry.expires_at),
        )
    }

    /// The outcome stored for a plan entry, from the old image a failed
    /// condition returned or, if AWS left it out, from a fresh read.
    async fn stored_outcome(
        &self,
        tenant: &str,
        entry: &PlanEntry,
        old: Option<Item>,
    ) -> Result<Recorded, StoreError> {
        let old = match old {
            Some(item) if !item.is_empty() => Some(item),
            _ => {
                self.get(&plan_dev_pk(tenant, &entry.plan_id), &entry.device_id)
                    .await?
            }
        };
        let stored: PlanEntry = match old {
            Some(item) => decode("plan entry", item)?,
            None => {
                return Err(StoreError::Conflict(format!(
                    "plan {} device {}: outcome already recorded but the entry is gone",
                    entry.plan_id, entry.device_id
                )));
            }
        };
        stored
            .outcome
            .map(Recorded::AlreadyRecorded)
            .ok_or_else(|| {
                StoreError::Conflict(format!(
                    "plan {} device {}: outcome write lost to a concurrent writer",
                    entry.plan_id, entry.device_id
                ))
            })
    }
}

fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.to_string())
}

fn dev_pk(source: Source, tenant: &str) -> String {
    format!("DEV#{source}#{tenant}")
}

fn hist_pk(source: Source, tenant: &str, device_id: &str) -> String {
    format!("HIST#{source}#{tenant}#{device_id}")
}

fn run_pk(source: Source, tenant: &str) -> String {
    format!("RUN#{source}#{tenant}")
}

fn tenant_pk(source: Source) -> String {
    format!("TENANT#{source}")
}

fn plan_pk(tenant: &str) -> String {
    format!("PLAN#{PLAN_SOURCE}#{tenant}")
}

fn plan_dev_pk(tenant: &str, plan_id: &str) -> String {
    format!("PLANDEV#{PLAN_SOURCE}#{tenant}#{plan_id}")
}

/// `#` separates key parts; a tenant containing it could collide with another's keys.
fn check_tenant(tenant: &str) -> Result<(), StoreError> {
    if tenant.contains('#') {
        return Err(StoreError::Rejected(format!(
            "tenant {tenant:?} contains '#'"
        )));
    }
    Ok(())
}

fn build_err(e: aws_sdk_dynamodb::error::BuildError) -> StoreError {
    StoreError::Rejected(format!("could not build dynamodb request: {e}"))
}

/// Classifies an SDK error. The service's own message is left out: validation
/// messages may quote attribute values.
fn sdk_err<E: ProvideErrorMetadata>(
    op: &str,
    table: &str,
    err: SdkError<E, HttpResponse>,
) -> StoreError {
    match &err {
        SdkError::TimeoutError(_) => {
            StoreError::Unavailable(format!("dynamodb {op} on table {table} timed out"))
        }
        SdkError::DispatchFailure(_) => {
            StoreError::Unavailable(format!("dynamodb {op} on table {table} could not be sent"))
        }
        SdkError::ResponseError(_) => StoreError::Unavailable(format!(
            "dynamodb {op} on table {table} returned an unreadable response"
        )),
        SdkError::ConstructionFailure(_) => {
            StoreError::Rejected(format!("dynamodb {op} on table {table} could not be built"))
        }
        SdkError::ServiceError(se) => {
            let code = se.err().code().unwrap_or("unknown error");
            let status = se.raw().status().as_u16();
            let msg = format!("dynamodb {op} on table {table} failed: {code} (http {status})");
            if TRANSIENT_CODES.contains(&code) || status == 429 || status >= 500 {
                StoreError::Unavailable(msg)
            } else {
                StoreError::Rejected(msg)
            }
        }
        _ => StoreError::Unavailable(format!("dynamodb {op} on table {table} failed")),
    }
}

fn encode<T: Serialize>(
    kind: &str,
    value: &T,
    pk: String,
    sk: String,
    ttl: Option<i64>,
) -> Result<Item, StoreError> {
    let mut item: Item = serde_dynamo::aws_sdk_dynamodb_1::to_item(value).map_err(|e| {
        StoreError::Rejected(format!(
            "could not encode {kind} {pk} {sk}: {}",
            redact(&e.to_string())
        ))
    })?;
    item.insert("pk".into(), AttributeValue::S(pk));
    item.insert("sk".into(), AttributeValue::S(sk));
    if let Some(ttl) = ttl {
        item.insert("ttl".into(), AttributeValue::N(ttl.to_string()));
    }
    Ok(item)
}

fn decode<T: DeserializeOwned>(kind: &str, item: Item) -> Result<T, StoreError> {
    let key = |k: &str| match item.get(k) {
        Some(AttributeValue::S(v)) => v.clone(),
        _ => "?".to_string(),
    };
    let (pk, sk) = (key("pk"), key("sk"));
    serde_dynamo::aws_sdk_dynamodb_1::from_item(item)
        .map_err(|e| StoreError::Corrupt(format!("{kind} {pk} {sk}: {}", redact(&e.to_string()))))
}

fn decode_all<T: DeserializeOwned>(kind: &str, items: Vec<Item>) -> Result<Vec<T>, StoreError> {
    items.into_iter().map(|i| decode(kind, i)).collect()
}

fn item_key(item: &Item) -> (Option<&AttributeValue>, Option<&AttributeValue>) {
    (item.get("pk"), item.get("sk"))
}

/// Keeps the last item per key: DynamoDB rejects a batch naming one key twice.
fn dedup_by_key(items: Vec<Item>) -> Vec<Item> {
    let mut seen = HashSet::new();
    let mut out: Vec<Item> = items
        .into_iter()
        .rev()
        .filter(|item| {
            let (pk, sk) = item_key(item);
            seen.insert(format!("{pk:?}\u{0}{sk:?}"))
        })
        .collect();
    out.reverse();
    out
}

fn put_request(item: Item) -> Result<WriteRequest, StoreError> {
    let put = PutRequest::builder()
        .set_item(Some(item))
        .build()
        .map_err(build_err)?;
    Ok(WriteRequest::builder().put_request(put).build())
}

fn unexpired(expires_at: i64, now: i64) -> bool {
    expires_at > now
}

#[async_trait]
impl Store for DynamoStore {
    async fn current_devices(
        &self,
        source: Source,
        tenant: &str,
    ) -> Result<Vec<DeviceRecord>, StoreError> {
        check_tenant(tenant)?;
        let items = self.query(&dev_pk(source, tenant), true, None).await?;
        decode_all("device", items)
    }

    /// One projected Query, decoded page by page, so the raw JSON and attrs of
    /// a large fleet are neither transferred nor held.
    async fn device_states(
        &self,
        source: Source,
        tenant: &str,
    ) -> Result<Vec<DeviceState>, StoreError> {
        check_tenant(tenant)?;
        let pk = dev_pk(source, tenant);
        let projection: Vec<String> = (0..STATE_ATTRIBUTES.len())
            .map(|i| format!("#a{i}"))
            .collect();
        let mut states = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let mut req = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk")
                .expression_attribute_values(":pk", s(&pk))
                .projection_expression(projection.join(", "))
                .consistent_read(true)
                .set_exclusive_start_key(start.take());
            for (i, name) in STATE_ATTRIBUTES.iter().enumerate() {
                req = req.expression_attribute_names(format!("#a{i}"), *name);
            }
            let out = req
                .send()
                .await
                .map_err(|e| sdk_err("Query", &self.table, e))?;
            for item in out.items.unwrap_or_default() {
                states.push(decode("device state", item)?);
            }
            match out.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => return Ok(states),
            }
        }
    }

    async fn devices_by_id(
        &self,
        source: Source,
        tenant: &str,
        ids: &[String],
    ) -> Result<Vec<DeviceRecord>, StoreError> {
        check_tenant(tenant)?;
        let pk = dev_pk(source, tenant);
        let pk = pk.as_str();
        let ids: std::collections::BTreeSet<&String> = ids.iter().collect();
        let gets = ids
            .into_iter()
            .cloned()
            .map(move |id| async move { self.get(pk, &id).await });
        let found: Vec<Option<Item>> = futures::stream::iter(gets)
            .buffered(GET_CONCURRENCY)
            .try_collect()
            .await?;
        found
            .into_iter()
            .flatten()
            .map(|item| decode("device", item))
            .collect()
    }

    async fn commit_sync(&self, commit: &SyncCommit) -> Result<u64, StoreError> {
        for tenant in commit
            .records
            .iter()
            .map(|r| &r.tenant)
            .chain(commit.history.iter().map(|h| &h.tenant))
        {
            check_tenant(tenant)?;
        }
        let final_batch = commit
            .run
            .as_ref()
            .map(|run| self.run_items(run))
            .transpose()?;
        // History first, then records, then the run record: a record written by a
        // run implies its history is stored, which is what lets a retry of the
        // same run skip records it already wrote (see `sync::diff`); a run record
        // vouches for a complete snapshot. Items are encoded a slice at a time,
        // so a large commit is never held in full as DynamoDB items.
        let mut writes = 0;
        for slice in commit.history.chunks(ENCODE_SLICE) {
            let items = slice
                .iter()
                .map(|h| {
                    encode(
                        "history entry",
                        h,
                        hist_pk(h.source, &h.tenant, &h.device_id),
                        h.run_id.clone(),
                        Some(h.expires_at),
                    )
                })
                .collect::<Result<Vec<_>, _>>()?;
            writes += self.write_items(items).await?;
        }
        for slice in commit.records.chunks(ENCODE_SLICE) {
            let items = slice
                .iter()
                .map(|r| {
                    encode(
                        "device",
                        r,
                        dev_pk(r.source, &r.tenant),
                        r.device_id.clone(),
                        None,
                    )
                })
                .collect::<Result<Vec<_>, _>>()?;
            writes += self.write_items(items).await?;
        }
        if let Some(batch) = final_batch {
            writes += self.write_items(batch).await?;
        }
        Ok(writes)
    }

    async fn put_run(&self, run: &SyncRun) -> Result<(), StoreError> {
        let items = self.run_items(run)?;
        self.write_items(items).await?;
        Ok(())
    }

    async fn get_run(
        &self,
        source: Source,
        tenant: &str,
        run_id: &str,
    ) -> Result<Option<SyncRun>, StoreError> {
        check_tenant(tenant)?;
        self.get(&run_pk(source, tenant), run_id)
            .await?
            .map(|item| decode("run", item))
            .transpose()
    }

    async fn list_runs(
        &self,
        source: Source,
        tenant: &str,
        limit: usize,
    ) -> Result<Vec<SyncRun>, StoreError> {
        check_tenant(tenant)?;
        if limit == 0 {
            return Ok(Vec::new());
        }
        let items = self
            .query(&run_pk(source, tenant), false, Some(limit))
            .await?;
        decode_all("run", items)
    }

    async fn tenants(&self, source: Source) -> Result<Vec<String>, StoreError> {
        let items = self.query(&tenant_pk(source), true, None).await?;
        items
            .into_iter()
            .map(|item| match item.get("sk") {
                Some(AttributeValue::S(t)) => Ok(t.clone()),
                _ => Err(StoreError::Corrupt(format!(
                    "tenant marker of {source} has no string sk"
                ))),
            })
            .collect()
    }

    async fn device_history(
        &self,
        source: Source,
        tenant: &str,
        device_id: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<HistoryEntry>, StoreError> {
        check_tenant(tenant)?;
        let items = self
            .query(&hist_pk(source, tenant, device_id), true, None)
            .await?;
        let entries: Vec<HistoryEntry> = decode_all("history entry", items)?;
        let now = now.timestamp();
        Ok(entries
            .into_iter()
            .filter(|e| unexpired(e.expires_at, now))
            .collect())
    }

    async fn put_plan(&self, plan: &PrunePlan, entries: &[PlanEntry]) -> Result<(), StoreError> {
        check_tenant(&plan.tenant)?;
        let items = entries
            .iter()
            .map(|e| self.entry_item(&plan.tenant, e))
            .collect::<Result<Vec<_>, _>>()?;
        self.write_items(items).await?;
        // The header goes last so a listed plan always has all its entries.
        self.update_plan(plan).await
    }

    async fn update_plan(&self, plan: &PrunePlan) -> Result<(), StoreError> {
        check_tenant(&plan.tenant)?;
        let item = encode(
            "plan",
            plan,
            plan_pk(&plan.tenant),
            plan.plan_id.clone(),
            None,
        )?;
        self.put(item).await
    }

    async fn get_plan(&self, tenant: &str, plan_id: &str) -> Result<Option<PrunePlan>, StoreError> {
        check_tenant(tenant)?;
        self.get(&plan_pk(tenant), plan_id)
            .await?
            .map(|item| decode("plan", item))
            .transpose()
    }

    async fn list_plans(&self, tenant: &str, limit: usize) -> Result<Vec<PrunePlan>, StoreError> {
        check_tenant(tenant)?;
        if limit == 0 {
            return Ok(Vec::new());
        }
        let items = self.query(&plan_pk(tenant), false, Some(limit)).await?;
        decode_all("plan", items)
    }

    async fn plan_entries(
        &self,
        tenant: &str,
        plan_id: &str,
    ) -> Result<Vec<PlanEntry>, StoreError> {
        check_tenant(tenant)?;
        let items = self
            .query(&plan_dev_pk(tenant, plan_id), true, None)
            .await?;
        let entries: Vec<PlanEntry> = decode_all("plan entry", items)?;
        // The trait gives no clock here: expiry is judged against the wall clock.
        let now = Utc::now().timestamp();
        Ok(entries
            .into_iter()
            .filter(|e| unexpired(e.expires_at, now))
            .collect())
    }

    async fn record_outcome(
        &self,
        tenant: &str,
        entry: &PlanEntry,
    ) -> Result<Recorded, StoreError> {
        check_tenant(tenant)?;
        if entry.outcome.is_none() {
            return Err(StoreError::Rejected(format!(
                "plan {} device {}: no outcome to record",
                entry.plan_id, entry.device_id
            )));
        }
        let item = self.entry_item(tenant, entry)?;
        // serde_dynamo writes `None` as a NULL attribute, so an entry without an
        // outcome has either no `outcome` attribute or a NULL one.
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(#o) OR attribute_type(#o, :null)")
            .expression_attribute_names("#o", "outcome")
            .expression_attribute_values(":null", s("NULL"))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(_) => Ok(Recorded::New),
            Err(SdkError::ServiceError(se))
                if matches!(se.err(), PutItemError::ConditionalCheckFailedException(_)) =>
            {
                let PutItemError::ConditionalCheckFailedException(e) = se.into_err() else {
                    unreachable!("matched above")
                };
                self.stored_outcome(tenant, entry, e.item).await
            }
            Err(e) => Err(sdk_err("PutItem", &self.table, e)),
        }
    }

    async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mut item = Item::new();
        item.insert("pk".into(), s(LEASE_PK));
        item.insert("sk".into(), s(name));
        item.insert("holder".into(), s(holder));
        item.insert(
            "until".into(),
            AttributeValue::N(until.timestamp_millis().to_string()),
        );
        item.insert("until_at".into(), s(&until.to_rfc3339()));
        // Old leases clean themselves up an hour after they end.
        item.insert(
            "ttl".into(),
            AttributeValue::N((until.timestamp() + 3600).to_string()),
        );
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk) OR #until < :now OR #holder = :holder")
            .expression_attribute_names("#until", "until")
            .expression_attribute_names("#holder", "holder")
            .expression_attribute_values(
                ":now",
                AttributeValue::N(now.timestamp_millis().to_string()),
            )
            .expression_attribute_values(":holder", s(holder))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(SdkError::ServiceError(se))
                if matches!(se.err(), PutItemError::ConditionalCheckFailedException(_)) =>
            {
                let PutItemError::ConditionalCheckFailedException(e) = se.into_err() else {
                    unreachable!("matched above")
                };
                let old = match e.item {
                    Some(item) if !item.is_empty() => Some(item),
                    _ => self.get(LEASE_PK, name).await?,
                };
                let field = |k: &str| match old.as_ref().and_then(|i| i.get(k)) {
                    Some(AttributeValue::S(v)) => v.clone(),
                    _ => "?".to_string(),
                };
                Err(StoreError::Conflict(format!(
                    "lease {name} is held by {} until {}",
                    field("holder"),
                    field("until_at")
                )))
            }
            Err(e) => Err(sdk_err("PutItem", &self.table, e)),
        }
    }

    async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        let result = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("pk", s(LEASE_PK))
            .key("sk", s(name))
            .condition_expression("#holder = :holder")
            .expression_attribute_names("#holder", "holder")
            .expression_attribute_values(":holder", s(holder))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            // Someone else holds it now, or nobody does: nothing of ours to release.
            Err(SdkError::ServiceError(se))
                if matches!(
                    se.err(),
                    DeleteItemError::ConditionalCheckFailedException(_)
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(sdk_err("DeleteItem", &self.table, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Outcome;
    use crate::store::contract::{sample_device, sample_entry, sample_plan, sample_run};
    use aws_sdk_dynamodb::config::retry::RetryConfig;
    use aws_sdk_dynamodb::error::ErrorMetadata;
    use aws_sdk_dynamodb::operation::batch_write_item::{
        BatchWriteItemInput, BatchWriteItemOutput,
    };
    use aws_sdk_dynamodb::operation::query::{QueryError, QueryOutput};
    use aws_sdk_dynamodb::types::error::{
        ConditionalCheckFailedException, ProvisionedThroughputExceededException,
        ResourceNotFoundException,
    };
    use aws_smithy_mocks::{Rule, RuleMode, mock, mock_client};
    use std::sync::{Arc, Mutex};

    const TABLE: &str = "fleetsync-test";

    fn store(mode: RuleMode, rules: &[&Rule]) -> DynamoStore {
        let client = mock_client!(aws_sdk_dynamodb, mode, rules, |c| c
            .retry_config(RetryConfig::disabled()));
        DynamoStore::new(client, TABLE).with_batch_retry(
            3,
            Duration::from_millis(1),
            Duration::from_millis(2),
        )
    }

    /// The partition keys of each batch, in the order the requests were sent.
    type Sent = Arc<Mutex<Vec<Vec<String>>>>;

    fn batch_pks(input: &BatchWriteItemInput) -> Vec<String> {
        input
            .request_items()
            .and_then(|m| m.get(TABLE))
            .map(|reqs| {
                reqs.iter()
                    .map(|r| match r.put_request().and_then(|p| p.item().get("pk")) {
                        Some(AttributeValue::S(pk)) => pk.clone(),
                        _ => String::new(),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    fn recording_batch_rule(sent: Sent) -> Rule {
        mock!(Client::batch_write_item).then_compute_output(move |input| {
            sent.lock().unwrap().push(batch_pks(input));
            BatchWriteItemOutput::builder().build()
        })
    }

    fn commit_of(n: usize, with_run: bool) -> SyncCommit {
        SyncCommit {
            records: (0..n)
                .map(|i| sample_device(Source::Tailscale, "example.com", i))
                .collect(),
            history: vec![],
            run: with_run.then(|| sample_run(Source::Tailscale, "example.com", 0)),
        }
    }

    fn device_item(n: usize) -> Item {
        let d = sample_device(Source::Tailscale, "example.com", n);
        encode(
            "device",
            &d,
            dev_pk(d.source, &d.tenant),
            d.device_id.clone(),
            None,
        )
        .unwrap()
    }

    fn error_meta(code: &str) -> ErrorMetadata {
        ErrorMetadata::builder()
            .code(code)
            .message("details")
            .build()
    }

    #[tokio::test]
    async fn commit_sends_batches_of_at_most_25() {
        let sent = Sent::default();
        let rule = recording_batch_rule(sent.clone());
        let store = store(RuleMode::MatchAny, &[&rule]);

        let writes = store.commit_sync(&commit_of(60, false)).await.unwrap();

        assert_eq!(writes, 3);
        let mut sizes: Vec<usize> = sent.lock().unwrap().iter().map(Vec::len).collect();
        sizes.sort();
        assert_eq!(sizes, vec![10, 25, 25]);
    }

    #[tokio::test]
    async fn commit_writes_run_and_tenant_marker_last_in_one_request() {
        let sent = Sent::default();
        let rule = recording_batch_rule(sent.clone());
        let store = store(RuleMode::MatchAny, &[&rule]);

        let writes = store.commit_sync(&commit_of(30, true)).await.unwrap();

        assert_eq!(writes, 3);
        let sent = sent.lock().unwrap();
        let (last, devices) = sent.split_last().unwrap();
        let mut last = last.clone();
        last.sort();
        assert_eq!(last, vec!["RUN#tailscale#example.com", "TENANT#tailscale"]);
        assert!(
            devices
                .iter()
                .flatten()
                .all(|pk| pk == "DEV#tailscale#example.com")
        );
        assert_eq!(devices.iter().map(Vec::len).sum::<usize>(), 30);
    }

    #[tokio::test]
    async fn commit_without_changes_costs_one_write_request() {
        let sent = Sent::default();
        let rule = recording_batch_rule(sent.clone());
        let store = store(RuleMode::MatchAny, &[&rule]);

        assert_eq!(store.commit_sync(&commit_of(0, true)).await.unwrap(), 1);
        assert_eq!(sent.lock().unwrap().len(), 1);
        assert_eq!(store.commit_sync(&SyncCommit::default()).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn unprocessed_items_are_resent_until_done() {
        let first = mock!(Client::batch_write_item).then_compute_output(|input| {
            let reqs = input.request_items().unwrap()[TABLE].clone();
            assert_eq!(reqs.len(), 3);
            BatchWriteItemOutput::builder()
                .unprocessed_items(TABLE, reqs[1..].to_vec())
                .build()
        });
        let resent = Sent::default();
        let second = recording_batch_rule(resent.clone());
        let store = store(RuleMode::Sequential, &[&first, &second]);

        let writes = store.commit_sync(&commit_of(3, false)).await.unwrap();

        assert_eq!(writes, 2);
        assert_eq!(first.num_calls(), 1);
        assert_eq!(second.num_calls(), 1);
        assert_eq!(resent.lock().unwrap()[0].len(), 2);
    }

    #[tokio::test]
    async fn unprocessed_items_past_the_retry_budget_are_unavailable() {
        let rule = mock!(Client::batch_write_item).then_compute_output(|input| {
            BatchWriteItemOutput::builder()
                .set_unprocessed_items(input.request_items().cloned())
                .build()
        });
        let store = store(RuleMode::MatchAny, &[&rule]);

        let err = store.commit_sync(&commit_of(2, true)).await.unwrap_err();

        assert!(matches!(err, StoreError::Unavailable(_)), "{err}");
        // One request and three re-sends; the run batch is never sent.
        assert_eq!(rule.num_calls(), 4);
    }

    #[tokio::test]
    async fn duplicate_keys_in_a_commit_are_sent_once() {
        let sent = Sent::default();
        let rule = recording_batch_rule(sent.clone());
        let store = store(RuleMode::MatchAny, &[&rule]);
        let mut commit = commit_of(2, false);
        commit.records.push(commit.records[0].clone());

        store.commit_sync(&commit).await.unwrap();

        assert_eq!(sent.lock().unwrap()[0].len(), 2);
    }

    #[tokio::test]
    async fn query_follows_last_evaluated_key_through_an_empty_page() {
        let lek = HashMap::from([
            ("pk".to_string(), s("DEV#tailscale#example.com")),
            ("sk".to_string(), s("dev00001")),
        ]);
        let first_lek = lek.clone();
        let first = mock!(Client::query)
            .match_requests(|q| q.exclusive_start_key().is_none())
            .then_output(move || {
                QueryOutput::builder()
                    .items(device_item(1))
                    .set_last_evaluated_key(Some(first_lek.clone()))
                    .build()
            });
        let empty_page = mock!(Client::query)
            .match_requests(move |q| q.exclusive_start_key() == Some(&lek))
            .then_output(|| QueryOutput::builder().build());
        let store = store(RuleMode::Sequential, &[&first, &empty_page]);

        let devices = store
            .current_devices(Source::Tailscale, "example.com")
            .await
            .unwrap();

        assert_eq!(
            devices,
            vec![sample_device(Source::Tailscale, "example.com", 1)]
        );
        assert_eq!(first.num_calls(), 1);
        assert_eq!(empty_page.num_calls(), 1);
    }

    #[tokio::test]
    async fn list_runs_asks_only_for_what_is_left_of_the_limit() {
        let run_item = |seq| {
            let r = sample_run(Source::Tailscale, "example.com", seq);
            encode(
                "run",
                &r,
                run_pk(r.source, &r.tenant),
                r.run_id.clone(),
                None,
            )
            .unwrap()
        };
        let lek = HashMap::from([("pk".to_string(), s("x")), ("sk".to_string(), s("y"))]);
        let (lek1, lek2) = (lek.clone(), lek.clone());
        let first = mock!(Client::query)
            .match_requests(|q| q.limit() == Some(3) && q.scan_index_forward() == Some(false))
            .then_output(move || {
                QueryOutput::builder()
                    .items(run_item(9))
                    .items(run_item(8))
                    .set_last_evaluated_key(Some(lek1.clone()))
                    .build()
            });
        let second = mock!(Client::query)
            .match_requests(|q| q.limit() == Some(1) && q.exclusive_start_key().is_some())
            .then_output(move || {
                QueryOutput::builder()
                    .items(run_item(7))
                    .set_last_evaluated_key(Some(lek2.clone()))
                    .build()
            });
        let store = store(RuleMode::Sequential, &[&first, &second]);

        let runs = store
            .list_runs(Source::Tailscale, "example.com", 3)
            .await
            .unwrap();

        let ids: Vec<_> = runs.into_iter().map(|r| r.run_id).collect();
        let expected: Vec<_> = [9, 8, 7]
            .map(|seq| sample_run(Source::Tailscale, "example.com", seq).run_id)
            .to_vec();
        assert_eq!(ids, expected);
    }

    #[tokio::test]
    async fn throttling_is_unavailable_and_missing_table_is_rejected() {
        let throttled = mock!(Client::query).then_error(|| {
            QueryError::ProvisionedThroughputExceededException(
                ProvisionedThroughputExceededException::builder()
                    .meta(error_meta("ProvisionedThroughputExceededException"))
                    .build(),
            )
        });
        let missing = mock!(Client::query).then_error(|| {
            QueryError::ResourceNotFoundException(
                ResourceNotFoundException::builder()
                    .meta(error_meta("ResourceNotFoundException"))
                    .build(),
            )
        });
        let store = store(RuleMode::Sequential, &[&throttled, &missing]);

        let err = store.tenants(Source::Tailscale).await.unwrap_err();
        assert!(matches!(err, StoreError::Unavailable(_)), "{err}");
        let err = store.tenants(Source::Tailscale).await.unwrap_err();
        assert!(matches!(err, StoreError::Rejected(_)), "{err}");
        assert!(
            err.to_string().contains("ResourceNotFoundException"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn undecodable_item_is_corrupt_and_not_quoted() {
        let rule = mock!(Client::query).then_output(|| {
            QueryOutput::builder()
                .items(HashMap::from([
                    ("pk".to_string(), s("DEV#tailscale#example.com")),
                    ("sk".to_string(), s("dev1")),
                    ("source".to_string(), s("tailscale")),
                    ("name".to_string(), AttributeValue::N("1".into())),
                    ("tenant".to_string(), s("secret-tenant-value")),
                ]))
                .build()
        });
        let store = store(RuleMode::MatchAny, &[&rule]);

        let err = store
            .current_devices(Source::Tailscale, "example.com")
            .await
            .unwrap_err();

        assert!(matches!(err, StoreError::Corrupt(_)), "{err}");
        assert!(!err.to_string().contains("secret-tenant-value"), "{err}");
    }

    #[tokio::test]
    async fn record_outcome_returns_the_stored_outcome_when_the_condition_fails() {
        let plan = sample_plan("example.com", 0);
        let mut stored = sample_entry(&plan, "d1");
        stored.outcome = Some(Outcome::AlreadyGone);
        let old = encode("plan entry", &stored, "pk".into(), "d1".into(), None).unwrap();
        let rule = mock!(Client::put_item)
            .match_requests(|p| {
                p.condition_expression()
                    .is_some_and(|c| c.contains("attribute_type(#o, :null)"))
            })
            .then_error(move || {
                PutItemError::ConditionalCheckFailedException(
                    ConditionalCheckFailedException::builder()
                        .set_item(Some(old.clone()))
                        .meta(error_meta("ConditionalCheckFailedException"))
                        .build(),
                )
            });
        let store = store(RuleMode::MatchAny, &[&rule]);
        let mut again = sample_entry(&plan, "d1");
        again.outcome = Some(Outcome::Deleted);

        let got = store.record_outcome("example.com", &again).await.unwrap();

        assert_eq!(got, Recorded::AlreadyRecorded(Outcome::AlreadyGone));
    }

    #[tokio::test]
    async fn lease_conflict_names_the_holder_and_its_end() {
        let rule = mock!(Client::put_item).then_error(|| {
            PutItemError::ConditionalCheckFailedException(
                ConditionalCheckFailedException::builder()
                    .item("holder", s("worker-a"))
                    .item("until_at", s("2026-03-14T16:00:00+00:00"))
                    .meta(error_meta("ConditionalCheckFailedException"))
                    .build(),
            )
        });
        let store = store(RuleMode::MatchAny, &[&rule]);
        let now = Utc::now();

        let err = store
            .acquire_lease("prune", "worker-b", now, now + chrono::Duration::minutes(5))
            .await
            .unwrap_err();

        match err {
            StoreError::Conflict(msg) => {
                assert!(msg.contains("worker-a"), "{msg}");
                assert!(msg.contains("2026-03-14T16:00:00"), "{msg}");
            }
            other => panic!("expected a conflict, got {other}"),
        }
    }

    #[tokio::test]
    async fn tenant_with_key_separator_is_rejected() {
        let store = store(RuleMode::MatchAny, &[]);
        let err = store
            .current_devices(Source::Tailscale, "a#b")
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Rejected(_)), "{err}");
    }
}
