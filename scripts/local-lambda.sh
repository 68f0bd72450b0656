#!/usr/bin/env bash
# Runs the Lambda handlers locally, end to end, on 127.0.0.1 only:
#   moto_server (DynamoDB + Secrets Manager)  <- table and three secrets
#   fleetsync-sim (Tailscale + TinyMDM APIs)   <- the secrets hold its credentials
#   cargo lambda watch                         <- runs the handler binaries
# then invokes sync-tailscale, sync-tinymdm and plan-prune with events/*.json,
# prints each result, and stops everything it started.
#
# Needs the Rust toolchain, python3.11 and pip. On first use it installs
# cargo-lambda + ziglang into .tools/cl and moto into .tools/moto.
# Logs and state go to .tools/local-lambda/ (kept after the run).
#
# Environment knobs: PYTHON (default python3.11), SIM_ARGS (extra arguments for
# fleetsync-sim, e.g. "--tailscale-devices 50"), KEEP_RUNNING=1 (after the
# invokes, wait for Ctrl-C instead of stopping, to invoke by hand).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

PYTHON="${PYTHON:-python3.11}"
TOOLS="$ROOT/.tools"
STATE="$TOOLS/local-lambda"
# Same pins and stamp format as scripts/test.sh, so the two share one venv.
MOTO_VENV="$TOOLS/moto"
MOTO_REQS=("moto[server]==5.2.5" "awscli==1.46.3" "boto3==1.44.8")
CL_VENV="$TOOLS/cl"
CL_REQS=("cargo-lambda==1.9.2" "ziglang==0.17.1")
TABLE="fleetsync-local"
FUNCTIONS=(sync-tailscale sync-tinymdm plan-prune)

