//! Counts what fleetsync asks of DynamoDB, from inside the client: an SDK
//! interceptor sees every operation before it is serialised and every HTTP
//! attempt before it is sent, so nothing the store does goes uncounted.
//!
//! Write capacity is computed from the items themselves with DynamoDB's sizing
//! rules (one write unit per started KB of each item written), because the
//! emulator reports a constant 1.0 per call whatever was written.
//! `ReturnConsumedCapacity=TOTAL` is still set on writes, and the emulator's
//! figure is kept as `wcu_reported_by_emulator`. Reads are counted as requests
//! and items returned; their capacity is not estimated, since DynamoDB charges
//! a projected Query by the full size of the items it reads, which the
//! response does not show.

use aws_sdk_dynamodb::config::interceptors::{
    AfterDeserializationInterceptorContextRef, BeforeSerializationInterceptorContextMut,
    BeforeTransmitInterceptorContextRef,
};
use aws_sdk_dynamodb::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_dynamodb::operation::batch_write_item::{BatchWriteItemInput, BatchWriteItemOutput};
use aws_sdk_dynamodb::operation::delete_item::DeleteItemInput;
use aws_sdk_dynamodb::operation::get_item::GetItemOutput;
use aws_sdk_dynamodb::operation::put_item::{PutItemInput, PutItemOutput};
use aws_sdk_dynamodb::operation::query::QueryOutput;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsInput;
use aws_sdk_dynamodb::operation::update_item::UpdateItemInput;
use aws_sdk_dynamodb::types::{AttributeValue, ConsumedCapacity, ReturnConsumedCapacity};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Totals of one process's DynamoDB traffic.
#[derive(Debug, Default, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct DdbTotals {
    /// HTTP requests of writing operations (BatchWriteItem, PutItem,
    /// UpdateItem, DeleteItem, TransactWriteItems), SDK retries included.
    pub write_requests: u64,
    /// Items put or deleted, re-sent unprocessed items included.
    pub items_written: u64,
    /// Write units by DynamoDB's sizing rules, less items returned unprocessed.
    pub wcu: u64,
    /// Sum of `ConsumedCapacity` the emulator returned for writes (not sized).
    pub wcu_reported_by_emulator: f64,
    /// HTTP requests of reading operations (Query, GetItem).
    pub read_requests: u64,
    pub items_read: u64,
}

#[derive(Debug, Default)]
struct Counts {
    write_requests: AtomicU64,
    items_written: AtomicU64,
    wcu: AtomicU64,
    unprocessed_wcu: AtomicU64,
    reported_milli: AtomicU64,
    read_requests: AtomicU64,
    items_read: AtomicU64,
}

/// The interceptor; clones share one set of counters.
#[derive(Debug, Clone, Default)]
pub struct DdbCounter(Arc<Counts>);

impl DdbCounter {
    pub fn totals(&self) -> DdbTotals {
        let c = &self.0;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        DdbTotals {
            write_requests: get(&c.write_requests),
            items_written: get(&c.items_written),
            wcu: get(&c.wcu).saturating_sub(get(&c.unprocessed_wcu)),
            wcu_reported_by_emulator: get(&c.reported_milli) as f64 / 1000.0,
            read_requests: get(&c.read_requests),
            items_read: get(&c.items_read),
        }
    }

    fn wrote(&self, items: u64, wcu: u64) {
        self.0.items_written.fetch_add(items, Ordering::Relaxed);
        self.0.wcu.fetch_add(wcu, Ordering::Relaxed);
    }

    fn reported(&self, cc: &[ConsumedCapacity]) {
        let sum: f64 = cc.iter().filter_map(|c| c.capacity_units).sum();
        self.0
            .reported_milli
            .fetch_add((sum * 1000.0) as u64, Ordering::Relaxed);
    }
}

/// Bytes of an attribute value by DynamoDB's item size rules.
pub fn value_size(v: &AttributeValue) -> usize {
    match v {
        AttributeValue::S(s) => s.len(),
        AttributeValue::N(n) => number_size(n),
        AttributeValue::B(b) => b.as_ref().len(),
        AttributeValue::Bool(_) | AttributeValue::Null(_) => 1,
        AttributeValue::Ss(v) => v.iter().map(String::len).sum(),
        AttributeValue::Ns(v) => v.iter().map(|n| number_size(n)).sum(),
        AttributeValue::Bs(v) => v.iter().map(|b| b.as_ref().len()).sum(),
        AttributeValue::L(l) => 3 + l.iter().map(|x| 1 + value_size(x)).sum::<usize>(),
        AttributeValue::M(m) => {
            3 + m
                .iter()
                .map(|(k, x)| 1 + k.len() + value_size(x))
                .sum::<usize>()
        }
        _ => 0,
    }
}

