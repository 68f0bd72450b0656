//! Typed configuration read from the environment, with defaults, shared by the
//! Lambda functions and the CLI. Variable names match `template.yaml`.

use crate::http::HttpSettings;
use std::time::Duration;

/// A missing or malformed configuration value; the message names the variable
/// and, since configuration is not secret, the offending value.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("missing environment variable {0}")]
    Missing(&'static str),
    #[error("environment variable {var} has an invalid value {value:?}: {why}")]
    Invalid {
        var: &'static str,
        value: String,
        why: String,
    },
}

pub const DEFAULT_TAILSCALE_API_BASE_URL: &str = "https://api.tailscale.com";
pub const DEFAULT_TINYMDM_API_BASE_URL: &str = "https://www.tinymdm.net";

/// Settings every step reads; all have defaults.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Tailnet whose snapshot plan-prune reads when its input names none
    /// (`TAILSCALE_TAILNET`). Unset: the only tailnet in the store.
    pub tailnet: Option<String>,
    pub tailscale_api_base_url: String,
    pub tinymdm_api_base_url: String,
    /// History entries expire after this many days (`HISTORY_RETENTION_DAYS`).
    pub history_retention_days: u32,
    /// Plan entries and audit outcomes expire after this many days (`AUDIT_RETENTION_DAYS`).
    pub audit_retention_days: u32,
    /// Default prune threshold (`TAILSCALE_DEVICE_STALE_MINUTES`, 90 days).
    pub stale_minutes: u64,
    /// A last-seen move smaller than this does not rewrite a device (`LAST_SEEN_RESOLUTION_MINUTES`).
    pub last_seen_resolution_minutes: u64,
    /// Client-side request rate for TinyMDM (`TINYMDM_RATE_LIMIT_PER_SECOND`).
    pub tinymdm_rate_limit_per_second: u32,
    /// `per_page` sent to TinyMDM (`TINYMDM_PAGE_SIZE`).
    pub tinymdm_page_size: u32,
    /// plan-prune refuses snapshots older than this (`SNAPSHOT_MAX_AGE_MINUTES`).
    pub snapshot_max_age_minutes: u64,
    /// Default cap on deletions per plan (`PRUNE_MAX_DELETIONS`).
    pub prune_max_deletions: u64,
    /// Default cap on the fraction of the fleet per plan (`PRUNE_MAX_FRACTION`).
    pub prune_max_fraction: f64,
    /// An approved plan older than this is refused (`PLAN_APPROVAL_MAX_AGE_HOURS`).
    pub plan_approval_max_age_hours: u64,
    /// Deletions in flight at once (`PRUNE_CONCURRENCY`).
    pub prune_concurrency: usize,
    /// Timeouts and retries of both API clients (`HTTP_TIMEOUT_SECONDS`, `HTTP_MAX_RETRIES`).
    pub http: HttpSettings,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            tailnet: None,
            tailscale_api_base_url: DEFAULT_TAILSCALE_API_BASE_URL.to_string(),
            tinymdm_api_base_url: DEFAULT_TINYMDM_API_BASE_URL.to_string(),
            history_retention_days: 365,
            audit_retention_days: 730,
            stale_minutes: 129_600,
            last_seen_resolution_minutes: 60,
            tinymdm_rate_limit_per_second: 5,
            tinymdm_page_size: 1000,
            snapshot_max_age_minutes: 120,
            prune_max_deletions: 50,
            prune_max_fraction: 0.10,
            plan_approval_max_age_hours: 24,
            prune_concurrency: 4,
            http: HttpSettings::default(),
        }
    }
}

