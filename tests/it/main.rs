//! Integration tests across crates, in one test binary: the Store contract on
//! emulated DynamoDB, and (later) steps against the simulators and the CLI.
//!
//! `scripts/test.sh` starts the AWS emulator and passes its endpoint in
//! `FLEETSYNC_TEST_AWS_ENDPOINT`; shared helpers live in `support`.

mod dynamo_store;
mod support;
