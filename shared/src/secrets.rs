//! Credentials: the `SecretSource` port with a Secrets Manager implementation
//! (JSON secrets, fetched once and cached for warm invocations) and one that
//! reads the environment variables people already use. Secret values live in
//! `Redacted`, whose `Debug` and `Display` never show them.

use async_trait::async_trait;
use serde_json::{Map, Value};
use std::fmt;
use tokio::sync::OnceCell;

/// A secret string. Printing it shows `[redacted]`; `expose` is the only way in.
#[derive(Clone, PartialEq, Eq)]
pub struct Redacted(String);

impl Redacted {
    pub fn new(value: impl Into<String>) -> Self {
        Redacted(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// A Tailscale OAuth client (the read client or the prune client).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TailscaleCredentials {
    pub client_id: String,
    pub client_secret: Redacted,
    /// `-` means the token's own tailnet (the recommended value).
    pub tailnet: String,
}

/// TinyMDM manager API keys and the account they act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TinymdmCredentials {
    pub account_id: String,
    pub apikey_public: Redacted,
    pub apikey_secret: Redacted,
}

/// Which credential is wanted, for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretKind {
    TailscaleRead,
    TailscalePrune,
    Tinymdm,
}

/// A missing or malformed secret. Names the secret and the key, never a value.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("secret {secret} is not configured: set {hint}")]
    NotConfigured { secret: String, hint: String },
    #[error("secret {secret} could not be read: {detail}")]
    Unavailable { secret: String, detail: String },
    #[error("secret {secret} was not found")]
    NotFound { secret: String },
    #[error("secret {secret} is not a JSON object")]
    NotJson { secret: String },
    #[error("secret {secret} has no key {key:?}")]
    MissingKey { secret: String, key: &'static str },
    #[error("secret {secret} key {key:?} must be a non-empty string")]
    WrongType { secret: String, key: &'static str },
}

/// Where credentials come from.
#[async_trait]
pub trait SecretSource: Send + Sync {
    async fn tailscale(&self, kind: SecretKind) -> Result<TailscaleCredentials, SecretError>;
    async fn tinymdm(&self) -> Result<TinymdmCredentials, SecretError>;
}

fn string_key(
    map: &Map<String, Value>,
    secret: &str,
    key: &'static str,
) -> Result<String, SecretError> {
    match map.get(key) {
        None | Some(Value::Null) => Err(SecretError::MissingKey {
            secret: secret.to_string(),
            key,
        }),
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.trim().to_string()),
        Some(_) => Err(SecretError::WrongType {
            secret: secret.to_string(),
            key,
        }),
    }
}

fn object(secret: &str, text: &str) -> Result<Map<String, Value>, SecretError> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(SecretError::NotJson {
            secret: secret.to_string(),
        }),
    }
}

/// Parses `{"client_id", "client_secret", "tailnet"?}`; `tailnet` defaults to `-`.
pub fn parse_tailscale_secret(
    secret: &str,
    text: &str,
) -> Result<TailscaleCredentials, SecretError> {
    let m = object(secret, text)?;
    let tailnet = match m.get("tailnet") {
        None | Some(Value::Null) => "-".to_string(),
        Some(_) => string_key(&m, secret, "tailnet")?,
    };
    Ok(TailscaleCredentials {
        client_id: string_key(&m, secret, "client_id")?,
        client_secret: Redacted::new(string_key(&m, secret, "client_secret")?),
        tailnet,
    })
}

/// Parses `{"account_id", "apikey_public", "apikey_secret"}`.
pub fn parse_tinymdm_secret(secret: &str, text: &str) -> Result<TinymdmCredentials, SecretError> {
    let m = object(secret, text)?;
    Ok(TinymdmCredentials {
        account_id: string_key(&m, secret, "account_id")?,
        apikey_public: Redacted::new(string_key(&m, secret, "apikey_public")?),
        apikey_secret: Redacted::new(string_key(&m, secret, "apikey_secret")?),
    })
}

/// Reads JSON secrets from AWS Secrets Manager by ARN or name. Each secret is
/// fetched at most once per process and cached, so warm invocations reuse it.
pub struct SecretsManagerSource {
    client: aws_sdk_secretsmanager::Client,
    tailscale_read: Option<String>,
    tailscale_prune: Option<String>,
    tinymdm: Option<String>,
    cache_read: OnceCell<TailscaleCredentials>,
    cache_prune: OnceCell<TailscaleCredentials>,
    cache_mdm: OnceCell<TinymdmCredentials>,
}

