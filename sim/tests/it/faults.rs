use crate::{http, list, mdm_get, small_fleet, token};
use fleetsync_sim::{Fault, Route, TailscaleSim, TailscaleSimConfig, TinymdmSim, TinymdmSimConfig};
use reqwest::Client;
use serde_json::Value;
use std::time::Duration;

fn tailscale() -> TailscaleSim {
    TailscaleSim::start(TailscaleSimConfig::default().with_fleet(&small_fleet())).expect("starts")
}

fn tinymdm() -> TinymdmSim {
    TinymdmSim::start(
        TinymdmSimConfig::default()
            .with_fleet(&small_fleet())
            .with_rate_limit(0),
    )
    .expect("starts")
}

async fn list_raw(
    http: &Client,
    sim: &TailscaleSim,
    token: &str,
) -> reqwest::Result<reqwest::Response> {
    http.get(format!("{}/api/v2/tailnet/-/devices", sim.base_url()))
        .bearer_auth(token)
        .send()
        .await
}

#[tokio::test]
async fn status_fault_answers_n_times_with_retry_after_then_recovers() -> anyhow::Result<()> {
    let sim = tailscale();
    let http = http();
    let t = token(&http, &sim, sim.read_client()).await;
    sim.inject(Route::ListDevices, Fault::status_retry_after(503, "7"), 2);
    for _ in 0..2 {
        let response = list_raw(&http, &sim, &t).await?;
        assert_eq!(response.status(), 503);
        assert_eq!(response.headers()["retry-after"], "7");
        assert!(response.json::<Value>().await?["message"].is_string());
    }
    assert_eq!(list_raw(&http, &sim, &t).await?.status(), 200);
    assert!(sim.pending_faults().is_empty());
    let statuses: Vec<u16> = sim.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [200, 503, 503, 200]);
    Ok(())
}

#[tokio::test]
async fn status_fault_can_carry_a_custom_body() -> anyhow::Result<()> {
    let sim = tinymdm();
    let http = http();
    sim.inject(
        Route::Any,
        Fault::Status {
            status: 500,
            retry_after: None,
            body: Some("upstream exploded".into()),
        },
        1,
    );
    let response = mdm_get(&http, &sim, "/api/v1/groups").send().await?;
    assert_eq!(response.status(), 500);
    assert_eq!(response.text().await?, "upstream exploded");
    Ok(())
}

#[tokio::test]
async fn delay_fault_outlasts_a_client_timeout() -> anyhow::Result<()> {
    let sim = tinymdm();
    let impatient = Client::builder()
        .timeout(Duration::from_millis(300))
        .build()?;
    sim.inject(
        Route::ListDevices,
        Fault::delay(Duration::from_millis(1500)),
        1,
    );
    let err = mdm_get(&impatient, &sim, "/api/v1/devices")
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err}");
    let ok = mdm_get(&impatient, &sim, "/api/v1/devices").send().await?;
    assert_eq!(ok.status(), 200);
    Ok(())
}

#[tokio::test]
async fn reset_fault_drops_the_connection_without_a_complete_response() -> anyhow::Result<()> {
    let sim = tailscale();
    let http = http();
    let t = token(&http, &sim, sim.read_client()).await;
    sim.inject(Route::ListDevices, Fault::Reset, 1);
    let outcome = match list_raw(&http, &sim, &t).await {
        Err(e) => Err(e),
        Ok(response) => response.bytes().await.map(|_| ()),
    };
    assert!(outcome.is_err(), "expected a transport error");
    assert_eq!(list(&http, &sim, &t).await.len(), 40);
    assert_eq!(sim.requests()[1].status, 0);
    Ok(())
}

#[tokio::test]
async fn truncated_and_non_json_faults_send_200_with_unparseable_bodies() -> anyhow::Result<()> {
    let sim = tinymdm();
    let http = http();
    sim.inject(Route::ListDevices, Fault::Truncated, 1);
    sim.inject(Route::ListDevices, Fault::NonJson, 1);
    let truncated = mdm_get(&http, &sim, "/api/v1/devices").send().await?;
    assert_eq!(truncated.status(), 200);
    let text = truncated.text().await?;
    assert!(text.starts_with("{\"count\":45"));
    assert!(serde_json::from_str::<Value>(&text).is_err());
    let html = mdm_get(&http, &sim, "/api/v1/devices").send().await?;
    assert_eq!(html.status(), 200);
    assert!(
        html.headers()["content-type"]
            .to_str()?
            .starts_with("text/html")
    );
    assert!(serde_json::from_str::<Value>(&html.text().await?).is_err());
    Ok(())
}

