//! Machinery both simulators share: the loopback server on its own runtime
//! thread, the ordered device table, the request log, and fault injection
//! (the `Route`/`Fault` types and the code that applies a fault to a request).

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::future::IntoFuture;
use std::io;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// Locks a mutex, ignoring poisoning: a panicking handler must not wedge the sim.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A JSON response with the given status.
pub(crate) fn json_response(status: StatusCode, body: &Value) -> Response {
    let bytes = serde_json::to_vec(body).expect("JSON values serialize");
    raw_json(status, bytes)
}

/// A response whose body is already-serialized JSON.
pub(crate) fn raw_json(status: StatusCode, body: Vec<u8>) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

/// The query string as key/value pairs (last value wins).
pub(crate) fn query_map(query: Option<&str>) -> HashMap<String, String> {
    url::form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

/// One request as the simulator saw it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    /// The OAuth client id a valid bearer token (or the token request) belongs
    /// to, or the TinyMDM public key of an authenticated request; else `None`.
    pub principal: Option<String>,
    /// Status sent, or 0 when the connection was reset instead.
    pub status: u16,
}

/// Every API request a simulator served (admin routes under `/_sim/` excluded).
#[derive(Default)]
pub(crate) struct RequestLog(Mutex<Vec<RecordedRequest>>);

impl RequestLog {
    pub(crate) fn record(&self, request: RecordedRequest) {
        lock(&self.0).push(request);
    }

    pub(crate) fn all(&self) -> Vec<RecordedRequest> {
        lock(&self.0).clone()
    }

    pub(crate) fn clear(&self) {
        lock(&self.0).clear();
    }
}

/// The endpoints a fault can target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Route {
    /// Any API endpoint of the simulator (the first request a fault applies to).
    Any,
    /// Tailscale `POST /api/v2/oauth/token`.
    Token,
    /// Tailscale `GET /api/v2/tailnet/{tailnet}/devices`, TinyMDM `GET /api/v1/devices`.
    ListDevices,
    /// Tailscale `GET /api/v2/device/{id}`, TinyMDM `GET /api/v1/devices/{id}`.
    GetDevice,
    /// Tailscale `DELETE /api/v2/device/{id}`.
    DeleteDevice,
    /// TinyMDM `GET /api/v1/devices/{id}/apps`.
    DeviceApps,
    /// TinyMDM `GET /api/v1/groups`.
    Groups,
    /// TinyMDM `GET /api/v1/enterprise/info`.
    EnterpriseInfo,
}

impl Route {
    fn covers(self, actual: Route) -> bool {
        self == Route::Any || self == actual
    }
}

/// A misbehaviour to inject into upcoming responses. JSON form (admin route):
/// `{"kind": "status", "status": 503, "retry_after": "2", "body": "..."}`,
/// `{"kind": "delay", "millis": 3000}`, `{"kind": "reset"}`, ...
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Fault {
    /// Answer with this status instead of handling the request. `body` defaults
    /// to the API's error JSON for the status; `retry_after` sets `Retry-After`.
    Status {
        status: u16,
        #[serde(default)]
        retry_after: Option<String>,
        #[serde(default)]
        body: Option<String>,
    },
    /// Wait this long, then handle the request normally.
    Delay { millis: u64 },
    /// Drop the connection without a complete response.
    Reset,
    /// Handle the request, then send `200` with the first half of the body.
    Truncated,
    /// Handle the request, then send `200` with the body cut inside its first
    /// decimal number, right after the point (`"latency": 12.`): a cut JSON
    /// parsers report as a bad number rather than as an early end. Falls
    /// back to the first half when the body has no decimal number.
    TruncatedInNumber,
    /// Send `200` with an HTML body instead of JSON.
    NonJson,
    /// List endpoints: one device of the response loses its `id` (and, on
    /// Tailscale, `nodeId`) and gets wrongly typed fields.
    CorruptDevice,
    /// TinyMDM list: the page also carries a device from the neighbouring page.
    RepeatDevice,
    /// TinyMDM list: an empty `results` page although `count` is not reached.
    EmptyPage,
    /// TinyMDM list, a page after the first: the account's first device is
    /// deleted just before this page is served, as an admin deleting a device
    /// while a sync pages through the account would. The pages shift: one
    /// device that belonged on this page was on the previous one.
    DeleteBeforePage,
    /// Tailscale: every token issued so far expires now; the request carrying
    /// one gets `401`, and tokens issued afterwards work.
    ExpireTokens,
}

