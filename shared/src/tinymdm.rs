//! The TinyMDM API: the tolerant device model, the `TinymdmApi` port and
//! `HttpTinymdmApi`, which pages through *every* device (never only the first
//! page), reads per-device apps on request, and keeps to a client-side rate
//! limit (default 5 requests/second) shared by all its calls.

use crate::http::{ApiError, BodyError, Transport, join, parse_base_url};
use crate::lenient;
use crate::model::InvalidDevice;
use crate::secrets::TinymdmCredentials;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};
use std::collections::HashSet;
use url::Url;

/// Keys left out of a device's fingerprint: they move with every check-in and
/// are refreshed together with the last-sync time (see the last-seen resolution).
pub const VOLATILE_KEYS: &[&str] = &[
    "last_sync_timestamp",
    "battery_level",
    "battery_status",
    "geolocation_positions",
];

/// Hard stop for pagination, far above any real account (100 × 1000 devices).
pub const MAX_PAGES: u64 = 100;

/// The newest reported position of a device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Location {
    pub latitude: f64,
    pub longitude: f64,
    pub at: Option<DateTime<Utc>>,
    pub address: Option<String>,
}

/// One installed app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct App {
    pub package_name: String,
    pub app_name: String,
    pub version_code: Option<i64>,
    pub version_name: String,
}

/// One TinyMDM device.
#[derive(Debug, Clone, PartialEq)]
pub struct Device {
    /// Stable device id (16 hex characters in practice); the primary key.
    pub id: String,
    /// Device name; by default the hardware model.
    pub name: String,
    /// Admin-set name; `None` when empty or null.
    pub nickname: Option<String>,
    pub serial_number: Option<String>,
    pub imei: Option<String>,
    pub manufacturer: String,
    pub os_version: String,
    pub battery_level: Option<i64>,
    pub enrollment_type: String,
    pub enrolled_at: Option<DateTime<Utc>>,
    /// `last_sync_timestamp`: the device's last check-in.
    pub last_sync: Option<DateTime<Utc>>,
    pub user_id: Option<String>,
    pub group_id: Option<String>,
    pub policy_id: Option<String>,
    pub location: Option<Location>,
    /// Hash of the raw JSON without `VOLATILE_KEYS`.
    pub fingerprint: String,
    pub raw: String,
}

impl Device {
    /// `nickname`, falling back to `name`.
    pub fn display_name(&self) -> &str {
        self.nickname.as_deref().unwrap_or(&self.name)
    }

    /// Parses one device object. Only `id` is required.
    pub fn from_raw(raw: &RawValue) -> Result<Device, InvalidDevice> {
        let obj = match serde_json::from_str::<Value>(raw.get()) {
            Ok(Value::Object(o)) => o,
            _ => {
                return Err(InvalidDevice {
                    id: None,
                    reason: "not a JSON object".into(),
                });
            }
        };
        let id = match obj.get("id") {
            Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_string(),
            Some(Value::Number(n)) => n.to_string(),
            Some(Value::String(_)) | None | Some(Value::Null) => {
                return Err(InvalidDevice {
                    id: lenient::string(&obj, "serial_number"),
                    reason: "missing id".into(),
                });
            }
            Some(_) => {
                return Err(InvalidDevice {
                    id: None,
                    reason: "id is not a string".into(),
                });
            }
        };
        Ok(Device {
            name: lenient::string(&obj, "name").unwrap_or_default(),
            nickname: lenient::string(&obj, "nickname"),
            serial_number: lenient::string(&obj, "serial_number"),
            imei: lenient::string(&obj, "imei"),
            manufacturer: lenient::string(&obj, "manufacturer").unwrap_or_default(),
            os_version: lenient::string(&obj, "os_version").unwrap_or_default(),
            battery_level: lenient::integer(&obj, "battery_level")
                .filter(|b| (0..=100).contains(b)),
            enrollment_type: lenient::string(&obj, "enrollment_type").unwrap_or_default(),
            enrolled_at: lenient::unix_seconds(&obj, "enrollment_timestamp"),
            last_sync: lenient::unix_seconds(&obj, "last_sync_timestamp"),
            user_id: lenient::string(&obj, "user_id"),
            group_id: lenient::string(&obj, "group_id"),
            policy_id: lenient::string(&obj, "policy_id"),
            location: newest_position(&obj),
            fingerprint: lenient::fingerprint(&obj, VOLATILE_KEYS, None),
            raw: raw.get().to_string(),
            id,
        })
    }