#[tokio::test]
async fn corrupt_device_fault_breaks_one_tailscale_device_in_the_next_list() -> anyhow::Result<()> {
    let sim = tailscale();
    let http = http();
    let t = token(&http, &sim, sim.read_client()).await;
    sim.inject(Route::Any, Fault::CorruptDevice, 1);
    let some_id = sim.devices()[0].node_id.clone();
    let single = http
        .get(format!("{}/api/v2/device/{some_id}", sim.base_url()))
        .bearer_auth(&t)
        .send()
        .await?;
    assert_eq!(single.status(), 200, "list-only fault must wait for a list");
    let devices = list(&http, &sim, &t).await;
    let broken: Vec<&Value> = devices
        .iter()
        .filter(|d| d.get("nodeId").is_none())
        .collect();
    assert_eq!(broken.len(), 1);
    assert!(broken[0].get("id").is_none());
    assert!(broken[0]["addresses"].is_string());
    assert!(
        list(&http, &sim, &t)
            .await
            .iter()
            .all(|d| d["nodeId"].is_string())
    );
    Ok(())
}

#[tokio::test]
async fn corrupt_device_fault_breaks_one_tinymdm_device() -> anyhow::Result<()> {
    let sim = tinymdm();
    let http = http();
    sim.inject(Route::ListDevices, Fault::CorruptDevice, 1);
    let page: Value = mdm_get(&http, &sim, "/api/v1/devices?per_page=10")
        .send()
        .await?
        .json()
        .await?;
    let results = page["results"].as_array().unwrap();
    assert_eq!(results.len(), 10);
    assert_eq!(results.iter().filter(|d| d.get("id").is_none()).count(), 1);
    assert!(results.iter().any(|d| d["battery_level"] == "high"));
    Ok(())
}

#[tokio::test]
async fn repeat_device_fault_repeats_the_previous_page_last_device() -> anyhow::Result<()> {
    let sim = tinymdm();
    let http = http();
    let page1: Value = mdm_get(&http, &sim, "/api/v1/devices?per_page=20")
        .send()
        .await?
        .json()
        .await?;
    sim.inject(Route::ListDevices, Fault::RepeatDevice, 1);
    let page2: Value = mdm_get(&http, &sim, "/api/v1/devices?per_page=20&page=2")
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(page2["results"][0]["id"], page1["results"][19]["id"]);
    assert_eq!(page2["results"].as_array().unwrap().len(), 21);
    assert_eq!(page2["count"], 45);
    Ok(())
}

#[tokio::test]
async fn empty_page_fault_returns_no_results_before_count_is_reached() -> anyhow::Result<()> {
    let sim = tinymdm();
    let http = http();
    sim.inject(Route::ListDevices, Fault::EmptyPage, 1);
    let page: Value = mdm_get(&http, &sim, "/api/v1/devices?per_page=20&page=2")
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(page["results"], serde_json::json!([]));
    assert_eq!(page["count"], 45);
    Ok(())
}

#[tokio::test]
async fn expire_tokens_fault_gives_one_401_then_new_tokens_work() -> anyhow::Result<()> {
    let sim = tailscale();
    let http = http();
    let old = token(&http, &sim, sim.read_client()).await;
    sim.inject(Route::Any, Fault::ExpireTokens, 1);
    let expired = list_raw(&http, &sim, &old).await?;
    assert_eq!(expired.status(), 401);
    assert_eq!(
        expired.json::<Value>().await?["message"],
        "API token invalid"
    );
    assert_eq!(list_raw(&http, &sim, &old).await?.status(), 401);
    let fresh = token(&http, &sim, sim.read_client()).await;
    assert_eq!(list(&http, &sim, &fresh).await.len(), 40);
    Ok(())
}

#[tokio::test]
async fn token_endpoint_faults_hit_only_token_requests() -> anyhow::Result<()> {
    let sim = tailscale();
    let http = http();
    sim.inject(Route::Token, Fault::status(500), 1);
    let (id, secret) = sim.read_client();
    let failed = http
        .post(format!("{}/api/v2/oauth/token", sim.base_url()))
        .form(&[("client_id", &id), ("client_secret", &secret)])
        .send()
        .await?;
    assert_eq!(failed.status(), 500);
    let t = token(&http, &sim, sim.read_client()).await;
    assert_eq!(list(&http, &sim, &t).await.len(), 40);
    Ok(())
}
