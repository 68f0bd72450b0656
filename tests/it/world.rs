//! A test world: both simulators on loopback with a generated fleet, and
//! `Deps` wired to them (fast retries) over a store of the test's choosing.

use chrono::{DateTime, Utc};
use fleetsync::config::Settings;
use fleetsync::deps::{Deps, Needs};
use fleetsync::http::HttpSettings;
use fleetsync::secrets::EnvSecrets;
use fleetsync::store::{SqliteStore, Store};
use fleetsync_sim::fleet::{Fleet, FleetSpec, generate};
use fleetsync_sim::{TailscaleSim, TailscaleSimConfig, TinymdmSim, TinymdmSimConfig};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

pub struct World {
    pub fleet: Fleet,
    pub ts: TailscaleSim,
    pub mdm: TinymdmSim,
    pub store: Arc<dyn Store>,
    pub settings: Settings,
    pub vars: HashMap<&'static str, String>,
}

/// Retries that do not slow tests down.
pub fn fast_http() -> HttpSettings {
    HttpSettings {
        min_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(50),
        max_retry_after: Duration::from_millis(1500),
        request_timeout: Duration::from_secs(5),
        ..HttpSettings::default()
    }
}

pub fn sqlite() -> Arc<dyn Store> {
    Arc::new(SqliteStore::in_memory().expect("in-memory sqlite"))
}

impl World {
    /// A fleet generated at `now` with the given sizes, served by fresh simulators.
    pub fn start(
        store: Arc<dyn Store>,
        tailscale: usize,
        tinymdm: usize,
        now: DateTime<Utc>,
    ) -> World {
        Self::with_fleet(
            store,
            generate(FleetSpec::new(7, tailscale, tinymdm, now)),
            0,
        )
    }

    /// `mdm_rate` 0 keeps the simulator's default limit (5/s).
    pub fn with_fleet(store: Arc<dyn Store>, fleet: Fleet, mdm_rate: u32) -> World {
        let ts = TailscaleSim::start(TailscaleSimConfig::default().with_fleet(&fleet))
            .expect("tailscale sim");
        let mut mdm_config = TinymdmSimConfig::default().with_fleet(&fleet);
        let mut settings = Settings {
            tailscale_api_base_url: ts.base_url(),
            http: fast_http(),
            ..Settings::default()
        };
        if mdm_rate > 0 {
            mdm_config.rate_limit = mdm_rate;
            settings.tinymdm_rate_limit_per_second = mdm_rate;
        }
        let mdm = TinymdmSim::start(mdm_config).expect("tinymdm sim");
        settings.tinymdm_api_base_url = mdm.base_url();
        let (rid, rsecret) = ts.read_client();
        let (pid, psecret) = ts.prune_client();
        let (public, secret) = mdm.api_keys();
        let vars = HashMap::from([
            ("TAILSCALE_OAUTH_CLIENT_ID", rid),
            ("TAILSCALE_OAUTH_CLIENT_SECRET", rsecret),
            ("TAILSCALE_PRUNE_OAUTH_CLIENT_ID", pid),
            ("TAILSCALE_PRUNE_OAUTH_CLIENT_SECRET", psecret),
            ("TINYMDM_ACCOUNT_ID", mdm.account_id()),
            ("TINYMDM_APIKEY_PUBLIC", public),
            ("TINYMDM_APIKEY_SECRET", secret),
        ]);
        World {
            fleet,
            ts,
            mdm,
            store,
            settings,
            vars,
        }
    }

    /// Deps with every client.
    pub async fn deps(&self) -> Deps {
        self.deps_with(Needs::all()).await
    }

    pub async fn deps_with(&self, needs: Needs) -> Deps {
        let vars = self.vars.clone();
        let secrets = EnvSecrets::from_lookup(move |k| vars.get(k).cloned());
        Deps::connect(self.store.clone(), self.settings.clone(), &secrets, needs).await
    }

    /// Every secret value this world hands out, for log checks (the `logs`
    /// test binary, which includes this file).
    #[allow(dead_code)]
    pub fn secret_values(&self) -> Vec<String> {
        vec![
            self.vars["TAILSCALE_OAUTH_CLIENT_SECRET"].clone(),
            self.vars["TAILSCALE_PRUNE_OAUTH_CLIENT_SECRET"].clone(),
            self.vars["TINYMDM_APIKEY_PUBLIC"].clone(),
            self.vars["TINYMDM_APIKEY_SECRET"].clone(),
        ]
    }
}
