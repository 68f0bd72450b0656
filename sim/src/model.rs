//! Device, app and group records as the simulators store them, and their wire
//! JSON: Tailscale devices in the `fields=default` and `fields=all` shapes of the
//! API reference, TinyMDM devices with the lenient field types seen in the wild.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

/// Go's zero time, which Tailscale sends as `expires` when key expiry is disabled.
pub const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// Formats a timestamp the way Tailscale does: RFC 3339, whole seconds, UTC `Z`.
pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// One Tailscale device as stored by the simulator.
///
/// `last_seen` is the stored last contact with control; the wire JSON omits it
/// while `connected_to_control` is true, as the real API does since 2025-10-08.
/// Deserializes from the wire JSON (either field set); every field defaults.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct TailscaleDevice {
    pub addresses: Vec<String>,
    pub id: String,
    pub node_id: String,
    pub user: String,
    pub name: String,
    pub hostname: String,
    pub client_version: String,
    pub update_available: bool,
    pub os: String,
    /// RFC 3339, or `""` for external devices.
    pub created: String,
    pub connected_to_control: bool,
    #[serde(deserialize_with = "lenient_time")]
    pub last_seen: Option<DateTime<Utc>>,
    pub key_expiry_disabled: bool,
    /// RFC 3339; [`ZERO_TIME`] when key expiry is disabled.
    pub expires: String,
    pub authorized: bool,
    pub is_external: bool,
    pub machine_key: String,
    pub node_key: String,
    pub blocks_incoming_connections: bool,
    pub tailnet_lock_key: String,
    pub tailnet_lock_error: String,
    pub tags: Vec<String>,
    pub is_ephemeral: bool,
    pub multiple_connections: Option<bool>,
    #[serde(flatten)]
    pub details: DeviceDetails,
}

/// The fields Tailscale adds with `fields=all`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct DeviceDetails {
    pub enabled_routes: Vec<String>,
    pub advertised_routes: Vec<String>,
    /// `{endpoints, derp, mappingVariesByDestIP, latency, clientSupports}`.
    pub client_connectivity: Value,
    /// `{"serialNumbers": [...]}` or `{"disabled": true}`.
    pub posture_identity: Value,
    pub ssh_enabled: bool,
    pub distro: Option<Distro>,
}

/// Linux distribution reported with `fields=all`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Distro {
    pub name: String,
    pub version: String,
    pub code_name: String,
}

/// Which field set a Tailscale response carries (`?fields=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fields {
    /// The default set (also used when `fields` is absent).
    Default,
    /// The default set plus routes, connectivity, posture, SSH and distro.
    All,
}

impl TailscaleDevice {
    /// Wire view of this device with the given field set.
    pub fn wire(&self, fields: Fields) -> WireDevice<'_> {
        WireDevice {
            device: self,
            fields,
        }
    }

    /// This device as the API would return it, as a JSON value.
    pub fn to_json(&self, fields: Fields) -> Value {
        serde_json::to_value(self.wire(fields)).expect("device JSON has string keys only")
    }

    /// Whether the API would currently report a `lastSeen` for this device.
    pub fn reported_last_seen(&self) -> Option<DateTime<Utc>> {
        if self.connected_to_control {
            None
        } else {
            self.last_seen
        }
    }
}

/// Serializes as the `fields=all` wire JSON.
impl Serialize for TailscaleDevice {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.wire(Fields::All).serialize(serializer)
    }
}

/// A Tailscale device serialized in API key order for one field set.
pub struct WireDevice<'a> {
    device: &'a TailscaleDevice,
    fields: Fields,
}

impl Serialize for WireDevice<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let d = self.device;
        let mut m = serializer.serialize_map(None)?;
        m.serialize_entry("addresses", &d.addresses)?;
        m.serialize_entry("id", &d.id)?;
        m.serialize_entry("nodeId", &d.node_id)?;
        m.serialize_entry("user", &d.user)?;
        m.serialize_entry("name", &d.name)?;
        m.serialize_entry("hostname", &d.hostname)?;
        m.serialize_entry("clientVersion", &d.client_version)?;
        m.serialize_entry("updateAvailable", &d.update_available)?;
        m.serialize_entry("os", &d.os)?;
        m.serialize_entry("created", &d.created)?;
        m.serialize_entry("connectedToControl", &d.connected_to_control)?;
        if let Some(seen) = d.reported_last_seen() {
            m.serialize_entry("lastSeen", &rfc3339(seen))?;
        }
        m.serialize_entry("keyExpiryDisabled", &d.key_expiry_disabled)?;
        m.serialize_entry("expires", &d.expires)?;
        m.serialize_entry("authorized", &d.authorized)?;
        m.serialize_entry("isExternal", &d.is_external)?;
        m.serialize_entry("machineKey", &d.machine_key)?;
        m.serialize_entry("nodeKey", &d.node_key)?;
        m.serialize_entry("blocksIncomingConnections", &d.blocks_incoming_connections)?;
        if self.fields == Fields::All {
            let x = &d.details;
            m.serialize_entry("enabledRoutes", &x.enabled_routes)?;
            m.serialize_entry("advertisedRoutes", &x.advertised_routes)?;
            if !x.client_connectivity.is_null() {
                m.serialize_entry("clientConnectivity", &x.client_connectivity)?;
            }
        }
        m.serialize_entry("tailnetLockKey", &d.tailnet_lock_key)?;
        m.serialize_entry("tailnetLockError", &d.tailnet_lock_error)?;
        if !d.tags.is_empty() {
            m.serialize_entry("tags", &d.tags)?;
        }
        if let Some(multiple) = d.multiple_connections {
            m.serialize_entry("multipleConnections", &multiple)?;
        }
        m.serialize_entry("isEphemeral", &d.is_ephemeral)?;
        if self.fields == Fields::All {
            let x = &d.details;
            if !x.posture_identity.is_null() {
                m.serialize_entry("postureIdentity", &x.posture_identity)?;
            }
            m.serialize_entry("sshEnabled", &x.ssh_enabled)?;
            if let Some(distro) = &x.distro {
                m.serialize_entry("distro", distro)?;
            }
        }
        m.end()
    }
}

