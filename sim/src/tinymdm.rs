//! The TinyMDM API simulator: manager API-key auth, paginated device list with
//! absolute `next`/`previous` links, device, apps, groups and enterprise info
//! under `/api/v1`, a server-side rate limit, the `/_sim/` admin routes, and
//! the [`TinymdmSim`] handle.

use crate::fleet::{self, Fleet};
use crate::harness::{
    self, ActiveFault, ChurnRequest, Fault, Faults, Harnessed, PendingFault, RecordedRequest,
    RequestLog, Route, Row, Server, Table, json_response, lock, raw_json,
};
use crate::model::{TinymdmApp, TinymdmDevice, TinymdmGroup};
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::Serialize;
use serde_json::{Map, Value, json};
use std::collections::{HashMap, VecDeque};
use std::io;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const HEADER_PUBLIC: &str = "x-tinymdm-manager-apikey-public";
const HEADER_SECRET: &str = "x-tinymdm-manager-apikey-secret";
const HEADER_ACCOUNT: &str = "x-account-id";

/// Settings of a [`TinymdmSim`].
#[derive(Clone, Debug)]
pub struct TinymdmSimConfig {
    /// Port on 127.0.0.1; 0 picks a free one.
    pub port: u16,
    pub account_id: String,
    pub apikey_public: String,
    pub apikey_secret: String,
    /// Requests per second accepted (sliding one-second window admitting
    /// `rate_limit + 1`); 0 disables the limit.
    pub rate_limit: u32,
    /// Cap on `per_page`.
    pub max_per_page: usize,
    /// Page size when `per_page` is absent.
    pub default_per_page: usize,
    /// `paid_licence` of `/enterprise/info`; `None` rounds the device count up
    /// to the next hundred.
    pub paid_licence: Option<u64>,
    pub devices: Vec<TinymdmDevice>,
    pub apps: HashMap<String, Vec<TinymdmApp>>,
    pub groups: Vec<TinymdmGroup>,
}

impl Default for TinymdmSimConfig {
    fn default() -> Self {
        TinymdmSimConfig {
            port: 0,
            account_id: "sim-account".into(),
            apikey_public: "sim-public-key".into(),
            apikey_secret: "sim-secret-key".into(),
            rate_limit: 5,
            max_per_page: 1000,
            default_per_page: 20,
            paid_licence: None,
            devices: Vec::new(),
            apps: HashMap::new(),
            groups: Vec::new(),
        }
    }
}

impl TinymdmSimConfig {
    /// This config with the TinyMDM devices, apps and groups of `fleet`.
    pub fn with_fleet(mut self, fleet: &Fleet) -> Self {
        self.devices = fleet.tinymdm.clone();
        self.apps = fleet.tinymdm_apps.clone();
        self.groups = fleet.tinymdm_groups.clone();
        self
    }

    /// This config with the given rate limit (0 = unlimited).
    pub fn with_rate_limit(mut self, per_second: u32) -> Self {
        self.rate_limit = per_second;
        self
    }
}

impl Row for TinymdmDevice {
    fn keys(&self) -> Vec<String> {
        vec![self.id.clone()]
    }
}

struct Data {
    devices: Table<TinymdmDevice>,
    apps: HashMap<String, Arc<Vec<TinymdmApp>>>,
}

struct SimState {
    base_url: String,
    account_id: String,
    apikey_public: String,
    apikey_secret: String,
    rate_limit: AtomicU32,
    window: Mutex<VecDeque<Instant>>,
    max_per_page: usize,
    default_per_page: usize,
    paid_licence: Option<u64>,
    data: Mutex<Data>,
    groups: Vec<TinymdmGroup>,
    log: RequestLog,
    faults: Faults,
}

impl Harnessed for SimState {
    fn log(&self) -> &RequestLog {
        &self.log
    }

    fn faults(&self) -> &Faults {
        &self.faults
    }
}

impl SimState {
    fn authenticates(&self, headers: &HeaderMap) -> bool {
        let is = |name: &str, want: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v == want)
        };
        is(HEADER_PUBLIC, &self.apikey_public)
            && is(HEADER_SECRET, &self.apikey_secret)
            && is(HEADER_ACCOUNT, &self.account_id)
    }

    fn admit(&self) -> bool {
        let rate = self.rate_limit.load(Ordering::Relaxed);
        if rate == 0 {
            return true;
        }
        let now = Instant::now();
        let mut window = lock(&self.window);
        while window
            .front()
            .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(1))
        {
            window.pop_front();
        }
        if window.len() > rate as usize {
            return false;
        }
        window.push_back(now);
        true
    }

    fn page_link(&self, page: usize, per_page: usize, group: Option<&str>) -> String {
        let mut link = format!(
            "{}/api/v1/devices?page={page}&per_page={per_page}",
            self.base_url
        );
        if let Some(group) = group {
            link.push_str("&group_id=");
            link.extend(url::form_urlencoded::byte_serialize(group.as_bytes()));
        }
        link
    }
}

