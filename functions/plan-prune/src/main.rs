//! Lambda function `plan-prune`: plans which inactive Tailscale devices to remove, from the latest snapshot.
//! The step itself lives in `fleetsync::steps`; this binary only wires it up.

use aws_config::BehaviorVersion;
use fleetsync::{Deps, LambdaConfig, StepName};
use lambda_runtime::{LambdaEvent, service_fn};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let config = LambdaConfig::from_env(StepName::PlanPrune)?;
    let aws = aws_config::load_defaults(BehaviorVersion::latest()).await;
    // Clients and secrets, once per cold start.
    let deps = Deps::for_lambda(&aws, &config).await;
    lambda_runtime::run(service_fn(|event: LambdaEvent<Value>| {
        fleetsync::lambda::handle(&deps, StepName::PlanPrune, event)
    }))
    .await
}
