//! The seeded fleet generator: a realistic, reproducible mix of Tailscale
//! devices (every [`TsKind`] present from 8 devices up) and TinyMDM devices
//! with apps and groups, plus `churn` helpers that change a fraction of
//! devices for benchmarks. The same [`FleetSpec`] always yields the same fleet.
//!
//! Only presence is relative to [`FleetSpec::now`]: Tailscale's `lastSeen`,
//! `connectedToControl` and `clientConnectivity`, TinyMDM's
//! `last_sync_timestamp`, battery and `geolocation_positions`. Every other
//! timestamp (creation, enrollment, key expiry, acknowledgements, request
//! dates, group dates) is anchored to [`FleetSpec::epoch`], so the same seed
//! generated at two different clocks differs only in presence, as long as both
//! clocks are at or after the epoch.

use crate::model::{
    Distro, GeoPosition, TailscaleDevice, TinymdmApp, TinymdmDevice, TinymdmGroup, ZERO_TIME,
    rfc3339,
};
use chrono::{DateTime, Duration, SubsecRound, TimeZone, Utc};
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap, HashSet};

const DAY: i64 = 86_400;
const LATEST_MINOR: u32 = 90;

/// What to generate.
#[derive(Clone, Debug, PartialEq)]
pub struct FleetSpec {
    pub seed: u64,
    pub tailscale_devices: usize,
    pub tinymdm_devices: usize,
    /// The clock the fleet is generated against; presence (last seen, last
    /// sync, battery, positions) is relative to it.
    pub now: DateTime<Utc>,
    /// The fixed anchor of every other timestamp: creation, enrollment,
    /// acknowledgement and request dates lie before it, node key expiries 400
    /// to 700 days after it. Clamped to `now` when `now` is earlier.
    pub epoch: DateTime<Utc>,
    /// MagicDNS domain of the tailnet, e.g. `tail4c2a9e.ts.net`.
    pub tailnet_domain: String,
}

impl FleetSpec {
    /// A spec with the default tailnet domain.
    pub fn new(
        seed: u64,
        tailscale_devices: usize,
        tinymdm_devices: usize,
        now: DateTime<Utc>,
    ) -> Self {
        FleetSpec {
            seed,
            tailscale_devices,
            tinymdm_devices,
            now,
            ..FleetSpec::default()
        }
    }
}

impl Default for FleetSpec {
    /// Seed 42, 300 Tailscale and 1500 TinyMDM devices, at the fixtures'
    /// snapshot clock 2026-09-01T12:00:00Z, with the epoch 2026-01-01T00:00:00Z.
    fn default() -> Self {
        FleetSpec {
            seed: 42,
            tailscale_devices: 300,
            tinymdm_devices: 1500,
            now: Utc
                .with_ymd_and_hms(2026, 9, 1, 12, 0, 0)
                .single()
                .expect("valid date"),
            epoch: Utc
                .with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
                .single()
                .expect("valid date"),
            tailnet_domain: "tail4c2a9e.ts.net".into(),
        }
    }
}

/// The role a generated Tailscale device plays.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TsKind {
    /// User-owned iOS or Android phone; connected, or seen within 30 days.
    Phone,
    /// User-owned Android tablet; connected, or seen within 30 days.
    Tablet,
    /// User-owned macOS, Windows or Linux laptop; connected, or seen within 30 days.
    Laptop,
    /// Tagged server (`tag:server` + environment): connected, key expiry disabled.
    Server,
    /// Shared in from another tailnet (`isExternal`).
    Shared,
    /// Ephemeral CI node (`tag:ci`), seen minutes ago.
    Ephemeral,
    /// Never online: not authorized, not connected, no `lastSeen`.
    NeverSeen,
    /// Last seen 91 to 400 days ago; some tagged `tag:lab`.
    Inactive,
}

impl TsKind {
    /// Every kind, in generation priority order.
    pub const ALL: [TsKind; 8] = [
        TsKind::Phone,
        TsKind::Laptop,
        TsKind::Server,
        TsKind::Inactive,
        TsKind::Tablet,
        TsKind::Ephemeral,
        TsKind::Shared,
        TsKind::NeverSeen,
    ];

    fn weight(self) -> usize {
        match self {
            TsKind::Phone => 22,
            TsKind::Tablet => 8,
            TsKind::Laptop => 28,
            TsKind::Server => 12,
            TsKind::Shared => 4,
            TsKind::Ephemeral => 6,
            TsKind::NeverSeen => 4,
            TsKind::Inactive => 16,
        }
    }
}

/// A generated fleet.
#[derive(Clone, Debug, PartialEq)]
pub struct Fleet {
    pub tailscale: Vec<TailscaleDevice>,
    /// Kind of each Tailscale device, by nodeId.
    pub tailscale_kinds: HashMap<String, TsKind>,
    pub tinymdm: Vec<TinymdmDevice>,
    /// Installed apps by TinyMDM device id (only devices that have apps).
    pub tinymdm_apps: HashMap<String, Vec<TinymdmApp>>,
    pub tinymdm_groups: Vec<TinymdmGroup>,
}

/// Counts per kind, for assertions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FleetSummary {
    pub tailscale_total: usize,
    pub tailscale: BTreeMap<TsKind, usize>,
    pub tinymdm_total: usize,
    pub tinymdm_with_apps: usize,
    pub tinymdm_groups: usize,
}

impl Fleet {
    /// The kind of the Tailscale device with this nodeId.
    pub fn kind(&self, node_id: &str) -> Option<TsKind> {
        self.tailscale_kinds.get(node_id).copied()
    }

    /// The Tailscale devices of one kind, in fleet order.
    pub fn tailscale_of(&self, kind: TsKind) -> Vec<&TailscaleDevice> {
        self.tailscale
            .iter()
            .filter(|d| self.kind(&d.node_id) == Some(kind))
            .collect()
    }

