//! The handler event parsers: arbitrary bytes → JSON → `steps::parse_input` for
//! each step's input type. A bad event is always `InvalidInput`; a good one
//! survives a serialise/parse round trip. For plan-prune, the part of its input
//! validation that needs no store (hostname globs, the policy) runs too.

#![no_main]

use fleetsync::StepError;
use fleetsync::policy::{Policy, valid_glob};
use fleetsync::steps::parse_input;
use fleetsync::steps::plan_prune::PlanPruneInput;
use fleetsync::steps::prune_devices::PruneDevicesInput;
use fleetsync::steps::sync_tailscale::SyncTailscaleInput;
use fleetsync::steps::sync_tinymdm::SyncTinymdmInput;
use libfuzzer_sys::fuzz_target;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Parses `event` as `T`; on success checks the round trip and returns the value.
fn parse<T: DeserializeOwned + Serialize>(event: &Value) -> Option<T> {
    match parse_input::<T>(event.clone()) {
        Ok(input) => {
            let json = serde_json::to_value(&input).expect("an input serialises");
            let again: T = parse_input(json.clone()).expect("a parsed input parses again");
            assert_eq!(
                same_floats(serde_json::to_value(&again).unwrap()),
                same_floats(json),
                "round trip changed the input"
            );
            Some(input)
        }
        Err(e) => {
            assert!(
                matches!(e, StepError::InvalidInput(_)),
                "parse error is {} not InvalidInput",
                e.name()
            );
            assert_eq!(e.name(), "InvalidInput");
            assert!(e.to_string().starts_with("invalid input"), "{e}");
            None
        }
    }
}

/// Floats are compared after one more text round trip: serde_json's default
/// float parsing may be one ulp off, which is not what this target looks for.
fn same_floats(v: Value) -> Value {
    serde_json::from_str(&v.to_string()).unwrap()
}

fn plan_prune(input: &PlanPruneInput) {
    let globs = input.exclude_hostnames.clone().unwrap_or_default();
    let accepted = globs.iter().all(|p| !p.trim().is_empty() && valid_glob(p));
    let stale_minutes = input
        .stale_minutes
        .or(input.inactive_days.map(|d| d.saturating_mul(24 * 60)))
        .unwrap_or(1)
        .clamp(1, 3650 * 24 * 60) as u64;
    let policy = Policy::new(
        stale_minutes,
        input.exclude_tags.clone().unwrap_or_default(),
        input.only_tags.clone().unwrap_or_default(),
        &globs,
    );
    // plan-prune validates with `valid_glob`; prune-devices rebuilds the policy
    // from the stored plan. A pattern one accepts and the other refuses would
    // make a stored plan impossible to apply.
    if accepted {
        if let Err(e) = policy {
            panic!("plan-prune accepts {globs:?} but the policy refuses it: {e}");
        }
    }
}

fuzz_target!(|body: &[u8]| {
    let Ok(event) = serde_json::from_slice::<Value>(body) else {
        return;
    };
    // Only an object (or null) is an event: serde would read an array
    // positionally, so that form must be refused for every step.
    let object = event.is_object() || event.is_null();
    let ts = parse::<SyncTailscaleInput>(&event).is_some();
    let mdm = parse::<SyncTinymdmInput>(&event).is_some();
    let plan = parse::<PlanPruneInput>(&event);
    let prune = parse::<PruneDevicesInput>(&event);
    assert!(
        object || !(ts || mdm || plan.is_some() || prune.is_some()),
        "a non-object event was accepted: {event}"
    );
    if let Some(input) = plan {
        plan_prune(&input);
    }
    if let Some(input) = prune {
        let _ = input.plan_id.trim();
    }
});
