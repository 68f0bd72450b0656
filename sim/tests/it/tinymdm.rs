use crate::{http, mdm_get, small_fleet};
use fleetsync_sim::{TinymdmSim, TinymdmSimConfig};
use serde_json::{Value, json};
use std::collections::HashSet;
use std::time::Duration;

fn start(rate_limit: u32) -> (TinymdmSim, fleetsync_sim::Fleet) {
    let fleet = small_fleet();
    let config = TinymdmSimConfig::default()
        .with_fleet(&fleet)
        .with_rate_limit(rate_limit);
    (TinymdmSim::start(config).expect("starts"), fleet)
}

#[tokio::test]
async fn requests_without_all_three_credentials_get_401() -> anyhow::Result<()> {
    let (sim, _) = start(0);
    let http = http();
    let (public, secret) = sim.api_keys();
    let url = format!("{}/api/v1/devices", sim.base_url());
    let cases = [
        http.get(&url),
        http.get(&url)
            .header("X-Tinymdm-Manager-Apikey-Public", &public)
            .header("X-Tinymdm-Manager-Apikey-Secret", &secret),
        http.get(&url)
            .header("X-Tinymdm-Manager-Apikey-Public", &public)
            .header("X-Tinymdm-Manager-Apikey-Secret", "wrong")
            .header("X-Account-Id", sim.account_id()),
        http.get(&url)
            .header("X-Tinymdm-Manager-Apikey-Public", &public)
            .header("X-Tinymdm-Manager-Apikey-Secret", &secret)
            .header("X-Account-Id", "another-account"),
    ];
    for request in cases {
        let response = request.send().await?;
        assert_eq!(response.status(), 401);
        assert_eq!(
            response.json::<Value>().await?,
            json!({"error": {"message": "Invalid API credentials"}})
        );
    }
    let ok = mdm_get(&http, &sim, "/api/v1/devices").send().await?;
    assert_eq!(ok.status(), 200);
    let principals: Vec<Option<String>> = sim.requests().into_iter().map(|r| r.principal).collect();
    assert_eq!(principals[..4], [None, None, None, None]);
    assert_eq!(principals[4].as_deref(), Some("sim-public-key"));
    Ok(())
}

#[tokio::test]
async fn pages_link_to_each_other_with_absolute_urls_until_every_device_is_seen()
-> anyhow::Result<()> {
    let (sim, fleet) = start(0);
    let http = http();
    let first: Value = mdm_get(&http, &sim, "/api/v1/devices?per_page=20")
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(first["count"], 45);
    assert_eq!(first["previous"], Value::Null);
    assert_eq!(
        first["next"],
        format!("{}/api/v1/devices?page=2&per_page=20", sim.base_url())
    );
    let mut seen = Vec::new();
    let mut page = first;
    let mut pages = 1;
    loop {
        for d in page["results"].as_array().unwrap() {
            seen.push(d["id"].as_str().unwrap().to_owned());
        }
        let Some(next) = page["next"].as_str() else {
            break;
        };
        let next = next
            .strip_prefix(&sim.base_url())
            .expect("same host")
            .to_owned();
        page = mdm_get(&http, &sim, &next).send().await?.json().await?;
        pages += 1;
        assert_eq!(page["count"], 45);
        assert!(
            page["previous"]
                .as_str()
                .unwrap()
                .contains(&format!("page={}", pages - 1))
        );
    }
    assert_eq!(pages, 3);
    let want: Vec<String> = fleet.tinymdm.iter().map(|d| d.id.clone()).collect();
    assert_eq!(seen, want);
    Ok(())
}