    /// Counts per Tailscale kind and of TinyMDM devices, apps and groups.
    pub fn summary(&self) -> FleetSummary {
        let mut tailscale = BTreeMap::new();
        for kind in self.tailscale_kinds.values() {
            *tailscale.entry(*kind).or_insert(0) += 1;
        }
        FleetSummary {
            tailscale_total: self.tailscale.len(),
            tailscale,
            tinymdm_total: self.tinymdm.len(),
            tinymdm_with_apps: self.tinymdm_apps.len(),
            tinymdm_groups: self.tinymdm_groups.len(),
        }
    }

    /// Changes `fraction` of the devices of each source; returns how many changed.
    pub fn churn(&mut self, fraction: f64, seed: u64) -> usize {
        churn_tailscale(&mut self.tailscale, fraction, seed)
            + churn_tinymdm(&mut self.tinymdm, fraction, seed)
    }
}

/// Generates the fleet `spec` describes.
pub fn generate(spec: FleetSpec) -> Fleet {
    let now = spec.now.trunc_subsecs(0);
    let epoch = spec.epoch.trunc_subsecs(0).min(now);
    let clock = Clock { now, epoch };
    let mut ts = TsGen::new(
        spec.seed,
        clock,
        &spec.tailnet_domain,
        spec.tailscale_devices,
    );
    let mut kinds = kind_plan(spec.tailscale_devices);
    kinds.shuffle(&mut ts.rng);
    let mut tailscale = Vec::with_capacity(kinds.len());
    let mut tailscale_kinds = HashMap::with_capacity(kinds.len());
    for kind in kinds {
        let device = ts.device(kind);
        tailscale_kinds.insert(device.node_id.clone(), kind);
        tailscale.push(device);
    }
    let mut mdm = MdmGen::new(spec.seed, clock);
    let tinymdm_groups = mdm.groups();
    let mut tinymdm = Vec::with_capacity(spec.tinymdm_devices);
    let mut tinymdm_apps = HashMap::new();
    for _ in 0..spec.tinymdm_devices {
        let device = mdm.device(&tinymdm_groups);
        if mdm.rng.random_bool(0.4) {
            tinymdm_apps.insert(device.id.clone(), mdm.apps());
        }
        tinymdm.push(device);
    }
    Fleet {
        tailscale,
        tailscale_kinds,
        tinymdm,
        tinymdm_apps,
        tinymdm_groups,
    }
}

/// How many devices of each kind: proportional to the weights, at least one of
/// each once there are 8 devices, and exactly `total` in all.
fn kind_plan(total: usize) -> Vec<TsKind> {
    let mut counts: Vec<(TsKind, usize)> = if total < TsKind::ALL.len() {
        TsKind::ALL.iter().take(total).map(|k| (*k, 1)).collect()
    } else {
        TsKind::ALL
            .iter()
            .map(|k| (*k, (total * k.weight() / 100).max(1)))
            .collect()
    };
    let mut sum: usize = counts.iter().map(|(_, n)| n).sum();
    while sum > total {
        if let Some(largest) = counts
            .iter_mut()
            .filter(|(_, n)| *n > 1)
            .max_by_key(|(_, n)| *n)
        {
            largest.1 -= 1;
        }
        sum -= 1;
    }
    if sum < total
        && let Some(laptops) = counts.iter_mut().find(|(k, _)| *k == TsKind::Laptop)
    {
        laptops.1 += total - sum;
    }
    counts
        .into_iter()
        .flat_map(|(k, n)| std::iter::repeat_n(k, n))
        .collect()
}

/// Picks `fraction` of `count` rows by `seed` and applies `change` to each, in
/// row order; returns how many were changed.
pub(crate) fn churn_each<'a, T: 'a>(
    rows: impl Iterator<Item = &'a mut T>,
    count: usize,
    fraction: f64,
    seed: u64,
    mut change: impl FnMut(&mut T, &mut ChaCha8Rng),
) -> usize {
    let wanted = ((count as f64) * fraction.clamp(0.0, 1.0)).round() as usize;
    let wanted = wanted.min(count);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(3);
    let mut picked = rand::seq::index::sample(&mut rng, count, wanted).into_vec();
    picked.sort_unstable();
    let mut picked = picked.into_iter().peekable();
    for (i, row) in rows.enumerate() {
        if picked.peek() == Some(&i) {
            change(row, &mut rng);
            picked.next();
        }
    }
    wanted
}

/// Changes the client version of `fraction` of the devices.
pub fn churn_tailscale(devices: &mut [TailscaleDevice], fraction: f64, seed: u64) -> usize {
    let count = devices.len();
    churn_each(
        devices.iter_mut(),
        count,
        fraction,
        seed,
        churn_tailscale_device,
    )
}

/// Changes the battery (and sometimes the OS version) of `fraction` of the devices.
pub fn churn_tinymdm(devices: &mut [TinymdmDevice], fraction: f64, seed: u64) -> usize {
    let count = devices.len();
    churn_each(
        devices.iter_mut(),
        count,
        fraction,
        seed,
        churn_tinymdm_device,
    )
}

pub(crate) fn churn_tailscale_device(device: &mut TailscaleDevice, rng: &mut ChaCha8Rng) {
    if device.is_external {
        device.blocks_incoming_connections = !device.blocks_incoming_connections;
        return;
    }
    let (version, update) = client_version(rng, &[86, 88, 90]);
    device.client_version = version;
    device.update_available = update;
}

pub(crate) fn churn_tinymdm_device(device: &mut TinymdmDevice, rng: &mut ChaCha8Rng) {
    let old = device.battery_level;
    loop {
        let level = rng.random_range(3..=100);
        if Some(level) != old {
            device.battery_level = Some(level);
            break;
        }
    }
    if rng.random_bool(0.2) {
        let major = rng.random_range(12..=15);
        device.os_version = format!("Android_{major}");
    }
}