    /// The normalised fields stored with the record and shown by the CLI.
    pub fn attrs(&self, apps: Option<&[App]>) -> Value {
        json!({
            "id": self.id,
            "display_name": self.display_name(),
            "name": self.name,
            "nickname": self.nickname,
            "model": self.name,
            "manufacturer": self.manufacturer,
            "serial_number": self.serial_number,
            "imei": self.imei,
            "os_version": self.os_version,
            "battery_level": self.battery_level,
            "enrollment_type": self.enrollment_type,
            "enrolled_at": self.enrolled_at,
            "last_sync_at": self.last_sync,
            "user_id": self.user_id,
            "group_id": self.group_id,
            "policy_id": self.policy_id,
            "location": self.location,
            "apps": apps,
        })
    }
}

/// The entry with the largest `timestamp`: the list is not sorted by contract.
fn newest_position(obj: &Map<String, Value>) -> Option<Location> {
    let positions = obj.get("geolocation_positions")?.as_array()?;
    positions
        .iter()
        .filter_map(|p| {
            let p = p.as_object()?;
            Some(Location {
                latitude: p.get("latitude")?.as_f64()?,
                longitude: p.get("longitude")?.as_f64()?,
                at: lenient::unix_seconds(p, "timestamp"),
                address: lenient::string(p, "address"),
            })
        })
        .max_by_key(|l| l.at)
}

/// Every device of an account, and how the listing went.
#[derive(Debug, Default)]
pub struct DeviceList {
    pub devices: Vec<Device>,
    pub invalid: Vec<InvalidDevice>,
    pub pages: u64,
    /// The `count` the API announced, if it did.
    pub announced: Option<u64>,
    /// Devices seen on more than one page (kept once).
    pub duplicates: u64,
    /// Pagination stopped at `MAX_PAGES` with more pages announced.
    pub truncated: bool,
    /// The announced `count` changed between pages (first, later) in the
    /// listing kept, after one fresh start: devices were added or deleted
    /// while it paged, so a device may have slipped between two pages.
    pub count_changed: Option<(u64, u64)>,
}

impl DeviceList {
    /// Whether the listing accounts for every device the API announced: only
    /// then may devices missing from it be marked removed.
    pub fn is_complete(&self) -> bool {
        if self.truncated || self.count_changed.is_some() {
            return false;
        }
        match self.announced {
            Some(count) => (self.devices.len() + self.invalid.len()) as u64 >= count,
            None => true,
        }
    }
}

#[derive(Deserialize)]
struct Page<'a> {
    #[serde(borrow, default)]
    results: Option<Vec<&'a RawValue>>,
    #[serde(default)]
    count: Option<Value>,
    #[serde(default)]
    next: Option<Value>,
}

/// One parsed page: its devices and the paging fields.
pub struct ParsedPage {
    /// One entry per `results` member, in order.
    pub devices: Vec<Result<Device, InvalidDevice>>,
    /// The announced total, when it is a non-negative integer.
    pub count: Option<u64>,
    /// The `next` link, when it is a non-empty string.
    pub next: Option<String>,
}

/// Parses one `GET /devices` page (`{"results": [...], "count", "next"}`). A
/// body that is not that shape is an error; a bad device inside it is only
/// reported. Public for the fuzz targets.
pub fn parse_page(body: &[u8]) -> Result<ParsedPage, BodyError> {
    let page: Page = serde_json::from_slice(body)?;
    let results = page.results.ok_or("no \"results\" array in the response")?;
    Ok(ParsedPage {
        devices: results.into_iter().map(Device::from_raw).collect(),
        count: page.count.and_then(|c| c.as_u64()),
        next: page
            .next
            .and_then(|n| n.as_str().map(str::to_string))
            .filter(|s| !s.is_empty()),
    })
}

/// Parses the apps envelope (`{"results": [...]}`); unusable entries are skipped.
/// Returns the apps and the `next` link. Public for the fuzz targets.
pub fn parse_apps(body: &[u8]) -> Result<(Vec<App>, Option<String>), BodyError> {
    let v: Value = serde_json::from_slice(body)?;
    let results = v
        .get("results")
        .and_then(Value::as_array)
        .ok_or("no \"results\" array in the response")?;
    let apps = results
        .iter()
        .filter_map(Value::as_object)
        .filter_map(|a| {
            Some(App {
                package_name: lenient::string(a, "package_name")?,
                app_name: lenient::string(a, "app_name").unwrap_or_default(),
                version_code: lenient::integer(a, "version_code"),
                version_name: lenient::string(a, "version_name").unwrap_or_default(),
            })
        })
        .collect();
    let next = v
        .get("next")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty());
    Ok((apps, next.map(str::to_string)))
}

