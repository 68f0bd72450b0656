//! Secrets Manager on the emulator: the Lambda path from secret ARNs to a
//! working step, caching, and the errors for missing or malformed secrets.

use crate::support::{aws_config, dynamo_client, unique_name};
use crate::world::{World, sqlite};
use chrono::Utc;
use fleetsync::deps::{LambdaConfig, StepName};
use fleetsync::secrets::{SecretKind, SecretSource, SecretsManagerSource};
use fleetsync::store::DynamoStore;
use fleetsync::{Deps, lambda::handle};
use lambda_runtime::{Context, LambdaEvent};
use serde_json::json;

async fn secret(client: &aws_sdk_secretsmanager::Client, value: &str) -> String {
    let out = client
        .create_secret()
        .name(unique_name("fleetsync-secret"))
        .secret_string(value)
        .send()
        .await
        .expect("create secret on the emulator");
    out.arn.unwrap()
}

#[tokio::test]
async fn lambda_deps_read_secrets_and_run_every_step() {
    let w = World::start(sqlite(), 40, 25, Utc::now());
    let aws = aws_config().await;
    let sm = aws_sdk_secretsmanager::Client::new(&aws);
    let v = &w.vars;
    let read = secret(&sm, &json!({"client_id": v["TAILSCALE_OAUTH_CLIENT_ID"], "client_secret": v["TAILSCALE_OAUTH_CLIENT_SECRET"], "tailnet": "-"}).to_string()).await;
    let prune = secret(&sm, &json!({"client_id": v["TAILSCALE_PRUNE_OAUTH_CLIENT_ID"], "client_secret": v["TAILSCALE_PRUNE_OAUTH_CLIENT_SECRET"]}).to_string()).await;
    let mdm = secret(&sm, &json!({"account_id": v["TINYMDM_ACCOUNT_ID"], "apikey_public": v["TINYMDM_APIKEY_PUBLIC"], "apikey_secret": v["TINYMDM_APIKEY_SECRET"]}).to_string()).await;
    let table = unique_name("fleetsync-lambda");
    DynamoStore::create_table(&dynamo_client().await, &table)
        .await
        .unwrap();

    let config = |step| LambdaConfig {
        step,
        table_name: table.clone(),
        tailscale_secret_arn: Some(read.clone()),
        tailscale_prune_secret_arn: Some(prune.clone()),
        tinymdm_secret_arn: Some(mdm.clone()),
        settings: w.settings.clone(),
    };
    let invoke = |deps: Deps, step, payload| async move {
        handle(&deps, step, LambdaEvent::new(payload, Context::default())).await
    };
    let deps = Deps::for_lambda(&aws, &config(StepName::SyncTailscale)).await;
    let out = invoke(deps, StepName::SyncTailscale, json!({}))
        .await
        .unwrap();
    assert_eq!(out["devices"], 40);
    let deps = Deps::for_lambda(&aws, &config(StepName::SyncTinymdm)).await;
    let out = invoke(deps, StepName::SyncTinymdm, json!({}))
        .await
        .unwrap();
    assert_eq!(out["devices"], 25);
    let deps = Deps::for_lambda(&aws, &config(StepName::PlanPrune)).await;
    let plan = invoke(
        deps.clone(),
        StepName::PlanPrune,
        json!({"dry_run": false, "max_fraction": 1.0}),
    )
    .await
    .unwrap();
    // plan-prune has no API client at all.
    assert_eq!(
        deps.tailscale().await.err().map(|e| e.name()),
        Some("ConfigError")
    );
    let deps = Deps::for_lambda(&aws, &config(StepName::PruneDevices)).await;
    assert!(
        deps.tailscale().await.is_err(),
        "prune-devices gets no read client"
    );
    let out = invoke(
        deps,
        StepName::PruneDevices,
        json!({"plan_id": plan["plan_id"]}),
    )
    .await
    .unwrap();
    assert_eq!(out["deleted"], plan["candidates"]);
    let (prune_id, _) = w.ts.prune_client();
    assert!(
        w.ts.requests()
            .iter()
            .filter(|r| r.method == "DELETE")
            .all(|r| r.principal.as_deref() == Some(prune_id.as_str()))
    );
}

#[tokio::test]
async fn secrets_are_read_once_per_container() {
    let aws = aws_config().await;
    let sm = aws_sdk_secretsmanager::Client::new(&aws);
    let arn = secret(
        &sm,
        r#"{"client_id":"id","client_secret":"tskey-client-cached"}"#,
    )
    .await;
    let source = SecretsManagerSource::new(sm.clone(), Some(arn.clone()), None, None);
    let first = source.tailscale(SecretKind::TailscaleRead).await.unwrap();
    sm.delete_secret()
        .secret_id(&arn)
        .force_delete_without_recovery(true)
        .send()
        .await
        .unwrap();
    let again = source.tailscale(SecretKind::TailscaleRead).await.unwrap();
    assert_eq!(first, again, "the cached value is used");
}

