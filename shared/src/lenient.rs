//! Tolerant readers for API JSON: a field that is missing, `null`, `""` or of
//! an unexpected type becomes "absent" instead of failing the whole response.
//! Only identifiers are strict; the callers decide which those are.

use chrono::{DateTime, TimeZone, Utc};
use serde_json::{Map, Value};
use xxhash_rust::xxh3::Xxh3;

/// A string field; numbers and booleans are rendered, anything else is absent.
pub fn string(obj: &Map<String, Value>, key: &str) -> Option<String> {
    match obj.get(key)? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A boolean field; `"true"`/`"false"` strings are accepted.
pub fn boolean(obj: &Map<String, Value>, key: &str) -> Option<bool> {
    match obj.get(key)? {
        Value::Bool(b) => Some(*b),
        Value::String(s) if s.eq_ignore_ascii_case("true") => Some(true),
        Value::String(s) if s.eq_ignore_ascii_case("false") => Some(false),
        _ => None,
    }
}

/// An integer field; integral floats and numeric strings are accepted.
pub fn integer(obj: &Map<String, Value>, key: &str) -> Option<i64> {
    match obj.get(key)? {
        Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64)),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// A list of strings; non-string members are skipped.
pub fn strings(obj: &Map<String, Value>, key: &str) -> Vec<String> {
    match obj.get(key) {
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|v| v.as_str().filter(|s| !s.is_empty()).map(str::to_string))
            .collect(),
        _ => Vec::new(),
    }
}

/// An RFC 3339 timestamp (fractional seconds allowed), converted to UTC.
pub fn rfc3339(obj: &Map<String, Value>, key: &str) -> Option<DateTime<Utc>> {
    let s = obj.get(key)?.as_str()?;
    DateTime::parse_from_rfc3339(s.trim())
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// Unix seconds (integer, float or numeric string) as UTC; 0 and negatives are absent.
pub fn unix_seconds(obj: &Map<String, Value>, key: &str) -> Option<DateTime<Utc>> {
    let secs = integer(obj, key)?;
    if secs <= 0 {
        return None;
    }
    Utc.timestamp_opt(secs, 0).single()
}

/// A stable 64-bit hash of a JSON object without the `skip` keys, independent
/// of key order, rendered as 16 hex digits.
pub fn fingerprint(obj: &Map<String, Value>, skip: &[&str], extra: Option<&Value>) -> String {
    let mut h = Xxh3::new();
    hash_object(&mut h, obj, skip);
    if let Some(extra) = extra {
        h.update(b"\x00extra");
        hash_value(&mut h, extra);
    }
    format!("{:016x}", h.digest())
}

fn hash_object(h: &mut Xxh3, obj: &Map<String, Value>, skip: &[&str]) {
    let mut keys: Vec<&String> = obj.keys().filter(|k| !skip.contains(&k.as_str())).collect();
    keys.sort();
    h.update(b"{");
    for k in keys {
        hash_str(h, k);
        h.update(b":");
        hash_value(h, &obj[k]);
        h.update(b",");
    }
    h.update(b"}");
}

fn hash_value(h: &mut Xxh3, v: &Value) {
    match v {
        Value::Object(o) => hash_object(h, o, &[]),
        Value::Array(a) => {
            h.update(b"[");
            for x in a {
                hash_value(h, x);
                h.update(b",");
            }
            h.update(b"]");
        }
        Value::String(s) => hash_str(h, s),
        other => h.update(other.to_string().as_bytes()),
    }
}

/// A string with its length in front, so no two different objects feed the
/// hash the same bytes (`{"a":"1\",b:\"2"}` against `{"a":"1","b":"2"}`).
fn hash_str(h: &mut Xxh3, s: &str) {
    h.update(b"\"");
    h.update(&(s.len() as u64).to_le_bytes());
    h.update(s.as_bytes());
}

/// Top-level keys whose values differ between two objects, sorted, without `skip`.
pub fn changed_keys(
    old: &Map<String, Value>,
    new: &Map<String, Value>,
    skip: &[&str],
) -> Vec<String> {
    let mut keys: Vec<String> = old
        .keys()
        .chain(new.keys())
        .filter(|k| !skip.contains(&k.as_str()))
        .filter(|k| old.get(*k) != new.get(*k))
        .cloned()
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn missing_null_empty_and_wrong_types_are_absent() {
        let o = obj(json!({"a": null, "b": "", "c": [], "d": {"x": 1}, "n": 5, "t": "x"}));
        for k in ["a", "b", "c", "d", "zz"] {
            assert_eq!(string(&o, k), None, "{k}");
        }
        assert_eq!(string(&o, "n").as_deref(), Some("5"));
        assert_eq!(integer(&o, "t"), None);
        assert_eq!(rfc3339(&o, "b"), None);
    }

    #[test]
    fn timestamps_parse_fractions_and_unix_seconds() {
        let o = obj(
            json!({"a": "2026-09-01T12:00:00.123456Z", "u": 1767256000, "s": "1767256000", "z": 0, "e": ""}),
        );
        assert_eq!(rfc3339(&o, "a").unwrap().timestamp_subsec_micros(), 123456);
        assert_eq!(unix_seconds(&o, "u").unwrap().timestamp(), 1767256000);
        assert_eq!(unix_seconds(&o, "s").unwrap().timestamp(), 1767256000);
        assert_eq!(unix_seconds(&o, "z"), None);
        assert_eq!(unix_seconds(&o, "e"), None);
    }

    #[test]
    fn fingerprint_ignores_key_order_and_skipped_keys() {
        let a = obj(json!({"x": 1, "y": {"b": 2, "a": 1}, "lastSeen": "t1"}));
        let b = obj(json!({"y": {"a": 1, "b": 2}, "lastSeen": "t2", "x": 1}));
        assert_eq!(
            fingerprint(&a, &["lastSeen"], None),
            fingerprint(&b, &["lastSeen"], None)
        );
        let c = obj(json!({"x": 2, "y": {"a": 1, "b": 2}}));
        assert_ne!(
            fingerprint(&a, &["lastSeen"], None),
            fingerprint(&c, &["lastSeen"], None)
        );
        assert_ne!(
            fingerprint(&a, &["lastSeen"], None),
            fingerprint(&a, &["lastSeen"], Some(&json!([1])))
        );
    }

    #[test]
    fn fingerprint_tells_apart_objects_whose_text_runs_together() {
        let crafted = json!({"a": "1\",b:\"2"});
        let plain = json!({"a": "1", "b": "2"});
        let (crafted, plain) = (crafted.as_object().unwrap(), plain.as_object().unwrap());
        assert_ne!(
            fingerprint(crafted, &[], None),
            fingerprint(plain, &[], None)
        );
        let k1 = json!({"ab": "c"});
        let k2 = json!({"a": "bc"});
        assert_ne!(
            fingerprint(k1.as_object().unwrap(), &[], None),
            fingerprint(k2.as_object().unwrap(), &[], None)
        );
    }

    #[test]
    fn changed_keys_lists_differences_only() {
        let a = obj(json!({"x": 1, "y": 2, "gone": 1, "lastSeen": "a"}));
        let b = obj(json!({"x": 1, "y": 3, "new": 1, "lastSeen": "b"}));
        assert_eq!(
            changed_keys(&a, &b, &["lastSeen"]),
            vec!["gone", "new", "y"]
        );
    }
}
