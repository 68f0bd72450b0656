//! The prune policy: one pure function from the latest snapshot, the settings
//! and the current time to candidates and protected devices, each with a reason.
//!
//! Order of the checks (the first that applies is the reason): shared in, excluded
//! tag, not in `only_tags`, excluded hostname, connected now, no last-seen time,
//! last seen in the future. What is left is a candidate when
//! `now - last_seen > threshold` (strictly greater), and simply active otherwise.

use crate::model::{DeviceRecord, Reason};
use chrono::{DateTime, Utc};
use globset::{Glob, GlobSet, GlobSetBuilder};

/// The rules a plan is made with.
#[derive(Debug, Clone)]
pub struct Policy {
    pub stale: chrono::Duration,
    pub exclude_tags: Vec<String>,
    pub only_tags: Vec<String>,
    exclude_hostnames: GlobSet,
}

impl Policy {
    /// Builds a policy; a bad hostname pattern is an error naming it.
    pub fn new(
        stale_minutes: u64,
        exclude_tags: Vec<String>,
        only_tags: Vec<String>,
        exclude_hostnames: &[String],
    ) -> Result<Policy, String> {
        let mut set = GlobSetBuilder::new();
        for pattern in exclude_hostnames {
            let glob = globset::GlobBuilder::new(pattern)
                .case_insensitive(true)
                .build()
                .map_err(|e| format!("exclude_hostnames pattern {pattern:?} is invalid: {e}"))?;
            set.add(glob);
        }
        let minutes = i64::try_from(stale_minutes).map_err(|_| "stale threshold too large")?;
        Ok(Policy {
            stale: chrono::Duration::try_minutes(minutes).ok_or("stale threshold too large")?,
            exclude_tags,
            only_tags,
            exclude_hostnames: set.build().map_err(|e| e.to_string())?,
        })
    }

    /// The reason for one device, or `None` when it is active (seen within the
    /// threshold). A device with no last-seen time that is not connected has
    /// never been online: `NoLastSeen`.
    pub fn classify(&self, device: &DeviceRecord, now: DateTime<Utc>) -> Option<Reason> {
        let attrs = &device.attrs;
        let flag = |k: &str| attrs.get(k).and_then(|v| v.as_bool()).unwrap_or(false);
        let tags: Vec<&str> = attrs
            .get("tags")
            .and_then(|t| t.as_array())
            .map(|a| a.iter().filter_map(|t| t.as_str()).collect())
            .unwrap_or_default();
        if flag("is_external") {
            return Some(Reason::SharedIn);
        }
        if tags
            .iter()
            .any(|t| self.exclude_tags.iter().any(|x| x == t))
        {
            return Some(Reason::ExcludedTag);
        }
        if !self.only_tags.is_empty() && !tags.iter().any(|t| self.only_tags.iter().any(|x| x == t))
        {
            return Some(Reason::NotInOnlyTags);
        }
        let hostname = attrs
            .get("hostname")
            .and_then(|h| h.as_str())
            .unwrap_or(&device.name);
        if self.exclude_hostnames.is_match(hostname) {
            return Some(Reason::ExcludedHostname);
        }
        if device.connected || flag("connected_to_control") {
            return Some(Reason::ConnectedNow);
        }
        let Some(last_seen) = device.last_seen else {
            return Some(Reason::NoLastSeen);
        };
        if last_seen > now {
            return Some(Reason::LastSeenInFuture);
        }
        (now - last_seen > self.stale).then_some(Reason::Stale)
    }
}

/// One device's verdict.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict<'a> {
    pub device: &'a DeviceRecord,
    pub reason: Reason,
}

/// Classifies every device of the snapshot that is not removed. Returns the
/// verdicts (candidates and protected, ordered by device id); active devices
/// are left out.
pub fn evaluate<'a>(
    policy: &Policy,
    devices: &'a [DeviceRecord],
    now: DateTime<Utc>,
) -> Vec<Verdict<'a>> {
    let mut out: Vec<Verdict<'a>> = devices
        .iter()
        .filter(|d| !d.is_removed())
        .filter_map(|d| {
            let reason = policy.classify(d, now)?;
            Some(Verdict { device: d, reason })
        })
        .collect();
    out.sort_by(|a, b| a.device.device_id.cmp(&b.device.device_id));
    out
}

