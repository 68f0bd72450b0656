//! The HTTP layer both API clients share: one `reqwest::Client` with timeouts,
//! base-URL validation (https, or plain http on loopback only), a single retry
//! policy with exponential backoff, jitter and `Retry-After`, and `ApiError`.

use backon::{ExponentialBuilder, Retryable};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use reqwest::{Response, StatusCode};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::time::Instant;
use url::Url;

/// Errors talking to Tailscale or TinyMDM. Messages name the API and the call,
/// carry at most a short excerpt of a response body, and never a credential.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{api} {what}: request timed out")]
    Timeout { api: &'static str, what: String },
    #[error("{api} {what}: connection failed: {detail}")]
    Connect {
        api: &'static str,
        what: String,
        detail: String,
    },
    #[error("{api} {what}: time budget exhausted after retries")]
    Budget { api: &'static str, what: String },
    #[error("{api} {what}: HTTP {status}: {message}")]
    Status {
        api: &'static str,
        what: String,
        status: u16,
        message: String,
        retry_after: Option<Duration>,
    },
    #[error("{api} {what}: response body cut short: {detail}")]
    Truncated {
        api: &'static str,
        what: String,
        detail: String,
    },
    #[error("{api} {what}: unexpected response: {detail}")]
    Decode {
        api: &'static str,
        what: String,
        detail: String,
    },
    #[error("{api} {what}: {detail}")]
    Protocol {
        api: &'static str,
        what: String,
        detail: String,
    },
    #[error("{0}")]
    Config(String),
}

impl ApiError {
    /// The HTTP status, if the server answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            ApiError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    fn is_retryable(&self) -> bool {
        match self {
            ApiError::Timeout { .. } | ApiError::Connect { .. } | ApiError::Truncated { .. } => {
                true
            }
            ApiError::Status { status, .. } => {
                matches!(*status, 429 | 500 | 502 | 503 | 504)
            }
            _ => false,
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            ApiError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

tokio::task_local! {
    /// The deadline of the current step invocation (see `with_deadline`).
    static DEADLINE: Instant;
}

/// Runs `fut` with a deadline for every API call made inside it: retries stop,
/// and requests are cut short, so the step ends with `UpstreamUnavailable`
/// before the deadline instead of being killed at it. Lambda passes its
/// invocation deadline minus a margin.
pub async fn with_deadline<F: std::future::Future>(deadline: Option<Instant>, fut: F) -> F::Output {
    match deadline {
        Some(d) => DEADLINE.scope(d, fut).await,
        None => fut.await,
    }
}

/// Why a response body could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BodyError {
    pub detail: String,
    /// The body ended early (truncated JSON): worth another try.
    pub truncated: bool,
    /// Where serde_json found an invalid number (line, column), if it did. A
    /// body cut inside a number (`"latitude": 0.`, `1e`, `-`) is reported so,
    /// not as EOF: at the body's last non-whitespace byte, on a body that
    /// starts like a JSON object or array, the transport takes it as cut.
    pub bad_number_at: Option<(usize, usize)>,
}

impl From<serde_json::Error> for BodyError {
    fn from(e: serde_json::Error) -> Self {
        BodyError {
            truncated: e.is_eof(),
            bad_number_at: bad_number_at(&e),
            detail: e.to_string(),
        }
    }
}

impl BodyError {
    /// Like `From<serde_json::Error>`, but the detail never quotes a value
    /// from the body (serde's "invalid type: string \"...\"" does): only the
    /// kind of error and where it is. For bodies that carry credentials.
    pub fn without_values(e: &serde_json::Error) -> Self {
        let kind = match e.classify() {
            serde_json::error::Category::Io => "read error",
            serde_json::error::Category::Syntax => "invalid JSON",
            serde_json::error::Category::Data => "unexpected shape",
            serde_json::error::Category::Eof => "unexpected end of input",
        };
        BodyError {
            truncated: e.is_eof(),
            bad_number_at: bad_number_at(e),
            detail: format!("{kind} at line {} column {}", e.line(), e.column()),
        }
    }
}

/// Where serde_json found an invalid number: the one error other than EOF
/// that a cut can cause (serde_json has no public error code for it, hence
/// the message).
fn bad_number_at(e: &serde_json::Error) -> Option<(usize, usize)> {
    (e.is_syntax() && e.to_string().starts_with("invalid number")).then(|| (e.line(), e.column()))
}

impl From<String> for BodyError {
    fn from(detail: String) -> Self {
        BodyError {
            detail,
            truncated: false,
            bad_number_at: None,
        }
    }
}

impl From<&str> for BodyError {
    fn from(detail: &str) -> Self {
        detail.to_string().into()
    }
}

impl BodyError {
    /// Whether to treat the failure as a body cut short, given a scan of the
    /// whole body: an early end, or an invalid number at the very end of a
    /// body that starts like a JSON object or array (every response both APIs
    /// send is one). A bad number inside a body, junk after a complete one or
    /// a text that merely starts with `[` is not a cut and is not retried.
    fn cut_short(&self, scan: &Scan) -> bool {
        self.truncated
            || (matches!(scan.first, Some(b'{' | b'['))
                && matches!((self.bad_number_at, scan.last), (Some(at), Some(last)) if at >= last))
    }
}

/// `e`, the error of parsing all of `text` (a body, or the part of one that
/// `json_split` parsed), with the decision whether `text` was cut short made
/// here and no position left for the transport to compare with the body.
pub(crate) fn cut_short_in(text: &[u8], mut e: BodyError) -> BodyError {
    e.truncated = e.cut_short(&Scan::of(text));
    e.bad_number_at = None;
    e
}

/// The first non-whitespace byte of a body and the position of its last
/// one, counted the way serde_json reports errors: lines from 1, columns as
/// bytes since the last newline (the byte itself included).
#[derive(Debug, Clone, Copy)]
struct Scan {
    first: Option<u8>,
    last: Option<(usize, usize)>,
    line: usize,
    column: usize,
}

impl Default for Scan {
    fn default() -> Self {
        Scan {
            first: None,
            last: None,
            line: 1,
            column: 0,
        }
    }
}

impl Scan {
    fn of(body: &[u8]) -> Scan {
        let mut scan = Scan::default();
        scan.feed(body);
        scan
    }

    /// Takes in the next part of the body.
    fn feed(&mut self, part: &[u8]) {
        if self.first.is_none() {
            self.first = part.iter().copied().find(|b| !b.is_ascii_whitespace());
        }
        // Position of `part[i]`: lines and columns carried from before it.
        let (line, column) = (self.line, self.column);
        let position = |i: usize| {
            let before = &part[..i];
            match before.iter().rposition(|&b| b == b'\n') {
                Some(nl) => (
                    line + before.iter().filter(|&&b| b == b'\n').count(),
                    i - nl,
                ),
                None => (line, column + i + 1),
            }
        };
        if let Some(i) = part.iter().rposition(|b| !b.is_ascii_whitespace()) {
            self.last = Some(position(i));
        }
        if !part.is_empty() {
            let end = position(part.len() - 1);
            (self.line, self.column) = if part[part.len() - 1] == b'\n' {
                (end.0 + 1, 0)
            } else {
                end
            };
        }
    }
}

/// Largest body buffer allocated up front from a `Content-Length`.
const MAX_PREALLOCATION: u64 = 256 << 20;

/// The body of a response as a blocking `Read`, fed chunk by chunk from the
/// async side (see `Transport::send_stream`). Ends when the body ends.
pub struct BodyReader {
    rx: tokio::sync::mpsc::Receiver<bytes::Bytes>,
    current: bytes::Bytes,
    tail: Arc<BodyTail>,
}

/// What a `BodyReader` saw of the body: a `Scan` of it so far, and whether
/// the parser read to the end.
#[derive(Default)]
struct BodyTail(std::sync::Mutex<(Scan, bool)>);

impl BodyTail {
    fn lock(&self) -> std::sync::MutexGuard<'_, (Scan, bool)> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The scan of the whole body if the parser read to its end; if it
    /// stopped before, its error is not at the end, so not a cut.
    fn scan_if_read(&self) -> Option<Scan> {
        let (scan, at_end) = *self.lock();
        at_end.then_some(scan)
    }
}

impl std::io::Read for BodyReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(chunk) => {
                    self.tail.lock().0.feed(&chunk);
                    self.current = chunk;
                }
                None => {
                    self.tail.lock().1 = true;
                    return Ok(0);
                }
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        bytes::Buf::advance(&mut self.current, n);
        Ok(n)
    }
}

