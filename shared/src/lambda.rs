//! Lambda glue (feature `lambda`): one entry point that turns an invocation
//! into a step call, used by the four handler binaries and by the tests that
//! feed them the sample events in `events/`.

use crate::deps::{Deps, StepName};
use crate::error::StepError;
use crate::steps::{self, parse_input};
use lambda_runtime::LambdaEvent;
use serde_json::Value;

/// Runs `step` on the event's payload. Malformed payloads are `InvalidInput`;
/// the error's `name()` becomes the Step Functions error type.
pub async fn handle(
    deps: &Deps,
    step: StepName,
    event: LambdaEvent<Value>,
) -> Result<Value, StepError> {
    let (payload, context) = event.into_parts();
    tracing::debug!(request_id = %context.request_id, "invocation");
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
