//! The Tailscale API: the typed device model (tolerant of missing optional
//! fields, keeping the raw JSON), the `TailscaleApi` port, and `HttpTailscaleApi`,
//! which talks to `/api/v2` with an OAuth client-credentials token.

use crate::http::{ApiError, BodyError, BodyReader, Transport, join, parse_base_url};
use crate::lenient;
pub use crate::model::InvalidDevice;
use crate::secrets::TailscaleCredentials;
use crate::sync::Listed;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;
use tokio::time::Instant;
use url::Url;

/// Keys left out of a device's fingerprint: presence and connectivity change all
/// the time; they are refreshed in the current record (see `sync::diff`) but do
/// not make history.
pub const VOLATILE_KEYS: &[&str] = &["lastSeen", "connectedToControl", "clientConnectivity"];

/// The Go zero time Tailscale sends in `expires` for "never".
const ZERO_TIME_YEAR: i32 = 1;

/// One Tailscale device.
#[derive(Debug, Clone, PartialEq)]
pub struct Device {
    /// Preferred id for every `{deviceId}` path; the primary key.
    pub node_id: String,
    /// Legacy numeric id, kept as a string (values exceed 2^53).
    pub id: String,
    /// MagicDNS name.
    pub name: String,
    pub hostname: String,
    pub addresses: Vec<String>,
    pub user: String,
    pub os: String,
    pub client_version: String,
    pub update_available: bool,
    pub created: Option<DateTime<Utc>>,
    pub connected_to_control: bool,
    /// Absent while connected and for devices never online.
    pub last_seen: Option<DateTime<Utc>>,
    /// Node key expiry; `None` when it never expires (zero time or expiry disabled).
    pub expires: Option<DateTime<Utc>>,
    pub key_expiry_disabled: bool,
    pub authorized: bool,
    /// Shared in from another tailnet.
    pub is_external: bool,
    pub is_ephemeral: bool,
    pub tags: Vec<String>,
    /// Hash of the content (raw JSON without `VOLATILE_KEYS`).
    pub fingerprint: String,
    /// The object exactly as received, compact.
    pub raw: String,
}

impl Device {
    /// Parses one device object. Only `nodeId` is required.
    pub fn from_raw(raw: &RawValue) -> Result<Device, InvalidDevice> {
        let value: Value = serde_json::from_str(raw.get()).map_err(|e| InvalidDevice {
            id: None,
            reason: format!("not valid JSON: {e}"),
        })?;
        let Value::Object(obj) = value else {
            return Err(InvalidDevice {
                id: None,
                reason: "not a JSON object".into(),
            });
        };
        Self::from_object(&obj, raw.get().to_string())
    }

    /// Parses one device from a JSON object; `raw` is its text as received.
    pub fn from_object(obj: &Map<String, Value>, raw: String) -> Result<Device, InvalidDevice> {
        let node_id = match obj.get("nodeId") {
            Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_string(),
            Some(Value::String(_)) | None | Some(Value::Null) => {
                return Err(InvalidDevice {
                    id: lenient::string(obj, "id"),
                    reason: "missing nodeId".into(),
                });
            }
            Some(_) => {
                return Err(InvalidDevice {
                    id: lenient::string(obj, "id"),
                    reason: "nodeId is not a string".into(),
                });
            }
        };
        let key_expiry_disabled = lenient::boolean(obj, "keyExpiryDisabled").unwrap_or(false);
        let expires = lenient::rfc3339(obj, "expires")
            .filter(|t| t.format("%Y").to_string() != format!("{ZERO_TIME_YEAR:04}"))
            .filter(|_| !key_expiry_disabled);
        let hostname = lenient::string(obj, "hostname").unwrap_or_default();
        let name = lenient::string(obj, "name").unwrap_or_default();
        Ok(Device {
            id: lenient::string(obj, "id").unwrap_or_default(),
            hostname: if hostname.is_empty() {
                name.split('.').next().unwrap_or_default().to_string()
            } else {
                hostname
            },
            name,
            addresses: lenient::strings(obj, "addresses"),
            user: lenient::string(obj, "user").unwrap_or_default(),
            os: lenient::string(obj, "os").unwrap_or_default(),
            client_version: lenient::string(obj, "clientVersion").unwrap_or_default(),
            update_available: lenient::boolean(obj, "updateAvailable").unwrap_or(false),
            created: lenient::rfc3339(obj, "created"),
            connected_to_control: lenient::boolean(obj, "connectedToControl").unwrap_or(false),
            last_seen: lenient::rfc3339(obj, "lastSeen"),
            expires,
            key_expiry_disabled,
            authorized: lenient::boolean(obj, "authorized").unwrap_or(false),
            is_external: lenient::boolean(obj, "isExternal").unwrap_or(false),
            is_ephemeral: lenient::boolean(obj, "isEphemeral").unwrap_or(false),
            tags: lenient::strings(obj, "tags"),
            fingerprint: lenient::fingerprint(obj, VOLATILE_KEYS, None),
            node_id,
            raw,
        })
    }

