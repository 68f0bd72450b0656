//! Lambda glue (feature `lambda`): one entry point that turns an invocation
//! into a step call, used by the four handler binaries and by the tests that
//! feed them the sample events in `events/`.

use crate::deps::{Deps, StepName};
use crate::error::StepError;
use crate::http;
use crate::steps::{self, parse_input};
use lambda_runtime::LambdaEvent;
use serde_json::Value;
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
    http::with_deadline(deadline, run(deps, step, payload)).await
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
