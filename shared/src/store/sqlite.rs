//! SQLite store (placeholder until implemented).
pub struct SqliteStore;
