//! The real state machine, `infra/statemachine.asl.json`, run by the emulator's
//! Step Functions interpreter with mocked Lambda results: which states run, what
//! each step receives (parsed exactly as its handler parses it), and how the
//! execution ends.
//!
//! `scripts/test.sh` starts the emulator with `SFN_MOCK_CONFIG` pointing at
//! `tests/flow/mock-config.json`. That file is keyed by state machine name, so
//! every test runs its own execution of one state machine, `fleetsync-flow`,
//! and picks a mock test case by appending `#<TestCase>` to its ARN.

use crate::support::aws_config;
use aws_sdk_sfn::Client;
use aws_sdk_sfn::types::{ExecutionStatus, HistoryEvent, HistoryEventType};
use fleetsync::StepError;
use fleetsync::steps::parse_input;
use fleetsync::steps::plan_prune::{PlanPruneInput, PlanPruneOutput};
use fleetsync::steps::prune_devices::{PruneDevicesInput, PruneDevicesOutput};
use fleetsync::steps::sync_tailscale::{SyncTailscaleInput, SyncTailscaleOutput};
use fleetsync::steps::sync_tinymdm::{SyncTinymdmInput, SyncTinymdmOutput};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tokio::sync::OnceCell;

/// The name `tests/flow/mock-config.json` is keyed by.
const STATE_MACHINE: &str = "fleetsync-flow";
const ACCOUNT: &str = "123456789012";
const DEFINITION: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../infra/statemachine.asl.json"
);
const MOCK_CONFIG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/flow/mock-config.json");

/// `template.yaml` substitutes these placeholders with the function ARNs.
const FUNCTIONS: [(&str, &str); 4] = [
    ("SyncTailscaleFunctionArn", "sync-tailscale"),
    ("SyncTinymdmFunctionArn", "sync-tinymdm"),
    ("PlanPruneFunctionArn", "plan-prune"),
    ("PruneDevicesFunctionArn", "prune-devices"),
];

/// The tailscale sync run and plan the mocks return (see the mock config).
const MOCK_TAILSCALE_RUN: &str = "019aee1c-7a8b-7c2d-9e3f-0123456789ab";
const MOCK_READY_PLAN: &str = "019aee1c-8000-7000-8000-000000000001";
const MOCK_APPROVAL_PLAN: &str = "019aee1c-8000-7000-8000-000000000003";

fn read_json(path: &str) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path} is not JSON: {e}"))
}

fn function_arn(name: &str) -> String {
    format!("arn:aws:lambda:us-east-1:{ACCOUNT}:function:{name}")
}

/// The definition as deployed, with the placeholders SAM fills in replaced and,
/// in this copy only, every retry interval cut to one second without backoff.
fn definition_for_test() -> String {
    let mut text =
        std::fs::read_to_string(DEFINITION).unwrap_or_else(|e| panic!("reading {DEFINITION}: {e}"));
    for (placeholder, function) in FUNCTIONS {
        let token = format!("${{{placeholder}}}");
        assert!(text.contains(&token), "{DEFINITION} no longer uses {token}");
        text = text.replace(&token, &function_arn(function));
    }
    assert!(
        !text.contains("${"),
        "{DEFINITION} has a placeholder the template does not substitute"
    );
    let mut asl: Value = serde_json::from_str(&text).expect("definition is JSON");
    shorten_retries(&mut asl);
    asl.to_string()
}

fn shorten_retries(v: &mut Value) {
    match v {
        Value::Object(map) => {
            if let Some(Value::Array(retriers)) = map.get_mut("Retry") {
                for r in retriers.iter_mut() {
                    r["IntervalSeconds"] = json!(1);
                    r["BackoffRate"] = json!(1.0);
                }
            }
            map.values_mut().for_each(shorten_retries);
        }
        Value::Array(items) => items.iter_mut().for_each(shorten_retries),
        _ => {}
    }
}

async fn sfn() -> Client {
    Client::new(&aws_config().await)
}