    /// The normalised fields stored with the record and shown by the CLI.
    pub fn attrs(&self) -> Value {
        json!({
            "node_id": self.node_id,
            "id": self.id,
            "name": self.name,
            "hostname": self.hostname,
            "addresses": self.addresses,
            "user": self.user,
            "os": self.os,
            "client_version": self.client_version,
            "update_available": self.update_available,
            "tags": self.tags,
            "created": self.created,
            "expires": self.expires,
            "key_expiry_disabled": self.key_expiry_disabled,
            "authorized": self.authorized,
            "is_external": self.is_external,
            "is_ephemeral": self.is_ephemeral,
            "connected_to_control": self.connected_to_control,
        })
    }
}

/// The devices of one listing, and the ones that could not be parsed.
#[derive(Debug, Default)]
pub struct DeviceList {
    pub devices: Vec<Device>,
    pub invalid: Vec<InvalidDevice>,
}

/// Parses a `GET /tailnet/{tailnet}/devices` body (`{"devices": [...]}`). A body
/// that is not that shape is an error; a bad device inside it is only reported.
pub fn parse_device_list(body: &[u8]) -> Result<DeviceList, BodyError> {
    #[derive(Deserialize)]
    struct Envelope<'a> {
        #[serde(borrow)]
        devices: Option<Vec<&'a RawValue>>,
    }
    let env: Envelope = serde_json::from_slice(body)?;
    let raws = env.devices.ok_or("no \"devices\" array in the response")?;
    let mut out = DeviceList::default();
    let mut seen = std::collections::HashSet::with_capacity(raws.len());
    for raw in raws {
        match Device::from_raw(raw) {
            Ok(d) if !seen.insert(d.node_id.clone()) => out.invalid.push(InvalidDevice {
                id: Some(d.node_id),
                reason: "listed twice".into(),
            }),
            Ok(d) => out.devices.push(d),
            Err(e) => out.invalid.push(e),
        }
    }
    Ok(out)
}

/// Decides, for a listed device, whether its raw JSON is kept: a sync keeps it
/// only for devices it will write (new, changed, presence moved).
pub type KeepRaw = Arc<dyn Fn(&Listed) -> bool + Send + Sync>;

/// A listing reduced to what a sync needs: per device the fields the diff
/// compares, and the raw JSON only where `KeepRaw` asked for it.
#[derive(Debug, Default)]
pub struct LeanList {
    pub devices: Vec<Listed>,
    pub invalid: Vec<InvalidDevice>,
}

impl LeanList {
    /// `seen` holds a hash of each id listed so far (8 bytes a device instead
    /// of a copy of the id); a repeated hash is confirmed against the ids.
    fn push(
        &mut self,
        seen: &mut HashSet<u64>,
        keep: &KeepRaw,
        parsed: Result<Device, InvalidDevice>,
    ) {
        let repeated = |d: &Device, seen: &mut HashSet<u64>| {
            !seen.insert(xxhash_rust::xxh3::xxh3_64(d.node_id.as_bytes()))
                && self.devices.iter().any(|l| l.device_id == d.node_id)
        };
        match parsed {
            Ok(d) if repeated(&d, seen) => self.invalid.push(InvalidDevice {
                id: Some(d.node_id),
                reason: "listed twice".into(),
            }),
            Ok(d) => {
                let mut listed = Listed {
                    device_id: d.node_id,
                    fingerprint: d.fingerprint,
                    last_seen: d.last_seen,
                    connected: d.connected_to_control,
                    raw: None,
                };
                if keep(&listed) {
                    listed.raw = Some(d.raw);
                }
                self.devices.push(listed);
            }
            Err(e) => self.invalid.push(e),
        }
    }
}

