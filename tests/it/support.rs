//! Helpers shared by the integration test modules: the emulated AWS endpoint,
//! SDK configuration for it, and fresh DynamoDB tables.

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_dynamodb::config::Credentials;
use fleetsync::store::DynamoStore;

/// The variable `scripts/test.sh` sets to the emulator's URL.
pub const AWS_ENDPOINT_VAR: &str = "FLEETSYNC_TEST_AWS_ENDPOINT";

/// The emulated AWS endpoint. Panics, failing the test, when the emulator was
/// not started: a test that needs AWS never passes silently without it.
pub fn aws_endpoint() -> String {
    match std::env::var(AWS_ENDPOINT_VAR) {
        Ok(url) if !url.trim().is_empty() => url,
        _ => panic!(
            "{AWS_ENDPOINT_VAR} is not set: this test needs the local AWS emulator; \
             run scripts/test.sh, which starts it and sets the variable"
        ),
    }
}

/// SDK configuration pointing at the emulator, with static test credentials.
pub async fn aws_config() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(aws_endpoint())
        .credentials_provider(Credentials::new("test", "test", None, None, "static"))
        .load()
        .await
}

/// A DynamoDB client for the emulator.
pub async fn dynamo_client() -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::new(&aws_config().await)
}

/// A name no other test uses, so tests can run in parallel on one emulator.
pub fn unique_name(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::now_v7().simple())
}

/// A `DynamoStore` on a freshly created table of its own.
pub async fn dynamo_store() -> DynamoStore {
    let client = dynamo_client().await;
    let table = unique_name("fleetsync-it");
    DynamoStore::create_table(&client, &table)
        .await
        .unwrap_or_else(|e| panic!("creating table {table} on the emulator failed: {e}"));
    DynamoStore::new(client, table)
}