#[tokio::test]
async fn per_page_is_capped_and_defaults_to_twenty() -> anyhow::Result<()> {
    let fleet = small_fleet();
    let sim = TinymdmSim::start(TinymdmSimConfig {
        max_per_page: 10,
        rate_limit: 0,
        ..TinymdmSimConfig::default().with_fleet(&fleet)
    })?;
    let http = http();
    let capped: Value = mdm_get(&http, &sim, "/api/v1/devices?per_page=1000&page=1")
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(capped["results"].as_array().unwrap().len(), 10);
    assert!(
        capped["next"]
            .as_str()
            .unwrap()
            .ends_with("page=2&per_page=10")
    );

    let (sim, _) = start(0);
    let default: Value = mdm_get(&http, &sim, "/api/v1/devices")
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(default["results"].as_array().unwrap().len(), 20);
    let beyond: Value = mdm_get(&http, &sim, "/api/v1/devices?page=9")
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(beyond["results"], json!([]));
    assert_eq!(beyond["next"], Value::Null);
    let bad = mdm_get(&http, &sim, "/api/v1/devices?per_page=zero")
        .send()
        .await?;
    assert_eq!(bad.status(), 400);
    Ok(())
}

#[tokio::test]
async fn device_apps_groups_and_enterprise_info_are_served() -> anyhow::Result<()> {
    let (sim, fleet) = start(0);
    let http = http();
    let device = &fleet.tinymdm[0];
    let got: Value = mdm_get(&http, &sim, &format!("/api/v1/devices/{}", device.id))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(got, serde_json::to_value(device)?);
    let missing = mdm_get(&http, &sim, "/api/v1/devices/0000000000000000")
        .send()
        .await?;
    assert_eq!(missing.status(), 404);
    assert_eq!(
        missing.json::<Value>().await?,
        json!({"error": "Device not found"})
    );

    let (with_apps, apps) = fleet
        .tinymdm_apps
        .iter()
        .next()
        .expect("some device has apps");
    let listed: Value = mdm_get(&http, &sim, &format!("/api/v1/devices/{with_apps}/apps"))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(listed["count"], apps.len());
    assert_eq!(listed["next"], Value::Null);
    assert_eq!(listed["results"][0]["package_name"], "com.tinymdm.agent");
    assert!(listed["results"][0]["version_code"].is_i64());

    let groups: Value = mdm_get(&http, &sim, "/api/v1/groups")
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(groups["count"], fleet.tinymdm_groups.len());
    assert!(groups["results"][0]["creation_date"].is_string());

    let info: Value = mdm_get(&http, &sim, "/api/v1/enterprise/info")
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(info, json!({"paid_licence": 100}));
    Ok(())
}

#[tokio::test]
async fn requests_above_the_rate_limit_get_429_with_retry_after() -> anyhow::Result<()> {
    let (sim, _) = start(5);
    let http = http();
    let mut statuses = Vec::new();
    for _ in 0..10 {
        let response = mdm_get(&http, &sim, "/api/v1/enterprise/info")
            .send()
            .await?;
        statuses.push(response.status().as_u16());
        if response.status() == 429 {
            assert_eq!(response.headers()["retry-after"], "1");
            assert_eq!(
                response.json::<Value>().await?,
                json!({"error": "Too many requests"})
            );
        }
    }
    assert_eq!(statuses[..6], [200; 6]);
    assert!(statuses[6..].iter().all(|s| *s == 429), "{statuses:?}");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let after = mdm_get(&http, &sim, "/api/v1/enterprise/info")
        .send()
        .await?;
    assert_eq!(after.status(), 200);
    sim.set_rate_limit(0);
    for _ in 0..20 {
        assert_eq!(
            mdm_get(&http, &sim, "/api/v1/groups")
                .send()
                .await?
                .status(),
            200
        );
    }
    Ok(())
}

#[tokio::test]
async fn group_filter_counts_and_links_only_that_group() -> anyhow::Result<()> {
    let (sim, fleet) = start(0);
    let http = http();
    let group = &fleet.tinymdm_groups[0].id;
    let want: HashSet<&str> = fleet
        .tinymdm
        .iter()
        .filter(|d| d.group_id.as_deref() == Some(group))
        .map(|d| d.id.as_str())
        .collect();
    let page: Value = mdm_get(
        &http,
        &sim,
        &format!("/api/v1/devices?per_page=1000&group_id={group}"),
    )
    .send()
    .await?
    .json()
    .await?;
    assert_eq!(page["count"], want.len());
    let got: HashSet<&str> = page["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    assert_eq!(got, want);
    Ok(())
}