/// Parses a device list body as it is read, keeping only a `LeanList`: the
/// body and the parsed devices are never held whole. Each device is parsed
/// from its own bytes (see `json_split`); the body is accepted exactly when
/// `parse_device_list` would accept it, bar the positional `[[...]]` form.
pub fn parse_lean_list(reader: impl std::io::Read, keep: &KeepRaw) -> Result<LeanList, BodyError> {
    let mut out = LeanList::default();
    let mut seen = HashSet::new();
    crate::json_split::each_element(reader, "devices", |raw| {
        out.push(&mut seen, keep, Device::from_raw(raw));
    })?;
    Ok(out)
}

/// What a delete did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deleted {
    Deleted,
    /// 404: someone (or ephemeral expiry) removed it first.
    AlreadyGone,
}

/// The Tailscale operations fleetsync uses.
#[async_trait]
pub trait TailscaleApi: Send + Sync {
    /// The tailnet this client acts on (`-` for the token's own).
    fn tailnet(&self) -> &str;
    /// Every device of the tailnet with all fields.
    async fn list_devices(&self) -> Result<DeviceList, ApiError>;
    /// Every device of the tailnet, reduced as `LeanList` says. The default
    /// reduces `list_devices`; `HttpTailscaleApi` streams the body instead.
    async fn list_devices_lean(&self, keep: KeepRaw) -> Result<LeanList, ApiError> {
        let list = self.list_devices().await?;
        let mut out = LeanList {
            invalid: list.invalid,
            ..LeanList::default()
        };
        let mut seen = HashSet::new();
        for d in list.devices {
            out.push(&mut seen, &keep, Ok(d));
        }
        Ok(out)
    }
    /// One device with all fields; `None` on 404.
    async fn get_device(&self, device_id: &str) -> Result<Option<Device>, ApiError>;
    /// Deletes one device; 404 is `AlreadyGone`, not an error.
    async fn delete_device(&self, device_id: &str) -> Result<Deleted, ApiError>;
    /// HTTP requests sent so far (token requests and retries included).
    fn requests(&self) -> u64;
}

#[derive(Debug)]
struct Token {
    value: crate::secrets::Redacted,
    refresh_at: Instant,
}

/// `TailscaleApi` over HTTP. Build it once per process: it caches its OAuth
/// token until shortly before expiry and fetches a new one once on a 401.
pub struct HttpTailscaleApi {
    transport: Transport,
    base: Url,
    credentials: TailscaleCredentials,
    token: Mutex<Option<Token>>,
}

/// Longest a token is used before it is fetched again, whatever `expires_in`
/// says (Tailscale's tokens live an hour).
const MAX_TOKEN_LIFETIME_SECS: u64 = 24 * 3600;

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
}

impl HttpTailscaleApi {
    /// `base_url` is e.g. `https://api.tailscale.com` (the `/api/v2` is added here).
    pub fn new(
        transport: Transport,
        base_url: &str,
        credentials: TailscaleCredentials,
    ) -> Result<Self, ApiError> {
        Ok(HttpTailscaleApi {
            base: parse_base_url("TAILSCALE_API_BASE_URL", base_url)?,
            transport,
            credentials,
            token: Mutex::new(None),
        })
    }

    fn url(&self, path: &str) -> Url {
        join(&self.base, &format!("api/v2/{path}"))
    }

