//! The Tailscale device-list parsers on arbitrary bytes: `parse_device_list`
//! (whole body) and `parse_lean_list` (streaming, used by the sync). Neither
//! panics; every array entry ends up exactly once as a device or as an invalid
//! entry; and the two agree on every body both accept.

#![no_main]

use fleetsync::http::BodyError;
use fleetsync::sync::Listed;
use fleetsync::tailscale::{
    Device, DeviceList, KeepRaw, LeanList, parse_device_list, parse_lean_list,
};
use libfuzzer_sys::fuzz_target;
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::value::RawValue;
use std::collections::HashSet;
use std::sync::Arc;

/// The same envelope as the parser's, counting entries without reading them.
#[derive(Deserialize)]
struct Envelope {
    devices: Option<Vec<IgnoredAny>>,
}

fn check_full(body: &[u8], parsed: &Result<DeviceList, BodyError>) {
    let envelope = serde_json::from_slice::<Envelope>(body);
    let list = match parsed {
        Ok(list) => list,
        Err(e) => {
            assert!(!e.detail.is_empty());
            // JSON is UTF-8: bytes that are not may fail the whole body (serde_json
            // checks them inside kept values only, so the envelope may pass).
            assert!(
                std::str::from_utf8(body).is_err()
                    || !matches!(envelope, Ok(Envelope { devices: Some(_) })),
                "a body with a devices array was refused: {}",
                e.detail
            );
            return;
        }
    };
    let entries = envelope
        .expect("the parser accepted a body the envelope refuses")
        .devices
        .expect("the parser accepted a body without a devices array")
        .len();
    assert_eq!(list.devices.len() + list.invalid.len(), entries);

    // Ignored values are not checked for UTF-8; every kept one is.
    let text = String::from_utf8_lossy(body);
    let mut ids = HashSet::new();
    for d in &list.devices {
        assert!(!d.node_id.is_empty(), "empty node_id");
        assert_eq!(d.node_id.trim(), d.node_id, "node_id not trimmed");
        assert!(
            ids.insert(d.node_id.as_str()),
            "node_id {} twice",
            d.node_id
        );
        assert!(text.contains(&d.raw), "raw is not the text as received");
        assert_eq!(d.fingerprint.len(), 16);
        assert!(d.fingerprint.bytes().all(|b| b.is_ascii_hexdigit()));
        if d.key_expiry_disabled {
            assert_eq!(d.expires, None);
        }
        // The raw text parses back to the same device (what a re-read from the store does).
        let raw: Box<RawValue> = serde_json::from_str(&d.raw).expect("raw is JSON");
        assert_eq!(&Device::from_raw(&raw).expect("raw parses again"), d);
        let attrs = d.attrs();
        assert_eq!(attrs["node_id"].as_str(), Some(d.node_id.as_str()));
    }
    for i in &list.invalid {
        assert!(!i.reason.is_empty());
        assert!(!i.to_string().is_empty());
    }
}

/// Keeps the raw JSON of every other device (by id length), so both branches run.
fn keep() -> KeepRaw {
    Arc::new(|l: &Listed| l.device_id.len() % 2 == 0)
}

/// Hands out a body at most `step` bytes per `read`, so the streaming
/// parser's scanner sees strings, escapes and brackets cut at every place a
/// network read can cut them.
struct Chunked<'a> {
    body: &'a [u8],
    step: usize,
}

impl std::io::Read for Chunked<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let n = self.step.min(out.len()).min(self.body.len());
        out[..n].copy_from_slice(&self.body[..n]);
        self.body = &self.body[n..];
        Ok(n)
    }
}

/// The streaming parser gives the same answer however the body is split
/// into reads (whole, one byte at a time, and a step taken from the body).
fn check_chunked(body: &[u8], whole: &Result<LeanList, BodyError>) {
    let odd = 2 + body.len() % 13;
    for step in [1, odd] {
        let split = parse_lean_list(Chunked { body, step }, &keep());
        match (whole, &split) {
            (Ok(w), Ok(s)) => {
                assert_eq!(w.invalid, s.invalid, "step {step}");
                assert_eq!(w.devices.len(), s.devices.len(), "step {step}");
                for (a, b) in w.devices.iter().zip(&s.devices) {
                    assert_eq!(a.device_id, b.device_id, "step {step}");
                    assert_eq!(a.fingerprint, b.fingerprint, "step {step}");
                    assert_eq!(a.raw, b.raw, "step {step}");
                }
            }
            (Err(w), Err(s)) => assert_eq!(w.truncated, s.truncated, "step {step}"),
            (w, s) => panic!(
                "read whole: {:?}, {step} bytes per read: {:?}",
                w.as_ref().map(|l| l.devices.len()).map_err(|e| &e.detail),
                s.as_ref().map(|l| l.devices.len()).map_err(|e| &e.detail),
            ),
        }
    }
}

fn check_lean(body: &[u8], full: &Result<DeviceList, BodyError>) {
    let lean = parse_lean_list(body, &keep());
    check_chunked(body, &lean);
    let (full, lean) = match (full, lean) {
        (Ok(full), Ok(lean)) => (full, lean),
        (Err(_), Err(e)) => {
            assert!(!e.detail.is_empty());
            return;
        }
        // Known, harmless differences. serde's derived envelope also takes the
        // positional form `[[...]]`; the streaming one wants an object.
        (Ok(_), Err(_)) if body.trim_ascii_start().starts_with(b"[") => return,
        (Ok(_), Err(e)) => panic!("only the whole-body parser accepts it: {}", e.detail),
        // A second `devices` key is an error for the derived envelope; the
        // streaming one reads the first non-null one.
        (Err(e), Ok(_)) if e.detail.contains("duplicate field `devices`") => return,
        (Err(e), Ok(_)) => panic!("only the streaming parser accepts it: {}", e.detail),
    };
    assert_eq!(lean.invalid, full.invalid);
    assert_eq!(lean.devices.len(), full.devices.len());
    for (l, d) in lean.devices.iter().zip(&full.devices) {
        assert_eq!(l.device_id, d.node_id);
        assert_eq!(l.fingerprint, d.fingerprint);
        assert_eq!(l.last_seen, d.last_seen);
        assert_eq!(l.connected, d.connected_to_control);
        let kept = l.device_id.len() % 2 == 0;
        assert_eq!(l.raw.as_deref(), kept.then_some(d.raw.as_str()));
    }
}

/// A good listing cut short anywhere is `truncated` (so the client retries it),
/// for both parsers.
fn check_cut(body: &[u8]) {
    let end = body.trim_ascii_end().len();
    for cut in [end / 2, end.saturating_sub(1)] {
        let short = &body[..cut];
        let full = parse_device_list(short).expect_err("a cut body parses");
        let lean = parse_lean_list(short, &keep()).expect_err("a cut body parses");
        // serde_json reports a number cut after `.`, `e` or a sign as "invalid
        // number", not as end of input: such a cut is not retried (known).
        if full.detail.starts_with("invalid number") {
            continue;
        }
        assert!(
            full.truncated,
            "cut at {cut}, not truncated: {}",
            full.detail
        );
        assert!(
            lean.truncated,
            "cut at {cut}, not truncated: {}",
            lean.detail
        );
    }
}

fuzz_target!(|body: &[u8]| {
    let full = parse_device_list(body);
    check_full(body, &full);
    check_lean(body, &full);
    if full.is_ok() && !body.trim_ascii_start().starts_with(b"[") {
        check_cut(body);
    }
});
