use crate::{http, list, mdm_get, small_fleet, token};
use fleetsync_sim::fleet::generate;
use fleetsync_sim::{
    FleetSpec, RecordedRequest, TailscaleDevice, TailscaleSim, TailscaleSimConfig, TinymdmSim,
    TinymdmSimConfig,
};
use serde_json::{Value, json};
use std::time::Instant;

#[tokio::test]
async fn admin_routes_drive_the_tailscale_sim_over_http() -> anyhow::Result<()> {
    let fleet = small_fleet();
    let sim = TailscaleSim::start(TailscaleSimConfig::default().with_fleet(&fleet))?;
    let http = http();
    let base = sim.base_url();
    let t = token(&http, &sim, sim.read_client()).await;

    let mut device: TailscaleDevice = fleet.tailscale[0].clone();
    device.node_id = "nADDEDVIAHTTPCNTRL".into();
    device.id = "9999999999999999999".into();
    device.hostname = "added".into();
    let added = http
        .post(format!("{base}/_sim/devices"))
        .json(&device)
        .send()
        .await?;
    assert_eq!(added.status(), 201);
    let count: Value = http
        .get(format!("{base}/_sim/count"))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(count, json!({"devices": 41}));
    let got: Value = http
        .get(format!("{base}/_sim/devices/nADDEDVIAHTTPCNTRL"))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(got["hostname"], "added");

    let presence = http
        .post(format!("{base}/_sim/devices/nADDEDVIAHTTPCNTRL/presence"))
        .json(&json!({"connected": false, "last_seen": "2026-01-02T03:04:05Z"}))
        .send()
        .await?;
    assert_eq!(presence.status(), 204);
    let api: Value = http
        .get(format!("{base}/api/v2/device/nADDEDVIAHTTPCNTRL"))
        .bearer_auth(&t)
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(api["lastSeen"], "2026-01-02T03:04:05Z");

    let injected = http
        .post(format!("{base}/_sim/faults"))
        .json(
            &json!({"route": "get_device", "fault": {"kind": "status", "status": 504}, "times": 1}),
        )
        .send()
        .await?;
    assert_eq!(injected.status(), 204);
    let pending: Value = http
        .get(format!("{base}/_sim/faults"))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(pending[0]["remaining"], 1);
    let faulted = http
        .get(format!("{base}/api/v2/device/nADDEDVIAHTTPCNTRL"))
        .bearer_auth(&t)
        .send()
        .await?;
    assert_eq!(faulted.status(), 504);

    let churned: Value = http
        .post(format!("{base}/_sim/churn"))
        .json(&json!({"fraction": 0.5, "seed": 1}))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(churned["changed"], 21);

    assert_eq!(
        http.post(format!("{base}/_sim/expire-tokens"))
            .send()
            .await?
            .status(),
        204
    );
    let expired = http
        .get(format!("{base}/api/v2/tailnet/-/devices"))
        .bearer_auth(&t)
        .send()
        .await?;
    assert_eq!(expired.status(), 401);

    let log: Vec<RecordedRequest> = http
        .get(format!("{base}/_sim/requests"))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(log, sim.requests());
    assert!(log.iter().all(|r| !r.path.starts_with("/_sim")));
    assert_eq!(log.len(), 4);
    http.delete(format!("{base}/_sim/requests")).send().await?;
    assert!(sim.requests().is_empty());

    assert_eq!(
        http.delete(format!("{base}/_sim/devices/nADDEDVIAHTTPCNTRL"))
            .send()
            .await?
            .status(),
        204
    );
    assert_eq!(sim.device_count(), 40);
    Ok(())
}

#[tokio::test]
async fn admin_routes_drive_the_tinymdm_sim_over_http() -> anyhow::Result<()> {
    let fleet = small_fleet();
    let sim = TinymdmSim::start(TinymdmSimConfig::default().with_fleet(&fleet))?;
    let http = http();
    let base = sim.base_url();
    let id = fleet.tinymdm[0].id.clone();
    let synced = http
        .post(format!("{base}/_sim/devices/{id}/last_sync"))
        .json(&json!({"last_sync_timestamp": 1_700_000_000}))
        .send()
        .await?;
    assert_eq!(synced.status(), 204);
    assert_eq!(sim.device(&id).unwrap().last_sync_timestamp, 1_700_000_000);

    let limited = http
        .post(format!("{base}/_sim/rate-limit"))
        .json(&json!({"per_second": 0}))
        .send()
        .await?;
    assert_eq!(limited.status(), 204);
    for _ in 0..12 {
        assert_eq!(
            mdm_get(&http, &sim, "/api/v1/groups")
                .send()
                .await?
                .status(),
            200
        );
    }

    let before = sim.devices();
    assert_eq!(sim.churn(0.2, 5), 9);
    let changed = sim
        .devices()
        .iter()
        .zip(&before)
        .filter(|(a, b)| a != b)
        .count();
    assert_eq!(changed, 9);

    let mut extra = fleet.tinymdm[1].clone();
    extra.id = "00000000000000ff".into();
    let added = http
        .post(format!("{base}/_sim/devices"))
        .json(&extra)
        .send()
        .await?;
    assert_eq!(added.status(), 201);
    let all: Value = http
        .get(format!("{base}/_sim/devices"))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(all.as_array().unwrap().len(), 46);
    assert!(sim.remove_device("00000000000000ff"));
    assert_eq!(sim.device_count(), 45);
    Ok(())
}

#[tokio::test]
async fn shutdown_closes_the_port() -> anyhow::Result<()> {
    let sim = TinymdmSim::start(TinymdmSimConfig::default())?;
    let base = sim.base_url();
    let http = http();
    assert_eq!(
        mdm_get(&http, &sim, "/api/v1/groups")
            .send()
            .await?
            .status(),
        200
    );
    sim.shutdown();
    let fresh = reqwest::Client::new();
    assert!(
        fresh
            .get(format!("{base}/api/v1/groups"))
            .send()
            .await
            .is_err()
    );
    Ok(())
}

#[tokio::test]
async fn fifty_thousand_tailscale_devices_are_listed_in_one_response() -> anyhow::Result<()> {
    let fleet = generate(FleetSpec {
        tailscale_devices: 50_000,
        tinymdm_devices: 0,
        ..FleetSpec::default()
    });
    let sim = TailscaleSim::start(TailscaleSimConfig::default().with_fleet(&fleet))?;
    let http = http();
    let t = token(&http, &sim, sim.prune_client()).await;
    let started = Instant::now();
    let devices = list(&http, &sim, &t).await;
    assert_eq!(devices.len(), 50_000);
    eprintln!("listed 50k devices in {:?}", started.elapsed());
    let churned = sim.churn(0.01, 3);
    assert_eq!(churned, 500);
    Ok(())
}
