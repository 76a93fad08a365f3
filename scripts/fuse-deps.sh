#!/usr/bin/env bash
# Make sure the FUSE fault-injection harness (src/testing/faultfs.ts, faultfs.py) can run: Debian
# `python3-fusepy` (with libfuse2) for the system Python /usr/bin/python3, and a `fusermount`
# binary (Debian `fuse`; an installed `fuse3`, whose fusermount3 also works, is left alone).
# Called by scripts/test.sh.
#
# Idempotent: silent and immediate when everything is present. Otherwise installs with apt-get
# (running `apt-get update` only when the package lists cannot provide a package), quietly, and
# prints the apt output only on failure.
#
# Never fails the test run for a machine that cannot do FUSE: without /dev/fuse, without root or
# without apt-get it prints one line and exits 0, and the FUSE tests skip with the reason
# (faultfsSkip(); HOLDFAST_REQUIRE_FUSE=1 turns the skip into an error). A failing apt-get is an
# error.
set -euo pipefail

PY=/usr/bin/python3

have_fusermount() { command -v fusermount >/dev/null 2>&1 || command -v fusermount3 >/dev/null 2>&1; }
# Debian names the module `fusepy` (PyPI: `fuse`). Importing it also loads libfuse.so.2 (it raises
# when the library is missing).
have_fusepy() { [[ -x "$PY" ]] && "$PY" -c 'import fusepy' >/dev/null 2>&1; }

have_fusermount && have_fusepy && exit 0

say() { echo "fuse-deps: $*" >&2; }
die() { say "$*"; exit 1; }
skip() { say "$* (the FUSE fault-injection tests will skip)"; exit 0; }

[[ -c /dev/fuse ]] || skip "/dev/fuse is missing, not installing python3-fusepy"
[[ "$(id -u)" == 0 ]] || skip "python3-fusepy or fusermount is missing and installing them needs root (apt-get install python3-fusepy fuse)"
command -v apt-get >/dev/null 2>&1 || skip "python3-fusepy or fusermount is missing and apt-get is not available"

# shellcheck source=lib/apt.sh
source "$(dirname "$0")/lib/apt.sh"

pkgs=()
have_fusepy || pkgs+=(python3-fusepy)
# `fuse` and `fuse3` conflict; ask for `fuse` (whose fusermount libfuse2 calls) only when neither
# fusermount is there.
have_fusermount || pkgs+=(fuse)
say "installing ${pkgs[*]} (Debian)"
start=$SECONDS
apt_install "${pkgs[@]}"

have_fusepy || die "${pkgs[*]} installed but '$PY -c \"import fusepy\"' still fails"
have_fusermount || die "${pkgs[*]} installed but neither fusermount nor fusermount3 is on PATH"
say "FUSE harness ready ($((SECONDS - start)) s)"