fn hex(rng: &mut ChaCha8Rng, len: usize) -> String {
    const HEX: &[u8] = b"0123456789abcdef";
    (0..len)
        .map(|_| HEX[rng.random_range(0..16)] as char)
        .collect()
}

fn alnum(rng: &mut ChaCha8Rng, len: usize) -> String {
    const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    (0..len)
        .map(|_| ALNUM[rng.random_range(0..ALNUM.len())] as char)
        .collect()
}

fn digits(rng: &mut ChaCha8Rng, len: usize) -> String {
    (0..len)
        .map(|_| char::from(b'0' + rng.random_range(0..10u8)))
        .collect()
}

fn pick<'a, T>(rng: &mut ChaCha8Rng, items: &'a [T]) -> &'a T {
    items.choose(rng).expect("non-empty list")
}

fn client_version(rng: &mut ChaCha8Rng, minors: &[u32]) -> (String, bool) {
    let minor = *pick(rng, minors);
    let patch = rng.random_range(0..5);
    let version = format!("1.{minor}.{patch}-t{}-g{}", hex(rng, 9), hex(rng, 9));
    (version, minor < LATEST_MINOR)
}

const FIRST_NAMES: &[&str] = &[
    "alex", "amara", "ben", "carla", "chen", "dana", "devon", "elif", "emma", "farid", "gia",
    "hana", "ivan", "jade", "jonas", "kai", "kim", "lena", "leo", "lucia", "malik", "maya", "mei",
    "nadia", "noah", "omar", "priya", "quinn", "rafael", "rosa", "sam", "sara", "tariq", "tomas",
    "uma", "vera", "wei", "yara", "yusuf", "zoe",
];
const LAST_NAMES: &[&str] = &[
    "adams", "baker", "costa", "diaz", "evans", "fischer", "garcia", "haddad", "ito", "jensen",
    "kowalski", "lopez", "martin", "nguyen", "okafor", "patel", "quist", "rossi", "silva",
    "tanaka", "ueda", "varga", "weber", "xu", "young", "zimmer",
];
const ADMINS: &[&str] = &[
    "ops@example.com",
    "infra@example.com",
    "platform@example.com",
];
const SERVER_ROLES: &[&str] = &[
    "db",
    "db-proxy",
    "web",
    "api",
    "k8s-node",
    "bastion",
    "grafana",
    "prometheus",
    "build",
    "vpn-gw",
    "nas",
    "redis",
    "kafka",
    "ingress",
    "backup",
    "ldap",
];
const DERP_REGIONS: &[&str] = &[
    "Frankfurt",
    "Amsterdam",
    "London",
    "Paris",
    "New York City",
    "San Francisco",
    "Singapore",
    "Tokyo",
    "Sydney",
];
const DISTROS: &[(&str, &str, &str)] = &[
    ("debian", "12.11", "bookworm"),
    ("ubuntu", "24.04", "noble"),
    ("ubuntu", "22.04", "jammy"),
    ("fedora", "40", ""),
    ("alpine", "3.20", ""),
];

struct User {
    first: &'static str,
    login: String,
}

/// The two clocks of a generation: presence is relative to `now`, content to
/// `epoch` (never after `now`).
#[derive(Clone, Copy)]
struct Clock {
    now: DateTime<Utc>,
    epoch: DateTime<Utc>,
}

struct TsGen<'a> {
    rng: ChaCha8Rng,
    now: DateTime<Utc>,
    epoch: DateTime<Utc>,
    domain: &'a str,
    foreign_domains: Vec<String>,
    users: Vec<User>,
    hostnames: HashSet<String>,
    next_suffix: HashMap<String, u32>,
    node_ids: HashSet<String>,
    ids: HashSet<u64>,
    v4: HashSet<u32>,
}

struct Presence {
    connected: bool,
    last_seen: Option<DateTime<Utc>>,
    created: DateTime<Utc>,
}

impl<'a> TsGen<'a> {
    fn new(seed: u64, clock: Clock, domain: &'a str, devices: usize) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(1);
        let foreign_domains = (0..3)
            .map(|_| format!("tail{}.ts.net", hex(&mut rng, 6)))
            .collect();
        let mut logins = HashSet::new();
        let users = (0..(devices / 3).max(8))
            .map(|_| {
                let first = *pick(&mut rng, FIRST_NAMES);
                let last = *pick(&mut rng, LAST_NAMES);
                let mut login = format!("{first}.{last}@example.com");
                let mut n = 1;
                while !logins.insert(login.clone()) {
                    n += 1;
                    login = format!("{first}.{last}{n}@example.com");
                }
                User { first, login }
            })
            .collect();
        TsGen {
            rng,
            now: clock.now,
            epoch: clock.epoch,
            domain,
            foreign_domains,
            users,
            hostnames: HashSet::new(),
            next_suffix: HashMap::new(),
            node_ids: HashSet::new(),
            ids: HashSet::new(),
            v4: HashSet::new(),
        }
    }

    /// A presence time: between `min_secs` and `max_secs` before `now`.
    fn ago(&mut self, min_secs: i64, max_secs: i64) -> DateTime<Utc> {
        self.now - Duration::seconds(self.rng.random_range(min_secs..max_secs))
    }

    /// A content time: between `min_secs` and `max_secs` before the epoch.
    fn before_epoch(&mut self, min_secs: i64, max_secs: i64) -> DateTime<Utc> {
        self.epoch - Duration::seconds(self.rng.random_range(min_secs..max_secs))
    }

    /// A node key expiry 400 to 700 days after the epoch, so it stays in the
    /// future for a while without depending on `now`.
    fn key_expiry(&mut self) -> String {
        rfc3339(self.epoch + Duration::seconds(self.rng.random_range(400 * DAY..700 * DAY)))
    }