/// Creates the state machine once per test run and returns its ARN. An older
/// one of the same name (an emulator that outlives test runs) is replaced.
async fn state_machine_arn() -> &'static str {
    static ARN: OnceCell<String> = OnceCell::const_new();
    ARN.get_or_init(|| async {
        let client = sfn().await;
        let arn = format!("arn:aws:states:us-east-1:{ACCOUNT}:stateMachine:{STATE_MACHINE}");
        // Deleting a state machine that does not exist succeeds.
        client
            .delete_state_machine()
            .state_machine_arn(&arn)
            .send()
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "deleting {STATE_MACHINE} in the emulator failed \
                     (is it running? scripts/test.sh starts it): {e:?}"
                )
            });
        let created = client
            .create_state_machine()
            .name(STATE_MACHINE)
            .definition(definition_for_test())
            .role_arn(format!("arn:aws:iam::{ACCOUNT}:role/{STATE_MACHINE}"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("creating {STATE_MACHINE} from {DEFINITION}: {e:?}"));
        assert_eq!(created.state_machine_arn(), arn);
        arn
    })
    .await
}

/// One finished execution: its end and its history.
struct Execution {
    status: ExecutionStatus,
    output: Value,
    error: Option<String>,
    cause: Option<String>,
    events: Vec<HistoryEvent>,
}

/// One call of a step's function: what it was sent, and its error if it failed.
#[derive(Debug)]
struct Attempt {
    payload: Value,
    error: Option<String>,
}

impl Execution {
    /// Names of the states entered, in order (branches of Sync interleave).
    fn entered(&self) -> Vec<&str> {
        self.events
            .iter()
            .filter_map(|e| e.state_entered_event_details())
            .map(|d| d.name())
            .collect()
    }

    fn ran(&self, state: &str) -> bool {
        self.entered().contains(&state)
    }

    /// Every invocation of `function`, in order.
    fn attempts(&self, function: &str) -> Vec<Attempt> {
        let arn = function_arn(function);
        let by_id: HashMap<i64, &HistoryEvent> = self.events.iter().map(|e| (e.id(), e)).collect();
        // A task's end points back to its TaskStarted, which points to its TaskScheduled.
        let scheduled_of = |e: &HistoryEvent| -> Option<i64> {
            let mut at = by_id.get(&e.previous_event_id())?;
            loop {
                if at.r#type() == &HistoryEventType::TaskScheduled {
                    return Some(at.id());
                }
                at = by_id.get(&at.previous_event_id())?;
            }
        };
        let mut errors: HashMap<i64, Option<String>> = HashMap::new();
        for e in &self.events {
            match e.r#type() {
                HistoryEventType::TaskFailed => {
                    let error = e
                        .task_failed_event_details()
                        .and_then(|d| d.error())
                        .unwrap_or("")
                        .to_string();
                    if let Some(id) = scheduled_of(e) {
                        errors.insert(id, Some(error));
                    }
                }
                HistoryEventType::TaskSucceeded => {
                    if let Some(id) = scheduled_of(e) {
                        errors.insert(id, None);
                    }
                }
                _ => {}
            }
        }
        self.events
            .iter()
            .filter_map(|e| Some((e.id(), e.task_scheduled_event_details()?)))
            .filter_map(|(id, d)| {
                let params: Value = serde_json::from_str(d.parameters()).ok()?;
                (params["FunctionName"] == arn.as_str()).then(|| Attempt {
                    payload: params["Payload"].clone(),
                    error: errors.get(&id).cloned().unwrap_or_else(|| {
                        panic!("invocation {id} of {function} has no end in the history")
                    }),
                })
            })
            .collect()
    }

    /// The one successful invocation of `function` and what it was sent.
    fn only_attempt(&self, function: &str) -> Value {
        let attempts = self.attempts(function);
        assert_eq!(attempts.len(), 1, "{function} attempts: {attempts:?}");
        assert_eq!(attempts[0].error, None, "{function} failed");
        attempts[0].payload.clone()
    }
}

