//! `tailscale::Device::from_raw` on any JSON value: never panics, keeps the
//! text as received, and only ever accepts a device with a usable `nodeId`.

#![no_main]

use fleetsync::tailscale::Device;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use serde_json::value::RawValue;

fn has_float(v: &Value) -> bool {
    match v {
        Value::Number(n) => n.is_f64(),
        Value::Array(a) => a.iter().any(has_float),
        Value::Object(o) => o.values().any(has_float),
        _ => false,
    }
}

fuzz_target!(|body: &[u8]| {
    let Ok(raw) = serde_json::from_slice::<Box<RawValue>>(body) else {
        return;
    };
    match Device::from_raw(&raw) {
        Ok(d) => {
            assert!(!d.node_id.is_empty());
            assert_eq!(d.node_id.trim(), d.node_id);
            assert_eq!(d.raw, raw.get());
            let obj: Value = serde_json::from_str(&d.raw).unwrap();
            assert_eq!(
                obj["nodeId"].as_str().map(str::trim),
                Some(d.node_id.as_str())
            );
            if d.key_expiry_disabled {
                assert_eq!(d.expires, None);
            }
            if d.hostname.is_empty() {
                assert!(d.name.split('.').next().unwrap_or_default().is_empty());
            }
            assert!(d.addresses.iter().chain(&d.tags).all(|s| !s.is_empty()));
            assert_eq!(d.fingerprint.len(), 16);
            // Same content, same fingerprint: re-serialising (key order, spacing)
            // changes nothing. Floats are left out: serde_json's default float
            // parsing is not exact, so a printed float may read back one ulp off.
            if !has_float(&obj) {
                let again: Box<RawValue> = serde_json::from_str(&obj.to_string()).unwrap();
                assert_eq!(Device::from_raw(&again).unwrap().fingerprint, d.fingerprint);
            }
            let _ = d.attrs();
        }
        Err(e) => {
            assert!(!e.reason.is_empty());
            if let Some(id) = &e.id {
                assert!(!id.is_empty());
            }
        }
    }
});