fn lenient_time<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
    match Option::<String>::deserialize(d)? {
        None => Ok(None),
        Some(s) if s.is_empty() => Ok(None),
        Some(s) => DateTime::parse_from_rfc3339(&s)
            .map(|t| Some(t.with_timezone(&Utc)))
            .map_err(serde::de::Error::custom),
    }
}

/// One TinyMDM device, field for field as the list endpoint returns it.
///
/// Fields whose type varies in the real API (`tinymdm_app_version`, the
/// `*_acknowledge_time` fields, the request dates) are kept as raw JSON values.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TinymdmDevice {
    pub id: String,
    pub name: String,
    pub nickname: Option<String>,
    pub phone_number: String,
    pub enrollment_type: String,
    pub os_version: String,
    pub battery_level: Option<i64>,
    pub battery_status: String,
    pub battery_health: String,
    pub geolocation_activated: bool,
    pub gps_activated: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub geolocation_positions: Option<Vec<GeoPosition>>,
    pub imei: String,
    pub iccid: String,
    pub ssaid: String,
    pub serial_number: Option<String>,
    pub build_id: String,
    pub manufacturer: String,
    pub tinymdm_app_version: Value,
    pub enrollment_timestamp: i64,
    pub last_lock_request_date: Value,
    pub last_reboot_request_date: Value,
    pub last_change_password_request_date: Value,
    pub last_delete_password_request_date: Value,
    pub last_message_sent_request_date: Value,
    pub last_wipe_request_date: Value,
    /// Unix seconds of the device's last check-in.
    pub last_sync_timestamp: i64,
    pub lock_acknowledge_time: Value,
    pub reboot_acknowledge_time: Value,
    pub change_password_acknowledge_time: Value,
    pub delete_password_acknowledge_time: Value,
    pub message_received_acknowledge_time: Value,
    pub last_change_user_request_timestamp: Value,
    pub policy_id: Option<String>,
    pub user_id: Option<String>,
    pub group_id: Option<String>,
    pub transfer_status: String,
    pub transfer_status_message: String,
}

/// One entry of a TinyMDM device's `geolocation_positions`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct GeoPosition {
    pub address: String,
    /// Day-first `DD-MM-YYYY HH:MM:SS`.
    pub date: String,
    pub latitude: f64,
    pub longitude: f64,
    pub timestamp: i64,
}

/// One installed app, as `GET /devices/{id}/apps` lists it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TinymdmApp {
    pub package_name: String,
    pub app_name: String,
    pub version_code: i64,
    pub version_name: String,
}

/// One TinyMDM group, as `GET /groups` lists it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TinymdmGroup {
    pub id: String,
    pub name: String,
    pub policy_id: Option<String>,
    /// `YYYY-MM-DD HH:MM:SS`.
    pub creation_date: String,
    pub modification_date: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(path: &str) -> Value {
        let full = format!("{}/../shared/fixtures/{path}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{full}: {e}"));
        serde_json::from_str(&text).expect("fixture is JSON")
    }

    #[test]
    fn tailscale_fixture_devices_round_trip_through_the_default_view() {
        let list = fixture("tailscale/devices-list.json");
        for raw in list["devices"].as_array().expect("devices array") {
            let device: TailscaleDevice = serde_json::from_value(raw.clone()).expect("parses");
            assert_eq!(&device.to_json(Fields::Default), raw, "{}", device.hostname);
        }
    }

    #[test]
    fn tailscale_fixture_device_round_trips_through_the_all_view() {
        let raw = fixture("tailscale/device-get-fields-all.json");
        let device: TailscaleDevice = serde_json::from_value(raw.clone()).expect("parses");
        assert_eq!(device.to_json(Fields::All), raw);
    }

    #[test]
    fn connected_device_hides_its_stored_last_seen() {
        let device = TailscaleDevice {
            connected_to_control: true,
            last_seen: Some(Utc::now()),
            ..TailscaleDevice::default()
        };
        assert!(device.to_json(Fields::Default).get("lastSeen").is_none());
    }

    #[test]
    fn tinymdm_fixture_devices_round_trip() {
        for page in ["tinymdm/devices-page-1.json", "tinymdm/devices-page-2.json"] {
            for raw in fixture(page)["results"].as_array().expect("results") {
                let device: TinymdmDevice = serde_json::from_value(raw.clone()).expect("parses");
                assert_eq!(&serde_json::to_value(&device).expect("serializes"), raw);
            }
        }
    }
}
