//! `Deps`: what a step needs from the outside world, built once per process
//! (per Lambda container, or per CLI run) and shared by every invocation.

use crate::config::{ConfigError, Settings, required};
use crate::error::StepError;
use crate::http::{Transport, build_client};
use crate::secrets::{SecretKind, SecretSource, SecretsManagerSource};
use crate::store::{DynamoStore, Store};
use crate::tailscale::{HttpTailscaleApi, TailscaleApi};
use crate::tinymdm::{HttpTinymdmApi, TinymdmApi};
use chrono::{DateTime, Utc};
use std::sync::Arc;

/// The four steps, for choosing what each one is allowed to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepName {
    SyncTailscale,
    SyncTinymdm,
    PlanPrune,
    PruneDevices,
}

impl StepName {
    /// What the step talks to: only prune-devices gets the prune client, and
    /// plan-prune works from the stored snapshot alone.
    pub fn needs(self) -> Needs {
        match self {
            StepName::SyncTailscale => Needs {
                tailscale: true,
                ..Needs::default()
            },
            StepName::SyncTinymdm => Needs {
                tinymdm: true,
                ..Needs::default()
            },
            StepName::PlanPrune => Needs::default(),
            StepName::PruneDevices => Needs {
                tailscale_prune: true,
                ..Needs::default()
            },
        }
    }
}

/// Which API clients to build.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Needs {
    pub tailscale: bool,
    pub tailscale_prune: bool,
    pub tinymdm: bool,
}

impl Needs {
    pub fn all() -> Needs {
        Needs {
            tailscale: true,
            tailscale_prune: true,
            tinymdm: true,
        }
    }
}

/// Progress of long work, for the CLI's progress bars. Lambda uses `NoProgress`.
pub trait Progress: Send + Sync {
    /// A listing advanced: `done` devices of `total` (if announced).
    fn listing(&self, _source: &str, _done: u64, _total: Option<u64>) {}
    /// Per-device work (apps, deletions) advanced.
    fn items(&self, _what: &str, _done: u64, _total: u64) {}
    /// A phase ended.
    fn finish(&self) {}
}

/// Reports nothing.
pub struct NoProgress;
impl Progress for NoProgress {}

/// The environment of one Lambda function: the table, the secret ARNs it may
/// read, and the shared settings. Names match `template.yaml`.
#[derive(Debug, Clone)]
pub struct LambdaConfig {
    pub step: StepName,
    pub table_name: String,
    pub tailscale_secret_arn: Option<String>,
    pub tailscale_prune_secret_arn: Option<String>,
    pub tinymdm_secret_arn: Option<String>,
    pub settings: Settings,
}

impl LambdaConfig {
    /// Reads `TABLE_NAME`, the secret ARN the step needs, and the settings.
    pub fn from_env(step: StepName) -> Result<Self, ConfigError> {
        let needs = step.needs();
        let arn = |need: bool, var: &'static str| -> Result<Option<String>, ConfigError> {
            if need {
                required(var).map(Some)
            } else {
                Ok(None)
            }
        };
        Ok(LambdaConfig {
            step,
            table_name: required("TABLE_NAME")?,
            tailscale_secret_arn: arn(needs.tailscale, "TAILSCALE_SECRET_ARN")?,
            tailscale_prune_secret_arn: arn(needs.tailscale_prune, "TAILSCALE_PRUNE_SECRET_ARN")?,
            tinymdm_secret_arn: arn(needs.tinymdm, "TINYMDM_SECRET_ARN")?,
            settings: Settings::from_env()?,
        })
    }
}

type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// Ports and settings for the steps.
#[derive(Clone)]
pub struct Deps {
    pub store: Arc<dyn Store>,
    tailscale: Option<Arc<dyn TailscaleApi>>,
    tailscale_prune: Option<Arc<dyn TailscaleApi>>,
    tinymdm: Option<Arc<dyn TinymdmApi>>,
    /// Why a client is missing, reported by the step that needs it.
    init_error: Option<String>,
    pub settings: Settings,
    pub progress: Arc<dyn Progress>,
    clock: Clock,
}

impl Deps {
    /// Deps with a store and no API clients; add them with the `with_*` methods.
    pub fn new(store: Arc<dyn Store>, settings: Settings) -> Self {
        Deps {
            store,
            tailscale: None,
            tailscale_prune: None,
            tinymdm: None,
            init_error: None,
            settings,
            progress: Arc::new(NoProgress),
            clock: Arc::new(Utc::now),
        }
    }

    pub fn with_tailscale(mut self, api: Arc<dyn TailscaleApi>) -> Self {
        self.tailscale = Some(api);
        self
    }

