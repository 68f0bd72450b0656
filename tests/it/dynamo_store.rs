//! The Store contract suite against `DynamoStore` on emulated DynamoDB, one
//! fresh table per test, plus checks of the table `create_table` makes.

use crate::support;
use aws_sdk_dynamodb::types::{BillingMode, TimeToLiveStatus};

fleetsync::store_contract_tests!(support::dynamo_store());

#[tokio::test]
async fn create_table_makes_on_demand_table_with_ttl() {
    let store = support::dynamo_store().await;
    let client = support::dynamo_client().await;
    let table = client
        .describe_table()
        .table_name(store.table_name())
        .send()
        .await
        .unwrap()
        .table
        .unwrap();
    let keys: Vec<_> = table
        .key_schema()
        .iter()
        .map(|k| {
            (
                k.attribute_name().to_string(),
                k.key_type().as_str().to_string(),
            )
        })
        .collect();
    assert_eq!(
        keys,
        vec![
            ("pk".to_string(), "HASH".to_string()),
            ("sk".to_string(), "RANGE".to_string())
        ]
    );
    assert_eq!(
        table.billing_mode_summary().and_then(|b| b.billing_mode()),
        Some(&BillingMode::PayPerRequest)
    );
    let ttl = client
        .describe_time_to_live()
        .table_name(store.table_name())
        .send()
        .await
        .unwrap()
        .time_to_live_description
        .unwrap();
    assert_eq!(ttl.attribute_name(), Some("ttl"));
    assert_eq!(ttl.time_to_live_status(), Some(&TimeToLiveStatus::Enabled));
}
