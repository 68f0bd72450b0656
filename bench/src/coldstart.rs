//! Cold start to ready: a minimal Lambda Runtime API on 127.0.0.1 that notes
//! when a freshly spawned handler process first asks for an event
//! (`GET /2018-06-01/runtime/invocation/next`). That span holds everything a
//! cold start does before the first event: exec, tracing setup, reading the
//! configuration, the AWS SDK config, fetching the secrets from Secrets Manager
//! (the emulator here) and building the clients.

use anyhow::{Context, Result};
use aws_sdk_secretsmanager::config::{Credentials, Region};
use axum::Router;
use axum::extract::State;
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

const FUNCTIONS: [&str; 4] = [
    "sync-tailscale",
    "sync-tinymdm",
    "plan-prune",
    "prune-devices",
];

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ColdStart {
    pub function: String,
    /// Spawn to first `GET .../invocation/next`, each run.
    pub runs_ms: Vec<f64>,
    pub median_ms: f64,
    pub max_ms: f64,
    pub error: Option<String>,
}

#[derive(Debug)]
enum Event {
    Next(Instant),
    InitError(String),
}

async fn next(State(tx): State<mpsc::UnboundedSender<Event>>) -> &'static str {
    let _ = tx.send(Event::Next(Instant::now()));
    // Never hand out an event: the process is killed once it has asked.
    std::future::pending::<()>().await;
    ""
}

async fn init_error(State(tx): State<mpsc::UnboundedSender<Event>>, body: String) -> &'static str {
    let _ = tx.send(Event::InitError(body));
    ""
}

/// Secrets the handlers read at init, in the emulator.
async fn create_secrets(endpoint: &str) -> Result<[(String, String); 3]> {
    let conf = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new("test", "test", None, None, "bench"))
        .load()
        .await;
    let sm = aws_sdk_secretsmanager::Client::new(&conf);
    let suffix = std::process::id();
    let mut arns = Vec::new();
    for (var, value) in [
        (
            "TAILSCALE_SECRET_ARN",
            r#"{"client_id":"bench-read","client_secret":"bench-secret","tailnet":"-"}"#,
        ),
        (
            "TAILSCALE_PRUNE_SECRET_ARN",
            r#"{"client_id":"bench-prune","client_secret":"bench-secret","tailnet":"-"}"#,
        ),
        (
            "TINYMDM_SECRET_ARN",
            r#"{"account_id":"bench","apikey_public":"p","apikey_secret":"s"}"#,
        ),
    ] {
        let out = sm
            .create_secret()
            .name(format!("bench-coldstart-{var}-{suffix}"))
            .secret_string(value)
            .send()
            .await
            .context("creating a secret in the emulator")?;
        arns.push((var.to_string(), out.arn.unwrap_or_default()));
    }
    Ok(arns.try_into().expect("three secrets"))
}

pub async fn measure(dir: &Path, endpoint: &str, runs: usize) -> Result<Vec<ColdStart>> {
    let secrets = create_secrets(endpoint).await?;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let app = Router::new()
        .route("/2018-06-01/runtime/invocation/next", get(next))
        .route("/2018-06-01/runtime/init/error", post(init_error))
        .with_state(tx);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let api = listener.local_addr()?.to_string();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let mut out = Vec::new();
    for function in FUNCTIONS {
        let bin = dir.join(function);
        eprintln!("==> cold start {function} ({} runs)", runs);
        let mut result = ColdStart {
            function: function.into(),
            runs_ms: Vec::new(),
            median_ms: 0.0,
            max_ms: 0.0,
            error: None,
        };
        if !bin.exists() {
            result.error = Some(format!("{} not built", bin.display()));
            out.push(result);
            continue;
        }
        // One warm-up run, not counted: it fills the page cache with the binary,
        // as a Lambda host has the image before it starts a process.
        for i in 0..=runs {
            while rx.try_recv().is_ok() {}
            let mut cmd = Command::new(&bin);
            cmd.env_clear()
                .env("AWS_LAMBDA_RUNTIME_API", &api)
                .env("AWS_LAMBDA_FUNCTION_NAME", function)
                .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
                .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
                .env(
                    "AWS_LAMBDA_LOG_GROUP_NAME",
                    format!("/aws/lambda/{function}"),
                )
                .env("AWS_LAMBDA_LOG_STREAM_NAME", "bench")
                .env("AWS_ENDPOINT_URL", endpoint)
                .env("AWS_ACCESS_KEY_ID", "test")
                .env("AWS_SECRET_ACCESS_KEY", "test")
                .env("AWS_REGION", "us-east-1")
                .env("AWS_EC2_METADATA_DISABLED", "true")
                .env("TABLE_NAME", "bench-coldstart")
                .envs(secrets.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            let start = Instant::now();
            let mut child = cmd
                .spawn()
                .with_context(|| format!("spawning {function}"))?;
            let event = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await;
            let _ = child.kill();
            let _ = child.wait();
            match event {
                Ok(Some(Event::Next(at))) => {
                    if i > 0 {
                        result.runs_ms.push((at - start).as_secs_f64() * 1000.0);
                    }
                }
                Ok(Some(Event::InitError(body))) => {
                    result.error = Some(format!("init error: {body}"));
                    break;
                }
                _ => {
                    result.error = Some("no request for an event within 10 s".into());
                    break;
                }
            }
        }
        let mut sorted = result.runs_ms.clone();
        sorted.sort_by(f64::total_cmp);
        if !sorted.is_empty() {
            result.median_ms = sorted[sorted.len() / 2];
            result.max_ms = sorted[sorted.len() - 1];
        }
        eprintln!(
            "    median {:.1} ms, max {:.1} ms{}",
            result.median_ms,
            result.max_ms,
            result
                .error
                .as_deref()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default()
        );
        out.push(result);
    }
    server.abort();
    Ok(out)
}
