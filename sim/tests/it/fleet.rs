use chrono::{DateTime, Duration, Utc};
use fleetsync_sim::fleet::{Fleet, generate};
use fleetsync_sim::model::ZERO_TIME;
use fleetsync_sim::{Fields, FleetSpec, TsKind};
use serde_json::Value;
use std::collections::HashSet;

fn spec(seed: u64, tailscale: usize, tinymdm: usize) -> FleetSpec {
    FleetSpec {
        seed,
        tailscale_devices: tailscale,
        tinymdm_devices: tinymdm,
        ..FleetSpec::default()
    }
}

#[test]
fn same_seed_gives_the_same_fleet_and_another_seed_does_not() {
    let a = generate(spec(42, 300, 500));
    assert_eq!(a, generate(spec(42, 300, 500)));
    let b = generate(spec(43, 300, 500));
    assert_ne!(a.tailscale, b.tailscale);
    assert_ne!(a.tinymdm, b.tinymdm);
}

#[test]
fn tailscale_fleet_is_independent_of_the_tinymdm_count() {
    assert_eq!(
        generate(spec(5, 100, 10)).tailscale,
        generate(spec(5, 100, 700)).tailscale
    );
}

#[test]
fn every_kind_is_present_at_300_devices_with_its_traits() {
    let fleet = generate(spec(42, 300, 0));
    let now = FleetSpec::default().now;
    let summary = fleet.summary();
    assert_eq!(summary.tailscale_total, 300);
    assert_eq!(summary.tailscale.values().sum::<usize>(), 300);
    for kind in TsKind::ALL {
        assert!(
            summary.tailscale.get(&kind).copied().unwrap_or(0) > 0,
            "{kind:?}"
        );
    }
    for d in &fleet.tailscale {
        let kind = fleet.kind(&d.node_id).expect("kind recorded");
        let seen = d.reported_last_seen();
        match kind {
            TsKind::Server => {
                assert!(d.connected_to_control && seen.is_none());
                assert!(d.key_expiry_disabled && d.expires == ZERO_TIME);
                assert!(d.tags.contains(&"tag:server".to_owned()));
            }
            TsKind::Shared => {
                assert!(d.is_external);
                assert!(d.created.is_empty() && d.client_version.is_empty());
                assert!(d.machine_key.is_empty() && d.tags.is_empty());
            }
            TsKind::Ephemeral => {
                assert!(d.is_ephemeral && d.tags == ["tag:ci"]);
                assert!(now - seen.unwrap() < Duration::hours(1));
            }
            TsKind::NeverSeen => {
                assert!(!d.authorized && !d.connected_to_control && seen.is_none());
            }
            TsKind::Inactive => {
                let age = now - seen.expect("inactive devices have lastSeen");
                assert!(
                    age >= Duration::days(91) && age <= Duration::days(401),
                    "{age}"
                );
            }
            TsKind::Phone | TsKind::Tablet | TsKind::Laptop => {
                assert!(d.authorized && !d.is_external);
                if let Some(seen) = seen {
                    assert!(now - seen < Duration::days(30));
                }
            }
        }
        if kind != TsKind::Inactive
            && let Some(seen) = seen
        {
            assert!(now - seen < Duration::days(30), "{kind:?} {seen}");
        }
    }
    let inactive = fleet.tailscale_of(TsKind::Inactive);
    assert!(inactive.iter().any(|d| d.tags == ["tag:lab"]));
    assert!(inactive.iter().any(|d| d.tags.is_empty()));
    let oses: HashSet<&str> = fleet.tailscale.iter().map(|d| d.os.as_str()).collect();
    for os in ["iOS", "android", "macOS", "windows", "linux"] {
        assert!(oses.contains(os), "{os}");
    }
}

#[test]
fn tailscale_identifiers_are_unique_and_well_formed() {
    let fleet = generate(spec(9, 2000, 0));
    let mut hosts = HashSet::new();
    let mut node_ids = HashSet::new();
    let mut ids = HashSet::new();
    let mut v4 = HashSet::new();
    for d in &fleet.tailscale {
        assert!(
            hosts.insert(&d.hostname),
            "duplicate hostname {}",
            d.hostname
        );
        assert!(node_ids.insert(&d.node_id));
        assert!(ids.insert(&d.id));
        assert!(v4.insert(&d.addresses[0]));
        assert!(
            d.node_id.starts_with('n') && d.node_id.ends_with("CNTRL") && d.node_id.len() == 16
        );
        assert!(d.id.parse::<u64>().unwrap() > 1 << 53);
        assert!(d.addresses[0].starts_with("100."));
        assert!(d.addresses[1].starts_with("fd7a:115c:a1e0::"));
        if !d.is_external {
            assert!(d.name.ends_with(".tail4c2a9e.ts.net"));
            assert!(d.client_version.starts_with("1."));
            assert!(!d.created.is_empty());
        }
    }
}