/// Timeouts and retry settings shared by both clients.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    /// Retries after the first attempt, for retryable failures.
    pub max_retries: usize,
    pub min_backoff: Duration,
    pub max_backoff: Duration,
    /// Longest `Retry-After` honoured; longer values are capped to this.
    pub max_retry_after: Duration,
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(20),
            max_retries: 4,
            min_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(8),
            max_retry_after: Duration::from_secs(30),
        }
    }
}

/// Builds the one `reqwest::Client` a process uses for an API.
pub fn build_client(settings: &HttpSettings) -> Result<reqwest::Client, ApiError> {
    reqwest::Client::builder()
        .connect_timeout(settings.connect_timeout)
        .timeout(settings.request_timeout)
        .user_agent(concat!("fleetsync/", env!("CARGO_PKG_VERSION")))
        .pool_idle_timeout(Duration::from_secs(50))
        .build()
        .map_err(|e| ApiError::Config(format!("cannot build HTTP client: {e}")))
}

/// Parses an API base URL: https anywhere, plain http only on a loopback address.
pub fn parse_base_url(var: &str, value: &str) -> Result<Url, ApiError> {
    let url = Url::parse(value.trim())
        .map_err(|e| ApiError::Config(format!("{var} is not a valid URL ({value:?}): {e}")))?;
    match url.scheme() {
        "https" => {}
        "http" if is_loopback(&url) => {}
        "http" => {
            return Err(ApiError::Config(format!(
                "{var} must use https unless it points at a loopback address, got {value:?}"
            )));
        }
        other => {
            return Err(ApiError::Config(format!(
                "{var} must be an http(s) URL, got scheme {other:?}"
            )));
        }
    }
    if url.host().is_none() {
        return Err(ApiError::Config(format!("{var} has no host: {value:?}")));
    }
    Ok(url)
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// Joins a path below a base URL, keeping any path prefix the base has.
pub fn join(base: &Url, path: &str) -> Url {
    let mut url = base.clone();
    let prefix = url.path().trim_end_matches('/').to_string();
    url.set_path(&format!("{prefix}/{}", path.trim_start_matches('/')));
    url
}

/// Shared state of one API client: the HTTP client, settings, an optional
/// deadline for the whole step, and a request counter.
#[derive(Debug, Clone)]
pub struct Transport {
    pub api: &'static str,
    pub client: reqwest::Client,
    pub settings: HttpSettings,
    deadline: Option<Instant>,
    requests: Arc<AtomicU64>,
    limiter: Option<Arc<DefaultDirectRateLimiter>>,
}

impl Transport {
    pub fn new(api: &'static str, client: reqwest::Client, settings: HttpSettings) -> Self {
        Transport {
            api,
            client,
            settings,
            deadline: None,
            requests: Arc::new(AtomicU64::new(0)),
            limiter: None,
        }
    }

    /// Paces every request (retries included) to at most `per_second`, evenly
    /// spaced: a burst of one never exceeds the rate in any one-second window.
    pub fn with_rate_limit(mut self, per_second: u32) -> Self {
        let rate = NonZeroU32::new(per_second.max(1)).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::with_period(Duration::from_secs(1) / rate.get())
            .unwrap_or_else(|| Quota::per_second(rate))
            .allow_burst(NonZeroU32::MIN);
        self.limiter = Some(Arc::new(RateLimiter::direct(quota)));
        self
    }

    /// Stops retrying (with `ApiError::Budget`) once `deadline` is near.
    pub fn with_deadline(mut self, deadline: Option<Instant>) -> Self {
        self.deadline = deadline;
        self
    }

    /// HTTP requests sent so far, retries included.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    fn deadline(&self) -> Option<Instant> {
        let scoped = DEADLINE.try_with(|d| *d).ok();
        match (self.deadline, scoped) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Sends the request `build` makes and parses the body with `parse`,
    /// retrying retryable failures (connection errors, timeouts, 429, 5xx, a
    /// body cut short) with exponential backoff and jitter, honouring
    /// `Retry-After` up to a cap, and within the deadline.
    ///
    /// Only idempotent calls go through here (GET, the token POST, and DELETE,
    /// whose repeat answers 404, mapped to "already gone"), so a retry cannot do harm.
    pub async fn send_parse<T, F, P>(&self, what: &str, build: F, parse: P) -> Result<T, ApiError>
    where
        F: Fn() -> reqwest::RequestBuilder,
        P: Fn(&[u8]) -> Result<T, BodyError>,
    {
        self.send_parse_inner(what, build, parse, true).await
    }

    /// `send_parse` for a response that carries a credential (the OAuth token
    /// response): an error never quotes the body, so a cut or malformed token
    /// response cannot put the token into a log line or a run record. `parse`
    /// must keep values out of its own error details too.
    pub async fn send_parse_secret<T, F, P>(
        &self,
        what: &str,
        build: F,
        parse: P,
    ) -> Result<T, ApiError>
    where
        F: Fn() -> reqwest::RequestBuilder,
        P: Fn(&[u8]) -> Result<T, BodyError>,
    {
        self.send_parse_inner(what, build, parse, false).await
    }

    async fn send_parse_inner<T, F, P>(
        &self,
        what: &str,
        build: F,
        parse: P,
        quote_body: bool,
    ) -> Result<T, ApiError>
    where
        F: Fn() -> reqwest::RequestBuilder,
        P: Fn(&[u8]) -> Result<T, BodyError>,
    {
        let deadline = self.deadline();
        let attempt = || async {
            let mut response = self.start(what, &build, deadline).await?;
            // Read into one buffer sized by Content-Length: collecting the
            // chunks and then joining them would hold the body twice.
            let hint = response
                .content_length()
                .unwrap_or(0)
                .min(MAX_PREALLOCATION);
            let mut body = Vec::with_capacity(hint as usize);
            while let Some(chunk) = response
                .chunk()
                .await
                .map_err(|e| self.transport_error(what, &e))?
            {
                body.extend_from_slice(&chunk);
            }
            parse(&body).map_err(|e| {
                let cut = e.cut_short(&Scan::of(&body));
                let detail = if quote_body {
                    format!("{} (body starts {:?})", e.detail, excerpt(&body))
                } else {
                    format!("{} (body of {} bytes not shown)", e.detail, body.len())
                };
                self.body_error(what, cut, detail)
            })
        };
        self.with_retries(what, deadline, attempt).await
    }

    /// Like `send_parse`, but the body is parsed while it arrives: `parse`
    /// reads it from a blocking reader on a blocking thread, so a large
    /// listing is never held whole in memory. Each attempt parses afresh.
    pub async fn send_stream<T, F, P>(&self, what: &str, build: F, parse: P) -> Result<T, ApiError>
    where
        F: Fn() -> reqwest::RequestBuilder,
        P: Fn(BodyReader) -> Result<T, BodyError> + Send + Sync + 'static,
        T: Send + 'static,
    {
        let deadline = self.deadline();
        let parse = Arc::new(parse);
        let attempt = || async {
            let mut response = self.start(what, &build, deadline).await?;
            let (tx, rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(8);
            let parse = parse.clone();
            let tail = Arc::new(BodyTail::default());
            let reader = BodyReader {
                rx,
                current: bytes::Bytes::new(),
                tail: tail.clone(),
            };
            let parser = tokio::task::spawn_blocking(move || parse(reader));
            let mut cut = None;
            loop {
                match response.chunk().await {
                    Ok(Some(chunk)) => {
                        // A closed channel means the parser stopped early (an error).
                        if tx.send(chunk).await.is_err() {
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        cut = Some(self.transport_error(what, &e));
                        break;
                    }
                }
            }
            drop(tx);
            let parsed = parser.await.map_err(|e| ApiError::Decode {
                api: self.api,
                what: what.to_string(),
                detail: format!("body parser failed: {e}"),
            })?;
            if let Some(e) = cut {
                return Err(e);
            }
            parsed.map_err(|e| {
                let cut = match tail.scan_if_read() {
                    Some(scan) => e.cut_short(&scan),
                    None => e.truncated,
                };
                self.body_error(what, cut, e.detail)
            })
        };
        self.with_retries(what, deadline, attempt).await
    }

    /// One attempt up to the response head: deadline check, rate limit, send,
    /// and the status check (a non-success status is an `ApiError::Status`).
    async fn start<F>(
        &self,
        what: &str,
        build: &F,
        deadline: Option<Instant>,
    ) -> Result<Response, ApiError>
    where
        F: Fn() -> reqwest::RequestBuilder,
    {
        if let Some(deadline) = deadline
            && Instant::now() + Duration::from_millis(200) >= deadline
        {
            return Err(ApiError::Budget {
                api: self.api,
                what: what.to_string(),
            });
        }
        if let Some(limiter) = &self.limiter {
            limiter.until_ready().await;
        }
        self.requests.fetch_add(1, Ordering::Relaxed);
        let mut request = build();
        if let Some(deadline) = deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            request = request.timeout(left.min(self.settings.request_timeout));
        }
        let response = request
            .send()
            .await
            .map_err(|e| self.transport_error(what, &e))?;
        if !response.status().is_success() {
            return Err(self.status_error(what, response).await);
        }
        Ok(response)
    }

    fn body_error(&self, what: &str, truncated: bool, detail: String) -> ApiError {
        let (api, what) = (self.api, what.to_string());
        if truncated {
            ApiError::Truncated { api, what, detail }
        } else {
            ApiError::Decode { api, what, detail }
        }
    }

    /// Runs `attempt` until it succeeds, fails for good, or the retries or the
    /// deadline run out.
    async fn with_retries<T, A, Fut>(
        &self,
        what: &str,
        deadline: Option<Instant>,
        attempt: A,
    ) -> Result<T, ApiError>
    where
        A: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, ApiError>>,
    {
        let backoff = ExponentialBuilder::default()
            .with_min_delay(self.settings.min_backoff)
            .with_max_delay(self.settings.max_backoff)
            .with_max_times(self.settings.max_retries)
            .with_jitter();
        let max_retry_after = self.settings.max_retry_after;
        attempt
            .retry(backoff)
            .sleep(tokio::time::sleep)
            .when(ApiError::is_retryable)
            .adjust(move |e, delay| {
                let delay = match e.retry_after() {
                    Some(ra) => Some(ra.min(max_retry_after)),
                    None => delay,
                }?;
                // Do not sleep past the step's deadline: give up instead.
                match deadline {
                    Some(d) if Instant::now() + delay >= d => None,
                    _ => Some(delay),
                }
            })
            .notify(|e, delay| {
                tracing::warn!(api = self.api, call = what, error = %e, delay_ms = delay.as_millis() as u64, "retrying");
            })
            .await
    }

    fn transport_error(&self, what: &str, e: &reqwest::Error) -> ApiError {
        if e.is_timeout() {
            ApiError::Timeout {
                api: self.api,
                what: what.to_string(),
            }
        } else {
            // The URL is ours (no credentials in it), but keep only the error chain text.
            let mut detail = e.without_url_ref().to_string();
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                detail.push_str(": ");
                detail.push_str(&s.to_string());
                source = s.source();
            }
            ApiError::Connect {
                api: self.api,
                what: what.to_string(),
                detail,
            }
        }
    }

    async fn status_error(&self, what: &str, response: Response) -> ApiError {
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let body = response.text().await.unwrap_or_default();
        ApiError::Status {
            api: self.api,
            what: what.to_string(),
            status: status.as_u16(),
            message: error_message(status, &body),
            retry_after,
        }
    }
}

trait WithoutUrlRef {
    fn without_url_ref(&self) -> String;
}

impl WithoutUrlRef for reqwest::Error {
    fn without_url_ref(&self) -> String {
        let kind = if self.is_connect() {
            "connect error"
        } else if self.is_body() || self.is_decode() {
            "body error"
        } else if self.is_request() {
            "request error"
        } else {
            "transport error"
        };
        kind.to_string()
    }
}

/// `Retry-After` as delta-seconds or an HTTP date.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(
        when.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// The error text of a response body: Tailscale's `{"message"}`, TinyMDM's
/// `{"error": "…"}` or `{"error": {"message"}}`, else a short excerpt.
pub fn error_message(status: StatusCode, body: &str) -> String {
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(body) {
        let found = v
            .get("message")
            .and_then(|m| m.as_str())
            .or_else(|| v.get("error").and_then(|e| e.as_str()))
            .or_else(|| {
                v.get("error")
                    .and_then(|e| e.get("message"))
                    .and_then(|m| m.as_str())
            });
        if let Some(m) = found {
            return truncate(m, 200);
        }
    }
    let text = body.trim();
    if text.is_empty() {
        status
            .canonical_reason()
            .unwrap_or("no message")
            .to_lowercase()
    } else {
        truncate(text, 200)
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

fn excerpt(bytes: &[u8]) -> String {
    truncate(
        &String::from_utf8_lossy(&bytes[..bytes.len().min(120)]),
        120,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_cut_anywhere_count_as_truncated_and_whole_bad_bodies_do_not() {
        // Devices are first taken as raw JSON, as both clients do.
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct Page {
            results: Vec<Box<serde_json::value::RawValue>>,
        }
        let parse =
            |body: &[u8]| BodyError::from(serde_json::from_slice::<Page>(body).unwrap_err());
        // Scanned whole, and fed in parts as the streaming path does.
        let scans = |body: &[u8]| {
            let mut parts = Scan::default();
            for part in body.chunks(3) {
                parts.feed(part);
            }
            [Scan::of(body), parts]
        };
        let whole =
            b"{\"results\":[{\"id\":\"a\",\n \"latitude\":0.25,\"ok\":true,\"n\":[-0.5,1e3]}]}\n";
        let mut not_eof = 0;
        for at in 1..whole.len() - 1 {
            let body = &whole[..at];
            let e = parse(body);
            for scan in scans(body) {
                assert!(
                    e.cut_short(&scan),
                    "{:?}: {e:?} {scan:?}",
                    String::from_utf8_lossy(body)
                );
            }
            not_eof += usize::from(!e.truncated);
        }
        // A number cut after its point or exponent (`0.`, `1e`) inside raw
        // JSON is "invalid number" to serde_json, not EOF: the case the
        // position check is for.
        assert!(not_eof > 0);
        for bad in [
            &br#"{"results":[1,]}"#[..],
            br#"{"results": nope}"#,
            br#"{"results":[{"id":"a","latitude":1.,"ok":true}]}"#,
            b"{\"results\":[{\"id\":\"a\",\"latitude\":1.\n}]}",
            br#"{"results":[]}garbage"#,
            b"{\"results\":[]}\n x \n",
            b"[error] upstream timed out",
            b"<html><body>Service unavailable</body></html>",
            b"<html><body>Service unav",
            b"[}",
        ] {
            let e = parse(bad);
            for scan in scans(bad) {
                assert!(
                    !e.cut_short(&scan),
                    "{:?}: {e:?}",
                    String::from_utf8_lossy(bad)
                );
            }
        }
        let wrong_type = BodyError::from("results is not a list");
        assert!(!wrong_type.cut_short(&Scan::of(b"{\"results\": 1}")));
    }

    #[test]
    fn scan_positions_match_serde_json_error_positions() {
        // Each fails at its last non-whitespace byte.
        for body in [
            &b"{\"a\": [1, 2,\n  3."[..],
            b"\n\n  {\"b\":\n-",
            b"{\"c\":\"x\"} y",
            b"\n[1e",
        ] {
            let e = serde_json::from_slice::<serde_json::Value>(body).unwrap_err();
            let last = Scan::of(body).last.unwrap();
            let mut parts = Scan::default();
            for part in body.chunks(2) {
                parts.feed(part);
            }
            assert_eq!(parts.last, Some(last));
            assert_eq!((e.line(), e.column()), last, "{e}");
        }
    }

    #[test]
    fn base_url_accepts_https_and_loopback_http_only() {
        assert!(parse_base_url("X", "https://api.tailscale.com").is_ok());
        assert!(parse_base_url("X", "http://127.0.0.1:8080").is_ok());
        assert!(parse_base_url("X", "http://localhost:1").is_ok());
        assert!(parse_base_url("X", "http://[::1]:1").is_ok());
        let err = parse_base_url("TAILSCALE_API_BASE_URL", "http://example.com").unwrap_err();
        assert!(err.to_string().contains("TAILSCALE_API_BASE_URL"), "{err}");
        assert!(parse_base_url("X", "http://10.0.0.1").is_err());
        assert!(parse_base_url("X", "ftp://127.0.0.1").is_err());
        assert!(parse_base_url("X", "not a url").is_err());
    }

    #[test]
    fn join_keeps_base_path_prefix() {
        let base = Url::parse("http://127.0.0.1:9/prefix/").unwrap();
        assert_eq!(
            join(&base, "/api/v2/x").as_str(),
            "http://127.0.0.1:9/prefix/api/v2/x"
        );
        let base = Url::parse("https://www.tinymdm.net").unwrap();
        assert_eq!(
            join(&base, "api/v1/devices").as_str(),
            "https://www.tinymdm.net/api/v1/devices"
        );
    }

    #[test]
    fn retry_after_parses_seconds_and_dates() {
        assert_eq!(parse_retry_after("3"), Some(Duration::from_secs(3)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn error_message_reads_both_api_shapes() {
        let s = StatusCode::BAD_REQUEST;
        assert_eq!(
            error_message(s, r#"{"message":"API token invalid"}"#),
            "API token invalid"
        );
        assert_eq!(
            error_message(s, r#"{"error":"Invalid group id"}"#),
            "Invalid group id"
        );
        assert_eq!(
            error_message(s, r#"{"error":{"message":"Invalid API credentials"}}"#),
            "Invalid API credentials"
        );
        assert_eq!(error_message(s, ""), "bad request");
        assert_eq!(error_message(s, "<html>oops</html>"), "<html>oops</html>");
    }
}