impl SecretsManagerSource {
    /// `None` for a secret this function is not allowed to read.
    pub fn new(
        client: aws_sdk_secretsmanager::Client,
        tailscale_read: Option<String>,
        tailscale_prune: Option<String>,
        tinymdm: Option<String>,
    ) -> Self {
        SecretsManagerSource {
            client,
            tailscale_read,
            tailscale_prune,
            tinymdm,
            cache_read: OnceCell::new(),
            cache_prune: OnceCell::new(),
            cache_mdm: OnceCell::new(),
        }
    }

    async fn fetch(&self, id: &str) -> Result<String, SecretError> {
        use aws_sdk_secretsmanager::error::SdkError;
        use aws_sdk_secretsmanager::operation::get_secret_value::GetSecretValueError;
        let out = self
            .client
            .get_secret_value()
            .secret_id(id)
            .send()
            .await
            .map_err(|e| match &e {
                SdkError::ServiceError(se)
                    if matches!(se.err(), GetSecretValueError::ResourceNotFoundException(_)) =>
                {
                    SecretError::NotFound {
                        secret: id.to_string(),
                    }
                }
                _ => SecretError::Unavailable {
                    secret: id.to_string(),
                    detail: aws_error_text(&e),
                },
            })?;
        out.secret_string.ok_or_else(|| SecretError::NotJson {
            secret: id.to_string(),
        })
    }
}

/// The SDK error's code and message only (never the request, which is fine, or
/// the response body, which for GetSecretValue could hold the value).
fn aws_error_text<E, R>(e: &aws_sdk_secretsmanager::error::SdkError<E, R>) -> String
where
    E: aws_sdk_secretsmanager::error::ProvideErrorMetadata,
{
    use aws_sdk_secretsmanager::error::SdkError;
    match e {
        SdkError::ServiceError(se) => {
            let m = se.err();
            format!(
                "{}: {}",
                m.code().unwrap_or("service error"),
                m.message().unwrap_or("")
            )
        }
        SdkError::TimeoutError(_) => "timeout".into(),
        SdkError::DispatchFailure(_) => "could not reach Secrets Manager".into(),
        _ => "request failed".into(),
    }
}

#[async_trait]
impl SecretSource for SecretsManagerSource {
    async fn tailscale(&self, kind: SecretKind) -> Result<TailscaleCredentials, SecretError> {
        let (id, cell, var) = match kind {
            SecretKind::TailscaleRead => (
                &self.tailscale_read,
                &self.cache_read,
                "TAILSCALE_SECRET_ARN",
            ),
            SecretKind::TailscalePrune => (
                &self.tailscale_prune,
                &self.cache_prune,
                "TAILSCALE_PRUNE_SECRET_ARN",
            ),
            SecretKind::Tinymdm => unreachable!("tinymdm credentials come from tinymdm()"),
        };
        let id = id.as_deref().ok_or_else(|| SecretError::NotConfigured {
            secret: var.to_string(),
            hint: var.to_string(),
        })?;
        cell.get_or_try_init(|| async {
            let text = self.fetch(id).await?;
            parse_tailscale_secret(id, &text)
        })
        .await
        .cloned()
    }

    async fn tinymdm(&self) -> Result<TinymdmCredentials, SecretError> {
        let id = self
            .tinymdm
            .as_deref()
            .ok_or_else(|| SecretError::NotConfigured {
                secret: "TINYMDM_SECRET_ARN".into(),
                hint: "TINYMDM_SECRET_ARN".into(),
            })?;
        self.cache_mdm
            .get_or_try_init(|| async {
                let text = self.fetch(id).await?;
                parse_tinymdm_secret(id, &text)
            })
            .await
            .cloned()
    }
}

/// Reads credentials from the environment variables of DESIGN.md
/// (`TAILSCALE_OAUTH_CLIENT_ID`, …), for the CLI.
type Lookup = Box<dyn Fn(&str) -> Option<String> + Send + Sync>;

#[derive(Default)]
pub struct EnvSecrets {
    lookup: Option<Lookup>,
}

impl EnvSecrets {
    /// Reads the process environment.
    pub fn new() -> Self {
        EnvSecrets { lookup: None }
    }