/// The TinyMDM operations fleetsync uses.
#[async_trait]
pub trait TinymdmApi: Send + Sync {
    /// The account the keys act on.
    fn account_id(&self) -> &str;
    /// Every device, following pagination to the end. `on_page` gets the
    /// running device total and the announced count after each page.
    async fn list_devices(
        &self,
        on_page: &(dyn Fn(u64, Option<u64>) + Send + Sync),
    ) -> Result<DeviceList, ApiError>;
    /// The installed apps of one device.
    async fn device_apps(&self, device_id: &str) -> Result<Vec<App>, ApiError>;
    /// HTTP requests sent so far.
    fn requests(&self) -> u64;
}

/// `TinymdmApi` over HTTP with the manager API key headers.
pub struct HttpTinymdmApi {
    transport: Transport,
    base: Url,
    credentials: TinymdmCredentials,
    page_size: u32,
}

impl HttpTinymdmApi {
    /// `base_url` is e.g. `https://www.tinymdm.net` (the `/api/v1` is added here).
    pub fn new(
        transport: Transport,
        base_url: &str,
        credentials: TinymdmCredentials,
        page_size: u32,
        requests_per_second: u32,
    ) -> Result<Self, ApiError> {
        Ok(HttpTinymdmApi {
            base: parse_base_url("TINYMDM_API_BASE_URL", base_url)?,
            transport: transport.with_rate_limit(requests_per_second),
            credentials,
            page_size: page_size.clamp(1, 1000),
        })
    }

    fn url(&self, path: &str) -> Url {
        join(&self.base, &format!("api/v1/{path}"))
    }

    /// A `next` link is followed only on the configured host: the keys must not
    /// be sent anywhere else.
    fn check_same_origin(&self, what: &str, next: &str) -> Result<Url, ApiError> {
        let url = Url::parse(next)
            .or_else(|_| self.base.join(next))
            .map_err(|e| ApiError::Protocol {
                api: "tinymdm",
                what: what.into(),
                detail: format!("unusable next link: {e}"),
            })?;
        if url.origin() != self.base.origin() {
            return Err(ApiError::Protocol {
                api: "tinymdm",
                what: what.into(),
                detail: format!(
                    "next link points at another host ({}), refusing to send the API keys there",
                    url.host_str().unwrap_or("?")
                ),
            });
        }
        Ok(url)
    }

    /// A GET with the key headers, parsed by `parse`; paced by the rate limit
    /// (retries included, see `Transport::with_rate_limit`).
    async fn get<T>(
        &self,
        what: &str,
        url: &Url,
        parse: impl Fn(&[u8]) -> Result<T, BodyError>,
    ) -> Result<T, ApiError> {
        let c = &self.credentials;
        self.transport
            .send_parse(
                what,
                || {
                    self.transport
                        .client
                        .get(url.clone())
                        .header("X-Tinymdm-Manager-Apikey-Public", c.apikey_public.expose())
                        .header("X-Tinymdm-Manager-Apikey-Secret", c.apikey_secret.expose())
                        .header("X-Account-Id", &c.account_id)
                        .header("Content-Type", "application/json")
                },
                parse,
            )
            .await
    }

    /// One pass over every page (see `TinymdmApi::list_devices`).
    async fn list_pass(
        &self,
        on_page: &(dyn Fn(u64, Option<u64>) + Send + Sync),
    ) -> Result<DeviceList, ApiError> {
        let mut out = DeviceList::default();
        let mut seen: HashSet<String> = HashSet::new();
        let mut page_no: u64 = 1;
        let mut url = self.url("devices");
        url.query_pairs_mut()
            .append_pair("per_page", &self.page_size.to_string())
            .append_pair("page", "1");
        loop {
            let what = format!("list devices page {page_no}");
            let page = self.get(&what, &url, parse_page).await?;
            out.pages += 1;
            if let Some(count) = page.count {
                if let Some(was) = out.announced
                    && was != count
                {
                    out.count_changed.get_or_insert((was, count)).1 = count;
                }
                out.announced = Some(count);
            }
            let got = page.devices.len();
            for d in page.devices {
                match d {
                    Ok(d) if !seen.insert(d.id.clone()) => out.duplicates += 1,
                    Ok(d) => out.devices.push(d),
                    Err(e) => out.invalid.push(e),
                }
            }
            let held = (out.devices.len() + out.invalid.len()) as u64;
            on_page(held, out.announced);
            let reached_count = out.announced.is_some_and(|c| held >= c);
            let next = match page.next {
                Some(next) => Some(self.check_same_origin(&what, &next)?),
                // No link: infer the next page only while a full page leaves devices missing.
                None if !reached_count
                    && out.announced.is_some()
                    && got as u64 >= u64::from(self.page_size) =>
                {
                    let mut u = self.url("devices");
                    u.query_pairs_mut()
                        .append_pair("per_page", &self.page_size.to_string())
                        .append_pair("page", &(page_no + 1).to_string());
                    Some(u)
                }
                None => None,
            };
            // Stop on the last page, on an empty page, and on a link to the page
            // just read (it would loop). Completeness is judged by the caller.
            let Some(next) = next else { break };
            if got == 0 || next == url {
                break;
            }
            if out.pages >= MAX_PAGES {
                out.truncated = true;
                break;
            }
            url = next;
            page_no += 1;
        }
        Ok(out)
    }
}

