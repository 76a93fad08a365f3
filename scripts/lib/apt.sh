# Quiet, self-refreshing apt-get installs for the *-deps.sh scripts. Source it after defining
# say() and die(); it sets up a log that is printed only on failure.
#
#   apt_install PKG...   install; refresh the package lists first if they do not know a package,
#                        and once more if the install fails (stale lists give 404s)

export DEBIAN_FRONTEND=noninteractive
APT_LOG="$(mktemp -t holdfast-apt.XXXXXX)"
trap 'rm -f "$APT_LOG"' EXIT
APT_OPTS=(-y -q --no-install-recommends -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)

apt_updated=0
apt_update() {
  ((apt_updated)) && return 0
  say "apt-get update"
  apt-get update -q >>"$APT_LOG" 2>&1 || { cat "$APT_LOG" >&2; die "apt-get update failed"; }
  apt_updated=1
}

apt_install() {
  local p
  for p in "$@"; do
    if ! apt-cache show "$p" >/dev/null 2>&1; then apt_update; break; fi
  done
  if ! apt-get install "${APT_OPTS[@]}" "$@" >>"$APT_LOG" 2>&1; then
    ((apt_updated)) && { cat "$APT_LOG" >&2; die "apt-get install $* failed"; }
    apt_update
    apt-get install "${APT_OPTS[@]}" "$@" >>"$APT_LOG" 2>&1 || { cat "$APT_LOG" >&2; die "apt-get install $* failed"; }
  fi
}