    fn unique_host(&mut self, base: String) -> String {
        if self.hostnames.insert(base.clone()) {
            return base;
        }
        loop {
            let n = self.next_suffix.entry(base.clone()).or_insert(0);
            *n += 1;
            let candidate = format!("{base}-{n}");
            if self.hostnames.insert(candidate.clone()) {
                return candidate;
            }
        }
    }

    fn user(&mut self) -> (&'static str, String) {
        let user = pick(&mut self.rng, &self.users);
        (user.first, user.login.clone())
    }

    fn admin(&mut self) -> String {
        (*pick(&mut self.rng, ADMINS)).to_owned()
    }

    fn node_id(&mut self) -> String {
        loop {
            let id = format!("n{}CNTRL", alnum(&mut self.rng, 10));
            if self.node_ids.insert(id.clone()) {
                return id;
            }
        }
    }

    fn numeric_id(&mut self) -> String {
        loop {
            let id = self.rng.random_range((1u64 << 53) + 1..1u64 << 63);
            if self.ids.insert(id) {
                return id.to_string();
            }
        }
    }

    fn addresses(&mut self) -> Vec<String> {
        loop {
            let r = self.rng.random_range(1u32..1 << 22);
            if self.v4.insert(r) {
                let v4 = format!("100.{}.{}.{}", 64 + (r >> 16), (r >> 8) & 0xff, r & 0xff);
                let high = (self.rng.random_range(1u32..256) << 8) | (r >> 16);
                let v6 = format!("fd7a:115c:a1e0::{high:x}:{:x}", r & 0xffff);
                return vec![v4, v6];
            }
        }
    }

    /// Connected, or offline and seen within the last 30 days; created at
    /// least 30 days before the epoch, so before any such `lastSeen`.
    fn recent(&mut self, p_connected: f64) -> Presence {
        let created = self.before_epoch(30 * DAY, 900 * DAY);
        if self.rng.random_bool(p_connected) {
            Presence {
                connected: true,
                last_seen: None,
                created,
            }
        } else {
            Presence {
                connected: false,
                last_seen: Some(self.ago(60, 30 * DAY - 3600)),
                created,
            }
        }
    }

    fn connectivity(&mut self, online_ever: bool) -> Value {
        if !online_ever {
            return json!({
                "endpoints": [],
                "derp": "",
                "mappingVariesByDestIP": false,
                "latency": {},
                "clientSupports": {"hairPinning": null, "ipv6": false, "pcp": false,
                                   "pmp": false, "udp": false, "upnp": false},
            });
        }
        let public = format!(
            "203.0.113.{}:{}",
            self.rng.random_range(1..255),
            if self.rng.random_bool(0.7) {
                41641
            } else {
                self.rng.random_range(1024..65535)
            }
        );
        let local = format!(
            "192.168.{}.{}:41641",
            self.rng.random_range(0..255),
            self.rng.random_range(2..255)
        );
        let regions: Vec<&str> = DERP_REGIONS
            .choose_multiple(&mut self.rng, 3)
            .copied()
            .collect();
        let mut latency = serde_json::Map::new();
        for (i, region) in regions.iter().enumerate() {
            let ms = (self.rng.random_range(1.0..150.0f64) * 1e6).round() / 1e6;
            let entry = if i == 0 {
                json!({"preferred": true, "latencyMs": ms})
            } else {
                json!({"latencyMs": ms})
            };
            latency.insert((*region).to_owned(), entry);
        }
        json!({
            "endpoints": [public, local],
            "derp": "",
            "mappingVariesByDestIP": self.rng.random_bool(0.1),
            "latency": latency,
            "clientSupports": {
                "hairPinning": null,
                "ipv6": self.rng.random_bool(0.4),
                "pcp": false,
                "pmp": self.rng.random_bool(0.2),
                "udp": true,
                "upnp": self.rng.random_bool(0.3),
            },
        })
    }

    fn posture(&mut self, p_serial: f64) -> Value {
        if self.rng.random_bool(p_serial) {
            json!({"serialNumbers": [alnum(&mut self.rng, 10).to_uppercase()]})
        } else {
            json!({"disabled": true})
        }
    }

    fn distro(&mut self, os: &str) -> Option<Distro> {
        (os == "linux").then(|| {
            let (name, version, code) = *pick(&mut self.rng, DISTROS);
            Distro {
                name: name.into(),
                version: version.into(),
                code_name: code.into(),
            }
        })
    }

    /// A device with fresh ids, keys and addresses; callers fill in the rest.
    fn base(
        &mut self,
        hostname: String,
        os: &str,
        user: String,
        minors: &[u32],
    ) -> TailscaleDevice {
        let (client_version, update_available) = client_version(&mut self.rng, minors);
        TailscaleDevice {
            addresses: self.addresses(),
            id: self.numeric_id(),
            node_id: self.node_id(),
            user,
            name: format!("{hostname}.{}", self.domain),
            hostname,
            client_version,
            update_available,
            os: os.to_owned(),
            authorized: true,
            machine_key: format!("mkey:{}", hex(&mut self.rng, 64)),
            node_key: format!("nodekey:{}", hex(&mut self.rng, 64)),
            blocks_incoming_connections: self.rng.random_bool(0.05),
            tailnet_lock_key: format!("tlpub:{}", hex(&mut self.rng, 64)),
            ..TailscaleDevice::default()
        }
    }

    fn user_device(
        &mut self,
        hostname: String,
        os: &str,
        user: String,
        p: Presence,
        minors: &[u32],
    ) -> TailscaleDevice {
        let expires = self.key_expiry();
        let mut d = self.base(hostname, os, user, minors);
        d.created = rfc3339(p.created);
        d.connected_to_control = p.connected;
        d.last_seen = p.last_seen;
        d.expires = expires;
        d.details.client_connectivity = self.connectivity(true);
        d.details.posture_identity = self.posture(0.4);
        d.details.distro = self.distro(os);
        d
    }