impl Settings {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads settings through `get`, so tests need not touch the environment.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let d = Settings::default();
        let get = |k: &str| get(k).filter(|v| !v.trim().is_empty());
        Ok(Settings {
            tailnet: get("TAILSCALE_TAILNET").or(d.tailnet),
            tailscale_api_base_url: get("TAILSCALE_API_BASE_URL")
                .unwrap_or(d.tailscale_api_base_url),
            tinymdm_api_base_url: get("TINYMDM_API_BASE_URL").unwrap_or(d.tinymdm_api_base_url),
            history_retention_days: num(
                &get,
                "HISTORY_RETENTION_DAYS",
                d.history_retention_days,
                1,
            )?,
            audit_retention_days: num(&get, "AUDIT_RETENTION_DAYS", d.audit_retention_days, 1)?,
            stale_minutes: num(&get, "TAILSCALE_DEVICE_STALE_MINUTES", d.stale_minutes, 1)?,
            last_seen_resolution_minutes: num(
                &get,
                "LAST_SEEN_RESOLUTION_MINUTES",
                d.last_seen_resolution_minutes,
                0,
            )?,
            tinymdm_rate_limit_per_second: num(
                &get,
                "TINYMDM_RATE_LIMIT_PER_SECOND",
                d.tinymdm_rate_limit_per_second,
                1,
            )?,
            tinymdm_page_size: num(&get, "TINYMDM_PAGE_SIZE", d.tinymdm_page_size, 1)?,
            snapshot_max_age_minutes: num(
                &get,
                "SNAPSHOT_MAX_AGE_MINUTES",
                d.snapshot_max_age_minutes,
                1,
            )?,
            prune_max_deletions: num(&get, "PRUNE_MAX_DELETIONS", d.prune_max_deletions, 0)?,
            prune_max_fraction: fraction(&get, "PRUNE_MAX_FRACTION", d.prune_max_fraction)?,
            plan_approval_max_age_hours: num(
                &get,
                "PLAN_APPROVAL_MAX_AGE_HOURS",
                d.plan_approval_max_age_hours,
                1,
            )?,
            prune_concurrency: num(&get, "PRUNE_CONCURRENCY", d.prune_concurrency, 1)?,
            http: HttpSettings {
                request_timeout: Duration::from_secs(num(
                    &get,
                    "HTTP_TIMEOUT_SECONDS",
                    d.http.request_timeout.as_secs(),
                    1,
                )?),
                max_retries: num(&get, "HTTP_MAX_RETRIES", d.http.max_retries, 0)?,
                ..d.http
            },
        })
    }

    pub fn last_seen_resolution(&self) -> Duration {
        Duration::from_secs(self.last_seen_resolution_minutes * 60)
    }
}

fn num<T>(
    get: &impl Fn(&str) -> Option<String>,
    var: &'static str,
    default: T,
    min: T,
) -> Result<T, ConfigError>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy,
{
    let Some(raw) = get(var) else {
        return Ok(default);
    };
    let value = raw.trim().parse::<T>().map_err(|_| ConfigError::Invalid {
        var,
        value: raw.clone(),
        why: "not a whole number".into(),
    })?;
    if value < min {
        return Err(ConfigError::Invalid {
            var,
            value: raw,
            why: format!("must be at least {min}"),
        });
    }
    Ok(value)
}

fn fraction(
    get: &impl Fn(&str) -> Option<String>,
    var: &'static str,
    default: f64,
) -> Result<f64, ConfigError> {
    let Some(raw) = get(var) else {
        return Ok(default);
    };
    match raw.trim().parse::<f64>() {
        Ok(v) if v > 0.0 && v <= 1.0 => Ok(v),
        _ => Err(ConfigError::Invalid {
            var,
            value: raw,
            why: "must be a number greater than 0 and at most 1".into(),
        }),
    }
}

/// Reads a required variable.
pub fn required(var: &'static str) -> Result<String, ConfigError> {
    std::env::var(var)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .ok_or(ConfigError::Missing(var))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn defaults_apply_when_unset() {
        let s = Settings::from_lookup(lookup(&[])).unwrap();
        assert_eq!(s.history_retention_days, 365);
        assert_eq!(s.tailnet, None);
        assert_eq!(s.http.max_retries, 4);
        assert_eq!(s.stale_minutes, 90 * 24 * 60);
    }

    #[test]
    fn stale_minutes_is_honoured() {
        let s = Settings::from_lookup(lookup(&[("TAILSCALE_DEVICE_STALE_MINUTES", "60")])).unwrap();
        assert_eq!(s.stale_minutes, 60);
    }

    #[test]
    fn invalid_values_name_the_variable() {
        let e = Settings::from_lookup(lookup(&[("HISTORY_RETENTION_DAYS", "ten")])).unwrap_err();
        assert!(e.to_string().contains("HISTORY_RETENTION_DAYS"), "{e}");
        let e = Settings::from_lookup(lookup(&[("PRUNE_MAX_FRACTION", "7")])).unwrap_err();
        assert!(e.to_string().contains("PRUNE_MAX_FRACTION"), "{e}");
        let e =
            Settings::from_lookup(lookup(&[("TAILSCALE_DEVICE_STALE_MINUTES", "0")])).unwrap_err();
        assert!(e.to_string().contains("at least 1"), "{e}");
    }
}