/// Whether a glob compiles (for input validation).
pub fn valid_glob(pattern: &str) -> bool {
    Glob::new(pattern).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ChangeKind, Source};
    use chrono::TimeZone;
    use proptest::prelude::*;
    use serde_json::json;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 9, 1, 12, 0, 0).unwrap()
    }

    fn dev(id: &str, last_seen: Option<DateTime<Utc>>, attrs: serde_json::Value) -> DeviceRecord {
        DeviceRecord {
            source: Source::Tailscale,
            tenant: "-".into(),
            device_id: id.into(),
            name: id.into(),
            last_seen,
            connected: attrs["connected_to_control"].as_bool().unwrap_or(false),
            fingerprint: "f".into(),
            attrs,
            raw: "{}".into(),
            first_seen_at: now(),
            updated_at: now(),
            removed_at: None,
            last_run_id: "r".into(),
            last_change: ChangeKind::Added,
        }
    }

    fn policy() -> Policy {
        Policy::new(90 * 24 * 60, vec![], vec![], &[]).unwrap()
    }

    fn days_ago(d: i64) -> Option<DateTime<Utc>> {
        Some(now() - chrono::Duration::days(d))
    }

    #[test]
    fn threshold_is_strictly_greater() {
        let p = policy();
        let edge = now() - chrono::Duration::days(90);
        let kept = dev("a", Some(edge + chrono::Duration::seconds(1)), json!({}));
        let exact = dev("b", Some(edge), json!({}));
        let gone = dev("c", Some(edge - chrono::Duration::seconds(1)), json!({}));
        assert_eq!(p.classify(&kept, now()), None);
        assert_eq!(p.classify(&exact, now()), None);
        assert_eq!(p.classify(&gone, now()), Some(Reason::Stale));
    }

    #[test]
    fn each_protection_has_its_own_reason() {
        let p = Policy::new(
            90 * 24 * 60,
            vec!["tag:keep".into()],
            vec![],
            &["build-*".to_string()],
        )
        .unwrap();
        let old = days_ago(200);
        let cases = [
            (
                dev("ext", old, json!({"is_external": true})),
                Reason::SharedIn,
            ),
            (
                dev("tag", old, json!({"tags": ["tag:keep"]})),
                Reason::ExcludedTag,
            ),
            (
                dev("host", old, json!({"hostname": "Build-07"})),
                Reason::ExcludedHostname,
            ),
            (
                dev("on", None, json!({"connected_to_control": true})),
                Reason::ConnectedNow,
            ),
            (dev("never", None, json!({})), Reason::NoLastSeen),
            (
                dev(
                    "future",
                    Some(now() + chrono::Duration::hours(1)),
                    json!({}),
                ),
                Reason::LastSeenInFuture,
            ),
            (dev("stale", old, json!({})), Reason::Stale),
        ];
        let devices: Vec<DeviceRecord> = cases.iter().map(|(d, _)| d.clone()).collect();
        let verdicts = evaluate(&p, &devices, now());
        for (d, want) in &cases {
            let got = verdicts
                .iter()
                .find(|v| v.device.device_id == d.device_id)
                .unwrap();
            assert_eq!(got.reason, *want, "{}", d.device_id);
        }
        let only = Policy::new(90 * 24 * 60, vec![], vec!["tag:lab".into()], &[]).unwrap();
        assert_eq!(
            only.classify(&dev("x", old, json!({"tags": ["tag:ci"]})), now()),
            Some(Reason::NotInOnlyTags)
        );
        assert_eq!(
            only.classify(&dev("y", old, json!({"tags": ["tag:lab"]})), now()),
            Some(Reason::Stale)
        );
    }

    #[test]
    fn removed_and_active_devices_are_left_out() {
        let mut removed = dev("r", days_ago(400), json!({}));
        removed.removed_at = Some(now());
        let active = dev("a", days_ago(3), json!({}));
        assert!(evaluate(&policy(), &[removed, active], now()).is_empty());
    }

    #[test]
    fn bad_hostname_pattern_is_named() {
        let e = Policy::new(1, vec![], vec![], &["[".to_string()]).unwrap_err();
        assert!(e.contains("\"[\""), "{e}");
    }

    fn arb_device() -> impl Strategy<Value = DeviceRecord> {
        (
            "[a-z]{1,6}",
            proptest::option::of(-500i64..500),
            any::<bool>(),
            any::<bool>(),
            proptest::sample::subsequence(vec!["tag:keep", "tag:lab", "tag:ci"], 0..3),
        )
            .prop_map(|(id, days, external, connected, tags)| {
                dev(
                    &id,
                    days.map(|d| now() - chrono::Duration::days(d)),
                    json!({"is_external": external, "connected_to_control": connected, "tags": tags, "hostname": id}),
                )
            })
    }

    proptest! {
        #[test]
        fn protected_devices_are_never_candidates(devices in proptest::collection::vec(arb_device(), 0..40)) {
            let p = Policy::new(90 * 24 * 60, vec!["tag:keep".into()], vec![], &["z*".to_string()]).unwrap();
            for v in evaluate(&p, &devices, now()) {
                if v.reason == Reason::Stale {
                    let a = &v.device.attrs;
                    prop_assert!(!a["is_external"].as_bool().unwrap());
                    prop_assert!(!v.device.connected);
                    prop_assert!(v.device.last_seen.is_some());
                    prop_assert!(!v.device.device_id.starts_with('z'));
                    prop_assert!(!a["tags"].as_array().unwrap().iter().any(|t| t == "tag:keep"));
                }
            }
        }

        #[test]
        fn candidates_only_grow_as_threshold_shrinks(
            devices in proptest::collection::vec(arb_device(), 0..40),
            a in 1u64..400 * 24 * 60,
            b in 1u64..400 * 24 * 60,
        ) {
            let (small, large) = if a <= b { (a, b) } else { (b, a) };
            let cands = |m| {
                let p = Policy::new(m, vec![], vec![], &[]).unwrap();
                evaluate(&p, &devices, now()).into_iter()
                    .filter(|v| v.reason == Reason::Stale)
                    .map(|v| v.device.device_id.clone())
                    .collect::<std::collections::BTreeSet<_>>()
            };
            prop_assert!(cands(large).is_subset(&cands(small)));
        }

        #[test]
        fn result_does_not_depend_on_input_order(mut devices in proptest::collection::vec(arb_device(), 0..40)) {
            devices.sort_by(|a, b| a.device_id.cmp(&b.device_id));
            devices.dedup_by(|a, b| a.device_id == b.device_id);
            let p = policy();
            let key = |d: &[DeviceRecord]| evaluate(&p, d, now()).into_iter()
                .map(|v| (v.device.device_id.clone(), v.reason)).collect::<Vec<_>>();
            let forward = key(&devices);
            devices.reverse();
            prop_assert_eq!(forward, key(&devices));
        }
    }
}
