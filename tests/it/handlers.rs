//! Each Lambda handler's entry point fed the sample event of `events/`, so the
//! samples cannot rot, plus the stable error names of bad events.

use crate::world::{World, sqlite};
use chrono::Utc;
use fleetsync::StepName;
use fleetsync::lambda::handle;
use lambda_runtime::{Context, Diagnostic, LambdaEvent};
use serde_json::Value;

fn event(name: &str) -> Value {
    let path = format!("{}/../events/{name}.json", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn invocation(payload: Value) -> LambdaEvent<Value> {
    LambdaEvent::new(payload, Context::default())
}

#[tokio::test]
async fn every_handler_accepts_its_sample_event() {
    let w = World::start(sqlite(), 60, 40, Utc::now());
    let deps = w.deps().await;

    let ts = handle(
        &deps,
        StepName::SyncTailscale,
        invocation(event("sync-tailscale")),
    )
    .await
    .unwrap();
    assert_eq!(ts["devices"], 60);
    assert_eq!(ts["source"], "tailscale");
    let mdm = handle(
        &deps,
        StepName::SyncTinymdm,
        invocation(event("sync-tinymdm")),
    )
    .await
    .unwrap();
    assert_eq!(mdm["devices"], 40);
    assert_eq!(mdm["pages"], 1);

    let plan = handle(&deps, StepName::PlanPrune, invocation(event("plan-prune")))
        .await
        .unwrap();
    assert_eq!(plan["dry_run"], true);
    assert!(plan["candidates"].as_u64().unwrap() > 0);

    // The sample's plan id is a placeholder: apply a real, ready plan instead,
    // keeping every other field of the sample.
    let mut ready = event("plan-prune");
    ready["dry_run"] = Value::Bool(false);
    ready["max_fraction"] = serde_json::json!(1.0);
    let plan = handle(&deps, StepName::PlanPrune, invocation(ready))
        .await
        .unwrap();
    let mut prune = event("prune-devices");
    prune["plan_id"] = plan["plan_id"].clone();
    let out = handle(&deps, StepName::PruneDevices, invocation(prune))
        .await
        .unwrap();
    assert_eq!(out["deleted"], plan["candidates"]);

    let placeholder = handle(
        &deps,
        StepName::PruneDevices,
        invocation(event("prune-devices")),
    )
    .await
    .unwrap_err();
    assert_eq!(placeholder.name(), "InvalidInput");
}

#[tokio::test]
async fn bad_events_are_invalid_input_naming_the_field() {
    let w = World::start(sqlite(), 5, 0, Utc::now());
    let deps = w.deps().await;
    let cases = [
        (
            StepName::PlanPrune,
            serde_json::json!({"inactive_days": -1}),
            "inactive_days",
        ),
        (
            StepName::PlanPrune,
            serde_json::json!({"max_fraction": 7}),
            "max_fraction",
        ),
        (
            StepName::PlanPrune,
            serde_json::json!({"max_deletions": "ten"}),
            "max_deletions",
        ),
        (
            StepName::PlanPrune,
            serde_json::json!({"exclude_tags": ["server"]}),
            "exclude_tags",
        ),
        (
            StepName::PlanPrune,
            serde_json::json!({"tailnet": ""}),
            "tailnet",
        ),
        (
            StepName::SyncTailscale,
            serde_json::json!({"tailnet": 5}),
            "tailnet",
        ),
        (
            StepName::SyncTinymdm,
            serde_json::json!({"include_apps": "yes"}),
            "include_apps",
        ),
        (
            StepName::SyncTinymdm,
            serde_json::json!({"surprise": 1}),
            "surprise",
        ),
        (StepName::PruneDevices, serde_json::json!({}), "plan_id"),
        (
            StepName::SyncTailscale,
            serde_json::json!({"run_id": "abc"}),
            "run_id",
        ),
        // Arrays would otherwise be read positionally into the fields.
        (
            StepName::PruneDevices,
            serde_json::json!(["p-1"]),
            "expected a JSON object",
        ),
        (StepName::PlanPrune, serde_json::json!([]), "got an array"),
        (
            StepName::SyncTinymdm,
            serde_json::json!("go"),
            "got a string",
        ),
        (
            StepName::SyncTailscale,
            serde_json::json!(3),
            "got a number",
        ),
    ];
    for (step, payload, field) in cases {
        let err = handle(&deps, step, invocation(payload.clone()))
            .await
            .unwrap_err();
        assert_eq!(err.name(), "InvalidInput", "{payload}: {err}");
        assert!(err.to_string().contains(field), "{payload}: {err}");
        let d: Diagnostic = err.into();
        assert_eq!(d.error_type, "InvalidInput");
    }
}

#[tokio::test]
async fn missing_credentials_are_a_config_error_for_the_step_that_needs_them() {
    let w = World::start(sqlite(), 5, 0, Utc::now());
    let secrets = fleetsync::secrets::EnvSecrets::from_lookup(|_| None);
    let deps = fleetsync::Deps::connect(
        w.store.clone(),
        w.settings.clone(),
        &secrets,
        fleetsync::deps::Needs::all(),
    )
    .await;
    let err = handle(
        &deps,
        StepName::SyncTailscale,
        invocation(serde_json::json!({})),
    )
    .await
    .unwrap_err();
    assert_eq!(err.name(), "ConfigError");
    assert!(
        err.to_string().contains("TAILSCALE_OAUTH_CLIENT_ID"),
        "{err}"
    );
}
