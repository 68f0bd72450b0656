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
use tokio::sync::OnceCell;

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
type Slot<T> = Arc<OnceCell<Arc<T>>>;

/// Ports and settings for the steps.
///
/// API clients are built from credentials when `Deps` is made. A client that
/// could not be built (a secret not filled in yet, Secrets Manager briefly
/// unreachable) is built again on its next use when a secret source is kept
/// (Lambda), so a warm container recovers without being replaced.
#[derive(Clone)]
pub struct Deps {
    pub store: Arc<dyn Store>,
    tailscale: Slot<dyn TailscaleApi>,
    tailscale_prune: Slot<dyn TailscaleApi>,
    tinymdm: Slot<dyn TinymdmApi>,
    /// Where to get credentials for a client that is still missing.
    secrets: Option<Arc<dyn SecretSource>>,
    needs: Needs,
    /// Why a client is missing, reported by the step that needs it.
    init_error: Arc<std::sync::Mutex<Option<String>>>,
    pub settings: Settings,
    pub progress: Arc<dyn Progress>,
    clock: Clock,
}

fn filled<T: ?Sized>(value: Arc<T>) -> Slot<T> {
    Arc::new(OnceCell::new_with(Some(value)))
}

impl Deps {
    /// Deps with a store and no API clients; add them with the `with_*` methods.
    pub fn new(store: Arc<dyn Store>, settings: Settings) -> Self {
        Deps {
            store,
            tailscale: Arc::default(),
            tailscale_prune: Arc::default(),
            tinymdm: Arc::default(),
            secrets: None,
            needs: Needs::default(),
            init_error: Arc::default(),
            settings,
            progress: Arc::new(NoProgress),
            clock: Arc::new(Utc::now),
        }
    }

    pub fn with_tailscale(mut self, api: Arc<dyn TailscaleApi>) -> Self {
        self.tailscale = filled(api);
        self
    }

    pub fn with_tailscale_prune(mut self, api: Arc<dyn TailscaleApi>) -> Self {
        self.tailscale_prune = filled(api);
        self
    }

    pub fn with_tinymdm(mut self, api: Arc<dyn TinymdmApi>) -> Self {
        self.tinymdm = filled(api);
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

    /// Builds the HTTP clients `needs` asks for from `secrets`, once. A client
    /// that cannot be built is left out and its error kept: the step that needs
    /// it fails with `ConfigError`, the others still run.
    pub async fn connect(
        store: Arc<dyn Store>,
        settings: Settings,
        secrets: &dyn SecretSource,
        needs: Needs,
    ) -> Self {
        let mut deps = Deps::new(store, settings);
        deps.needs = needs;
        deps.build_missing(secrets).await;
        deps
    }

    /// Deps of a Lambda function: DynamoDB and Secrets Manager clients from
    /// `aws`, and only the API clients (and secrets) its step needs, built at
    /// cold start and, if that failed, again on the next invocation.
    pub async fn for_lambda(aws: &aws_config::SdkConfig, config: &LambdaConfig) -> Self {
        let store = DynamoStore::new(aws_sdk_dynamodb::Client::new(aws), &config.table_name);
        let secrets: Arc<dyn SecretSource> = Arc::new(SecretsManagerSource::new(
            aws_sdk_secretsmanager::Client::new(aws),
            config.tailscale_secret_arn.clone(),
            config.tailscale_prune_secret_arn.clone(),
            config.tinymdm_secret_arn.clone(),
        ));
        let mut deps = Deps::new(Arc::new(store), config.settings.clone());
        deps.needs = config.step.needs();
        deps.build_missing(secrets.as_ref()).await;
        deps.secrets = Some(secrets);
        deps
    }

    /// Builds every needed client that is not built yet; records the errors.
    async fn build_missing(&self, secrets: &dyn SecretSource) {
        let mut errors = Vec::new();
        let http = self.settings.http.clone();
        let client = match build_client(&http) {
            Ok(c) => c,
            Err(e) => {
                *self.init_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
                return;
            }
        };
        let transport = |api| Transport::new(api, client.clone(), http.clone());
        for (need, kind, slot) in [
            (
                self.needs.tailscale,
                SecretKind::TailscaleRead,
                &self.tailscale,
            ),
            (
                self.needs.tailscale_prune,
                SecretKind::TailscalePrune,
                &self.tailscale_prune,
            ),
        ] {
            if !need || slot.initialized() {
                continue;
            }
            let api = match secrets.tailscale(kind).await {
                Ok(creds) => HttpTailscaleApi::new(
                    transport("tailscale"),
                    &self.settings.tailscale_api_base_url,
                    creds,
                )
                .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            match api {
                Ok(api) => {
                    let _ = slot.set(Arc::new(api));
                }
                Err(e) => errors.push(e),
            }
        }
        if self.needs.tinymdm && !self.tinymdm.initialized() {
            let api = match secrets.tinymdm().await {
                Ok(creds) => HttpTinymdmApi::new(
                    transport("tinymdm"),
                    &self.settings.tinymdm_api_base_url,
                    creds,
                    self.settings.tinymdm_page_size,
                    self.settings.tinymdm_rate_limit_per_second,
                )
                .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            match api {
                Ok(api) => {
                    let _ = self.tinymdm.set(Arc::new(api));
                }
                Err(e) => errors.push(e),
            }
        }
        *self.init_error.lock().unwrap_or_else(|p| p.into_inner()) =
            (!errors.is_empty()).then(|| errors.join("; "));
    }

    /// The client in `slot`, building the missing ones again first if a secret
    /// source is kept.
    async fn client<T: ?Sized>(&self, slot: &Slot<T>, what: &str) -> Result<Arc<T>, StepError> {
        if let Some(c) = slot.get() {
            return Ok(c.clone());
        }
        if let Some(secrets) = &self.secrets {
            self.build_missing(secrets.as_ref()).await;
            if let Some(c) = slot.get() {
                return Ok(c.clone());
            }
        }
        let error = self
            .init_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        Err(StepError::ConfigError(match error {
            Some(e) => format!("{what} is not available: {e}"),
            None => format!("{what} is not configured"),
        }))
    }

    /// The read-only Tailscale client (syncs).
    pub async fn tailscale(&self) -> Result<Arc<dyn TailscaleApi>, StepError> {
        self.client(&self.tailscale, "the tailscale read client")
            .await
    }

    /// The Tailscale client allowed to delete (prune-devices only).
    pub async fn tailscale_prune(&self) -> Result<Arc<dyn TailscaleApi>, StepError> {
        self.client(&self.tailscale_prune, "the tailscale prune client")
            .await
    }

    pub async fn tinymdm(&self) -> Result<Arc<dyn TinymdmApi>, StepError> {
        self.client(&self.tinymdm, "the tinymdm client").await
    }
}