/// A running TinyMDM API simulator on 127.0.0.1. Stops when dropped.
pub struct TinymdmSim {
    state: Arc<SimState>,
    server: Server,
}

impl TinymdmSim {
    /// Binds the port and starts serving on a background thread.
    pub fn start(config: TinymdmSimConfig) -> io::Result<TinymdmSim> {
        let (listener, base_url) = Server::bind(config.port)?;
        let apps = config
            .apps
            .into_iter()
            .map(|(id, apps)| (id, Arc::new(apps)))
            .collect();
        let state = Arc::new(SimState {
            base_url: base_url.clone(),
            account_id: config.account_id,
            apikey_public: config.apikey_public,
            apikey_secret: config.apikey_secret,
            rate_limit: AtomicU32::new(config.rate_limit),
            window: Mutex::new(VecDeque::new()),
            max_per_page: config.max_per_page.max(1),
            default_per_page: config.default_per_page.max(1),
            paid_licence: config.paid_licence,
            data: Mutex::new(Data {
                devices: Table::new(config.devices),
                apps,
            }),
            groups: config.groups,
            log: RequestLog::default(),
            faults: Faults::default(),
        });
        let server = Server::spawn("tinymdm-sim", listener, base_url, router(state.clone()))?;
        Ok(TinymdmSim { state, server })
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn base_url(&self) -> String {
        self.server.base_url().to_owned()
    }

    /// The account id expected in `X-Account-Id`.
    pub fn account_id(&self) -> String {
        self.state.account_id.clone()
    }

    /// `(public, secret)` manager API keys.
    pub fn api_keys(&self) -> (String, String) {
        (
            self.state.apikey_public.clone(),
            self.state.apikey_secret.clone(),
        )
    }

    /// Every API request served so far, in completion order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state.log.all()
    }

    /// Empties the request log.
    pub fn clear_requests(&self) {
        self.state.log.clear();
    }

    /// All stored devices, in list order.
    pub fn devices(&self) -> Vec<TinymdmDevice> {
        let snapshot = lock(&self.state.data).devices.snapshot();
        snapshot.iter().map(|d| (**d).clone()).collect()
    }

    /// The device with this id.
    pub fn device(&self, id: &str) -> Option<TinymdmDevice> {
        lock(&self.state.data).devices.get(id).map(|d| (*d).clone())
    }

    /// The device as `GET /api/v1/devices/{id}` returns it.
    pub fn device_json(&self, id: &str) -> Option<Value> {
        let device = lock(&self.state.data).devices.get(id)?;
        Some(serde_json::to_value(&*device).expect("device JSON"))
    }

    /// Number of stored devices.
    pub fn device_count(&self) -> usize {
        lock(&self.state.data).devices.len()
    }

    /// Adds a device, or replaces the one with the same id.
    pub fn add_device(&self, device: TinymdmDevice) {
        lock(&self.state.data).devices.upsert(device);
    }

    /// Removes a device and its apps; false if it was not there.
    pub fn remove_device(&self, id: &str) -> bool {
        let mut data = lock(&self.state.data);
        data.apps.remove(id);
        data.devices.remove(id).is_some()
    }

    /// Sets a device's `last_sync_timestamp` (Unix seconds).
    pub fn set_last_sync(&self, id: &str, unix_seconds: i64) -> bool {
        let mut data = lock(&self.state.data);
        let Some(device) = data.devices.get_mut(id) else {
            return false;
        };
        device.last_sync_timestamp = unix_seconds;
        true
    }

    /// The apps listed for a device.
    pub fn apps(&self, id: &str) -> Vec<TinymdmApp> {
        lock(&self.state.data)
            .apps
            .get(id)
            .map(|a| (**a).clone())
            .unwrap_or_default()
    }

    /// Replaces the apps listed for a device.
    pub fn set_apps(&self, id: &str, apps: Vec<TinymdmApp>) {
        lock(&self.state.data)
            .apps
            .insert(id.to_owned(), Arc::new(apps));
    }