impl Fault {
    /// `Fault::Status` with the default body and no `Retry-After`.
    pub fn status(status: u16) -> Self {
        Fault::Status {
            status,
            retry_after: None,
            body: None,
        }
    }

    /// `Fault::Status` with a `Retry-After` header value.
    pub fn status_retry_after(status: u16, retry_after: impl Into<String>) -> Self {
        Fault::Status {
            status,
            retry_after: Some(retry_after.into()),
            body: None,
        }
    }

    /// `Fault::Delay` for the given duration.
    pub fn delay(duration: Duration) -> Self {
        Fault::Delay {
            millis: u64::try_from(duration.as_millis()).unwrap_or(u64::MAX),
        }
    }
}

/// A fault waiting in the queue, with how many more requests it will hit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingFault {
    pub route: Route,
    pub fault: Fault,
    pub remaining: usize,
}

/// Faults injected and not yet consumed, in injection order.
#[derive(Default)]
pub(crate) struct Faults(Mutex<Vec<PendingFault>>);

impl Faults {
    pub(crate) fn inject(&self, route: Route, fault: Fault, times: usize) {
        if times > 0 {
            lock(&self.0).push(PendingFault {
                route,
                fault,
                remaining: times,
            });
        }
    }

    /// Consumes one use of the first queued fault that targets `route` and that
    /// `applies` accepts (a list-only fault waits for a list request).
    pub(crate) fn take(&self, route: Route, applies: impl Fn(&Fault) -> bool) -> Option<Fault> {
        let mut queue = lock(&self.0);
        let at = queue
            .iter()
            .position(|p| p.route.covers(route) && applies(&p.fault))?;
        let fault = queue[at].fault.clone();
        queue[at].remaining -= 1;
        if queue[at].remaining == 0 {
            queue.remove(at);
        }
        Some(fault)
    }

    pub(crate) fn pending(&self) -> Vec<PendingFault> {
        lock(&self.0).clone()
    }

    pub(crate) fn clear(&self) {
        lock(&self.0).clear();
    }
}

/// Body of `POST /_sim/faults`.
#[derive(Deserialize)]
struct InjectRequest {
    #[serde(default = "any_route")]
    route: Route,
    fault: Fault,
    #[serde(default = "one")]
    times: usize,
}

fn any_route() -> Route {
    Route::Any
}

fn one() -> usize {
    1
}

/// Body of `POST /_sim/churn`.
#[derive(Deserialize)]
pub(crate) struct ChurnRequest {
    pub fraction: f64,
    #[serde(default)]
    pub seed: u64,
}

/// Simulator state that carries a request log and a fault queue.
pub(crate) trait Harnessed: Send + Sync + 'static {
    fn log(&self) -> &RequestLog;
    fn faults(&self) -> &Faults;
}

/// `GET|DELETE /_sim/requests` and `GET|POST|DELETE /_sim/faults`.
pub(crate) fn admin_routes<S: Harnessed>() -> Router<Arc<S>> {
    Router::new()
        .route(
            "/_sim/requests",
            get(admin_requests::<S>).delete(admin_clear_requests::<S>),
        )
        .route(
            "/_sim/faults",
            get(admin_faults::<S>)
                .post(admin_inject::<S>)
                .delete(admin_clear_faults::<S>),
        )
}

async fn admin_requests<S: Harnessed>(State(st): State<Arc<S>>) -> Json<Vec<RecordedRequest>> {
    Json(st.log().all())
}

