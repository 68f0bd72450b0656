//! `StepError`: the stable error names a step surfaces to Step Functions, and the
//! one place that decides which category each lower-level error falls into.

use crate::config::ConfigError;
use crate::http::ApiError;
use crate::secrets::SecretError;
use crate::store::StoreError;

/// The error of a step. Variant names are the documented Step Functions error
/// names; `Retry` and `Catch` in `infra/statemachine.asl.json` match on them.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// The event is malformed or a value is out of range.
    #[error("{0}")]
    InvalidInput(String),
    /// Missing or malformed configuration or secret.
    #[error("{0}")]
    ConfigError(String),
    /// Credentials were refused (401/403).
    #[error("{0}")]
    AuthError(String),
    /// Timeouts, 429 and 5xx: worth retrying later.
    #[error("{0}")]
    UpstreamUnavailable(String),
    /// Any other 4xx, or a response that could not be understood.
    #[error("{0}")]
    UpstreamRejected(String),
    /// The store could not be reached or throttled past the budget: worth retrying.
    #[error("{0}")]
    StoreUnavailable(String),
    /// The snapshot to plan from is too old, or its sync did not complete.
    #[error("{0}")]
    StaleSnapshot(String),
    /// Some devices failed; the rest of the work is kept.
    #[error("{0}")]
    PartialFailure(String),
    /// A bug: the step panicked. Reported instead of a hung or crashed invocation.
    #[error("{0}")]
    Internal(String),
}

impl StepError {
    /// Every name `name()` can return, for checking the state machine definition.
    pub const NAMES: [&'static str; 9] = [
        "InvalidInput",
        "ConfigError",
        "AuthError",
        "UpstreamUnavailable",
        "UpstreamRejected",
        "StoreUnavailable",
        "StaleSnapshot",
        "PartialFailure",
        "Internal",
    ];

    /// The stable error name (the Step Functions error type).
    pub fn name(&self) -> &'static str {
        match self {
            StepError::InvalidInput(_) => "InvalidInput",
            StepError::ConfigError(_) => "ConfigError",
            StepError::AuthError(_) => "AuthError",
            StepError::UpstreamUnavailable(_) => "UpstreamUnavailable",
            StepError::UpstreamRejected(_) => "UpstreamRejected",
            StepError::StoreUnavailable(_) => "StoreUnavailable",
            StepError::StaleSnapshot(_) => "StaleSnapshot",
            StepError::PartialFailure(_) => "PartialFailure",
            StepError::Internal(_) => "Internal",
        }
    }

    /// Whether the state machine retries this error.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            StepError::UpstreamUnavailable(_) | StepError::StoreUnavailable(_)
        )
    }
}

impl From<ApiError> for StepError {
    fn from(e: ApiError) -> Self {
        let msg = e.to_string();
        match &e {
            ApiError::Timeout { .. }
            | ApiError::Connect { .. }
            | ApiError::Budget { .. }
            | ApiError::Truncated { .. } => StepError::UpstreamUnavailable(msg),
            ApiError::Status { status, .. } => match *status {
                401 | 403 => StepError::AuthError(msg),
                // 501 is Tailscale's answer for a device outside the tailnet: deterministic.
                429 | 500 | 502..=599 => StepError::UpstreamUnavailable(msg),
                _ => StepError::UpstreamRejected(msg),
            },
            ApiError::Decode { .. } | ApiError::Protocol { .. } => StepError::UpstreamRejected(msg),
            ApiError::Config(_) => StepError::ConfigError(msg),
        }
    }
}

impl From<StoreError> for StepError {
    fn from(e: StoreError) -> Self {
        let msg = e.to_string();
        match e {
            StoreError::Unavailable(_) => StepError::StoreUnavailable(msg),
            StoreError::Rejected(_) | StoreError::Corrupt(_) => StepError::ConfigError(msg),
            StoreError::Conflict(_) => StepError::InvalidInput(msg),
        }
    }
}

impl From<SecretError> for StepError {
    fn from(e: SecretError) -> Self {
        StepError::ConfigError(e.to_string())
    }
}

impl From<ConfigError> for StepError {
    fn from(e: ConfigError) -> Self {
        StepError::ConfigError(e.to_string())
    }
}

