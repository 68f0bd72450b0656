//! DynamoDB store (placeholder until implemented).
pub struct DynamoStore;