    async fn token(&self) -> Result<crate::secrets::Redacted, ApiError> {
        let mut guard = self.token.lock().await;
        if let Some(t) = guard.as_ref()
            && Instant::now() < t.refresh_at
        {
            return Ok(t.value.clone());
        }
        let url = self.url("oauth/token");
        let form = [
            ("client_id", self.credentials.client_id.as_str()),
            ("client_secret", self.credentials.client_secret.expose()),
            ("grant_type", "client_credentials"),
        ];
        let body: TokenResponse = self
            .transport
            .send_parse_secret(
                "oauth token",
                || self.transport.client.post(url.clone()).form(&form),
                |b| serde_json::from_slice(b).map_err(|e| BodyError::without_values(&e)),
            )
            .await?;
        if body.access_token.is_empty() {
            return Err(ApiError::Decode {
                api: "tailscale",
                what: "oauth token".into(),
                detail: "empty access_token".into(),
            });
        }
        // Refresh five minutes early, or at half-life for short-lived tokens.
        // Capped at a day: the value comes from the network, and an absurd
        // one must not overflow `Instant` (nor keep a token for years).
        let lifetime =
            Duration::from_secs(body.expires_in.unwrap_or(3600).min(MAX_TOKEN_LIFETIME_SECS));
        let margin = Duration::from_secs(300).min(lifetime / 2);
        let token = Token {
            value: crate::secrets::Redacted::new(body.access_token),
            refresh_at: Instant::now() + lifetime - margin,
        };
        let value = token.value.clone();
        *guard = Some(token);
        Ok(value)
    }

    async fn forget_token(&self) {
        *self.token.lock().await = None;
    }

    /// Sends an authenticated request and parses its body; on 401 fetches a new
    /// token once and tries again.
    async fn send_authed<T, F, P>(&self, what: &str, build: F, parse: P) -> Result<T, ApiError>
    where
        F: Fn() -> reqwest::RequestBuilder,
        P: Fn(&[u8]) -> Result<T, BodyError>,
    {
        let token = self.token().await?;
        match self
            .transport
            .send_parse(what, || build().bearer_auth(token.expose()), &parse)
            .await
        {
            Err(e) if e.status() == Some(401) => {
                tracing::info!(
                    api = "tailscale",
                    call = what,
                    "token refused, fetching a new one"
                );
                self.forget_token().await;
                let token = self.token().await?;
                self.transport
                    .send_parse(what, || build().bearer_auth(token.expose()), &parse)
                    .await
            }
            other => other,
        }
    }
}

#[async_trait]
impl TailscaleApi for HttpTailscaleApi {
    fn tailnet(&self) -> &str {
        &self.credentials.tailnet
    }

    async fn list_devices(&self) -> Result<DeviceList, ApiError> {
        let what = "list devices";
        let url = self.url(&format!("tailnet/{}/devices", self.credentials.tailnet));
        self.send_authed(
            what,
            || {
                self.transport
                    .client
                    .get(url.clone())
                    .query(&[("fields", "all")])
            },
            parse_device_list,
        )
        .await
    }

    async fn list_devices_lean(&self, keep: KeepRaw) -> Result<LeanList, ApiError> {
        let what = "list devices";
        let url = self.url(&format!("tailnet/{}/devices", self.credentials.tailnet));
        let build = || {
            self.transport
                .client
                .get(url.clone())
                .query(&[("fields", "all")])
        };
        let parse = move |body: BodyReader| parse_lean_list(body, &keep);
        let parse = Arc::new(parse);
        let stream = |token: crate::secrets::Redacted| {
            let parse = parse.clone();
            async move {
                self.transport
                    .send_stream(
                        what,
                        || build().bearer_auth(token.expose()),
                        move |b| parse(b),
                    )
                    .await
            }
        };
        match stream(self.token().await?).await {
            Err(e) if e.status() == Some(401) => {
                tracing::info!(
                    api = "tailscale",
                    call = what,
                    "token refused, fetching a new one"
                );
                self.forget_token().await;
                stream(self.token().await?).await
            }
            other => other,
        }
    }

