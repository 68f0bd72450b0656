//! Lambda glue (feature `lambda`): one entry point that turns an invocation
//! into a step call, used by the four handler binaries and by the tests that
//! feed them the sample events in `events/`.

use crate::deps::{Deps, StepName};
use crate::error::StepError;
use crate::http;
use crate::steps::{self, parse_input};
use futures::FutureExt;
use lambda_runtime::LambdaEvent;
use serde_json::Value;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::time::Instant;

/// Time kept back from the invocation deadline to record a failed run and
/// answer before Lambda stops the function.
const DEADLINE_MARGIN: Duration = Duration::from_secs(3);

/// Runs `step` on the event's payload, with API calls bounded by the
/// invocation's deadline (less a margin). Malformed payloads are
/// `InvalidInput`; the error's `name()` becomes the Step Functions error type.
pub async fn handle(
    deps: &Deps,
    step: StepName,
    event: LambdaEvent<Value>,
) -> Result<Value, StepError> {
    let (payload, context) = event.into_parts();
    tracing::debug!(request_id = %context.request_id, "invocation");
    let deadline = budget(context.deadline, SystemTime::now());
    let step_run = AssertUnwindSafe(http::with_deadline(deadline, run(deps, step, payload)));
    match step_run.catch_unwind().await {
        Ok(result) => result,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            tracing::error!(panic = %what, "step panicked");
            Err(StepError::Internal(format!("internal error: {what}")))
        }
    }
}

/// The instant API calls must be done by, from the deadline in epoch
/// milliseconds (0 when the runtime gives none).
fn budget(deadline_ms: u64, now: SystemTime) -> Option<Instant> {
    if deadline_ms == 0 {
        return None;
    }
    let deadline = UNIX_EPOCH + Duration::from_millis(deadline_ms);
    let left = deadline.duration_since(now).unwrap_or(Duration::ZERO);
    Some(Instant::now() + left.saturating_sub(DEADLINE_MARGIN))
}

async fn run(deps: &Deps, step: StepName, payload: Value) -> Result<Value, StepError> {
    let out = match step {
        StepName::SyncTailscale => {
            to_value(steps::sync_tailscale::run(deps, parse_input(payload)?).await?)
        }
        StepName::SyncTinymdm => {
            to_value(steps::sync_tinymdm::run(deps, parse_input(payload)?).await?)
        }
        StepName::PlanPrune => to_value(steps::plan_prune::run(deps, parse_input(payload)?).await?),
        StepName::PruneDevices => {
            to_value(steps::prune_devices::run(deps, parse_input(payload)?).await?)
        }
    };
    Ok(out)
}

fn to_value<T: serde::Serialize>(v: T) -> Value {
    // Step outputs are plain structs of strings, numbers and maps: always serialisable.
    serde_json::to_value(v).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{
        DeviceRecord, HistoryEntry, PlanEntry, PrunePlan, Source, SyncCommit, SyncRun,
    };
    use crate::store::{Recorded, Store, StoreError};
    use async_trait::async_trait;
    use chrono::{DateTime, Utc};
    use lambda_runtime::{Context, Diagnostic};
    use std::sync::Arc;

    /// A store with a bug: every call panics.
    struct Panicking;

    #[async_trait]
    impl Store for Panicking {
        async fn current_devices(
            &self,
            _: Source,
            _: &str,
        ) -> Result<Vec<DeviceRecord>, StoreError> {
            panic!("bug in current_devices")
        }
        async fn commit_sync(&self, _: &SyncCommit) -> Result<u64, StoreError> {
            panic!("bug")
        }
        async fn put_run(&self, _: &SyncRun) -> Result<(), StoreError> {
            panic!("bug")
        }
        async fn get_run(
            &self,
            _: Source,
            _: &str,
            _: &str,
        ) -> Result<Option<SyncRun>, StoreError> {
            panic!("bug")
        }
        async fn list_runs(
            &self,
            _: Source,
            _: &str,
            _: usize,
        ) -> Result<Vec<SyncRun>, StoreError> {
            panic!("bug in list_runs")
        }
        async fn tenants(&self, _: Source) -> Result<Vec<String>, StoreError> {
            panic!("bug")
        }
        async fn device_history(
            &self,
            _: Source,
            _: &str,
            _: &str,
            _: DateTime<Utc>,
        ) -> Result<Vec<HistoryEntry>, StoreError> {
            panic!("bug")
        }
        async fn put_plan(&self, _: &PrunePlan, _: &[PlanEntry]) -> Result<(), StoreError> {
            panic!("bug")
        }
        async fn update_plan(&self, _: &PrunePlan) -> Result<(), StoreError> {
            panic!("bug")
        }
        async fn get_plan(&self, _: &str, _: &str) -> Result<Option<PrunePlan>, StoreError> {
            panic!("bug")
        }
        async fn list_plans(&self, _: &str, _: usize) -> Result<Vec<PrunePlan>, StoreError> {
            panic!("bug")
        }
        async fn plan_entries(&self, _: &str, _: &str) -> Result<Vec<PlanEntry>, StoreError> {
            panic!("bug")
        }
        async fn record_outcome(&self, _: &str, _: &PlanEntry) -> Result<Recorded, StoreError> {
            panic!("bug")
        }
        async fn acquire_lease(
            &self,
            _: &str,
            _: &str,
            _: DateTime<Utc>,
            _: DateTime<Utc>,
        ) -> Result<(), StoreError> {
            panic!("bug")
        }
        async fn release_lease(&self, _: &str, _: &str) -> Result<(), StoreError> {
            panic!("bug")
        }
    }

    #[tokio::test]
    async fn a_panic_is_a_named_error() {
        let deps = Deps::new(Arc::new(Panicking), Default::default());
        let event = LambdaEvent::new(serde_json::json!({}), Context::default());
        let err = handle(&deps, StepName::PlanPrune, event).await.unwrap_err();
        assert_eq!(err.name(), "Internal");
        assert!(err.to_string().starts_with("internal error: bug"), "{err}");
        let d: Diagnostic = err.into();
        assert_eq!(d.error_type, "Internal");
    }

    #[test]
    fn budget_keeps_a_margin_before_the_deadline() {
        let now = SystemTime::now();
        let ms = |t: SystemTime| t.duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
        assert_eq!(budget(0, now), None);
        let b = budget(ms(now + Duration::from_secs(60)), now).unwrap();
        let left = b - Instant::now();
        assert!(
            left > Duration::from_secs(55) && left <= Duration::from_secs(57),
            "{left:?}"
        );
        let past = budget(ms(now - Duration::from_secs(5)), now).unwrap();
        assert!(past <= Instant::now());
    }
}
