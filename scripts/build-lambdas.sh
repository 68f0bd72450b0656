#!/usr/bin/env bash
# Builds the four Lambda functions for arm64 (provided.al2023) with cargo-lambda
# and zig, the same build `sam build` runs, and packs each as
# target/lambda/<name>/bootstrap.zip. Prints each zip's size and checks that
# its bootstrap is an aarch64 executable.
#
# Needs the Rust toolchain and python3.11; installs cargo-lambda and ziglang
# from PyPI into .tools/cl on first use (shared with scripts/local-lambda.sh).
# Not part of scripts/test.sh: a cold release build takes several minutes.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

PYTHON="${PYTHON:-python3.11}"
CL_VENV="$ROOT/.tools/cl"
# Same pins and stamp as scripts/local-lambda.sh, so the two share the venv.
CL_REQS=("cargo-lambda==1.9.2" "ziglang==0.17.1")
FUNCTIONS=(sync-tailscale sync-tinymdm plan-prune prune-devices)
TARGET=aarch64-unknown-linux-gnu

if [[ ! -x "$CL_VENV/bin/cargo-lambda" || "$(cat "$CL_VENV/.fleetsync-stamp" 2>/dev/null)" != "${CL_REQS[*]}" ]]; then
  echo "==> installing ${CL_REQS[*]} into .tools/cl"
  rm -rf "$CL_VENV"
  mkdir -p "$ROOT/.tools"
  "$PYTHON" -m venv "$CL_VENV"
  "$CL_VENV/bin/pip" install -q --disable-pip-version-check "${CL_REQS[@]}"
  echo "${CL_REQS[*]}" >"$CL_VENV/.fleetsync-stamp"
fi
# cargo-lambda finds zig through `python3 -m ziglang` from this venv.
export PATH="$CL_VENV/bin:$PATH"

if command -v rustup >/dev/null && ! rustup target list --installed | grep -qx "$TARGET"; then
  echo "==> rustup target add $TARGET"
  rustup target add "$TARGET"
fi

started=$SECONDS
echo "==> cargo lambda build --release --arm64 --output-format zip (${FUNCTIONS[*]})"
# shellcheck disable=SC2046 # one -p per function
cargo lambda build --release --arm64 --output-format zip $(printf -- '-p %s ' "${FUNCTIONS[@]}")
echo "    built in $((SECONDS - started)) s"

TARGET_DIR="$(cargo metadata --format-version 1 --no-deps |
  "$CL_VENV/bin/python" -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"

"$CL_VENV/bin/python" - "$TARGET_DIR/lambda" "${FUNCTIONS[@]}" <<'PY'
import os, struct, sys, zipfile

base, names = sys.argv[1], sys.argv[2:]
bad = False
for name in names:
    path = os.path.join(base, name, "bootstrap.zip")
    if not os.path.isfile(path):
        print(f"{name:<15} missing {path}", file=sys.stderr)
        bad = True
        continue
    with zipfile.ZipFile(path) as z:
        info = z.getinfo("bootstrap")
        head = z.open(info).read(20)
    # ELF, 64-bit, e_machine 183 (AArch64)
    arm64 = head[:4] == b"\x7fELF" and head[4] == 2 and struct.unpack("<H", head[18:20])[0] == 183
    executable = (info.external_attr >> 16) & 0o111 != 0
    rel = os.path.relpath(path)
    print(f"{name:<15} {os.path.getsize(path) / 1e6:5.1f} MB zip ({info.file_size / 1e6:5.1f} MB bootstrap)  "
          f"{'aarch64' if arm64 else 'NOT aarch64'}{'' if executable else ', NOT executable'}  {rel}")
    bad |= not (arm64 and executable)
sys.exit(1 if bad else 0)
PY
