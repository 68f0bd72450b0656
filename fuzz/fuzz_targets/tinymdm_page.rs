//! `tinymdm::parse_page` and `tinymdm::parse_apps` on arbitrary bytes (both
//! read a `{"results": [...], "next": ...}` envelope, so they share a corpus).

#![no_main]

use fleetsync::tinymdm::{Device, parse_apps, parse_page};
use libfuzzer_sys::fuzz_target;
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::Value;
use serde_json::value::RawValue;

/// The device page envelope, counting entries without reading them. Same
/// fields as the parser's, so the positional form (`[[...], 5]`) reads alike.
#[derive(Deserialize)]
#[allow(dead_code)]
struct Envelope {
    #[serde(default)]
    results: Option<Vec<IgnoredAny>>,
    #[serde(default)]
    count: Option<IgnoredAny>,
    #[serde(default)]
    next: Option<IgnoredAny>,
}

fn check_device(text: &str, d: &Device) {
    assert!(!d.id.is_empty(), "empty id");
    assert_eq!(d.id.trim(), d.id, "id not trimmed");
    assert!(text.contains(&d.raw), "raw is not the text as received");
    assert_eq!(d.fingerprint.len(), 16);
    if let Some(b) = d.battery_level {
        assert!((0..=100).contains(&b), "battery {b}");
    }
    for t in [d.enrolled_at, d.last_sync].into_iter().flatten() {
        assert!(t.timestamp() > 0);
    }
    if let Some(l) = &d.location {
        assert!(l.latitude.is_finite() && l.longitude.is_finite());
    }
    for s in [
        &d.nickname,
        &d.serial_number,
        &d.imei,
        &d.user_id,
        &d.group_id,
        &d.policy_id,
    ]
    .into_iter()
    .flatten()
    {
        assert!(!s.is_empty(), "an optional string is Some(\"\")");
    }
    let raw: Box<RawValue> = serde_json::from_str(&d.raw).unwrap();
    assert_eq!(&Device::from_raw(&raw).unwrap(), d);
    let attrs = d.attrs(None);
    assert_eq!(attrs["id"].as_str(), Some(d.id.as_str()));
    assert_eq!(attrs["display_name"].as_str(), Some(d.display_name()));
}

/// A good page cut short anywhere is `truncated`, so the client retries it.
fn check_cut(body: &[u8]) {
    let end = body.trim_ascii_end().len();
    for cut in [end / 2, end.saturating_sub(1)] {
        let e = match parse_page(&body[..cut]) {
            Ok(_) => panic!("a page cut at {cut} parses"),
            Err(e) => e,
        };
        // serde_json reports a number cut after `.`, `e` or a sign as "invalid
        // number", not as end of input: such a cut is not retried (known).
        if !e.detail.starts_with("invalid number") {
            assert!(e.truncated, "cut at {cut}, not truncated: {}", e.detail);
        }
    }
}

fuzz_target!(|body: &[u8]| {
    let envelope = serde_json::from_slice::<Envelope>(body);
    match parse_page(body) {
        Ok(page) => {
            let entries = envelope
                .expect("the parser accepted a body the envelope refuses")
                .results
                .expect("the parser accepted a page without a results array")
                .len();
            assert_eq!(page.devices.len(), entries);
            if let Some(next) = &page.next {
                assert!(!next.is_empty());
            }
            // Ignored values are not checked for UTF-8; every kept one is.
            let text = String::from_utf8_lossy(body);
            for d in &page.devices {
                match d {
                    Ok(d) => check_device(&text, d),
                    Err(e) => assert!(!e.reason.is_empty()),
                }
            }
            if !body.trim_ascii_start().starts_with(b"[") {
                check_cut(body);
            }
        }
        Err(e) => assert!(!e.detail.is_empty()),
    }

    match parse_apps(body) {
        Ok((apps, next)) => {
            let v: Value = serde_json::from_slice(body).unwrap();
            let results = v["results"].as_array().expect("results is an array");
            assert!(apps.len() <= results.len());
            assert!(apps.iter().all(|a| !a.package_name.is_empty()));
            assert!(next.is_none_or(|n| !n.is_empty()));
            // Apps are stored as JSON and read back (sync_tinymdm::observe).
            let stored = serde_json::to_value(&apps).unwrap();
            let back: Vec<fleetsync::tinymdm::App> = serde_json::from_value(stored).unwrap();
            assert_eq!(back, apps);
        }
        Err(e) => assert!(!e.detail.is_empty()),
    }
});
