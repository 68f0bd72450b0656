use crate::{http, list, small_fleet, token};
use fleetsync_sim::{TailscaleSim, TailscaleSimConfig, TsKind};
use serde_json::Value;
use std::time::Duration;

fn start() -> (TailscaleSim, fleetsync_sim::Fleet) {
    let fleet = small_fleet();
    let sim =
        TailscaleSim::start(TailscaleSimConfig::default().with_fleet(&fleet)).expect("starts");
    (sim, fleet)
}

#[tokio::test]
async fn token_endpoint_issues_scoped_tokens_to_both_clients() -> anyhow::Result<()> {
    let (sim, _) = start();
    let http = http();
    let (id, secret) = sim.read_client();
    let read: Value = http
        .post(format!("{}/api/v2/oauth/token", sim.base_url()))
        .form(&[("client_id", &id), ("client_secret", &secret)])
        .send()
        .await?
        .json()
        .await?;
    assert!(
        read["access_token"]
            .as_str()
            .unwrap()
            .starts_with("tskey-api-")
    );
    assert_eq!(read["token_type"], "Bearer");
    assert_eq!(read["expires_in"], 3600);
    assert_eq!(read["scope"], "devices:core:read");
    assert!(read.get("tags").is_none());

    let (id, secret) = sim.prune_client();
    let prune: Value = http
        .post(format!("{}/api/v2/oauth/token", sim.base_url()))
        .basic_auth(&id, Some(&secret))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(prune["scope"], "devices:core");
    assert_eq!(prune["tags"], "tag:device-pruner");
    assert_ne!(prune["access_token"], read["access_token"]);
    Ok(())
}

#[tokio::test]
async fn token_endpoint_rejects_wrong_credentials_with_401() -> anyhow::Result<()> {
    let (sim, _) = start();
    let (id, _) = sim.read_client();
    let response = http()
        .post(format!("{}/api/v2/oauth/token", sim.base_url()))
        .form(&[
            ("client_id", id.as_str()),
            ("client_secret", "tskey-client-wrong"),
        ])
        .send()
        .await?;
    assert_eq!(response.status(), 401);
    assert_eq!(
        response.json::<Value>().await?,
        serde_json::json!({"message": "API token invalid"})
    );
    Ok(())
}

#[tokio::test]
async fn token_endpoint_refuses_scopes_the_client_lacks() -> anyhow::Result<()> {
    let (sim, _) = start();
    let (id, secret) = sim.read_client();
    let response = http()
        .post(format!("{}/api/v2/oauth/token", sim.base_url()))
        .form(&[
            ("client_id", &id),
            ("client_secret", &secret),
            ("scope", &"devices:core".to_owned()),
        ])
        .send()
        .await?;
    assert_eq!(response.status(), 403);
    Ok(())
}

#[tokio::test]
async fn api_calls_without_a_valid_token_get_401() -> anyhow::Result<()> {
    let (sim, _) = start();
    let http = http();
    let url = format!("{}/api/v2/tailnet/-/devices", sim.base_url());
    let missing = http.get(&url).send().await?;
    assert_eq!(missing.status(), 401);
    let bogus = http.get(&url).bearer_auth("tskey-api-bogus").send().await?;
    assert_eq!(bogus.status(), 401);
    assert_eq!(bogus.json::<Value>().await?["message"], "API token invalid");
    let (_, secret) = sim.read_client();
    let client_secret_as_bearer = http.get(&url).bearer_auth(secret).send().await?;
    assert_eq!(client_secret_as_bearer.status(), 401);
    Ok(())
}

#[tokio::test]
async fn tokens_stop_working_after_their_lifetime() -> anyhow::Result<()> {
    let fleet = small_fleet();
    let sim = TailscaleSim::start(TailscaleSimConfig {
        token_ttl: Duration::from_millis(300),
        ..TailscaleSimConfig::default().with_fleet(&fleet)
    })?;
    let http = http();
    let t = token(&http, &sim, sim.read_client()).await;
    assert_eq!(list(&http, &sim, &t).await.len(), 40);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let late = http
        .get(format!("{}/api/v2/tailnet/-/devices", sim.base_url()))
        .bearer_auth(&t)
        .send()
        .await?;
    assert_eq!(late.status(), 401);
    Ok(())
}