#[cfg(feature = "lambda")]
impl From<StepError> for lambda_runtime::Diagnostic {
    fn from(e: StepError) -> Self {
        lambda_runtime::Diagnostic {
            error_type: e.name().to_string(),
            error_message: e.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(status: u16) -> StepError {
        ApiError::Status {
            api: "tailscale",
            what: "list devices".into(),
            status,
            message: "x".into(),
            retry_after: None,
        }
        .into()
    }

    #[test]
    fn api_status_maps_to_documented_category() {
        assert_eq!(status(401).name(), "AuthError");
        assert_eq!(status(403).name(), "AuthError");
        assert_eq!(status(429).name(), "UpstreamUnavailable");
        assert_eq!(status(500).name(), "UpstreamUnavailable");
        assert_eq!(status(504).name(), "UpstreamUnavailable");
        assert_eq!(status(400).name(), "UpstreamRejected");
        assert_eq!(status(404).name(), "UpstreamRejected");
        assert_eq!(status(501).name(), "UpstreamRejected");
    }

    #[test]
    fn names_list_matches_variants() {
        let all = [
            StepError::InvalidInput(String::new()),
            StepError::ConfigError(String::new()),
            StepError::AuthError(String::new()),
            StepError::UpstreamUnavailable(String::new()),
            StepError::UpstreamRejected(String::new()),
            StepError::StoreUnavailable(String::new()),
            StepError::StaleSnapshot(String::new()),
            StepError::PartialFailure(String::new()),
            StepError::Internal(String::new()),
        ];
        let names: Vec<_> = all.iter().map(StepError::name).collect();
        assert_eq!(names, StepError::NAMES);
    }

    /// Errors the Lambda service itself raises for an invocation (not the
    /// function): throttling and transient service faults, worth retrying.
    const LAMBDA_SERVICE_ERRORS: [&str; 4] = [
        "Lambda.ServiceException",
        "Lambda.AWSLambdaException",
        "Lambda.SdkClientException",
        "Lambda.TooManyRequestsException",
    ];

    /// `(ErrorEquals entries, is a Retry)` of every retrier and catcher.
    fn error_matchers(v: &serde_json::Value, in_retry: bool, out: &mut Vec<(Vec<String>, bool)>) {
        match v {
            serde_json::Value::Object(map) => {
                if let Some(names) = map.get("ErrorEquals") {
                    let names = names
                        .as_array()
                        .expect("ErrorEquals is an array")
                        .iter()
                        .map(|n| n.as_str().expect("ErrorEquals holds strings").to_string())
                        .collect();
                    out.push((names, in_retry));
                }
                for (key, child) in map {
                    let in_retry = match key.as_str() {
                        "Retry" => true,
                        "Catch" => false,
                        _ => in_retry,
                    };
                    error_matchers(child, in_retry, out);
                }
            }
            serde_json::Value::Array(items) => {
                for item in items {
                    error_matchers(item, in_retry, out);
                }
            }
            _ => {}
        }
    }

    #[test]
    fn state_machine_matches_only_documented_error_names() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../infra/statemachine.asl.json"
        );
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
        let asl: serde_json::Value = serde_json::from_str(&text).expect("definition is JSON");
        let mut matchers = Vec::new();
        error_matchers(&asl, false, &mut matchers);
        assert!(
            matchers.iter().any(|(_, retry)| *retry),
            "no Retry found in {path}"
        );
        let retryable: Vec<&str> = [
            StepError::InvalidInput(String::new()),
            StepError::ConfigError(String::new()),
            StepError::AuthError(String::new()),
            StepError::UpstreamUnavailable(String::new()),
            StepError::UpstreamRejected(String::new()),
            StepError::StoreUnavailable(String::new()),
            StepError::StaleSnapshot(String::new()),
            StepError::PartialFailure(String::new()),
            StepError::Internal(String::new()),
        ]
        .iter()
        .filter(|e| e.is_retryable())
        .map(StepError::name)
        .collect();
        for (names, in_retry) in &matchers {
            for name in names {
                let known = name.starts_with("States.")
                    || StepError::NAMES.contains(&name.as_str())
                    || LAMBDA_SERVICE_ERRORS.contains(&name.as_str());
                assert!(
                    known,
                    "ErrorEquals entry {name:?} is no documented error name"
                );
                if *in_retry && StepError::NAMES.contains(&name.as_str()) {
                    assert!(
                        retryable.contains(&name.as_str()),
                        "Retry lists {name:?}, which is not retryable"
                    );
                }
            }
        }
    }
}