    async fn get_device(&self, device_id: &str) -> Result<Option<Device>, ApiError> {
        let what = format!("get device {device_id}");
        let url = self.url(&format!("device/{device_id}"));
        let parse = |b: &[u8]| {
            let raw: Box<RawValue> = serde_json::from_slice(b)?;
            Device::from_raw(&raw).map_err(|e| BodyError::from(e.to_string()))
        };
        let found = self
            .send_authed(
                &what,
                || {
                    self.transport
                        .client
                        .get(url.clone())
                        .query(&[("fields", "all")])
                },
                parse,
            )
            .await;
        match found {
            Ok(d) => Ok(Some(d)),
            Err(e) if e.status() == Some(404) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn delete_device(&self, device_id: &str) -> Result<Deleted, ApiError> {
        let what = format!("delete device {device_id}");
        let url = self.url(&format!("device/{device_id}"));
        // DELETE is safe to retry: a repeat answers 404, mapped to AlreadyGone.
        // The success body is empty by contract; whatever it holds is ignored.
        match self
            .send_authed(
                &what,
                || self.transport.client.delete(url.clone()),
                |_| Ok(()),
            )
            .await
        {
            Ok(()) => Ok(Deleted::Deleted),
            Err(e) if e.status() == Some(404) => Ok(Deleted::AlreadyGone),
            Err(e) => Err(e),
        }
    }

    fn requests(&self) -> u64 {
        self.transport.requests()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIST: &str = include_str!("../fixtures/tailscale/devices-list.json");

    fn by_host<'a>(list: &'a DeviceList, host: &str) -> &'a Device {
        list.devices.iter().find(|d| d.hostname == host).unwrap()
    }

    #[test]
    fn fixture_list_parses_every_device() {
        let list = parse_device_list(LIST.as_bytes()).unwrap();
        assert_eq!(list.devices.len(), 7);
        assert!(list.invalid.is_empty());
        let db = by_host(&list, "db-proxy-01");
        assert!(db.connected_to_control);
        assert_eq!(db.last_seen, None);
        assert_eq!(db.expires, None, "zero time means never");
        assert_eq!(db.tags, vec!["tag:prod", "tag:server"]);
        let nas = by_host(&list, "nas-shared");
        assert!(nas.is_external);
        assert_eq!(nas.created, None);
        let phone = by_host(&list, "devon-iphone");
        assert_eq!(
            phone.last_seen.unwrap().to_rfc3339(),
            "2026-08-30T21:07:11+00:00"
        );
        assert!(phone.expires.is_some());
        assert_eq!(phone.id, "4817365029184021");
        let pixel = by_host(&list, "pixel-tablet");
        assert!(!pixel.authorized && pixel.last_seen.is_none() && !pixel.connected_to_control);
        let raw: Value = serde_json::from_str(&phone.raw).unwrap();
        assert_eq!(raw["nodeId"], "nsTlTv5uvh11CNTRL");
    }

    #[test]
    fn fields_all_object_parses() {
        let text = include_str!("../fixtures/tailscale/device-get-fields-all.json");
        let raw: Box<RawValue> = serde_json::from_str(text).unwrap();
        let d = Device::from_raw(&raw).unwrap();
        assert_eq!(d.node_id, "n2GvS7YEnH11CNTRL");
        assert!(d.raw.contains("clientConnectivity"));
    }

    #[test]
    fn bad_devices_are_reported_and_the_rest_kept() {
        let body =
            br#"{"devices":[{"nodeId":"a","hostname":"ok","lastSeen":"garbage","tags":"tag:x"},
            {"id":"123","hostname":"no-node-id"}, 7, {"nodeId": 42}, {"nodeId":"a"}]}"#;
        let list = parse_device_list(body).unwrap();
        assert_eq!(list.devices.len(), 1);
        assert_eq!(list.devices[0].last_seen, None);
        assert!(list.devices[0].tags.is_empty());
        let reasons: Vec<String> = list.invalid.iter().map(|i| i.to_string()).collect();
        assert_eq!(
            reasons,
            vec![
                "device 123: missing nodeId",
                "device without id: not a JSON object",
                "device without id: nodeId is not a string",
                "device a: listed twice"
            ]
        );
    }

    fn keep_all() -> KeepRaw {
        Arc::new(|_: &Listed| true)
    }

    #[test]
    fn lean_listing_reads_what_the_full_parser_reads() {
        let bodies: [&[u8]; 2] = [
            LIST.as_bytes(),
            br#"{"devices":[{"nodeId":"a","hostname":"ok","lastSeen":"garbage","tags":"tag:x"},
            {"id":"123","hostname":"no-node-id"}, 7, {"nodeId": 42}, {"nodeId":"a"}], "extra": {"x": [1]}}"#,
        ];
        for body in bodies {
            let full = parse_device_list(body).unwrap();
            let lean = parse_lean_list(body, &keep_all()).unwrap();
            assert_eq!(lean.invalid, full.invalid);
            assert_eq!(lean.devices.len(), full.devices.len());
            for (l, d) in lean.devices.iter().zip(&full.devices) {
                assert_eq!(l.device_id, d.node_id);
                assert_eq!(l.fingerprint, d.fingerprint);
                assert_eq!(l.last_seen, d.last_seen);
                assert_eq!(l.connected, d.connected_to_control);
                assert_eq!(l.raw.as_deref(), Some(d.raw.as_str()));
            }
        }
    }

    #[test]
    fn lean_listing_keeps_raw_only_where_asked_and_rejects_bad_envelopes() {
        let keep_a: KeepRaw = Arc::new(|l: &Listed| l.device_id == "a");
        let lean = parse_lean_list(
            &br#"{"devices":[{"nodeId":"a"},{"nodeId":"b"}]}"#[..],
            &keep_a,
        )
        .unwrap();
        assert!(lean.devices[0].raw.is_some() && lean.devices[1].raw.is_none());
        for bad in [
            &b"[]"[..],
            b"{}",
            b"{\"devices\": null}",
            b"{\"devices\": [1,",
        ] {
            assert!(parse_lean_list(bad, &keep_all()).is_err(), "{bad:?}");
        }
        let cut = parse_lean_list(&b"{\"devices\": [{\"nodeId\":"[..], &keep_all()).unwrap_err();
        assert!(cut.truncated, "{cut:?}");
    }

    #[test]
    fn invalid_utf8_fails_the_listing_and_a_huge_float_is_ignored() {
        // Inputs kept from fuzz/ (targets tailscale_device_list, tailscale_device).
        // Invalid UTF-8 inside a device fails the whole body, and is not retried.
        let body = b"{\"devices\":[{\"nodeId\":\"a\",\"os\":\"\xc8\xc8\"}]}";
        assert!(!parse_device_list(body).unwrap_err().truncated);
        assert!(
            !parse_lean_list(&body[..], &keep_all())
                .unwrap_err()
                .truncated
        );
        // A huge float where a list is expected is only ignored.
        let text =
            r#"{"addresses": 21840000011242295.1341e35, "id": "318047", "nodeId": "nYHFgISZ8"}"#;
        let raw: Box<RawValue> = serde_json::from_str(text).unwrap();
        let d = Device::from_raw(&raw).unwrap();
        assert!(d.addresses.is_empty());
        assert_eq!(d.fingerprint, Device::from_raw(&raw).unwrap().fingerprint);
    }

    #[test]
    fn list_without_devices_array_is_an_error() {
        assert!(parse_device_list(b"[]").is_err());
        assert!(parse_device_list(b"{\"devices\": [").is_err());
        assert!(parse_device_list(b"{}").is_err());
    }

    #[test]
    fn fingerprint_ignores_presence_but_not_content() {
        let a = br#"{"devices":[{"nodeId":"a","lastSeen":"2026-01-01T00:00:00Z","os":"linux"}]}"#;
        let b = br#"{"devices":[{"os":"linux","nodeId":"a","lastSeen":"2026-02-01T00:00:00Z"}]}"#;
        let c = br#"{"devices":[{"nodeId":"a","lastSeen":"2026-01-01T00:00:00Z","os":"macOS"}]}"#;
        let f = |b: &[u8]| parse_device_list(b).unwrap().devices[0].fingerprint.clone();
        assert_eq!(f(a), f(b));
        assert_ne!(f(a), f(c));
    }
}