    fn device(&mut self, kind: TsKind) -> TailscaleDevice {
        match kind {
            TsKind::Phone => self.phone(),
            TsKind::Tablet => self.tablet(),
            TsKind::Laptop => self.laptop(),
            TsKind::Server => self.server(),
            TsKind::Shared => self.shared(),
            TsKind::Ephemeral => self.ephemeral(),
            TsKind::NeverSeen => self.never_seen(),
            TsKind::Inactive => self.inactive(),
        }
    }

    fn phone(&mut self) -> TailscaleDevice {
        let (first, login) = self.user();
        let ios = self.rng.random_bool(0.55);
        let base = if ios {
            pick(
                &mut self.rng,
                &["{}-iphone", "{}s-iphone-15", "iphone-{}", "{}-iphone-se"],
            )
        } else {
            pick(
                &mut self.rng,
                &["{}-pixel-8", "{}-galaxy-s24", "pixel-7-{}", "{}-oneplus-12"],
            )
        }
        .replace("{}", first);
        let host = self.unique_host(base);
        let presence = self.recent(0.35);
        let os = if ios { "iOS" } else { "android" };
        self.user_device(host, os, login, presence, &[84, 86, 88, 90])
    }

    fn tablet(&mut self) -> TailscaleDevice {
        let (first, login) = self.user();
        let base = pick(
            &mut self.rng,
            &[
                "{}-galaxy-tab-s9",
                "pixel-tablet-{}",
                "{}-tab-a8",
                "lenovo-tab-{}",
            ],
        )
        .replace("{}", first);
        let host = self.unique_host(base);
        let presence = self.recent(0.25);
        self.user_device(host, "android", login, presence, &[82, 84, 86, 88, 90])
    }

    fn laptop(&mut self) -> TailscaleDevice {
        let (first, login) = self.user();
        let roll = self.rng.random_range(0..100);
        let (os, base) = if roll < 45 {
            let t = pick(&mut self.rng, &["{}-mbp", "{}-macbook-air", "{}s-mbp-m3"]);
            ("macOS", t.replace("{}", first))
        } else if roll < 80 {
            let prefix = pick(&mut self.rng, &["DESKTOP", "LAPTOP"]);
            (
                "windows",
                format!("{prefix}-{}", alnum(&mut self.rng, 7).to_uppercase()),
            )
        } else {
            let t = pick(&mut self.rng, &["{}-thinkpad", "{}-xps13", "{}-framework"]);
            ("linux", t.replace("{}", first))
        };
        let host = self.unique_host(base);
        let presence = self.recent(0.45);
        let mut d = self.user_device(host, os, login, presence, &[84, 86, 88, 90]);
        d.details.posture_identity = self.posture(0.6);
        d.details.ssh_enabled = os == "linux" && self.rng.random_bool(0.2);
        d
    }

    fn server(&mut self) -> TailscaleDevice {
        let windows = self.rng.random_bool(0.08);
        let role = if windows {
            "win-srv"
        } else {
            *pick(&mut self.rng, SERVER_ROLES)
        };
        let base = format!("{role}-{:02}", self.rng.random_range(1..40));
        let host = self.unique_host(base);
        let os = if windows { "windows" } else { "linux" };
        let admin = self.admin();
        let created = self.before_epoch(30 * DAY, 700 * DAY);
        let env = *pick(
            &mut self.rng,
            &["tag:prod", "tag:prod", "tag:staging", "tag:dev"],
        );
        let mut d = self.base(host, os, admin, &[80, 84, 86, 88, 90]);
        d.created = rfc3339(created);
        d.connected_to_control = true;
        d.key_expiry_disabled = true;
        d.expires = ZERO_TIME.into();
        d.tags = vec![env.to_owned(), "tag:server".to_owned()];
        d.tags.sort();
        let routes_roll = self.rng.random_range(0..100);
        if routes_roll < 20 {
            let net = format!("10.{}.0.0/16", self.rng.random_range(0..255));
            let extra = format!("10.{}.0.0/16", self.rng.random_range(0..255));
            d.details.enabled_routes = vec![net.clone()];
            d.details.advertised_routes = vec![net, extra];
        } else if routes_roll < 25 {
            let exit = vec!["0.0.0.0/0".to_owned(), "::/0".to_owned()];
            d.details.enabled_routes = exit.clone();
            d.details.advertised_routes = exit;
        }
        d.details.client_connectivity = self.connectivity(true);
        d.details.posture_identity = json!({"disabled": true});
        d.details.ssh_enabled = !windows && self.rng.random_bool(0.7);
        d.details.distro = self.distro(os);
        d
    }

    fn shared(&mut self) -> TailscaleDevice {
        let first = *pick(&mut self.rng, FIRST_NAMES);
        let base = pick(
            &mut self.rng,
            &[
                "nas-shared",
                "{}-homelab",
                "media-server",
                "{}-desktop",
                "printer-{}",
                "shared-db",
            ],
        )
        .replace("{}", first);
        let host = self.unique_host(base);
        let os = *pick(&mut self.rng, &["linux", "linux", "macOS", "windows"]);
        let owner = format!(
            "{first}@{}",
            pick(&mut self.rng, &["example.net", "example.org"])
        );
        let domain = pick(&mut self.rng, &self.foreign_domains).clone();
        let presence = self.recent(0.3);
        let mut d = self.base(host.clone(), os, owner, &[86]);
        d.name = format!("{host}.{domain}");
        d.client_version = String::new();
        d.update_available = false;
        d.created = String::new();
        d.connected_to_control = presence.connected;
        d.last_seen = presence.last_seen;
        d.key_expiry_disabled = true;
        d.expires = ZERO_TIME.into();
        d.is_external = true;
        d.machine_key = String::new();
        d.tailnet_lock_key = String::new();
        d.details.posture_identity = json!({"disabled": true});
        d
    }