#[tokio::test]
async fn missing_or_malformed_secrets_are_config_errors_without_values() {
    let aws = aws_config().await;
    let sm = aws_sdk_secretsmanager::Client::new(&aws);
    let missing = SecretsManagerSource::new(sm.clone(), Some("fleetsync/nope".into()), None, None);
    let e = missing
        .tailscale(SecretKind::TailscaleRead)
        .await
        .unwrap_err();
    assert_eq!(e.to_string(), "secret fleetsync/nope was not found");

    let not_json = secret(&sm, "hunter2-not-json").await;
    let e = SecretsManagerSource::new(sm.clone(), None, None, Some(not_json.clone()))
        .tinymdm()
        .await
        .unwrap_err();
    assert!(e.to_string().contains("is not a JSON object"), "{e}");
    assert!(!e.to_string().contains("hunter2"));

    let no_key = secret(&sm, r#"{"account_id":"a","apikey_public":"PUBLIC-VALUE"}"#).await;
    let e = SecretsManagerSource::new(sm.clone(), None, None, Some(no_key))
        .tinymdm()
        .await
        .unwrap_err();
    assert!(e.to_string().contains("\"apikey_secret\""), "{e}");
    assert!(!e.to_string().contains("PUBLIC-VALUE"));

    let wrong_type = secret(&sm, r#"{"client_id":"id","client_secret":987654}"#).await;
    let e = SecretsManagerSource::new(sm.clone(), Some(wrong_type), None, None)
        .tailscale(SecretKind::TailscaleRead)
        .await
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("\"client_secret\" must be a non-empty string"),
        "{e}"
    );
    assert!(!e.to_string().contains("987654"));

    // The step that needs the secret reports it as ConfigError; Lambda init does not crash.
    let config = LambdaConfig {
        step: StepName::SyncTinymdm,
        table_name: "unused".into(),
        tailscale_secret_arn: None,
        tailscale_prune_secret_arn: None,
        tinymdm_secret_arn: Some(not_json.clone()),
        settings: Default::default(),
    };
    let deps = Deps::for_lambda(&aws, &config).await;
    let e = handle(
        &deps,
        StepName::SyncTinymdm,
        LambdaEvent::new(json!({}), Context::default()),
    )
    .await
    .unwrap_err();
    assert_eq!(e.name(), "ConfigError");
    assert!(e.to_string().contains(&not_json), "{e}");
}

#[tokio::test]
async fn unreachable_secrets_manager_is_a_config_error_after_retries() {
    // A loopback port with nothing listening: the SDK retries, then gives up.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let aws = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(format!("http://127.0.0.1:{port}"))
        .credentials_provider(aws_sdk_secretsmanager::config::Credentials::new(
            "test", "test", None, None, "static",
        ))
        .load()
        .await;
    let source = SecretsManagerSource::new(
        aws_sdk_secretsmanager::Client::new(&aws),
        None,
        None,
        Some("fleetsync/mdm".into()),
    );
    let e = source.tinymdm().await.unwrap_err();
    assert_eq!(
        e.to_string(),
        "secret fleetsync/mdm could not be read: could not reach Secrets Manager"
    );
    assert_eq!(fleetsync::StepError::from(e).name(), "ConfigError");
}

#[tokio::test]
async fn a_secret_filled_in_after_cold_start_is_picked_up_by_the_warm_container() {
    let w = World::start(sqlite(), 10, 0, Utc::now());
    let aws = aws_config().await;
    let sm = aws_sdk_secretsmanager::Client::new(&aws);
    // As the stack creates it: a placeholder, not yet the credentials.
    let arn = secret(&sm, "{}").await;
    let table = unique_name("fleetsync-warm");
    DynamoStore::create_table(&dynamo_client().await, &table)
        .await
        .unwrap();
    let config = LambdaConfig {
        step: StepName::SyncTailscale,
        table_name: table,
        tailscale_secret_arn: Some(arn.clone()),
        tailscale_prune_secret_arn: None,
        tinymdm_secret_arn: None,
        settings: w.settings.clone(),
    };
    let deps = Deps::for_lambda(&aws, &config).await;
    let event = || LambdaEvent::new(json!({}), Context::default());
    let e = handle(&deps, StepName::SyncTailscale, event())
        .await
        .unwrap_err();
    assert_eq!(e.name(), "ConfigError");
    assert!(e.to_string().contains("client_id"), "{e}");

    let v = &w.vars;
    let value = json!({"client_id": v["TAILSCALE_OAUTH_CLIENT_ID"], "client_secret": v["TAILSCALE_OAUTH_CLIENT_SECRET"]});
    sm.put_secret_value()
        .secret_id(&arn)
        .secret_string(value.to_string())
        .send()
        .await
        .unwrap();
    let out = handle(&deps, StepName::SyncTailscale, event())
        .await
        .unwrap();
    assert_eq!(out["devices"], 10);
}
