//! The secret parsers on arbitrary text: never panic, and when a secret is
//! refused the message names the secret and the key but holds no value.

#![no_main]

use fleetsync::secrets::{SecretError, parse_tailscale_secret, parse_tinymdm_secret};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

const SECRET: &str = "arn:aws:secretsmanager:eu-west-1:000000000000:secret:fuzz";

/// Every string in `v`, keys excluded.
fn strings<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
    match v {
        Value::String(s) => out.push(s),
        Value::Array(a) => a.iter().for_each(|x| strings(x, out)),
        Value::Object(o) => o.values().for_each(|x| strings(x, out)),
        _ => {}
    }
}

/// The error is one of the parse-time variants, for this secret and a known key.
fn check_error(e: &SecretError, text: &str, keys: &[&str]) {
    let message = e.to_string();
    let expected = match e {
        SecretError::NotJson { secret } => {
            assert_eq!(secret, SECRET);
            format!("secret {SECRET} is not a JSON object")
        }
        SecretError::MissingKey { secret, key } => {
            assert_eq!(secret, SECRET);
            assert!(keys.contains(key), "{key}");
            format!("secret {SECRET} has no key {key:?}")
        }
        SecretError::WrongType { secret, key } => {
            assert_eq!(secret, SECRET);
            assert!(keys.contains(key), "{key}");
            format!("secret {SECRET} key {key:?} must be a non-empty string")
        }
        other => panic!("unexpected error from a parser: {other}"),
    };
    assert_eq!(message, expected);
    // The check the exact message already implies, kept explicit: no value of
    // the input (long enough to mean something) appears in the message.
    if let Ok(v) = serde_json::from_str::<Value>(text) {
        let mut values = Vec::new();
        strings(&v, &mut values);
        for s in values.into_iter().filter(|s| s.len() > 8) {
            let in_template = format!(
                "secret {SECRET} key {keys:?} has no key must be a non-empty string is not a JSON object"
            );
            if !in_template.contains(s) {
                assert!(!message.contains(s), "the message leaks {s:?}: {message}");
            }
        }
    }
}

fn trimmed_non_empty(s: &str) -> bool {
    !s.is_empty() && s.trim() == s
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    match parse_tailscale_secret(SECRET, &text) {
        Ok(c) => {
            assert!(trimmed_non_empty(&c.client_id));
            assert!(trimmed_non_empty(c.client_secret.expose()));
            assert!(trimmed_non_empty(&c.tailnet));
            assert_eq!(format!("{:?}", c.client_secret), "[redacted]");
            assert_eq!(format!("{}", c.client_secret), "[redacted]");
        }
        Err(e) => check_error(&e, &text, &["client_id", "client_secret", "tailnet"]),
    }
    match parse_tinymdm_secret(SECRET, &text) {
        Ok(c) => {
            assert!(trimmed_non_empty(&c.account_id));
            assert!(trimmed_non_empty(c.apikey_public.expose()));
            assert!(trimmed_non_empty(c.apikey_secret.expose()));
            assert_eq!(format!("{:?}", c.apikey_secret), "[redacted]");
        }
        Err(e) => check_error(&e, &text, &["account_id", "apikey_public", "apikey_secret"]),
    }
});