    fn ephemeral(&mut self) -> TailscaleDevice {
        let prefix = *pick(&mut self.rng, &["ci-runner", "gha-runner", "k8s-job"]);
        let base = format!("{prefix}-{}", hex(&mut self.rng, 5));
        let host = self.unique_host(base);
        let admin = self.admin();
        let last_seen = self.ago(60, 50 * 60);
        // An hour or more before the epoch, so before `lastSeen` (at most 50
        // minutes before `now`).
        let created = self.before_epoch(3600 + 120, 3600 + 3 * 3600);
        let mut d = self.base(host, "linux", admin, &[88, 90]);
        d.created = rfc3339(created);
        d.last_seen = Some(last_seen);
        d.key_expiry_disabled = true;
        d.expires = ZERO_TIME.into();
        d.tags = vec!["tag:ci".into()];
        d.is_ephemeral = true;
        d.details.client_connectivity = self.connectivity(true);
        d.details.posture_identity = json!({"disabled": true});
        d.details.distro = self.distro("linux");
        d
    }

    fn never_seen(&mut self) -> TailscaleDevice {
        let (first, login) = self.user();
        let (os, base) = *pick(
            &mut self.rng,
            &[
                ("android", "{}-pixel-tablet"),
                ("iOS", "{}-ipad"),
                ("macOS", "{}-new-mbp"),
                ("windows", "{}-new-laptop"),
                ("linux", "{}-nuc"),
            ],
        );
        let host = self.unique_host(base.replace("{}", first));
        let created = self.before_epoch(600, 20 * DAY);
        let expires = self.key_expiry();
        let mut d = self.base(host, os, login, &[88, 90]);
        d.created = rfc3339(created);
        d.expires = expires;
        d.authorized = false;
        d.details.client_connectivity = self.connectivity(false);
        d.details.posture_identity = json!({"disabled": true});
        d.details.distro = self.distro(os);
        d
    }

    fn inactive(&mut self) -> TailscaleDevice {
        let last_seen =
            self.now - Duration::days(91) - Duration::seconds(self.rng.random_range(0..309 * DAY));
        // Over 400 days before the epoch, so before any such `lastSeen`.
        let created = self.before_epoch(411 * DAY, 1000 * DAY);
        let minors = [62, 66, 70, 74, 76, 78, 80];
        let mut d = if self.rng.random_bool(0.4) {
            let (os, prefix) = *pick(
                &mut self.rng,
                &[
                    ("windows", "win-lab"),
                    ("linux", "lab-rpi"),
                    ("macOS", "lab-mac-mini"),
                ],
            );
            let base = format!("{prefix}-{:02}", self.rng.random_range(1..30));
            let host = self.unique_host(base);
            let admin = self.admin();
            let mut d = self.base(host, os, admin, &minors);
            d.key_expiry_disabled = true;
            d.expires = ZERO_TIME.into();
            d.tags = vec!["tag:lab".into()];
            d.details.distro = self.distro(os);
            d
        } else {
            let (first, login) = self.user();
            let (os, base) = *pick(
                &mut self.rng,
                &[
                    ("macOS", "{}-old-mbp"),
                    ("android", "{}-old-phone"),
                    ("linux", "{}-t480"),
                    ("windows", "{}-surface-pro-4"),
                    ("iOS", "{}-iphone-x"),
                ],
            );
            let host = self.unique_host(base.replace("{}", first));
            let expires = self.key_expiry();
            let mut d = self.base(host, os, login, &minors);
            d.expires = expires;
            d.details.distro = self.distro(os);
            d
        };
        d.created = rfc3339(created);
        d.last_seen = Some(last_seen);
        d.details.client_connectivity = self.connectivity(true);
        d.details.posture_identity = json!({"disabled": true});
        d
    }
}

/// (manufacturer, model as TinyMDM's `name`, form factor)
const MODELS: &[(&str, &str, FormFactor)] = &[
    ("samsung", "SM-T505", FormFactor::Tablet),
    ("samsung", "SM-X200", FormFactor::Tablet),
    ("samsung", "SM-A536B", FormFactor::Phone),
    ("samsung", "SM-G991B", FormFactor::Phone),
    ("Google", "Pixel 7", FormFactor::Phone),
    ("Google", "Pixel 8a", FormFactor::Phone),
    ("Google", "Pixel Tablet", FormFactor::Tablet),
    ("Zebra Technologies", "TC52", FormFactor::Rugged),
    ("Zebra Technologies", "TC57", FormFactor::Rugged),
    ("Zebra Technologies", "ET40", FormFactor::Tablet),
    ("LENOVO", "TB-X606F", FormFactor::Tablet),
    ("LENOVO", "TB-J606F", FormFactor::Tablet),
    ("Honeywell", "CT40", FormFactor::Rugged),
    ("Honeywell", "EDA52", FormFactor::Rugged),
    ("Blackview", "BV9900", FormFactor::Rugged),
    ("Xiaomi", "Redmi Note 12", FormFactor::Phone),
    ("motorola", "moto g54 5G", FormFactor::Phone),
    ("BioRugged", "BW10RS", FormFactor::Tablet),
];

#[derive(Clone, Copy, PartialEq)]
enum FormFactor {
    Phone,
    Tablet,
    Rugged,
}

/// (package, app name, major version)
const APPS: &[(&str, &str, u32)] = &[
    ("com.tailscale.ipn", "Tailscale", 1),
    ("com.google.android.apps.maps", "Maps", 11),
    ("com.google.android.gm", "Gmail", 2025),
    ("com.android.chrome", "Chrome", 128),
    ("com.microsoft.teams", "Microsoft Teams", 1416),
    ("com.microsoft.office.outlook", "Outlook", 4),
    ("com.whatsapp", "WhatsApp", 2),
    ("com.symbol.datawedge", "DataWedge", 11),
    ("org.example.fieldcollect", "Example Field Collect", 5),
    ("net.example.scanner", "Example Barcode Scanner", 1),
    ("org.odk.collect.android", "ODK Collect", 2024),
    ("com.google.android.apps.docs", "Drive", 2),
    ("com.Slack", "Slack", 25),
    ("com.dropbox.android", "Dropbox", 390),
    ("com.adobe.reader", "Adobe Acrobat", 24),
    ("com.google.android.keep", "Keep", 5),
    ("org.mozilla.firefox", "Firefox", 129),
    ("com.google.android.calendar", "Calendar", 2024),
    ("us.zoom.videomeetings", "Zoom", 6),
    ("com.google.android.apps.authenticator2", "Authenticator", 7),
    ("com.lastpass.lpandroid", "LastPass", 5),
    ("com.microsoft.emmx", "Microsoft Edge", 128),
];