#[tokio::test]
async fn list_returns_every_device_in_the_default_shape() -> anyhow::Result<()> {
    let (sim, fleet) = start();
    let http = http();
    let t = token(&http, &sim, sim.read_client()).await;
    let devices = list(&http, &sim, &t).await;
    assert_eq!(devices.len(), fleet.tailscale.len());
    for d in &devices {
        for key in [
            "id",
            "nodeId",
            "addresses",
            "hostname",
            "created",
            "expires",
            "isExternal",
        ] {
            assert!(d.get(key).is_some(), "{key} missing in {d}");
        }
        assert!(d["id"].is_string());
        assert!(d.get("enabledRoutes").is_none());
        assert!(d.get("clientConnectivity").is_none());
    }
    // Basic auth with the token as user name works too.
    let basic = http
        .get(format!(
            "{}/api/v2/tailnet/{}/devices",
            sim.base_url(),
            sim.tailnet()
        ))
        .basic_auth(&t, Some(""))
        .query(&[("fields", "all")])
        .send()
        .await?;
    assert_eq!(basic.status(), 200);
    let all: Value = basic.json().await?;
    let first = &all["devices"][0];
    for key in [
        "enabledRoutes",
        "advertisedRoutes",
        "clientConnectivity",
        "postureIdentity",
        "sshEnabled",
    ] {
        assert!(first.get(key).is_some(), "{key} missing with fields=all");
    }
    Ok(())
}

#[tokio::test]
async fn last_seen_is_omitted_for_connected_and_never_seen_devices() -> anyhow::Result<()> {
    let (sim, fleet) = start();
    let http = http();
    let t = token(&http, &sim, sim.read_client()).await;
    for d in list(&http, &sim, &t).await {
        let node_id = d["nodeId"].as_str().unwrap();
        let connected = d["connectedToControl"].as_bool().unwrap();
        let never = fleet.kind(node_id) == Some(TsKind::NeverSeen);
        assert_eq!(d.get("lastSeen").is_none(), connected || never, "{d}");
        if let Some(seen) = d.get("lastSeen") {
            assert!(seen.as_str().unwrap().ends_with('Z'));
        }
        if d["keyExpiryDisabled"] == true && fleet.kind(node_id) != Some(TsKind::Inactive) {
            assert_eq!(d["expires"], "0001-01-01T00:00:00Z");
        }
    }
    Ok(())
}

#[tokio::test]
async fn list_answers_404_for_a_foreign_tailnet() -> anyhow::Result<()> {
    let (sim, _) = start();
    let http = http();
    let t = token(&http, &sim, sim.read_client()).await;
    let response = http
        .get(format!(
            "{}/api/v2/tailnet/other.example/devices",
            sim.base_url()
        ))
        .bearer_auth(&t)
        .send()
        .await?;
    assert_eq!(response.status(), 404);
    assert_eq!(
        response.json::<Value>().await?["message"],
        "tailnet not found"
    );
    Ok(())
}

#[tokio::test]
async fn external_devices_can_be_hidden_from_oauth_tokens() -> anyhow::Result<()> {
    let (sim, fleet) = start();
    let http = http();
    let t = token(&http, &sim, sim.read_client()).await;
    let shared = fleet.tailscale_of(TsKind::Shared).len();
    assert!(shared > 0);
    assert_eq!(list(&http, &sim, &t).await.len(), 40);
    sim.set_list_external_to_oauth(false);
    let devices = list(&http, &sim, &t).await;
    assert_eq!(devices.len(), 40 - shared);
    assert!(devices.iter().all(|d| d["isExternal"] == false));
    Ok(())
}

#[tokio::test]
async fn get_device_accepts_node_id_or_numeric_id_and_404s_unknown() -> anyhow::Result<()> {
    let (sim, fleet) = start();
    let http = http();
    let t = token(&http, &sim, sim.read_client()).await;
    let device = &fleet.tailscale[3];
    for id in [&device.node_id, &device.id] {
        let got: Value = http
            .get(format!("{}/api/v2/device/{id}", sim.base_url()))
            .bearer_auth(&t)
            .send()
            .await?
            .json()
            .await?;
        assert_eq!(got["nodeId"], device.node_id.as_str());
        assert!(got.get("devices").is_none());
    }
    let missing = http
        .get(format!("{}/api/v2/device/nNOSUCHDEVCNTRL", sim.base_url()))
        .bearer_auth(&t)
        .send()
        .await?;
    assert_eq!(missing.status(), 404);
    assert_eq!(missing.json::<Value>().await?["message"], "not found");
    Ok(())
}