    /// Changes the requests-per-second limit (0 = unlimited).
    pub fn set_rate_limit(&self, per_second: u32) {
        self.state.rate_limit.store(per_second, Ordering::Relaxed);
        lock(&self.state.window).clear();
    }

    /// Queues `fault` for the next `times` requests to `route`.
    pub fn inject(&self, route: Route, fault: Fault, times: usize) {
        self.state.faults.inject(route, fault, times);
    }

    /// Faults injected and not yet used up, in order.
    pub fn pending_faults(&self) -> Vec<PendingFault> {
        self.state.faults.pending()
    }

    /// Drops every pending fault.
    pub fn clear_faults(&self) {
        self.state.faults.clear();
    }

    /// Changes the battery (and sometimes OS version) of `fraction` of the
    /// devices, chosen by `seed`; returns how many changed.
    pub fn churn(&self, fraction: f64, seed: u64) -> usize {
        churn(&self.state, fraction, seed)
    }

    /// Stops the server and waits until its port is closed.
    pub fn shutdown(mut self) {
        self.server.stop();
    }
}

fn churn(st: &SimState, fraction: f64, seed: u64) -> usize {
    let mut data = lock(&st.data);
    let count = data.devices.len();
    fleet::churn_each(data.devices.rows_mut(), count, fraction, seed, |d, rng| {
        fleet::churn_tinymdm_device(Arc::make_mut(d), rng)
    })
}

fn error_body(message: &str) -> Value {
    json!({ "error": message })
}

fn error(status: StatusCode, message: &str) -> Response {
    json_response(status, &error_body(message))
}

fn invalid_credentials() -> Response {
    json_response(
        StatusCode::UNAUTHORIZED,
        &json!({"error": {"message": "Invalid API credentials"}}),
    )
}

fn too_many_requests() -> Response {
    let mut response = error(StatusCode::TOO_MANY_REQUESTS, "Too many requests");
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

fn router(state: Arc<SimState>) -> Router {
    Router::new()
        .route("/api/v1/devices", get(list_devices))
        .route("/api/v1/devices/{id}", get(get_device))
        .route("/api/v1/devices/{id}/apps", get(device_apps))
        .route("/api/v1/groups", get(groups))
        .route("/api/v1/enterprise/info", get(enterprise_info))
        .route("/_sim/devices", get(admin_devices).post(admin_add_device))
        .route(
            "/_sim/devices/{id}",
            get(admin_device).delete(admin_remove_device),
        )
        .route("/_sim/devices/{id}/last_sync", post(admin_last_sync))
        .route("/_sim/count", get(admin_count))
        .route("/_sim/churn", post(admin_churn))
        .route("/_sim/rate-limit", post(admin_rate_limit))
        .merge(harness::admin_routes())
        .fallback(|| async { error(StatusCode::NOT_FOUND, "Not found") })
        .layer(middleware::from_fn_with_state(state.clone(), gateway))
        .with_state(state)
}

fn classify(method: &Method, path: &str) -> Option<Route> {
    if method != Method::GET {
        return None;
    }
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match segments.as_slice() {
        ["api", "v1", "devices"] => Some(Route::ListDevices),
        ["api", "v1", "devices", _] => Some(Route::GetDevice),
        ["api", "v1", "devices", _, "apps"] => Some(Route::DeviceApps),
        ["api", "v1", "groups"] => Some(Route::Groups),
        ["api", "v1", "enterprise", "info"] => Some(Route::EnterpriseInfo),
        _ => None,
    }
}

/// Logs every API request, enforces the rate limit, applies injected faults,
/// and answers 401 when the three credential headers do not match.
async fn gateway(State(st): State<Arc<SimState>>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_owned();
    if path.starts_with("/_sim/") {
        return next.run(req).await;
    }
    let method = req.method().to_string();
    let query = req.uri().query().map(str::to_owned);
    let route = classify(req.method(), &path);
    let authenticated = st.authenticates(req.headers());
    let response = if st.admit() {
        let fault = route.and_then(|r| {
            st.faults.take(r, |f| match f {
                Fault::ExpireTokens => false,
                Fault::CorruptDevice | Fault::RepeatDevice | Fault::EmptyPage => {
                    r == Route::ListDevices
                }
                Fault::DeleteBeforePage => r == Route::ListDevices && page_of(query.as_deref()) > 1,
                _ => true,
            })
        });
        let gate = (!authenticated).then(invalid_credentials);
        harness::dispatch(fault, gate, req, next, error_body).await
    } else {
        too_many_requests()
    };
    st.log.record(RecordedRequest {
        method,
        path,
        query,
        principal: authenticated.then(|| st.apikey_public.clone()),
        status: harness::recorded_status(&response),
    });
    response
}

/// The `page` a list request asks for (1 when absent or unreadable).
fn page_of(query: Option<&str>) -> usize {
    harness::query_map(query)
        .get("page")
        .and_then(|p| p.parse().ok())
        .unwrap_or(1)
}

/// A positive integer query parameter; the error is the 400 message.
fn positive(query: &HashMap<String, String>, key: &str, default: usize) -> Result<usize, String> {
    match query.get(key) {
        None => Ok(default),
        Some(v) => match v.parse::<usize>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(format!("Invalid {key}")),
        },
    }
}

