#!/usr/bin/env bash
# Benchmarks of fleetsync (issue 6), not part of scripts/test.sh. Runs, in order:
#   1. release builds of the bench driver and the four handler binaries;
#   2. every whole-process scenario against the simulators and the AWS emulator
#      (moto), each sync in its own process, with the baseline
#      (../shared/bench/baseline_sync.py, when present) on the same state,
#      and the cold start of each handler against a local Lambda Runtime API;
#   3. criterion benches of the pure parts (parse 50k devices, diff, stale policy);
#   4. the arm64 Lambda zips (scripts/build-lambdas.sh, slow on a cold cache);
#   5. the report: one table printed, and target/bench/results.json (+ .md).
# About 25 minutes on a 2-core machine with a warm build cache.
#
# Usage: scripts/bench.sh [--quick] [--full] [--only NAME] [--baseline-first-only]
#   --quick     small fleets only (a check of the bench itself, ~2 minutes)
#   --full      also the re-syncs of 50k Tailscale and 20k TinyMDM on DynamoDB:
#               the emulator needs over 10 minutes to page 50k records back
#   --only      only the scenario groups whose name contains NAME (e.g. ts-50k)
# Environment: PYTHON (default python3.11), BASELINE (path of the baseline
# script), SKIP_CRITERION=1, SKIP_ZIPS=1 (reuse zips already in target/lambda).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

PYTHON="${PYTHON:-python3.11}"
# Same pins and stamp as scripts/test.sh, so the two share the venv.
MOTO_VENV="$ROOT/.tools/moto"
MOTO_REQS=("moto[server]==5.2.5" "awscli==1.46.3" "boto3==1.44.8")
BENCH_VENV="$ROOT/.tools/bench"
BENCH_REQS=("requests==2.32.5" "boto3==1.44.8")
BASELINE="${BASELINE:-$ROOT/../shared/bench/baseline_sync.py}"
MOTO_LOG="$ROOT/target/bench/moto.log"
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

mkdir -p "$ROOT/.tools" "$ROOT/target/bench"
install_venv "$MOTO_VENV" "${MOTO_REQS[@]}"
RUN_ARGS=("$@")
if [[ -f "$BASELINE" ]]; then
  install_venv "$BENCH_VENV" "${BENCH_REQS[@]}"
  RUN_ARGS+=(--baseline "$BASELINE" --python "$BENCH_VENV/bin/python")
else
  echo "==> no baseline at $BASELINE: fleetsync figures only"
fi

started=$SECONDS
echo "==> cargo build --release (bench driver and handlers)"
cargo build --release -p fleetsync-bench \
  -p sync-tailscale -p sync-tinymdm -p plan-prune -p prune-devices
echo "    $((SECONDS - started)) s"

free_port() {
  "$MOTO_VENV/bin/python" -c \
    'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
PORT="$(free_port)"
"$MOTO_VENV/bin/moto_server" -H 127.0.0.1 -p "$PORT" >"$MOTO_LOG" 2>&1 &
MOTO_PID=$!
for _ in $(seq 300); do
  curl -sf -o /dev/null "http://127.0.0.1:$PORT/moto-api/config" && break
  kill -0 "$MOTO_PID" 2>/dev/null || { cat "$MOTO_LOG" >&2; exit 1; }
  sleep 0.1
done
echo "==> AWS emulator (moto) on http://127.0.0.1:$PORT, pid $MOTO_PID"

export AWS_EC2_METADATA_DISABLED=true
"$ROOT/target/release/fleetsync-bench" run --endpoint "http://127.0.0.1:$PORT" \
  --functions-dir "$ROOT/target/release" --out "$ROOT/target/bench/scenarios.json" \
  "${RUN_ARGS[@]}"
cleanup
MOTO_PID=""

if [[ "${SKIP_CRITERION:-}" != 1 ]]; then
  echo "==> criterion: cargo bench -p fleetsync-bench --bench pure"
  cargo bench -p fleetsync-bench --bench pure
fi

if [[ "${SKIP_ZIPS:-}" != 1 ]]; then
  echo "==> arm64 Lambda zips (scripts/build-lambdas.sh)"
  PYTHON="$PYTHON" "$ROOT/scripts/build-lambdas.sh"
fi

"$ROOT/target/release/fleetsync-bench" report \
  --scenarios "$ROOT/target/bench/scenarios.json" --criterion "$ROOT/target/criterion" \
  --zips "$ROOT/target/lambda" --out "$ROOT/target/bench/results.json" \
  --markdown "$ROOT/target/bench/results.md"
echo "==> done in $((SECONDS - started)) s"