async fn admin_clear_requests<S: Harnessed>(State(st): State<Arc<S>>) -> StatusCode {
    st.log().clear();
    StatusCode::NO_CONTENT
}

async fn admin_faults<S: Harnessed>(State(st): State<Arc<S>>) -> Json<Vec<PendingFault>> {
    Json(st.faults().pending())
}

async fn admin_inject<S: Harnessed>(
    State(st): State<Arc<S>>,
    Json(body): Json<InjectRequest>,
) -> StatusCode {
    st.faults().inject(body.route, body.fault, body.times);
    StatusCode::NO_CONTENT
}

async fn admin_clear_faults<S: Harnessed>(State(st): State<Arc<S>>) -> StatusCode {
    st.faults().clear();
    StatusCode::NO_CONTENT
}

/// Request extension telling a list handler to misbehave.
#[derive(Clone, Debug)]
pub(crate) struct ActiveFault(pub Fault);

/// Response extension naming who made an authenticated request.
#[derive(Clone, Debug)]
pub(crate) struct Principal(pub String);

/// Response extension marking a response whose connection will be reset.
#[derive(Clone, Copy, Debug)]
pub(crate) struct WasReset;

/// Applies `fault` (if any) around the handler. `gate`, when set, replaces
/// the handler (e.g. a 401 for missing credentials); `error_body` builds the
/// API's error JSON for a status fault without an explicit body.
pub(crate) async fn dispatch(
    fault: Option<Fault>,
    gate: Option<Response>,
    mut req: Request,
    next: Next,
    error_body: fn(&str) -> Value,
) -> Response {
    async fn inner(gate: Option<Response>, req: Request, next: Next) -> Response {
        match gate {
            Some(response) => response,
            None => next.run(req).await,
        }
    }
    match fault {
        None | Some(Fault::ExpireTokens) => inner(gate, req, next).await,
        Some(Fault::Status {
            status,
            retry_after,
            body,
        }) => status_response(status, retry_after.as_deref(), body, error_body),
        Some(Fault::Delay { millis }) => {
            tokio::time::sleep(Duration::from_millis(millis)).await;
            inner(gate, req, next).await
        }
        Some(Fault::Reset) => reset_response(),
        Some(Fault::NonJson) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            "<html><head><title>Maintenance</title></head><body><h1>Service temporarily unavailable</h1></body></html>",
        )
            .into_response(),
        Some(Fault::Truncated) => truncate(inner(gate, req, next).await, half).await,
        Some(Fault::TruncatedInNumber) => {
            truncate(inner(gate, req, next).await, |b| {
                after_decimal_point(b).unwrap_or_else(|| half(b))
            })
            .await
        }
        Some(
            f @ (Fault::CorruptDevice
            | Fault::RepeatDevice
            | Fault::EmptyPage
            | Fault::DeleteBeforePage),
        ) => {
            req.extensions_mut().insert(ActiveFault(f));
            inner(gate, req, next).await
        }
    }
}

fn status_response(
    status: u16,
    retry_after: Option<&str>,
    body: Option<String>,
    error_body: fn(&str) -> Value,
) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let (content_type, bytes) = match body {
        Some(text) => {
            let kind = if serde_json::from_str::<Value>(&text).is_ok() {
                "application/json"
            } else {
                "text/plain; charset=utf-8"
            };
            (kind, text.into_bytes())
        }
        None => {
            let reason = code
                .canonical_reason()
                .unwrap_or("error")
                .to_ascii_lowercase();
            let json = error_body(&reason);
            ("application/json", serde_json::to_vec(&json).expect("JSON"))
        }
    };
    let mut response = (code, [(header::CONTENT_TYPE, content_type)], bytes).into_response();
    if let Some(value) = retry_after.and_then(|v| HeaderValue::from_str(v).ok()) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

// A body that fails on its first poll makes hyper abort the connection, so the
// client sees the connection close before a complete response.
fn reset_response() -> Response {
    let failing = futures::stream::once(async {
        Err::<Bytes, io::Error>(io::Error::new(
            io::ErrorKind::ConnectionReset,
            "simulated connection reset",
        ))
    });
    let mut response = Response::new(Body::from_stream(failing));
    response.extensions_mut().insert(WasReset);
    response
}