#[test]
fn tinymdm_fleet_has_the_lenient_type_variety() {
    let fleet = generate(spec(42, 0, 1500));
    let ids: HashSet<&str> = fleet.tinymdm.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids.len(), 1500);
    assert!(ids.iter().all(|id| {
        id.len() == 16
            && id
                .chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
    }));
    let any = |f: &dyn Fn(&fleetsync_sim::TinymdmDevice) -> bool| fleet.tinymdm.iter().any(f);
    assert!(any(&|d| d.nickname.is_none()));
    assert!(any(&|d| d.nickname.as_deref() == Some("")));
    assert!(any(
        &|d| d.enrollment_type == "work_profile" && d.serial_number.is_none()
    ));
    assert!(any(&|d| d.imei.is_empty()));
    assert!(any(&|d| d.tinymdm_app_version.is_number()));
    assert!(any(&|d| d.tinymdm_app_version.is_string()));
    assert!(any(&|d| d.lock_acknowledge_time.is_i64()));
    assert!(any(&|d| d.lock_acknowledge_time == ""));
    assert!(any(&|d| d.geolocation_positions.is_none()));
    assert!(any(&|d| d
        .geolocation_positions
        .as_ref()
        .is_some_and(Vec::is_empty)));
    let now = FleetSpec::default().now.timestamp();
    assert!(any(&|d| now - d.last_sync_timestamp > 14 * 86_400));
    let recent = fleet
        .tinymdm
        .iter()
        .filter(|d| now - d.last_sync_timestamp < 2 * 86_400)
        .count();
    assert!(recent > 1000, "{recent}");
    let manufacturers: HashSet<&str> = fleet
        .tinymdm
        .iter()
        .map(|d| d.manufacturer.as_str())
        .collect();
    assert!(manufacturers.len() >= 5);
    assert!(!fleet.tinymdm_apps.is_empty());
    for apps in fleet.tinymdm_apps.values() {
        assert!((3..=12).contains(&apps.len()), "{}", apps.len());
    }
}

#[test]
fn fleet_churn_changes_the_given_fraction() {
    let mut fleet = generate(spec(3, 300, 200));
    let before = fleet.clone();
    assert_eq!(fleet.churn(0.1, 77), 30 + 20);
    assert_ne!(fleet, before);
    assert_eq!(fleet.tailscale.len(), before.tailscale.len());
}

/// Each device's wire JSON without the presence keys, Tailscale then TinyMDM.
fn content(fleet: &Fleet) -> Vec<Value> {
    fn without(mut json: Value, presence: &[&str]) -> Value {
        let object = json.as_object_mut().expect("device is an object");
        for key in presence {
            object.remove(*key);
        }
        json
    }
    let tailscale = fleet.tailscale.iter().map(|d| {
        without(
            d.to_json(Fields::All),
            &["lastSeen", "connectedToControl", "clientConnectivity"],
        )
    });
    let tinymdm = fleet.tinymdm.iter().map(|d| {
        without(
            serde_json::to_value(d).expect("device serializes"),
            &[
                "last_sync_timestamp",
                "battery_level",
                "battery_status",
                "geolocation_positions",
            ],
        )
    });
    tailscale.chain(tinymdm).collect()
}

fn at(now: DateTime<Utc>) -> Fleet {
    generate(FleetSpec::new(11, 300, 600, now))
}

#[test]
fn content_is_stable_across_generation_times() {
    let now = FleetSpec::default().now;
    let base = content(&at(now));
    assert_eq!(base.len(), 900);
    for later in [now + Duration::minutes(3), now + Duration::days(37)] {
        let other = content(&at(later));
        assert_eq!(other.len(), base.len());
        for (a, b) in base.iter().zip(&other) {
            assert_eq!(a, b, "content changed between {now} and {later}");
        }
    }
}

#[test]
fn presence_follows_the_generation_time() {
    let now = FleetSpec::default().now;
    let later = now + Duration::days(37);
    let (a, b) = (at(now), at(later));
    for (x, y) in a.tailscale.iter().zip(&b.tailscale) {
        assert_eq!(
            x.last_seen.map(|t| t + Duration::days(37)),
            y.last_seen,
            "{}",
            x.hostname
        );
    }
    for (x, y) in a.tinymdm.iter().zip(&b.tinymdm) {
        assert!(y.last_sync_timestamp >= x.last_sync_timestamp, "{}", x.id);
    }
}

#[test]
fn content_timestamps_are_not_after_now_or_last_seen() {
    let spec = FleetSpec::default();
    for now in [spec.epoch, spec.now, spec.now + Duration::days(400)] {
        let fleet = at(now);
        for d in &fleet.tailscale {
            if d.created.is_empty() {
                continue;
            }
            let created = DateTime::parse_from_rfc3339(&d.created).expect("created is RFC 3339");
            assert!(created <= now, "{} created {created}", d.hostname);
            if let Some(seen) = d.last_seen {
                assert!(
                    created <= seen,
                    "{} created {created} seen {seen}",
                    d.hostname
                );
            }
            if !d.key_expiry_disabled {
                let expires = DateTime::parse_from_rfc3339(&d.expires).expect("expires");
                assert!(expires > spec.epoch + Duration::days(399), "{}", d.hostname);
            }
        }
        for d in &fleet.tinymdm {
            assert!(d.enrollment_timestamp < d.last_sync_timestamp, "{}", d.id);
            assert!(d.enrollment_timestamp <= now.timestamp(), "{}", d.id);
            for ack in [
                &d.lock_acknowledge_time,
                &d.last_change_user_request_timestamp,
            ] {
                if let Some(t) = ack.as_i64() {
                    assert!(
                        d.enrollment_timestamp <= t && t <= now.timestamp(),
                        "{}",
                        d.id
                    );
                }
            }
        }
    }
}

#[test]
fn an_epoch_after_now_is_clamped_to_now() {
    let now = FleetSpec::default().epoch - Duration::days(30);
    let fleet = at(now);
    for d in fleet.tailscale.iter().filter(|d| !d.created.is_empty()) {
        let created = DateTime::parse_from_rfc3339(&d.created).expect("created is RFC 3339");
        assert!(created <= now, "{} created {created}", d.hostname);
    }
    for d in &fleet.tinymdm {
        assert!(d.enrollment_timestamp <= now.timestamp(), "{}", d.id);
    }
}
