//! Integration tests of the simulators over real HTTP on 127.0.0.1.

mod admin;
mod faults;
mod fleet;
mod tailscale;
mod tinymdm;

use fleetsync_sim::fleet::generate;
use fleetsync_sim::{Fleet, FleetSpec, TailscaleSim, TinymdmSim};
use reqwest::{Client, RequestBuilder};
use serde_json::Value;
use std::time::Duration;

/// A client like the product's: one per test, with a timeout.
pub fn http() -> Client {
    Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client builds")
}

/// A small fleet with every Tailscale kind.
pub fn small_fleet() -> Fleet {
    generate(FleetSpec {
        seed: 7,
        tailscale_devices: 40,
        tinymdm_devices: 45,
        ..FleetSpec::default()
    })
}

/// An access token for `(client_id, client_secret)`.
pub async fn token(http: &Client, sim: &TailscaleSim, client: (String, String)) -> String {
    let response = http
        .post(format!("{}/api/v2/oauth/token", sim.base_url()))
        .form(&[
            ("client_id", client.0.as_str()),
            ("client_secret", client.1.as_str()),
            ("grant_type", "client_credentials"),
        ])
        .send()
        .await
        .expect("token request");
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("token JSON");
    body["access_token"]
        .as_str()
        .expect("access_token")
        .to_owned()
}

/// The device list as seen with `token`.
pub async fn list(http: &Client, sim: &TailscaleSim, token: &str) -> Vec<Value> {
    let response = http
        .get(format!("{}/api/v2/tailnet/-/devices", sim.base_url()))
        .bearer_auth(token)
        .send()
        .await
        .expect("list request");
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("list JSON");
    body["devices"].as_array().expect("devices array").clone()
}

/// A TinyMDM request with the three credential headers.
pub fn mdm_get(http: &Client, sim: &TinymdmSim, path_and_query: &str) -> RequestBuilder {
    let (public, secret) = sim.api_keys();
    http.get(format!("{}{path_and_query}", sim.base_url()))
        .header("X-Tinymdm-Manager-Apikey-Public", public)
        .header("X-Tinymdm-Manager-Apikey-Secret", secret)
        .header("X-Account-Id", sim.account_id())
}

#[test]
fn handles_can_be_shared_across_tasks() {
    fn shareable<T: Send + Sync + 'static>() {}
    shareable::<TailscaleSim>();
    shareable::<TinymdmSim>();
}