/// Where `Fault::Truncated` cuts a body.
fn half(body: &[u8]) -> usize {
    body.len() / 2
}

/// Just after the point of the first decimal number outside a string.
fn after_decimal_point(body: &[u8]) -> Option<usize> {
    let (mut in_string, mut escaped) = (false, false);
    for (i, &b) in body.iter().enumerate() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
        } else if b == b'"' {
            in_string = true;
        } else if b == b'.' && i > 0 && body[i - 1].is_ascii_digit() {
            return Some(i + 1);
        }
    }
    None
}

async fn truncate(response: Response, at: impl FnOnce(&[u8]) -> usize) -> Response {
    let (mut parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let cut = if bytes.len() > 1 {
        let at = at(&bytes).clamp(1, bytes.len() - 1);
        bytes.slice(..at)
    } else {
        Bytes::from_static(b"{\"")
    };
    parts.status = StatusCode::OK;
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, Body::from(cut))
}

/// The status to record for a response.
pub(crate) fn recorded_status(response: &Response) -> u16 {
    if response.extensions().get::<WasReset>().is_some() {
        0
    } else {
        response.status().as_u16()
    }
}

/// Keys a row is found by; the first is its primary key.
pub(crate) trait Row: Clone {
    fn keys(&self) -> Vec<String>;
}

/// Rows in insertion order with lookup by any of their keys. Rows sit behind
/// `Arc` so a list response can snapshot them cheaply and serialize outside
/// the lock.
pub(crate) struct Table<T> {
    next: u64,
    rows: BTreeMap<u64, Arc<T>>,
    index: HashMap<String, u64>,
}

impl<T: Row> Table<T> {
    pub(crate) fn new(rows: impl IntoIterator<Item = T>) -> Self {
        let mut table = Table {
            next: 0,
            rows: BTreeMap::new(),
            index: HashMap::new(),
        };
        for row in rows {
            table.upsert(row);
        }
        table
    }

    /// Inserts `row`, or replaces (in place) the row with the same primary key.
    pub(crate) fn upsert(&mut self, row: T) {
        let keys = row.keys();
        let seq = match keys.first().and_then(|k| self.index.get(k)).copied() {
            Some(seq) => {
                if let Some(old) = self.rows.remove(&seq) {
                    for key in old.keys() {
                        self.index.remove(&key);
                    }
                }
                seq
            }
            None => {
                self.next += 1;
                self.next
            }
        };
        for key in keys {
            self.index.insert(key, seq);
        }
        self.rows.insert(seq, Arc::new(row));
    }

    pub(crate) fn get(&self, key: &str) -> Option<Arc<T>> {
        self.index
            .get(key)
            .and_then(|seq| self.rows.get(seq))
            .cloned()
    }

    /// Mutable access; callers must not change the row's keys.
    pub(crate) fn get_mut(&mut self, key: &str) -> Option<&mut T> {
        let seq = *self.index.get(key)?;
        self.rows.get_mut(&seq).map(Arc::make_mut)
    }

    pub(crate) fn remove(&mut self, key: &str) -> Option<Arc<T>> {
        let seq = *self.index.get(key)?;
        let row = self.rows.remove(&seq)?;
        for key in row.keys() {
            self.index.remove(&key);
        }
        Some(row)
    }

    pub(crate) fn len(&self) -> usize {
        self.rows.len()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &Arc<T>> {
        self.rows.values()
    }

    pub(crate) fn snapshot(&self) -> Vec<Arc<T>> {
        self.rows.values().cloned().collect()
    }

    /// Mutable access to every row, in order (copy-on-write per row touched).
    pub(crate) fn rows_mut(&mut self) -> impl Iterator<Item = &mut Arc<T>> {
        self.rows.values_mut()
    }
}

/// A simulator's HTTP server, running on its own thread and Tokio runtime so
/// it works from sync code, from any test runtime (even one with paused time),
/// and stops with its handle.
pub(crate) struct Server {
    base_url: String,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    /// Binds 127.0.0.1:`port` (0 picks a free port); returns the listener and
    /// its base URL, which routers need before the server starts.
    pub(crate) fn bind(port: u16) -> io::Result<(std::net::TcpListener, String)> {
        let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        Ok((listener, format!("http://{addr}")))
    }