#[derive(Serialize)]
struct Envelope<'a, T: Serialize> {
    count: usize,
    next: Option<String>,
    previous: Option<String>,
    results: &'a [T],
}

async fn list_devices(
    State(st): State<Arc<SimState>>,
    uri: Uri,
    fault: Option<Extension<ActiveFault>>,
) -> Response {
    let query = harness::query_map(uri.query());
    let per_page = match positive(&query, "per_page", st.default_per_page) {
        Ok(n) => n.min(st.max_per_page),
        Err(message) => return error(StatusCode::BAD_REQUEST, &message),
    };
    let page = match positive(&query, "page", 1) {
        Ok(n) => n,
        Err(message) => return error(StatusCode::BAD_REQUEST, &message),
    };
    let group = query.get("group_id").filter(|g| !g.is_empty()).cloned();
    let fault = fault.map(|Extension(ActiveFault(f))| f);
    if matches!(fault, Some(Fault::DeleteBeforePage)) {
        let mut data = lock(&st.data);
        let first = data.devices.iter().next().map(|d| d.id.clone());
        if let Some(id) = first {
            data.apps.remove(&id);
            data.devices.remove(&id);
        }
    }
    let offset = (page - 1).saturating_mul(per_page);
    let end = offset.saturating_add(per_page);
    let (total, mut rows, before, after) = {
        let data = lock(&st.data);
        let mut total = 0;
        let mut rows = Vec::with_capacity(per_page.min(data.devices.len()));
        let (mut before, mut after) = (None, None);
        let matching = data
            .devices
            .iter()
            .filter(|d| group.is_none() || d.group_id == group);
        for device in matching {
            if (offset..end).contains(&total) {
                rows.push(device.clone());
            } else if total + 1 == offset {
                before = Some(device.clone());
            } else if total == end {
                after = Some(device.clone());
            }
            total += 1;
        }
        (total, rows, before, after)
    };
    let mut corrupt_at = None;
    match fault {
        Some(Fault::EmptyPage) => rows.clear(),
        Some(Fault::RepeatDevice) => {
            if let Some(previous_page_last) = before {
                rows.insert(0, previous_page_last);
            } else if let Some(next_page_first) = after {
                rows.push(next_page_first);
            } else if let Some(first) = rows.first().cloned() {
                rows.push(first);
            }
        }
        Some(Fault::CorruptDevice) => corrupt_at = Some(rows.len() / 2),
        _ => {}
    }
    let next = (end < total).then(|| st.page_link(page + 1, per_page, group.as_deref()));
    let previous = (page > 1).then(|| st.page_link(page - 1, per_page, group.as_deref()));
    let mut out = Vec::with_capacity(256 + rows.len() * 2048);
    out.extend_from_slice(format!("{{\"count\":{total},\"next\":").as_bytes());
    serde_json::to_writer(&mut out, &next).expect("link JSON");
    out.extend_from_slice(b",\"previous\":");
    serde_json::to_writer(&mut out, &previous).expect("link JSON");
    out.extend_from_slice(b",\"results\":[");
    for (i, device) in rows.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let written = if corrupt_at == Some(i) {
            serde_json::to_writer(&mut out, &corrupted(device))
        } else {
            serde_json::to_writer(&mut out, &**device)
        };
        written.expect("device JSON");
    }
    out.extend_from_slice(b"]}");
    raw_json(StatusCode::OK, out)
}

fn corrupted(device: &TinymdmDevice) -> Value {
    let mut value = serde_json::to_value(device).expect("device JSON");
    if let Some(map) = value.as_object_mut() {
        map.remove("id");
        map.insert("battery_level".into(), json!("high"));
        map.insert("last_sync_timestamp".into(), json!("yesterday"));
        map.insert("geolocation_positions".into(), json!("none"));
    }
    value
}

