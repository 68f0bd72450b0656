#!/usr/bin/env bash
# The one test command, locally and in CI: starts the AWS emulator (moto, with
# the Step Functions launcher and the flow tests' mock config) on a free
# loopback port, checks the deployment offline (cfn-lint, sam validate --lint,
# checkov, asl-validator), then runs rustfmt, clippy and every workspace test
# against the emulator. Needs only the Rust toolchain, python3.11 with pip, and
# npm; installs the pinned tools into .tools/ on first use (in parallel).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

PYTHON="${PYTHON:-python3.11}"
MOTO_VENV="$ROOT/.tools/moto"
MOTO_REQS=("moto[server]==5.2.5" "awscli==1.46.3" "boto3==1.44.8")
MOTO_LOG="$ROOT/.tools/moto-server.log"
MOTO_PID=""

cleanup() {
  if [[ -n "$MOTO_PID" ]]; then
    kill "$MOTO_PID" 2>/dev/null || true
    wait "$MOTO_PID" 2>/dev/null || true
  fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Deployment checkers, one venv per tool family (one shared venv makes pip
# backtrack to old versions); pins as in shared/reference/local-aws.md.
SAM_VENV="$ROOT/.tools/sam"
SAM_REQS=("aws-sam-cli==1.170.0")
LINT_VENV="$ROOT/.tools/lint"
LINT_REQS=("cfn-lint==1.58.0" "checkov==3.3.30")
NPM_DIR="$ROOT/.tools/npm"
NPM_REQS=("asl-validator@4.0.0")

# The stamp records the pinned versions, so changing a pin reinstalls, and an
# install that did not finish is redone. Output goes to a log, shown on failure.
install_venv() { # dir, then requirements
  local dir="$1"
  shift
  if [[ -x "$dir/bin/python" && "$(cat "$dir/.fleetsync-stamp" 2>/dev/null)" == "$*" ]]; then
    return 0
  fi
  echo "==> installing $* into ${dir#"$ROOT/"}"
  rm -rf "$dir"
  "$PYTHON" -m venv "$dir"
  "$dir/bin/pip" install -q --disable-pip-version-check "$@"
  echo "$*" >"$dir/.fleetsync-stamp"
}
install_npm() { # dir, then packages
  local dir="$1"
  shift
  if [[ -d "$dir/node_modules" && "$(cat "$dir/.fleetsync-stamp" 2>/dev/null)" == "$*" ]]; then
    return 0
  fi
  echo "==> installing $* into ${dir#"$ROOT/"}"
  rm -rf "$dir"
  npm install --silent --no-audit --no-fund --prefix "$dir" "$@"
  echo "$*" >"$dir/.fleetsync-stamp"
}

mkdir -p "$ROOT/.tools"
# About 130 s on a fresh machine when run side by side (250 s one after another).
install_pids=()
install_logs=()
background_install() { # tool name, then the install command
  local log="$ROOT/.tools/install-$1.log"
  shift
  "$@" >"$log" 2>&1 &
  install_pids+=("$!")
  install_logs+=("$log")
}
background_install moto install_venv "$MOTO_VENV" "${MOTO_REQS[@]}"
background_install sam install_venv "$SAM_VENV" "${SAM_REQS[@]}"
background_install lint install_venv "$LINT_VENV" "${LINT_REQS[@]}"
background_install npm install_npm "$NPM_DIR" "${NPM_REQS[@]}"
install_failed=0
for i in "${!install_pids[@]}"; do
  if ! wait "${install_pids[i]}"; then
    echo "tool install failed; its log ${install_logs[i]#"$ROOT/"}:" >&2
    cat "${install_logs[i]}" >&2
    install_failed=1
  else
    cat "${install_logs[i]}"
  fi
done
((install_failed == 0)) || exit 1

free_port() {
  "$MOTO_VENV/bin/python" -c \
    'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Waits until the server answers, or fails if it exits or stays silent for 60 s.
wait_ready() {
  "$MOTO_VENV/bin/python" - "$1" "$2" <<'PY'
import os, sys, time, urllib.request
port, pid = sys.argv[1], int(sys.argv[2])
deadline = time.time() + 60
while time.time() < deadline:
    try:
        with open(f"/proc/{pid}/stat") as f:
            if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                sys.exit(1)
    except FileNotFoundError:
        sys.exit(1)
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/moto-api/config", timeout=1).read()
        sys.exit(0)
    except Exception:
        time.sleep(0.1)
sys.exit(1)
PY
}

# Mocked Lambda results of the flow tests (tests/it/flow.rs), keyed by state
# machine name and test case; re-read on every StartExecution.
SFN_MOCK_CONFIG="$ROOT/tests/flow/mock-config.json"

# Another process may take the port between picking and binding it: try a few.
for attempt in 1 2 3; do
  PORT="$(free_port)"
  SFN_MOCK_CONFIG="$SFN_MOCK_CONFIG" \
    "$MOTO_VENV/bin/python" scripts/moto_sfn_server.py -H 127.0.0.1 -p "$PORT" >"$MOTO_LOG" 2>&1 &
  MOTO_PID=$!
  if wait_ready "$PORT" "$MOTO_PID" && kill -0 "$MOTO_PID" 2>/dev/null; then
    break
  fi
  echo "moto server did not start on port $PORT (attempt $attempt); its log:" >&2
  cat "$MOTO_LOG" >&2 || true
  cleanup
  MOTO_PID=""
  if [[ "$attempt" == 3 ]]; then
    echo "giving up: the AWS emulator could not be started" >&2
    exit 1
  fi
done
echo "==> AWS emulator (moto) on http://127.0.0.1:$PORT, pid $MOTO_PID, log .tools/moto-server.log"

export FLEETSYNC_TEST_AWS_ENDPOINT="http://127.0.0.1:$PORT"
# Nothing may fall back to the instance metadata service or real credentials.
export AWS_EC2_METADATA_DISABLED=true

failed=()
run() {
  echo "==> $*"
  if ! "$@"; then
    failed+=("$*")
  fi
}

# Deployment, offline. A checkov skip needs its reason here, next to it.
CHECKOV_SKIPS=(
  # Reserved concurrency: only the two schedules and operators start executions, and a
  # lease serialises prunes; reserving fails outright on accounts with a quota of 10.
  CKV_AWS_115
  # Lambda DLQ: it only applies to asynchronous invocations. Step Functions invokes
  # synchronously, retries, and fails the execution (alarmed); schedules have their own DLQ.
  CKV_AWS_116
  # VPC: the functions call only public HTTPS APIs (Tailscale, TinyMDM, AWS); a VPC would
  # need a NAT gateway and protects nothing here.
  CKV_AWS_117
  # Customer managed KMS keys (table, secrets, log groups, Lambda environment): all are
  # encrypted at rest with AWS managed keys; access is limited by IAM (and the prune
  # secret by its resource policy); the environment holds no secret, only ARNs and settings.
  CKV_AWS_119
  CKV_AWS_149
  CKV_AWS_158
  CKV_AWS_173
  # SNS encryption: CloudWatch alarms cannot publish to a topic encrypted with the AWS
  # managed SNS key; the messages are alarm states, nothing secret.
  CKV_AWS_26
  # SQS encryption: false positive, SqsManagedSseEnabled is on; this checkov version only
  # recognises KmsMasterKeyId.
  CKV_AWS_27
)
run "$LINT_VENV/bin/cfn-lint" template.yaml
run env SAM_CLI_TELEMETRY=0 AWS_DEFAULT_REGION=us-east-1 "$SAM_VENV/bin/sam" validate --lint --template template.yaml
run env BC_SKIP_MAPPING=TRUE "$LINT_VENV/bin/checkov" -f template.yaml --framework cloudformation \
  --compact --quiet --skip-download --skip-check "$(IFS=,; echo "${CHECKOV_SKIPS[*]}")"
run "$NPM_DIR/node_modules/.bin/asl-validator" --json-path infra/statemachine.asl.json
# Least privilege (only prune-devices reads the prune secret, no needless "*"), per-function
# environments, and the state machine's substitutions and invoke permissions.
run "$LINT_VENV/bin/python" scripts/check_template.py

run cargo fmt --all --check
run cargo clippy --workspace --all-targets -- -D warnings
run cargo test --workspace

if ((${#failed[@]})); then
  echo "FAILED:" >&2
  printf '  %s\n' "${failed[@]}" >&2
  exit 1
fi
echo "==> all checks passed"