/// Starts an execution with a mock test case and waits for its end.
async fn execute(test_case: &str, input: Value) -> Execution {
    let arn = state_machine_arn().await;
    let client = sfn().await;
    let name = crate::support::unique_name(test_case);
    let started = client
        .start_execution()
        .state_machine_arn(format!("{arn}#{test_case}"))
        .name(&name)
        .input(input.to_string())
        .send()
        .await
        .unwrap_or_else(|e| panic!("starting {test_case}: {e:?}"));
    let execution_arn = started.execution_arn().to_string();
    let deadline = Instant::now() + Duration::from_secs(120);
    let done = loop {
        let d = client
            .describe_execution()
            .execution_arn(&execution_arn)
            .send()
            .await
            .unwrap_or_else(|e| panic!("describing {execution_arn}: {e:?}"));
        if d.status() != &ExecutionStatus::Running {
            break d;
        }
        assert!(
            Instant::now() < deadline,
            "{test_case} still running after 120 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let history = client
        .get_execution_history()
        .execution_arn(&execution_arn)
        .max_results(1000)
        .send()
        .await
        .unwrap_or_else(|e| panic!("history of {execution_arn}: {e:?}"));
    assert!(history.next_token().is_none(), "history longer than a page");
    Execution {
        status: done.status().clone(),
        output: done
            .output()
            .map(|o| serde_json::from_str(o).expect("output is JSON"))
            .unwrap_or(Value::Null),
        error: done.error().map(str::to_string),
        cause: done.cause().map(str::to_string),
        events: history.events().to_vec(),
    }
}

#[test]
fn mocked_results_are_real_step_outputs_and_errors() {
    let config = read_json(MOCK_CONFIG);
    let responses = config["MockedResponses"]
        .as_object()
        .expect("MockedResponses");
    for (name, attempts) in responses {
        for (range, response) in attempts.as_object().expect("attempt ranges") {
            let at = format!("{MOCK_CONFIG}: {name} {range}");
            if let Some(error) = response["Throw"]["Error"].as_str() {
                assert!(
                    StepError::NAMES.contains(&error),
                    "{at}: {error} is no StepError name"
                );
                continue;
            }
            let payload = response["Return"]["Payload"].clone();
            let parsed = if name.starts_with("Tailscale") {
                serde_json::from_value::<SyncTailscaleOutput>(payload).map(drop)
            } else if name.starts_with("Tinymdm") {
                serde_json::from_value::<SyncTinymdmOutput>(payload).map(drop)
            } else if name.starts_with("Plan") {
                serde_json::from_value::<PlanPruneOutput>(payload).map(drop)
            } else if name.starts_with("Prune") {
                serde_json::from_value::<PruneDevicesOutput>(payload).map(drop)
            } else {
                panic!("{at}: name it after its step (Tailscale…, Tinymdm…, Plan…, Prune…)")
            };
            parsed.unwrap_or_else(|e| panic!("{at}: not the step's output: {e}"));
        }
    }
    let cases = config["StateMachines"][STATE_MACHINE]["TestCases"]
        .as_object()
        .expect("test cases of fleetsync-flow");
    for (case, states) in cases {
        for (state, response) in states.as_object().expect("state -> response") {
            assert!(
                responses.contains_key(response.as_str().unwrap_or_default()),
                "{case}.{state}: no mocked response {response}"
            );
        }
    }
}

#[tokio::test]
async fn sync_only_runs_both_syncs_and_nothing_else() {
    let run = execute("SyncOnly", json!({})).await;
    assert_eq!(run.status, ExecutionStatus::Succeeded, "{:?}", run.error);

    let ts = run.only_attempt("sync-tailscale");
    assert_eq!(ts, json!({}));
    parse_input::<SyncTailscaleInput>(ts).unwrap();
    let mdm = run.only_attempt("sync-tinymdm");
    assert_eq!(mdm, json!({"include_apps": false}));
    parse_input::<SyncTinymdmInput>(mdm).unwrap();
    assert!(!run.ran("PlanPrune") && !run.ran("PruneDevices"));
    assert!(run.attempts("plan-prune").is_empty());

    assert_eq!(run.output["sync"]["tailscale"]["ok"], true);
    assert_eq!(run.output["sync"]["tailscale"]["result"]["devices"], 120);
    assert_eq!(run.output["sync"]["tinymdm"]["result"]["pages"], 2);
    assert_eq!(run.output.get("outcome"), None);
}

#[tokio::test]
async fn prune_applies_a_ready_plan_made_from_this_executions_snapshot() {
    let input = json!({
        "prune": true,
        "dry_run": false,
        "include_apps": true,
        "exclude_tags": ["tag:server"],
        "max_deletions": 10,
    });
    let run = execute("PruneApplied", input).await;
    assert_eq!(run.status, ExecutionStatus::Succeeded, "{:?}", run.cause);

    assert_eq!(
        run.only_attempt("sync-tinymdm"),
        json!({"include_apps": true})
    );
    let plan = parse_input::<PlanPruneInput>(run.only_attempt("plan-prune")).unwrap();
    assert_eq!(plan.run_id.as_deref(), Some(MOCK_TAILSCALE_RUN));
    assert_eq!(plan.tailnet.as_deref(), Some("example.com"));
    assert_eq!(plan.dry_run, Some(false));
    assert_eq!(plan.exclude_tags, Some(vec!["tag:server".to_string()]));
    assert_eq!(plan.max_deletions, Some(10));
    assert_eq!(plan.approve_plan_id, None);
    assert_eq!(plan.inactive_days, None);

    let prune = parse_input::<PruneDevicesInput>(run.only_attempt("prune-devices")).unwrap();
    assert_eq!(prune.plan_id, MOCK_READY_PLAN);

    let path = run.entered();
    let order: Vec<_> = [
        "Sync",
        "WantPrune",
        "PlanPrune",
        "PruneDecision",
        "PruneDevices",
        "Pruned",
        "Done",
    ]
    .iter()
    .map(|s| {
        path.iter()
            .position(|p| p == s)
            .unwrap_or_else(|| panic!("{s} not in {path:?}"))
    })
    .collect();
    assert!(order.is_sorted(), "states out of order: {path:?}");
    assert_eq!(run.output["outcome"], "pruned");
    assert_eq!(run.output["prune"]["result"]["deleted"], 2);
    assert_eq!(run.output["plan"]["result"]["status"], "ready");
}

#[tokio::test]
async fn dry_run_plans_but_never_invokes_prune_devices() {
    let run = execute("DryRun", json!({"prune": true})).await;
    assert_eq!(run.status, ExecutionStatus::Succeeded, "{:?}", run.cause);

    // No dry_run in the input: plan-prune gets null and applies its own default, true.
    let sent = run.only_attempt("plan-prune");
    assert_eq!(sent["dry_run"], Value::Null);
    assert_eq!(parse_input::<PlanPruneInput>(sent).unwrap().dry_run, None);
    assert!(run.attempts("prune-devices").is_empty());
    assert!(run.ran("DryRunOnly") && !run.ran("PruneDevices"));
    assert_eq!(run.output["outcome"], "dry_run");
    assert_eq!(run.output["plan"]["result"]["candidates"], 3);
}

#[tokio::test]
async fn plan_over_the_caps_waits_for_approval_and_says_how() {
    let run = execute("NeedsApproval", json!({"prune": true, "dry_run": false})).await;
    assert_eq!(run.status, ExecutionStatus::Succeeded, "{:?}", run.cause);

    assert!(run.attempts("prune-devices").is_empty());
    assert!(run.ran("AwaitingApproval"));
    assert_eq!(run.output["outcome"], "needs_approval");
    assert_eq!(run.output["plan"]["result"]["needs_approval"], true);
    let hint = run.output["plan"]["result"]["approval_hint"]
        .as_str()
        .expect("approval_hint");
    assert!(
        hint.contains(&format!("\"approve_plan_id\": \"{MOCK_APPROVAL_PLAN}\"")),
        "{hint}"
    );
}

#[tokio::test]
async fn approving_a_plan_applies_exactly_that_plan() {
    let input = json!({"prune": true, "dry_run": false, "approve_plan_id": MOCK_APPROVAL_PLAN});
    let run = execute("ApprovePlan", input).await;
    assert_eq!(run.status, ExecutionStatus::Succeeded, "{:?}", run.cause);

    let plan = parse_input::<PlanPruneInput>(run.only_attempt("plan-prune")).unwrap();
    assert_eq!(plan.approve_plan_id.as_deref(), Some(MOCK_APPROVAL_PLAN));
    let prune = parse_input::<PruneDevicesInput>(run.only_attempt("prune-devices")).unwrap();
    assert_eq!(prune.plan_id, MOCK_APPROVAL_PLAN);
    assert_eq!(run.output["outcome"], "pruned");
    assert_eq!(run.output["prune"]["result"]["deleted"], 58);
}

#[tokio::test]
async fn ready_plan_without_candidates_deletes_nothing() {
    let run = execute("NothingToPrune", json!({"prune": true, "dry_run": false})).await;
    assert_eq!(run.status, ExecutionStatus::Succeeded, "{:?}", run.cause);
    assert!(run.attempts("prune-devices").is_empty());
    assert_eq!(run.output["outcome"], "nothing_to_prune");
}

#[tokio::test]
async fn tinymdm_failure_keeps_tailscale_sync_and_prune_but_fails_the_execution() {
    let run = execute("TinymdmFails", json!({"prune": true, "dry_run": false})).await;
    assert_eq!(run.status, ExecutionStatus::Failed);
    assert_eq!(run.error.as_deref(), Some("AuthError"));
    assert!(
        run.cause.as_deref().unwrap_or_default().contains("401"),
        "{:?}",
        run.cause
    );

    // AuthError is not retryable: one attempt.
    let mdm = run.attempts("sync-tinymdm");
    assert_eq!(mdm.len(), 1, "{mdm:?}");
    assert_eq!(mdm[0].error.as_deref(), Some("AuthError"));
    run.only_attempt("sync-tailscale");
    run.only_attempt("plan-prune");
    run.only_attempt("prune-devices");

    let path = run.entered();
    for state in [
        "SyncTinymdmFailed",
        "PruneDevices",
        "CheckSyncs",
        "SyncTinymdmFailedExecution",
        "Failed",
    ] {
        assert!(path.contains(&state), "{state} not in {path:?}");
    }
    assert!(!path.contains(&"Done"));
}

#[tokio::test]
async fn retryable_error_is_retried_and_the_sync_succeeds() {
    let run = execute("TailscaleRetryThenOk", json!({})).await;
    assert_eq!(run.status, ExecutionStatus::Succeeded, "{:?}", run.cause);

    let attempts = run.attempts("sync-tailscale");
    let errors: Vec<_> = attempts.iter().map(|a| a.error.as_deref()).collect();
    assert_eq!(errors, [Some("UpstreamUnavailable"), None]);
    assert_eq!(attempts[0].payload, attempts[1].payload);
    assert_eq!(run.output["sync"]["tailscale"]["ok"], true);
    assert_eq!(
        run.output["sync"]["tailscale"]["result"]["run_id"],
        "019aee1c-7a8b-7c2d-9e3f-0123456789ac"
    );
}

#[tokio::test]
async fn non_retryable_error_fails_the_execution_at_once() {
    let run = execute("StaleSnapshot", json!({"prune": true, "dry_run": false})).await;
    assert_eq!(run.status, ExecutionStatus::Failed);
    assert_eq!(run.error.as_deref(), Some("StaleSnapshot"));
    assert!(
        run.cause
            .as_deref()
            .unwrap_or_default()
            .contains("refusing to plan"),
        "{:?}",
        run.cause
    );
    let plan = run.attempts("plan-prune");
    assert_eq!(plan.len(), 1, "retried: {plan:?}");
    assert!(run.attempts("prune-devices").is_empty());
    assert!(!run.ran("PruneDevices"));
}

#[tokio::test]
async fn tailscale_down_skips_the_prune_and_fails_after_the_retries() {
    let run = execute("TailscaleDown", json!({"prune": true, "dry_run": false})).await;
    assert_eq!(run.status, ExecutionStatus::Failed);
    assert_eq!(run.error.as_deref(), Some("UpstreamUnavailable"));

    let ts = run.attempts("sync-tailscale");
    assert_eq!(ts.len(), 4, "one call and three retries: {ts:?}");
    assert!(
        ts.iter()
            .all(|a| a.error.as_deref() == Some("UpstreamUnavailable"))
    );
    run.only_attempt("sync-tinymdm");
    assert!(run.attempts("plan-prune").is_empty());
    assert!(!run.ran("PlanPrune"));
    assert!(run.ran("SyncTailscaleFailedExecution"));
}