    pub fn with_tailscale_prune(mut self, api: Arc<dyn TailscaleApi>) -> Self {
        self.tailscale_prune = Some(api);
        self
    }

    pub fn with_tinymdm(mut self, api: Arc<dyn TinymdmApi>) -> Self {
        self.tinymdm = Some(api);
        self
    }

    pub fn with_progress(mut self, progress: Arc<dyn Progress>) -> Self {
        self.progress = progress;
        self
    }

    /// Replaces the clock (tests).
    pub fn with_clock(mut self, clock: impl Fn() -> DateTime<Utc> + Send + Sync + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    pub fn now(&self) -> DateTime<Utc> {
        (self.clock)()
    }

    /// Builds the HTTP clients `needs` asks for from `secrets`. A client that
    /// cannot be built is left out and its error kept: the step that needs it
    /// fails with `ConfigError`, the others still run.
    pub async fn connect(
        store: Arc<dyn Store>,
        settings: Settings,
        secrets: &dyn SecretSource,
        needs: Needs,
    ) -> Self {
        let mut deps = Deps::new(store, settings);
        let mut errors = Vec::new();
        let http = deps.settings.http.clone();
        let client = match build_client(&http) {
            Ok(c) => c,
            Err(e) => {
                deps.init_error = Some(e.to_string());
                return deps;
            }
        };
        let transport = |api| Transport::new(api, client.clone(), http.clone());
        for (need, kind) in [
            (needs.tailscale, SecretKind::TailscaleRead),
            (needs.tailscale_prune, SecretKind::TailscalePrune),
        ] {
            if !need {
                continue;
            }
            let api = match secrets.tailscale(kind).await {
                Ok(creds) => HttpTailscaleApi::new(
                    transport("tailscale"),
                    &deps.settings.tailscale_api_base_url,
                    creds,
                )
                .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            match (api, kind) {
                (Ok(api), SecretKind::TailscaleRead) => deps.tailscale = Some(Arc::new(api)),
                (Ok(api), _) => deps.tailscale_prune = Some(Arc::new(api)),
                (Err(e), _) => errors.push(e),
            }
        }
        if needs.tinymdm {
            let api = match secrets.tinymdm().await {
                Ok(creds) => HttpTinymdmApi::new(
                    transport("tinymdm"),
                    &deps.settings.tinymdm_api_base_url,
                    creds,
                    deps.settings.tinymdm_page_size,
                    deps.settings.tinymdm_rate_limit_per_second,
                )
                .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            match api {
                Ok(api) => deps.tinymdm = Some(Arc::new(api)),
                Err(e) => errors.push(e),
            }
        }
        if !errors.is_empty() {
            deps.init_error = Some(errors.join("; "));
        }
        deps
    }

    /// Deps of a Lambda function: DynamoDB and Secrets Manager clients from
    /// `aws`, and only the API clients (and secrets) its step needs.
    pub async fn for_lambda(aws: &aws_config::SdkConfig, config: &LambdaConfig) -> Self {
        let store = DynamoStore::new(aws_sdk_dynamodb::Client::new(aws), &config.table_name);
        let secrets = SecretsManagerSource::new(
            aws_sdk_secretsmanager::Client::new(aws),
            config.tailscale_secret_arn.clone(),
            config.tailscale_prune_secret_arn.clone(),
            config.tinymdm_secret_arn.clone(),
        );
        Deps::connect(
            Arc::new(store),
            config.settings.clone(),
            &secrets,
            config.step.needs(),
        )
        .await
    }

    fn missing(&self, what: &str) -> StepError {
        StepError::ConfigError(match &self.init_error {
            Some(e) => format!("{what} is not available: {e}"),
            None => format!("{what} is not configured"),
        })
    }

    /// The read-only Tailscale client (syncs).
    pub fn tailscale(&self) -> Result<&Arc<dyn TailscaleApi>, StepError> {
        self.tailscale
            .as_ref()
            .ok_or_else(|| self.missing("the tailscale read client"))
    }

    /// The Tailscale client allowed to delete (prune-devices only).
    pub fn tailscale_prune(&self) -> Result<&Arc<dyn TailscaleApi>, StepError> {
        self.tailscale_prune
            .as_ref()
            .ok_or_else(|| self.missing("the tailscale prune client"))
    }

    pub fn tinymdm(&self) -> Result<&Arc<dyn TinymdmApi>, StepError> {
        self.tinymdm
            .as_ref()
            .ok_or_else(|| self.missing("the tinymdm client"))
    }
}
