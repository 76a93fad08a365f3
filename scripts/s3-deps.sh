#!/usr/bin/env bash
# Make sure the S3 driver tests can run: moto_server (Python moto 5 with its server extra), which
# src/testing/moto.ts starts on a loopback port as a real S3 API. Called by scripts/test.sh.
#
# moto comes with the machine's Python (python3 on PATH; `moto_server` script or
# `python3 -m moto.server`). Idempotent: silent and immediate when it is there. Otherwise tries
# `python3 -m pip install 'moto[server]'` quietly, printing pip's output only on failure.
#
# Never fails the test run: without moto it prints one line and exits 0, and the S3 tests skip
# with the reason (HOLDFAST_REQUIRE_S3=1 turns the skip into an error).
set -euo pipefail

present() { command -v moto_server >/dev/null 2>&1 || python3 -c 'import moto.server' >/dev/null 2>&1; }

present && exit 0

say() { echo "s3-deps: $*" >&2; }
skip() { say "$* (the S3 driver tests will skip)"; exit 0; }

command -v python3 >/dev/null 2>&1 || skip "moto_server is missing and there is no python3 to install it with"
python3 -m pip --version >/dev/null 2>&1 || skip "moto_server is missing and python3 has no pip (install moto[server] 5 for python3)"

say "installing moto[server] with python3 -m pip"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
if ! python3 -m pip install --quiet --disable-pip-version-check 'moto[server]>=5,<6' >"$log" 2>&1; then
  cat "$log" >&2
  skip "pip could not install moto[server]"
fi
present || skip "moto[server] installed but neither moto_server nor 'python3 -m moto.server' works"
say "moto ready"