PIDS=()
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  # Newest first: watch, then the simulator, then moto. Each was started with
  # setsid, so its PID is also its process group id. Watch stops the function
  # processes it started, but puts each in a group of its own: note their PIDs
  # too, so they are stopped even if watch has to be killed.
  local i pid kids=()
  for pid in "${PIDS[@]}"; do
    mapfile -t -O "${#kids[@]}" kids < <(pgrep -P "$pid" 2>/dev/null || true)
  done
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
    pid="${PIDS[i]}"
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}" "${kids[@]}"; do
    for _ in $(seq 50); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
      kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
  done
  ((${#PIDS[@]})) && echo "==> stopped pids ${PIDS[*]}" >&2
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

now() { echo "${EPOCHREALTIME/,/.}"; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f s", b - a }'; }
T_START="$(now)"

# --- 1. tools --------------------------------------------------------------
install_venv() { # dir, then requirements
  local dir="$1"
  shift
  local stamp="$dir/.fleetsync-stamp"
  # A venv installed by hand with the same pins is fine too: only a missing
  # venv or a different version means a reinstall.
  if [[ "$(cat "$stamp" 2>/dev/null)" != "$*" ]] && [[ -x "$dir/bin/python" ]] &&
    "$dir/bin/python" - "$@" 2>/dev/null <<'PY'; then
import importlib.metadata as md, re, sys
for req in sys.argv[1:]:
    name, version = re.fullmatch(r"([\w.-]+)(?:\[.*\])?==(.+)", req).groups()
    if md.version(name) != version:
        sys.exit(1)
PY
    echo "$*" >"$stamp"
  fi
  if [[ ! -x "$dir/bin/python" || "$(cat "$stamp" 2>/dev/null)" != "$*" ]]; then
    echo "==> installing $* into ${dir#"$ROOT/"}"
    rm -rf "$dir"
    mkdir -p "$TOOLS"
    "$PYTHON" -m venv "$dir"
    "$dir/bin/pip" install -q --disable-pip-version-check "$@"
    echo "$*" >"$stamp"
  fi
}
install_venv "$MOTO_VENV" "${MOTO_REQS[@]}"
install_venv "$CL_VENV" "${CL_REQS[@]}"
# cargo-lambda finds zig through `python3 -m ziglang` from this venv.
export PATH="$CL_VENV/bin:$PATH"
PY="$MOTO_VENV/bin/python"
AWS=("$MOTO_VENV/bin/aws")

mkdir -p "$STATE"
rm -f "$STATE"/*.log "$STATE"/sim.env

free_port() {
  "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_for PID SECONDS NAME LOG COMMAND...: waits until COMMAND succeeds; fails
# with the end of LOG if PID exits or SECONDS pass first.
wait_for() {
  local pid="$1" secs="$2" what="$3" log="$4"
  shift 4
  local deadline=$((SECONDS + secs))
  until "$@" 2>/dev/null; do
    if ! kill -0 "$pid" 2>/dev/null || ((SECONDS >= deadline)); then
      echo "error: $what did not start; last lines of ${log#"$ROOT/"}:" >&2
      tail -n 30 "$log" >&2 || true
      exit 1
    fi
    sleep 0.2
  done
}
port_open() {
  "$PY" -c 'import socket, sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 0.5)' "$1" 2>/dev/null
}

# Every process below is started with setsid, so $! is the real PID of the
# server (no subshell) and cleanup can stop it together with its children.
start() { # log file, then the command
  local log="$1"
  shift
  setsid "$@" >"$log" 2>&1 </dev/null &
  PIDS+=("$!")
}

# Nothing may reach real AWS or fall back to the instance metadata service.
export AWS_ENDPOINT_URL AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test \
  AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true \
  NO_PROXY="127.0.0.1,localhost${NO_PROXY:+,$NO_PROXY}" no_proxy="127.0.0.1,localhost${no_proxy:+,$no_proxy}"

# --- build the binaries once (the shared target dir may be locked: waiting is normal)
T_BUILD="$(now)"
echo "==> cargo build (fleetsync-sim, fleetsync-cli, ${FUNCTIONS[*]})"
# `--bin` (not `-p`), as `cargo lambda watch` runs `cargo run --bin <fn>`: both
# resolve features for the whole workspace, so watch finds the binaries built
# and does not compile again on the first invoke.
# shellcheck disable=SC2046 # one --bin per function
cargo build -q --bin fleetsync-sim $(printf -- '--bin %s ' "${FUNCTIONS[@]}")
# The CLI only creates the table; the awscli does the same if it is unavailable.
HAVE_CLI=1
cargo build -q --bin fleetsync || HAVE_CLI=0
TARGET_DIR="$(cargo metadata --format-version 1 --no-deps | "$PY" -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
echo "    built in $(since "$T_BUILD")"

# --- 2. moto: table and secrets ----------------------------------------------
MOTO_PORT="$(free_port)"
start "$STATE/moto.log" "$MOTO_VENV/bin/moto_server" -H 127.0.0.1 -p "$MOTO_PORT"
MOTO_PID="${PIDS[-1]}"
AWS_ENDPOINT_URL="http://127.0.0.1:$MOTO_PORT"
wait_for "$MOTO_PID" 60 moto_server "$STATE/moto.log" curl -sf -o /dev/null "$AWS_ENDPOINT_URL/moto-api/config"
echo "==> moto on $AWS_ENDPOINT_URL (pid $MOTO_PID)"

if ((HAVE_CLI == 0)) || ! "$TARGET_DIR/debug/fleetsync" init-table --dynamodb-table "$TABLE" --endpoint-url "$AWS_ENDPOINT_URL"; then
  echo "    no working \`fleetsync init-table\`; creating the table with the awscli" >&2
  "${AWS[@]}" dynamodb create-table --table-name "$TABLE" \
    --attribute-definitions AttributeName=pk,AttributeType=S AttributeName=sk,AttributeType=S \
    --key-schema AttributeName=pk,KeyType=HASH AttributeName=sk,KeyType=RANGE \
    --billing-mode PAY_PER_REQUEST >/dev/null
fi

# --- 3. simulators -------------------------------------------------------------
# shellcheck disable=SC2086 # SIM_ARGS is a list of words on purpose
setsid "$TARGET_DIR/debug/fleetsync-sim" ${SIM_ARGS:-} >"$STATE/sim.env" 2>"$STATE/sim.log" </dev/null &
PIDS+=("$!")
SIM_PID="$!"
wait_for "$SIM_PID" 60 fleetsync-sim "$STATE/sim.log" grep -q "^export TINYMDM_APIKEY_SECRET=" "$STATE/sim.env"
declare -A SIM=()
while IFS= read -r line; do
  [[ "$line" =~ ^export\ ([A-Z_]+)=(.*)$ ]] && SIM["${BASH_REMATCH[1]}"]="${BASH_REMATCH[2]}"
done <"$STATE/sim.env"
echo "==> simulators: Tailscale ${SIM[TAILSCALE_API_BASE_URL]} (tailnet ${SIM[TAILSCALE_TAILNET]}), TinyMDM ${SIM[TINYMDM_API_BASE_URL]} (pid $SIM_PID)"

secret_json() { # key=value pairs -> JSON object (values escaped properly)
  "$PY" -c 'import json, sys; print(json.dumps(dict(a.split("=", 1) for a in sys.argv[1:])))' "$@"
}
create_secret() { # name, JSON -> ARN
  "${AWS[@]}" secretsmanager create-secret --name "$1" --secret-string "$2" --query ARN --output text
}
TAILSCALE_SECRET_ARN="$(create_secret fleetsync/tailscale "$(secret_json \
  "client_id=${SIM[TAILSCALE_OAUTH_CLIENT_ID]}" "client_secret=${SIM[TAILSCALE_OAUTH_CLIENT_SECRET]}" \
  "tailnet=${SIM[TAILSCALE_TAILNET]}")")"
TAILSCALE_PRUNE_SECRET_ARN="$(create_secret fleetsync/tailscale-prune "$(secret_json \
  "client_id=${SIM[TAILSCALE_PRUNE_OAUTH_CLIENT_ID]}" "client_secret=${SIM[TAILSCALE_PRUNE_OAUTH_CLIENT_SECRET]}" \
  "tailnet=${SIM[TAILSCALE_TAILNET]}")")"
TINYMDM_SECRET_ARN="$(create_secret fleetsync/tinymdm "$(secret_json \
  "account_id=${SIM[TINYMDM_ACCOUNT_ID]}" "apikey_public=${SIM[TINYMDM_APIKEY_PUBLIC]}" \
  "apikey_secret=${SIM[TINYMDM_APIKEY_SECRET]}")")"
echo "==> table $TABLE and secrets fleetsync/{tailscale,tailscale-prune,tinymdm} created"

# --- 4. cargo lambda watch -----------------------------------------------------
INVOKE_PORT="$(free_port)"
# Like template.yaml: the table name, secret ARNs and API base URLs; the rest
# is the AWS configuration that points the SDK at moto. (--env-var splits on
# commas, so NO_PROXY reaches the function through the inherited environment.)
ENV_VARS=(
  "TABLE_NAME=$TABLE"
  "TAILSCALE_SECRET_ARN=$TAILSCALE_SECRET_ARN"
  "TAILSCALE_PRUNE_SECRET_ARN=$TAILSCALE_PRUNE_SECRET_ARN"
  "TINYMDM_SECRET_ARN=$TINYMDM_SECRET_ARN"
  "TAILSCALE_API_BASE_URL=${SIM[TAILSCALE_API_BASE_URL]}"
  "TINYMDM_API_BASE_URL=${SIM[TINYMDM_API_BASE_URL]}"
  "AWS_ENDPOINT_URL=$AWS_ENDPOINT_URL"
  "AWS_REGION=$AWS_REGION"
  "AWS_ACCESS_KEY_ID=$AWS_ACCESS_KEY_ID"
  "AWS_SECRET_ACCESS_KEY=$AWS_SECRET_ACCESS_KEY"
  "AWS_EC2_METADATA_DISABLED=true"
  # plan-prune has no secret, so without this it looks for snapshots of the
  # tailnet "-" while sync-tailscale stores them under the secret's tailnet.
  "TAILSCALE_TAILNET=${SIM[TAILSCALE_TAILNET]}"
  "RUST_LOG=${RUST_LOG:-info}"
  "NO_COLOR=1"
)
WATCH_ARGS=(--invoke-address 127.0.0.1 --invoke-port "$INVOKE_PORT" --ignore-changes --timeout 900 --color never)
for kv in "${ENV_VARS[@]}"; do WATCH_ARGS+=(--env-var "$kv"); done
# Call cargo-lambda directly (not through `cargo lambda`), so $! is its own PID.
start "$STATE/watch.log" "$CL_VENV/bin/cargo-lambda" lambda watch "${WATCH_ARGS[@]}"
WATCH_PID="${PIDS[-1]}"
wait_for "$WATCH_PID" 120 "cargo lambda watch" "$STATE/watch.log" port_open "$INVOKE_PORT"
echo "==> cargo lambda watch on 127.0.0.1:$INVOKE_PORT (pid $WATCH_PID, log ${STATE#"$ROOT/"}/watch.log)"

# --- 5. invoke -------------------------------------------------------------------
failed=()
for fn in "${FUNCTIONS[@]}"; do
  echo "==> cargo lambda invoke $fn --data-file events/$fn.json"
  T_INV="$(now)"
  if out="$(cargo-lambda lambda invoke "$fn" --invoke-address 127.0.0.1 --invoke-port "$INVOKE_PORT" \
    --data-file "events/$fn.json" 2>&1)"; then
    echo "$out" | "$PY" -m json.tool 2>/dev/null || echo "$out"
    echo "    ok in $(since "$T_INV")"
  else
    echo "$out"
    echo "    FAILED in $(since "$T_INV"); last lines of the function's log:"
    tail -n 15 "$STATE/watch.log" | sed 's/^/    | /'
    failed+=("$fn")
  fi
done

echo "==> total $(since "$T_START")"
if [[ "${KEEP_RUNNING:-}" == 1 ]]; then
  echo "==> still running; try: cargo lambda invoke plan-prune --invoke-address 127.0.0.1 --invoke-port $INVOKE_PORT --data-ascii '{\"dry_run\": true}'"
  echo "    Ctrl-C stops everything"
  wait "$WATCH_PID" || true
fi
if ((${#failed[@]})); then
  echo "FAILED: ${failed[*]} (logs in ${STATE#"$ROOT/"}/)" >&2
  exit 1
fi
echo "==> all invokes succeeded"