#[tokio::test]
async fn read_client_gets_403_on_delete_and_the_device_stays() -> anyhow::Result<()> {
    let (sim, fleet) = start();
    let http = http();
    let t = token(&http, &sim, sim.read_client()).await;
    let target = fleet.tailscale_of(TsKind::Inactive)[0].node_id.clone();
    let response = http
        .delete(format!("{}/api/v2/device/{target}", sim.base_url()))
        .bearer_auth(&t)
        .send()
        .await?;
    assert_eq!(response.status(), 403);
    assert_eq!(
        response.json::<Value>().await?["message"],
        "calling actor does not have enough permissions to perform this function"
    );
    assert!(sim.device(&target).is_some());
    Ok(())
}

#[tokio::test]
async fn prune_client_deletes_with_an_empty_200_then_gets_404() -> anyhow::Result<()> {
    let (sim, fleet) = start();
    let http = http();
    let t = token(&http, &sim, sim.prune_client()).await;
    let target = fleet.tailscale_of(TsKind::Inactive)[0].clone();
    let url = format!("{}/api/v2/device/{}", sim.base_url(), target.id);
    let response = http.delete(&url).bearer_auth(&t).send().await?;
    assert_eq!(response.status(), 200);
    assert!(response.bytes().await?.is_empty());
    let devices = list(&http, &sim, &t).await;
    assert_eq!(devices.len(), 39);
    assert!(
        devices
            .iter()
            .all(|d| d["nodeId"] != target.node_id.as_str())
    );
    assert_eq!(
        http.delete(&url).bearer_auth(&t).send().await?.status(),
        404
    );
    assert_eq!(http.get(&url).bearer_auth(&t).send().await?.status(), 404);
    Ok(())
}

#[tokio::test]
async fn deleting_an_external_device_gets_501() -> anyhow::Result<()> {
    let (sim, fleet) = start();
    let http = http();
    let t = token(&http, &sim, sim.prune_client()).await;
    let shared = &fleet.tailscale_of(TsKind::Shared)[0].node_id;
    let response = http
        .delete(format!("{}/api/v2/device/{shared}", sim.base_url()))
        .bearer_auth(&t)
        .send()
        .await?;
    assert_eq!(response.status(), 501);
    assert_eq!(
        response.json::<Value>().await?,
        serde_json::json!({"message": "cannot delete devices outside of your tailnet"})
    );
    assert_eq!(sim.device_count(), 40);
    Ok(())
}

#[tokio::test]
async fn request_log_names_the_oauth_client_of_each_call() -> anyhow::Result<()> {
    let (sim, _) = start();
    let http = http();
    let read = token(&http, &sim, sim.read_client()).await;
    let prune = token(&http, &sim, sim.prune_client()).await;
    list(&http, &sim, &read).await;
    list(&http, &sim, &prune).await;
    http.get(format!("{}/api/v2/tailnet/-/devices", sim.base_url()))
        .send()
        .await?;
    let log = sim.requests();
    let summary: Vec<(&str, &str, Option<&str>, u16)> = log
        .iter()
        .map(|r| {
            (
                r.method.as_str(),
                r.path.as_str(),
                r.principal.as_deref(),
                r.status,
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("POST", "/api/v2/oauth/token", Some("sim-read-client"), 200),
            ("POST", "/api/v2/oauth/token", Some("sim-prune-client"), 200),
            (
                "GET",
                "/api/v2/tailnet/-/devices",
                Some("sim-read-client"),
                200
            ),
            (
                "GET",
                "/api/v2/tailnet/-/devices",
                Some("sim-prune-client"),
                200
            ),
            ("GET", "/api/v2/tailnet/-/devices", None, 401),
        ]
    );
    sim.clear_requests();
    assert!(sim.requests().is_empty());
    Ok(())
}

#[tokio::test]
async fn connecting_a_device_hides_its_last_seen() -> anyhow::Result<()> {
    let (sim, fleet) = start();
    let http = http();
    let t = token(&http, &sim, sim.read_client()).await;
    let laptop = fleet
        .tailscale_of(TsKind::Inactive)
        .into_iter()
        .next()
        .unwrap()
        .node_id
        .clone();
    assert!(sim.set_connected(&laptop, true));
    let url = format!("{}/api/v2/device/{laptop}", sim.base_url());
    let online: Value = http.get(&url).bearer_auth(&t).send().await?.json().await?;
    assert_eq!(online["connectedToControl"], true);
    assert!(online.get("lastSeen").is_none());
    assert!(sim.set_connected(&laptop, false));
    let offline: Value = http.get(&url).bearer_auth(&t).send().await?.json().await?;
    let seen = chrono::DateTime::parse_from_rfc3339(offline["lastSeen"].as_str().unwrap())?;
    assert!((chrono::Utc::now() - seen.to_utc()).num_seconds() < 5);
    Ok(())
}
