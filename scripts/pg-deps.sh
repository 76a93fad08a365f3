#!/usr/bin/env bash
# Make sure the PostgreSQL 15 server and tools the tests use are installed (Debian `postgresql-15`:
# initdb, pg_ctl, postgres, psql, pgbench, pg_amcheck, pg_waldump, pg_controldata in
# /usr/lib/postgresql/15/bin) and that the `postgres` OS user exists. Called by scripts/test.sh.
#
# Idempotent: silent and immediate when everything is present. Otherwise installs with apt-get
# (running `apt-get update` only when the package lists cannot provide the package), quietly, and
# prints the apt output only on failure.
#
# The tests never use a Debian-managed cluster: src/testing/pg.ts creates its own clusters with
# initdb in temporary directories. On a fresh install this script tells postgresql-common not to
# create the default `15/main` cluster (the same switch the official postgres Docker image uses),
# and the packages are never asked to start a service. An existing default cluster is left alone.
set -euo pipefail

PG_BIN=/usr/lib/postgresql/15/bin
TOOLS=(initdb pg_ctl postgres psql pgbench pg_amcheck pg_waldump pg_controldata)

present() {
  local t
  for t in "${TOOLS[@]}"; do
    [[ -x "$PG_BIN/$t" ]] || return 1
  done
  id -u postgres >/dev/null 2>&1 || return 1
  command -v runuser >/dev/null 2>&1 || return 1
}

present && exit 0

say() { echo "pg-deps: $*" >&2; }
die() { say "$*"; exit 1; }

[[ "$(id -u)" == 0 ]] || die "PostgreSQL 15 is missing and installing it needs root (apt-get install postgresql-15)"
command -v apt-get >/dev/null 2>&1 || die "PostgreSQL 15 is missing and apt-get is not available; install postgresql-15 (binaries in $PG_BIN)"
command -v runuser >/dev/null 2>&1 || die "runuser (util-linux) is missing; the tests start PostgreSQL as the postgres user with it"

# shellcheck source=lib/apt.sh
source "$(dirname "$0")/lib/apt.sh"

say "installing postgresql-15 (Debian)"
start=$SECONDS

# postgresql-common first, so the default cluster can be switched off before postgresql-15's
# postinst would create it.
if [[ ! -e /etc/postgresql-common/createcluster.conf ]]; then
  apt_install postgresql-common
fi
CC=/etc/postgresql-common/createcluster.conf
if [[ -f "$CC" ]] && ! grep -Eq '^[[:space:]]*create_main_cluster[[:space:]]*=' "$CC" && [[ ! -d /etc/postgresql/15 ]]; then
  echo 'create_main_cluster = false' >>"$CC"
fi

apt_install postgresql-15 postgresql-client-15

present || die "postgresql-15 installed but $PG_BIN or the postgres user is still missing"
say "postgresql-15 ready ($("$PG_BIN/postgres" --version 2>/dev/null || echo '?'), $((SECONDS - start)) s)"