    pub(crate) fn spawn(
        name: &str,
        listener: std::net::TcpListener,
        base_url: String,
        router: Router,
    ) -> io::Result<Server> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name(name)
            .enable_all()
            .build()?;
        let listener = {
            let _entered = runtime.enter();
            tokio::net::TcpListener::from_std(listener)?
        };
        let (shutdown, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                runtime.block_on(async move {
                    tokio::select! {
                        _ = axum::serve(listener, router).into_future() => {}
                        _ = stopped => {}
                    }
                });
                // Dropping the runtime here cancels every connection task, which
                // closes their sockets.
                drop(runtime);
            })?;
        Ok(Server {
            base_url,
            shutdown: Some(shutdown),
            thread: Some(thread),
        })
    }

    pub(crate) fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Stops the server and waits until its sockets are closed.
    pub(crate) fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone)]
    struct Item(&'static str, &'static str, u32);

    impl Row for Item {
        fn keys(&self) -> Vec<String> {
            vec![self.0.to_owned(), self.1.to_owned()]
        }
    }

    #[test]
    fn table_finds_rows_by_any_key_and_keeps_order_on_replace() {
        let mut t = Table::new([Item("a", "1", 0), Item("b", "2", 0), Item("c", "3", 0)]);
        assert_eq!(t.get("2").map(|r| r.0), Some("b"));
        t.upsert(Item("b", "2", 7));
        let order: Vec<_> = t.iter().map(|r| (r.0, r.2)).collect();
        assert_eq!(order, [("a", 0), ("b", 7), ("c", 0)]);
        assert!(t.remove("1").is_some());
        assert!(t.get("a").is_none());
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn cut_in_number_lands_after_the_first_decimal_point_outside_strings() {
        let body = br#"{"v":"1.78.1","x\"1.":2,"lat":48.85,"lng":2.35}"#;
        let at = after_decimal_point(body).unwrap();
        assert_eq!(&body[..at], br#"{"v":"1.78.1","x\"1.":2,"lat":48."#);
        assert!(serde_json::from_slice::<serde_json::Value>(&body[..at]).is_err());
        assert_eq!(after_decimal_point(br#"{"n":12,"s":"3.4"}"#), None);
    }

    #[test]
    fn faults_are_consumed_in_order_and_skip_inapplicable_requests() {
        let faults = Faults::default();
        faults.inject(Route::Any, Fault::CorruptDevice, 1);
        faults.inject(Route::GetDevice, Fault::status(500), 2);
        let not_list = |f: &Fault| !matches!(f, Fault::CorruptDevice);
        assert_eq!(
            faults.take(Route::GetDevice, not_list),
            Some(Fault::status(500))
        );
        assert_eq!(
            faults.take(Route::ListDevices, |_| true),
            Some(Fault::CorruptDevice)
        );
        assert_eq!(faults.take(Route::ListDevices, |_| true), None);
        assert_eq!(
            faults.take(Route::GetDevice, not_list),
            Some(Fault::status(500))
        );
        assert!(faults.pending().is_empty());
    }

    #[test]
    fn fault_json_form_is_tagged_by_kind() {
        let f: Fault = serde_json::from_str(r#"{"kind":"status","status":429,"retry_after":"3"}"#)
            .expect("parses");
        assert_eq!(f, Fault::status_retry_after(429, "3"));
        let d: Fault = serde_json::from_str(r#"{"kind":"delay","millis":50}"#).expect("parses");
        assert_eq!(d, Fault::delay(Duration::from_millis(50)));
    }
}