    /// Reads through `lookup` instead of the process environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String> + Send + Sync + 'static) -> Self {
        EnvSecrets {
            lookup: Some(Box::new(lookup)),
        }
    }

    fn get(&self, var: &str) -> Option<String> {
        let v = match &self.lookup {
            Some(f) => f(var),
            None => std::env::var(var).ok(),
        };
        v.map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
    }

    fn need(&self, what: &str, var: &'static str) -> Result<String, SecretError> {
        self.get(var).ok_or_else(|| SecretError::NotConfigured {
            secret: what.to_string(),
            hint: var.to_string(),
        })
    }
}

#[async_trait]
impl SecretSource for EnvSecrets {
    async fn tailscale(&self, kind: SecretKind) -> Result<TailscaleCredentials, SecretError> {
        let (what, id_var, secret_var) = match kind {
            SecretKind::TailscaleRead => (
                "tailscale read client",
                "TAILSCALE_OAUTH_CLIENT_ID",
                "TAILSCALE_OAUTH_CLIENT_SECRET",
            ),
            SecretKind::TailscalePrune => (
                "tailscale prune client",
                "TAILSCALE_PRUNE_OAUTH_CLIENT_ID",
                "TAILSCALE_PRUNE_OAUTH_CLIENT_SECRET",
            ),
            SecretKind::Tinymdm => unreachable!("tinymdm credentials come from tinymdm()"),
        };
        Ok(TailscaleCredentials {
            client_id: self.need(what, id_var)?,
            client_secret: Redacted::new(self.need(what, secret_var)?),
            tailnet: self.get("TAILSCALE_TAILNET").unwrap_or_else(|| "-".into()),
        })
    }

    async fn tinymdm(&self) -> Result<TinymdmCredentials, SecretError> {
        Ok(TinymdmCredentials {
            account_id: self.need("tinymdm", "TINYMDM_ACCOUNT_ID")?,
            apikey_public: Redacted::new(self.need("tinymdm", "TINYMDM_APIKEY_PUBLIC")?),
            apikey_secret: Redacted::new(self.need("tinymdm", "TINYMDM_APIKEY_SECRET")?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacted_never_prints() {
        let r = Redacted::new("tskey-client-abc");
        assert_eq!(format!("{r:?} {r}"), "[redacted] [redacted]");
        let c = TailscaleCredentials {
            client_id: "id".into(),
            client_secret: r,
            tailnet: "-".into(),
        };
        assert!(!format!("{c:?}").contains("tskey"));
    }

    #[test]
    fn tailscale_secret_parses_and_defaults_tailnet() {
        let c = parse_tailscale_secret(
            "s",
            r#"{"client_id":"k1","client_secret":"tskey-client-x"}"#,
        )
        .unwrap();
        assert_eq!(c.tailnet, "-");
        assert_eq!(c.client_secret.expose(), "tskey-client-x");
    }

    #[test]
    fn malformed_secrets_name_the_key_but_not_the_value() {
        let e = parse_tailscale_secret("arn:ts", r#"{"client_id":"k1"}"#).unwrap_err();
        assert_eq!(e.to_string(), r#"secret arn:ts has no key "client_secret""#);
        let e = parse_tinymdm_secret(
            "arn:mdm",
            r#"{"account_id":"a","apikey_public":"PUBVALUE","apikey_secret":7}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("apikey_secret"), "{e}");
        assert!(!e.to_string().contains("PUBVALUE"));
        let e = parse_tinymdm_secret("arn:mdm", "hunter2").unwrap_err();
        assert_eq!(e.to_string(), "secret arn:mdm is not a JSON object");
    }

    #[tokio::test]
    async fn env_secrets_name_the_missing_variable() {
        let s = EnvSecrets::from_lookup(|k| {
            (k == "TAILSCALE_OAUTH_CLIENT_ID").then(|| "id".to_string())
        });
        let e = s.tailscale(SecretKind::TailscaleRead).await.unwrap_err();
        assert!(
            e.to_string().contains("TAILSCALE_OAUTH_CLIENT_SECRET"),
            "{e}"
        );
        let e = s.tinymdm().await.unwrap_err();
        assert!(e.to_string().contains("TINYMDM_ACCOUNT_ID"), "{e}");
    }
}
