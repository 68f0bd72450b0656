//! No secret, API key or token ever reaches a log line: a whole pipeline runs
//! with every target logging at TRACE into a buffer, which is then searched.
//!
//! A test binary of its own: tracing caches per call site whether anyone
//! listens, and a call site first reached by another test's thread while this
//! test installs its subscriber can stay cached as unheard, losing lines.

#[allow(dead_code)]
#[path = "../it/world.rs"]
mod world;

use crate::world::{World, sqlite};
use chrono::Utc;
use fleetsync::steps::plan_prune::PlanPruneInput;
use fleetsync::steps::prune_devices::PruneDevicesInput;
use fleetsync::steps::sync_tinymdm::SyncTinymdmInput;
use fleetsync::steps::{plan_prune, prune_devices, sync_tailscale, sync_tinymdm};
use fleetsync_sim::{Fault, Route};
use std::io::Write;
use std::sync::{Arc, Mutex};

#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Write for Buffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

// Current-thread runtime: the subscriber set for this thread sees every task.
#[tokio::test(flavor = "current_thread")]
async fn no_secret_appears_in_any_log_line() {
    let buffer = Buffer::default();
    let writer = buffer.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let w = World::start(sqlite(), 80, 30, Utc::now());
    // Errors and retries log too: a token response cut short (the part that
    // arrives holds the token), a refused token, a 429, a 500.
    w.ts.inject(Route::Token, Fault::Truncated, 1);
    w.ts.inject(Route::ListDevices, Fault::ExpireTokens, 1);
    w.mdm
        .inject(Route::ListDevices, Fault::status_retry_after(429, "1"), 1);
    w.ts.inject(Route::DeleteDevice, Fault::status(500), 8);
    let deps = w.deps().await;
    sync_tailscale::run(&deps, Default::default())
        .await
        .unwrap();
    sync_tinymdm::run(&deps, SyncTinymdmInput::default())
        .await
        .unwrap();
    let plan = plan_prune::run(
        &deps,
        PlanPruneInput {
            dry_run: Some(false),
            max_fraction: Some(1.0),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let _ = prune_devices::run(
        &deps,
        PruneDevicesInput {
            plan_id: plan.plan_id,
        },
    )
    .await;

    let logs = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("sync complete"), "the capture works");
    assert!(logs.contains("retrying"), "retries were logged");
    for secret in w.secret_values() {
        assert!(
            !logs.contains(&secret),
            "a log line contains the secret {secret:?}"
        );
    }
    assert!(
        !logs.contains("tskey-api-"),
        "a log line contains an access token"
    );
    assert!(
        !logs.contains("tskey-client-"),
        "a log line contains a client secret"
    );
}
