//! Integration tests across crates, in one test binary: the Store contract on
//! emulated DynamoDB, both API clients and the four steps against the
//! simulators, the Lambda entry point with the sample events (the log check is the
//! `logs` test binary).
//!
//! `scripts/test.sh` starts the AWS emulator and passes its endpoint in
//! `FLEETSYNC_TEST_AWS_ENDPOINT`; shared helpers live in `support` and `world`.

mod clients;
mod dynamo_store;
mod faults;
mod flow;
mod handlers;
mod prune;
mod secrets;
mod steps;
mod support;
mod world;