/// TinyMDM's `YYYY-MM-DD HH:MM:SS` date format.
fn mdm_date(ts: i64) -> String {
    DateTime::from_timestamp(ts, 0)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_default()
}

struct MdmGen {
    rng: ChaCha8Rng,
    /// Unix seconds of [`Clock::now`], for presence.
    now: i64,
    /// Unix seconds of [`Clock::epoch`], for everything else.
    epoch: i64,
    ids: HashSet<String>,
}

impl MdmGen {
    fn new(seed: u64, clock: Clock) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(2);
        MdmGen {
            rng,
            now: clock.now.timestamp(),
            epoch: clock.epoch.timestamp(),
            ids: HashSet::new(),
        }
    }

    fn groups(&mut self) -> Vec<TinymdmGroup> {
        let policies: Vec<String> = (0..3)
            .map(|_| format!("policy-{}", hex(&mut self.rng, 8)))
            .collect();
        [
            "Warehouse Tablets",
            "Field Phones",
            "BYOD Staff",
            "Kiosks - Lobby",
            "Rugged Scanners",
            "Spare Pool",
        ]
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let created = self.epoch - self.rng.random_range(200 * DAY..900 * DAY);
            let modified = created + self.rng.random_range(0..150 * DAY);
            TinymdmGroup {
                id: format!("group-{}", hex(&mut self.rng, 8)),
                name: (*name).into(),
                policy_id: (i != 5).then(|| policies[i % 3].clone()),
                creation_date: mdm_date(created),
                modification_date: mdm_date(modified),
            }
        })
        .collect()
    }

    fn apps(&mut self) -> Vec<TinymdmApp> {
        let mut apps = vec![TinymdmApp {
            package_name: "com.tinymdm.agent".into(),
            app_name: "TinyMDM".into(),
            version_code: 41802,
            version_name: "4.18.2".into(),
        }];
        let extra = self.rng.random_range(2..=11);
        for (package, name, major) in APPS.choose_multiple(&mut self.rng, extra) {
            let minor = self.rng.random_range(0..40);
            let patch = self.rng.random_range(0..20);
            apps.push(TinymdmApp {
                package_name: (*package).into(),
                app_name: (*name).into(),
                version_code: i64::from(major * 10_000 + minor * 100 + patch),
                version_name: format!("{major}.{minor}.{patch}"),
            });
        }
        apps
    }

    /// An `*_acknowledge_time`-style value: a Unix time between `after` and
    /// the epoch, `""` or null.
    fn ack(&mut self, after: i64) -> Value {
        match self.rng.random_range(0..10) {
            0..=1 => json!(self.rng.random_range(after..self.epoch)),
            2..=7 => json!(""),
            _ => Value::Null,
        }
    }

    /// A `last_*_request_date` value: `YYYY-MM-DD HH:MM:SS` between `after`
    /// and the epoch, `""` or null.
    fn request_date(&mut self, after: i64) -> Value {
        match self.rng.random_range(0..10) {
            0..=1 => json!(mdm_date(self.rng.random_range(after..self.epoch))),
            2..=7 => json!(""),
            _ => Value::Null,
        }
    }

    fn device(&mut self, groups: &[TinymdmGroup]) -> TinymdmDevice {
        let id = loop {
            let id = hex(&mut self.rng, 16);
            if self.ids.insert(id.clone()) {
                break id;
            }
        };
        let (manufacturer, model, form) = *pick(&mut self.rng, MODELS);
        let enrollment_type = match self.rng.random_range(0..100) {
            0..=71 => "fully_managed",
            72..=93 => "work_profile",
            _ => "dedicated",
        };
        let work_profile = enrollment_type == "work_profile";
        let android = self.rng.random_range(11..=15);
        let build_prefix = match android {
            11 => "RP1A",
            12 => "SP2A",
            13 => "TP1A",
            14 => "UP1A",
            _ => "AP3A",
        };
        let first = pick(&mut self.rng, FIRST_NAMES);
        let mut name_chars = first.chars();
        let first_cap: String = name_chars
            .next()
            .map(|c| c.to_uppercase().chain(name_chars).collect())
            .unwrap_or_default();
        let nickname = match self.rng.random_range(0..100) {
            0..=59 => Some(match form {
                FormFactor::Tablet => {
                    format!("Warehouse Tablet {:02}", self.rng.random_range(1..99))
                }
                FormFactor::Phone => format!("Field Phone - {first_cap}"),
                FormFactor::Rugged => format!("Scanner {:03}", self.rng.random_range(1..999)),
            }),
            60..=84 => Some(String::new()),
            _ => None,
        };
        let wifi_only = form == FormFactor::Tablet && self.rng.random_bool(0.7);
        let has_sim = (!wifi_only && form != FormFactor::Tablet) || self.rng.random_bool(0.1);
        let phone_number = if has_sim && form == FormFactor::Phone && self.rng.random_bool(0.5) {
            format!("+1555{}", digits(&mut self.rng, 7))
        } else {
            String::new()
        };
        let imei = if wifi_only || work_profile {
            String::new()
        } else {
            format!("35{}", digits(&mut self.rng, 13))
        };
        let iccid = if phone_number.is_empty() {
            String::new()
        } else {
            format!("8901{}", digits(&mut self.rng, 15))
        };
        let serial_number = if work_profile {
            None
        } else if self.rng.random_bool(0.03) {
            Some(String::new())
        } else {
            Some(format!("R58{}", alnum(&mut self.rng, 8).to_uppercase()))
        };
        let battery = self.rng.random_range(3..=100);
        let battery_status = if battery == 100 {
            "full"
        } else {
            *pick(
                &mut self.rng,
                &["charging", "discharging", "discharging", "not_charging"],
            )
        };
        let battery_health = match self.rng.random_range(0..100) {
            0..=91 => "good",
            92..=95 => "overheat",
            96..=98 => "cold",
            _ => "dead",
        };
        let enrolled = self.epoch - self.rng.random_range(20 * DAY..900 * DAY);
        let last_sync = match self.rng.random_range(0..100) {
            0..=77 => self.now - self.rng.random_range(60..2 * DAY),
            78..=94 => self.now - self.rng.random_range(2 * DAY..35 * DAY),
            _ => self.now - self.rng.random_range(35 * DAY..200 * DAY),
        }
        .max(enrolled + 3600);
        let geolocation_activated = self.rng.random_bool(0.55);
        let geolocation_positions = if geolocation_activated {
            let mut positions: Vec<GeoPosition> = (0..self.rng.random_range(1..=3))
                .map(|_| {
                    let ts = last_sync - self.rng.random_range(0..3 * DAY);
                    GeoPosition {
                        address: if self.rng.random_bool(0.8) {
                            format!(
                                "{} Example Street, Testville",
                                self.rng.random_range(1..200)
                            )
                        } else {
                            String::new()
                        },
                        date: DateTime::from_timestamp(ts, 0)
                            .map(|t| t.format("%d-%m-%Y %H:%M:%S").to_string())
                            .unwrap_or_default(),
                        latitude: (self.rng.random_range(-0.01..0.01f64) * 1e6).round() / 1e6,
                        longitude: (self.rng.random_range(-0.01..0.01f64) * 1e6).round() / 1e6,
                        timestamp: ts,
                    }
                })
                .collect();
            positions.shuffle(&mut self.rng);
            Some(positions)
        } else if self.rng.random_bool(0.5) {
            Some(Vec::new())
        } else {
            None
        };
        let tinymdm_app_version = if self.rng.random_bool(0.12) {
            json!(4.17)
        } else {
            json!(*pick(
                &mut self.rng,
                &["4.18.2", "4.18.2", "4.18.0", "4.17.3", "4.16.0"]
            ))
        };
        let group = if self.rng.random_bool(0.9) {
            Some(pick(&mut self.rng, groups))
        } else {
            None
        };
        let change_user = match self.rng.random_range(0..10) {
            0 => json!(self.rng.random_range(enrolled..self.epoch)),
            1..=6 => json!(""),
            _ => Value::Null,
        };
        TinymdmDevice {
            ssaid: id.clone(),
            id,
            name: model.into(),
            nickname,
            phone_number,
            enrollment_type: enrollment_type.into(),
            os_version: format!("Android_{android}"),
            battery_level: Some(battery),
            battery_status: battery_status.into(),
            battery_health: battery_health.into(),
            geolocation_activated,
            gps_activated: self.rng.random_bool(0.7),
            geolocation_positions,
            imei,
            iccid,
            serial_number,
            build_id: format!(
                "{build_prefix}.{}.{}",
                digits(&mut self.rng, 6),
                digits(&mut self.rng, 3)
            ),
            manufacturer: manufacturer.into(),
            tinymdm_app_version,
            enrollment_timestamp: enrolled,
            last_lock_request_date: self.request_date(enrolled),
            last_reboot_request_date: self.request_date(enrolled),
            last_change_password_request_date: self.request_date(enrolled),
            last_delete_password_request_date: self.request_date(enrolled),
            last_message_sent_request_date: self.request_date(enrolled),
            last_wipe_request_date: self.request_date(enrolled),
            last_sync_timestamp: last_sync,
            lock_acknowledge_time: self.ack(enrolled),
            reboot_acknowledge_time: self.ack(enrolled),
            change_password_acknowledge_time: self.ack(enrolled),
            delete_password_acknowledge_time: self.ack(enrolled),
            message_received_acknowledge_time: self.ack(enrolled),
            last_change_user_request_timestamp: change_user,
            policy_id: group.and_then(|g| g.policy_id.clone()),
            user_id: self
                .rng
                .random_bool(0.85)
                .then(|| format!("user-{}", hex(&mut self.rng, 8))),
            group_id: group.map(|g| g.id.clone()),
            transfer_status: String::new(),
            transfer_status_message: String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_plan_has_every_kind_and_the_exact_total() {
        for total in [8, 9, 10, 37, 300, 1001] {
            let plan = kind_plan(total);
            assert_eq!(plan.len(), total);
            for kind in TsKind::ALL {
                assert!(plan.contains(&kind), "{kind:?} missing at {total}");
            }
        }
        assert_eq!(kind_plan(3).len(), 3);
        assert!(kind_plan(0).is_empty());
    }

    #[test]
    fn churn_changes_exactly_the_requested_fraction() {
        let mut fleet = generate(FleetSpec::new(1, 200, 100, FleetSpec::default().now));
        let before = fleet.clone();
        assert_eq!(churn_tailscale(&mut fleet.tailscale, 0.1, 9), 20);
        let changed = fleet
            .tailscale
            .iter()
            .zip(&before.tailscale)
            .filter(|(a, b)| a != b)
            .count();
        assert_eq!(changed, 20);
        assert_eq!(churn_tinymdm(&mut fleet.tinymdm, 0.25, 9), 25);
        let changed = fleet
            .tinymdm
            .iter()
            .zip(&before.tinymdm)
            .filter(|(a, b)| a != b)
            .count();
        assert_eq!(changed, 25);
    }
}