#[async_trait]
impl TinymdmApi for HttpTinymdmApi {
    fn account_id(&self) -> &str {
        &self.credentials.account_id
    }

    /// Pages are offsets (`page`, `per_page`), so a device deleted or added
    /// while the listing pages shifts the later pages: one device can slip
    /// between two pages unseen. The announced `count` tells: when it changes
    /// between pages, the listing starts over once; if it changes again,
    /// the listing says so (`count_changed`) and is not complete.
    async fn list_devices(
        &self,
        on_page: &(dyn Fn(u64, Option<u64>) + Send + Sync),
    ) -> Result<DeviceList, ApiError> {
        let first = self.list_pass(on_page).await?;
        let Some((was, now)) = first.count_changed else {
            return Ok(first);
        };
        tracing::warn!(
            source = "tinymdm",
            count_before = was,
            count_after = now,
            "the device count changed while listing: listing again from the first page"
        );
        self.list_pass(on_page).await
    }

    async fn device_apps(&self, device_id: &str) -> Result<Vec<App>, ApiError> {
        let what = format!("apps of device {device_id}");
        let mut url = self.url(&format!("devices/{device_id}/apps"));
        let mut apps = Vec::new();
        for _ in 0..MAX_PAGES {
            let (mut page, next) = self.get(&what, &url, parse_apps).await?;
            let empty = page.is_empty();
            apps.append(&mut page);
            match next {
                Some(n) if !empty => url = self.check_same_origin(&what, &n)?,
                _ => break,
            }
        }
        Ok(apps)
    }

    fn requests(&self) -> u64 {
        self.transport.requests()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE1: &str = include_str!("../fixtures/tinymdm/devices-page-1.json");
    const PAGE2: &str = include_str!("../fixtures/tinymdm/devices-page-2.json");
    const APPS: &str = include_str!("../fixtures/tinymdm/device-apps.json");

    #[test]
    fn fixture_pages_parse_with_lenient_fields() {
        let p1 = parse_page(PAGE1.as_bytes()).unwrap();
        let p2 = parse_page(PAGE2.as_bytes()).unwrap();
        assert_eq!(p1.count, Some(5));
        assert!(p1.next.as_deref().unwrap().contains("page=2"));
        assert_eq!(p2.next, None);
        let all: Vec<Device> = p1
            .devices
            .into_iter()
            .chain(p2.devices)
            .map(Result::unwrap)
            .collect();
        assert_eq!(all.len(), 5);
        let first = &all[0];
        assert_eq!(first.display_name(), "Warehouse Tablet 01");
        assert_eq!(first.last_sync.unwrap().timestamp(), 1767256000);
        let loc = first.location.as_ref().unwrap();
        assert_eq!(
            loc.at.unwrap().timestamp(),
            1767255342,
            "newest position wins"
        );
        let second = &all[1];
        assert_eq!(
            second.display_name(),
            "ACME-TAB10",
            "empty nickname falls back to name"
        );
        assert_eq!(second.imei, None);
        assert!(second.location.is_none());
        assert!(
            all.iter().any(|d| d.serial_number.is_none()),
            "a null serial is in the fixtures"
        );
        assert!(all.iter().all(|d| !d.raw.is_empty()));
    }

    #[test]
    fn apps_envelope_parses() {
        let (apps, next) = parse_apps(APPS.as_bytes()).unwrap();
        assert_eq!(apps.len(), 4);
        assert_eq!(next, None);
        assert_eq!(apps[1].package_name, "com.tailscale.ipn");
        assert_eq!(apps[1].version_code, Some(482));
    }

    #[test]
    fn completeness_follows_the_announced_count() {
        let mut l = DeviceList {
            announced: Some(2),
            ..Default::default()
        };
        assert!(!l.is_complete());
        l.invalid.push(InvalidDevice {
            id: None,
            reason: "x".into(),
        });
        assert!(!l.is_complete());
        l.announced = Some(1);
        assert!(l.is_complete());
    }
}
