#!/usr/bin/env bash
# Make sure the SFTP test server can run: Debian `openssh-server` (/usr/sbin/sshd) and the
# ssh-keygen that generates its host key and the client key (Debian `openssh-client`, a dependency
# of the server). Called by scripts/test.sh.
#
# The tests never use the system's sshd service: src/testing/sshd.ts starts a second sshd on a
# loopback port with its own config, host key and authorized_keys in a temporary directory. The
# package is installed with policy-rc.d forbidding service starts, so no sshd listens on port 22
# because of this script.
#
# Idempotent: silent and immediate when everything is present. Otherwise installs with apt-get
# (running `apt-get update` only when the package lists cannot provide the package), quietly, and
# prints the apt output only on failure. Without root or apt-get it prints one line and exits 0;
# the SFTP tests then skip with the reason (HOLDFAST_REQUIRE_SFTP=1 turns the skip into an error).
set -euo pipefail

present() { [[ -x /usr/sbin/sshd ]] && command -v ssh-keygen >/dev/null 2>&1; }

present && exit 0

say() { echo "sftp-deps: $*" >&2; }
die() { say "$*"; exit 1; }
skip() { say "$* (the SFTP tests will skip)"; exit 0; }

[[ "$(id -u)" == 0 ]] || skip "sshd is missing and installing it needs root (apt-get install openssh-server)"
command -v apt-get >/dev/null 2>&1 || skip "sshd is missing and apt-get is not available"

# shellcheck source=lib/apt.sh
source "$(dirname "$0")/lib/apt.sh"

say "installing openssh-server (Debian)"
start=$SECONDS

# Keep the package's postinst from starting the system sshd (exit 101: "action forbidden"), unless
# the machine already has its own policy.
RC=/usr/sbin/policy-rc.d
added_rc=0
if [[ ! -e "$RC" ]]; then
  printf '#!/bin/sh\nexit 101\n' >"$RC"
  chmod 755 "$RC"
  added_rc=1
fi
cleanup_rc() { ((added_rc)) && rm -f "$RC"; rm -f "$APT_LOG"; }
trap cleanup_rc EXIT

apt_install openssh-server

present || die "openssh-server installed but /usr/sbin/sshd or ssh-keygen is still missing"
say "sshd ready ($(/usr/sbin/sshd -V 2>&1 | head -n 1 || echo '?'), $((SECONDS - start)) s)"
