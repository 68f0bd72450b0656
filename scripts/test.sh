#!/usr/bin/env bash
# The one test command, locally and in CI: starts the AWS emulator (moto, with
# the Step Functions launcher) on a free loopback port, then runs rustfmt,
# clippy and every workspace test against it. Needs only the Rust toolchain,
# python3.11 and pip; installs moto into .tools/moto on first use.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

PYTHON="${PYTHON:-python3.11}"
MOTO_VENV="$ROOT/.tools/moto"
MOTO_REQS=("moto[server]==5.2.5" "awscli==1.46.3" "boto3==1.44.8")
MOTO_STAMP="$MOTO_VENV/.fleetsync-stamp"
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

# The stamp records the pinned versions, so changing a pin reinstalls.
if [[ ! -x "$MOTO_VENV/bin/python" || "$(cat "$MOTO_STAMP" 2>/dev/null)" != "${MOTO_REQS[*]}" ]]; then
  echo "==> installing ${MOTO_REQS[*]} into .tools/moto"
  rm -rf "$MOTO_VENV"
  mkdir -p "$ROOT/.tools"
  "$PYTHON" -m venv "$MOTO_VENV"
  "$MOTO_VENV/bin/pip" install -q --disable-pip-version-check "${MOTO_REQS[@]}"
  echo "${MOTO_REQS[*]}" > "$MOTO_STAMP"
fi

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

# Another process may take the port between picking and binding it: try a few.
for attempt in 1 2 3; do
  PORT="$(free_port)"
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

run cargo fmt --all --check
run cargo clippy --workspace --all-targets -- -D warnings
run cargo test --workspace

if ((${#failed[@]})); then
  echo "FAILED:" >&2
  printf '  %s\n' "${failed[@]}" >&2
  exit 1
fi
echo "==> all checks passed"
