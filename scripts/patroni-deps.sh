#!/usr/bin/env bash
# Make sure the Patroni tests can run: Patroni 3.0 and etcd 3.4 (Debian `patroni`, `etcd-server`,
# `etcd-client`). src/testing/patroni.ts starts a private etcd and Patroni members on loopback ports
# and stops them when the tests end; nothing here starts a service. Called by scripts/test.sh.
#
# Idempotent: silent and immediate when everything is present. Never fails the test run: when
# Patroni cannot be installed it prints one line and exits 0, and the Patroni tests skip with the
# reason (HOLDFAST_REQUIRE_PATRONI=1 turns the skip into an error; HOLDFAST_SKIP_PATRONI=1 skips
# them without trying).
set -euo pipefail

present() { command -v patroni >/dev/null 2>&1 && command -v etcd >/dev/null 2>&1 && command -v etcdctl >/dev/null 2>&1; }

[[ ${HOLDFAST_SKIP_PATRONI:-0} == 1 ]] && exit 0
present && exit 0

say() { echo "patroni-deps: $*" >&2; }
die() { say "$* (the Patroni tests will skip)"; exit 0; }

[[ "$(id -u)" == 0 ]] || die "Patroni or etcd is missing and installing them needs root (apt-get install patroni etcd-server etcd-client)"
command -v apt-get >/dev/null 2>&1 || die "Patroni or etcd is missing and apt-get is not available"

# shellcheck source=lib/apt.sh
source "$(dirname "$0")/lib/apt.sh"

say "installing patroni, etcd-server, etcd-client (Debian)"
start=$SECONDS
# The packages must not start services of their own: etcd's unit would listen on the default
# ports. policy-rc.d refuses every service start during the install (removed afterwards).
policy=/usr/sbin/policy-rc.d
own_policy=0
if [[ ! -e $policy ]]; then
  printf '#!/bin/sh\nexit 101\n' >"$policy"
  chmod 755 "$policy"
  own_policy=1
fi
trap '((own_policy)) && rm -f "$policy"; rm -f "$APT_LOG"' EXIT
apt_install patroni etcd-server etcd-client
present || die "patroni/etcd installed but patroni, etcd or etcdctl is still not on PATH"
say "Patroni ready ($(patroni --version 2>/dev/null || echo '?'), etcd $(etcd --version 2>/dev/null | head -1 | awk '{print $3}'), $((SECONDS - start)) s)"