/// About one byte per two significant digits, plus one.
fn number_size(n: &str) -> usize {
    let digits = n
        .trim_start_matches('-')
        .split(['e', 'E'])
        .next()
        .unwrap_or("")
        .replace('.', "");
    let significant = digits.trim_start_matches('0').trim_end_matches('0').len();
    significant.div_ceil(2) + 1
}

/// Bytes of an item: attribute names plus values.
pub fn item_size(item: &HashMap<String, AttributeValue>) -> usize {
    item.iter().map(|(k, v)| k.len() + value_size(v)).sum()
}

/// Write units to put an item: one per started KB.
pub fn item_wcu(item: &HashMap<String, AttributeValue>) -> u64 {
    (item_size(item).div_ceil(1024)).max(1) as u64
}

impl Intercept for DdbCounter {
    fn name(&self) -> &'static str {
        "fleetsync-bench-ddb-counter"
    }

    fn modify_before_serialization(
        &self,
        context: &mut BeforeSerializationInterceptorContextMut<'_>,
        _rc: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let input = context.input_mut();
        if let Some(i) = input.downcast_mut::<BatchWriteItemInput>() {
            i.return_consumed_capacity = Some(ReturnConsumedCapacity::Total);
            for reqs in i.request_items.iter().flat_map(|m| m.values()) {
                for r in reqs {
                    match (r.put_request(), r.delete_request()) {
                        (Some(p), _) => self.wrote(1, item_wcu(p.item())),
                        (None, Some(_)) => self.wrote(1, 1),
                        _ => {}
                    }
                }
            }
        } else if let Some(i) = input.downcast_mut::<PutItemInput>() {
            i.return_consumed_capacity = Some(ReturnConsumedCapacity::Total);
            let wcu = i.item.as_ref().map_or(1, item_wcu);
            self.wrote(1, wcu);
        } else if input.downcast_mut::<UpdateItemInput>().is_some()
            || input.downcast_mut::<DeleteItemInput>().is_some()
        {
            // The stored item's size is not known here; these are small items
            // (plans, leases), so one unit each.
            self.wrote(1, 1);
        } else if let Some(i) = input.downcast_mut::<TransactWriteItemsInput>() {
            // Transactions cost two units per item and KB.
            for t in i.transact_items.iter().flatten() {
                let wcu = t.put().map_or(1, |p| item_wcu(p.item()));
                self.wrote(1, 2 * wcu);
            }
        }
        Ok(())
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _rc: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let target = context
            .request()
            .headers()
            .get("x-amz-target")
            .unwrap_or_default();
        let op = target.rsplit('.').next().unwrap_or_default();
        let counter = match op {
            "BatchWriteItem" | "PutItem" | "UpdateItem" | "DeleteItem" | "TransactWriteItems" => {
                &self.0.write_requests
            }
            "Query" | "GetItem" | "BatchGetItem" | "Scan" => &self.0.read_requests,
            _ => return Ok(()),
        };
        counter.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn read_after_deserialization(
        &self,
        context: &AfterDeserializationInterceptorContextRef<'_>,
        _rc: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let Ok(out) = context.output_or_error() else {
            return Ok(());
        };
        if let Some(o) = out.downcast_ref::<QueryOutput>() {
            self.0
                .items_read
                .fetch_add(o.items().len() as u64, Ordering::Relaxed);
        } else if let Some(o) = out.downcast_ref::<GetItemOutput>() {
            self.0
                .items_read
                .fetch_add(u64::from(o.item().is_some()), Ordering::Relaxed);
        } else if let Some(o) = out.downcast_ref::<BatchWriteItemOutput>() {
            self.reported(o.consumed_capacity());
            // Unprocessed items were not written (and not charged); they are
            // counted again when re-sent.
            let unprocessed: u64 = o
                .unprocessed_items()
                .into_iter()
                .flat_map(|m| m.values())
                .flatten()
                .map(|r| r.put_request().map_or(1, |p| item_wcu(p.item())))
                .sum();
            self.0
                .unprocessed_wcu
                .fetch_add(unprocessed, Ordering::Relaxed);
        } else if let Some(c) = out
            .downcast_ref::<PutItemOutput>()
            .and_then(|o| o.consumed_capacity())
        {
            self.reported(std::slice::from_ref(c));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_follow_dynamodb_rules() {
        let item = HashMap::from([
            ("pk".to_string(), AttributeValue::S("abc".into())),
            ("n".to_string(), AttributeValue::N("12345".into())),
            (
                "m".to_string(),
                AttributeValue::M(HashMap::from([(
                    "k".to_string(),
                    AttributeValue::Bool(true),
                )])),
            ),
        ]);
        // pk: 2+3; n: 1+(3+1); m: 1+(3+1+1+1)
        assert_eq!(item_size(&item), 5 + 5 + 7);
        assert_eq!(item_wcu(&item), 1);
        let big = HashMap::from([("raw".to_string(), AttributeValue::S("x".repeat(2000)))]);
        assert_eq!(item_wcu(&big), 2);
    }
}