async fn get_device(State(st): State<Arc<SimState>>, Path(id): Path<String>) -> Response {
    match lock(&st.data).devices.get(&id) {
        Some(device) => raw_json(
            StatusCode::OK,
            serde_json::to_vec(&*device).expect("device JSON"),
        ),
        None => error(StatusCode::NOT_FOUND, "Device not found"),
    }
}

async fn device_apps(State(st): State<Arc<SimState>>, Path(id): Path<String>) -> Response {
    let apps = {
        let data = lock(&st.data);
        if data.devices.get(&id).is_none() {
            return error(StatusCode::NOT_FOUND, "Device not found");
        }
        data.apps.get(&id).cloned().unwrap_or_default()
    };
    let body = serde_json::to_vec(&Envelope {
        count: apps.len(),
        next: None,
        previous: None,
        results: &apps[..],
    })
    .expect("apps JSON");
    raw_json(StatusCode::OK, body)
}

async fn groups(State(st): State<Arc<SimState>>) -> Response {
    let body = serde_json::to_vec(&Envelope {
        count: st.groups.len(),
        next: None,
        previous: None,
        results: &st.groups,
    })
    .expect("groups JSON");
    raw_json(StatusCode::OK, body)
}

async fn enterprise_info(State(st): State<Arc<SimState>>) -> Response {
    let licence = st.paid_licence.unwrap_or_else(|| {
        let devices = lock(&st.data).devices.len() as u64;
        devices.div_ceil(100).max(1) * 100
    });
    json_response(StatusCode::OK, &json!({ "paid_licence": licence }))
}

async fn admin_devices(State(st): State<Arc<SimState>>) -> Response {
    let snapshot = lock(&st.data).devices.snapshot();
    let devices: Vec<&TinymdmDevice> = snapshot.iter().map(|d| &**d).collect();
    raw_json(
        StatusCode::OK,
        serde_json::to_vec(&devices).expect("device JSON"),
    )
}

async fn admin_add_device(
    State(st): State<Arc<SimState>>,
    Json(device): Json<TinymdmDevice>,
) -> Response {
    if device.id.is_empty() {
        return error(StatusCode::BAD_REQUEST, "device needs an id");
    }
    lock(&st.data).devices.upsert(device);
    StatusCode::CREATED.into_response()
}

async fn admin_device(State(st): State<Arc<SimState>>, Path(id): Path<String>) -> Response {
    get_device(State(st), Path(id)).await
}

async fn admin_remove_device(State(st): State<Arc<SimState>>, Path(id): Path<String>) -> Response {
    let mut data = lock(&st.data);
    data.apps.remove(&id);
    match data.devices.remove(&id) {
        Some(_) => StatusCode::NO_CONTENT.into_response(),
        None => error(StatusCode::NOT_FOUND, "Device not found"),
    }
}

/// `{"last_sync_timestamp": <unix seconds>}`.
async fn admin_last_sync(
    State(st): State<Arc<SimState>>,
    Path(id): Path<String>,
    Json(body): Json<Map<String, Value>>,
) -> Response {
    let Some(ts) = body.get("last_sync_timestamp").and_then(Value::as_i64) else {
        return error(
            StatusCode::BAD_REQUEST,
            "last_sync_timestamp must be an integer",
        );
    };
    let mut data = lock(&st.data);
    match data.devices.get_mut(&id) {
        Some(device) => {
            device.last_sync_timestamp = ts;
            StatusCode::NO_CONTENT.into_response()
        }
        None => error(StatusCode::NOT_FOUND, "Device not found"),
    }
}

async fn admin_count(State(st): State<Arc<SimState>>) -> Json<Value> {
    Json(json!({ "devices": lock(&st.data).devices.len() }))
}

async fn admin_churn(
    State(st): State<Arc<SimState>>,
    Json(body): Json<ChurnRequest>,
) -> Json<Value> {
    Json(json!({ "changed": churn(&st, body.fraction, body.seed) }))
}

/// `{"per_second": n}` (0 = unlimited).
async fn admin_rate_limit(
    State(st): State<Arc<SimState>>,
    Json(body): Json<Map<String, Value>>,
) -> Response {
    let Some(rate) = body
        .get("per_second")
        .and_then(Value::as_u64)
        .and_then(|r| u32::try_from(r).ok())
    else {
        return error(
            StatusCode::BAD_REQUEST,
            "per_second must be a non-negative integer",
        );
    };
    st.rate_limit.store(rate, Ordering::Relaxed);
    lock(&st.window).clear();
    StatusCode::NO_CONTENT.into_response()
}
