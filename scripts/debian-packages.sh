#!/usr/bin/env bash
# Makes sure the Debian packages a command needs are installed, before it runs.
#
#   scripts/debian-packages.sh [--list FILE] USE...     (USE: test, demo, demo:mcu, package, all)
#
# Reads scripts/debian-packages.txt (or FILE) and keeps the packages tagged
# with one of the USEs. If some are missing: as root with apt, says so in one
# line and installs exactly those in one non-interactive `apt-get install`;
# otherwise prints the `apt-get install` line to run and exits 1, so the
# command that called it starts nothing.
#
# Tools are called by their system path: under npm, node_modules/.bin comes
# first on PATH, and npm packages there may share a Debian tool's name.
# dpkg-query honours DPKG_ADMINDIR and apt-get APT_CONFIG, as always.
set -euo pipefail

list="$(dirname "$0")/debian-packages.txt"
if [ "${1:-}" = "--list" ]; then
  list=$2
  shift 2
fi
if [ $# -eq 0 ]; then
  echo "usage: $0 [--list FILE] USE... (test, demo, demo:mcu, package, all)" >&2
  exit 2
fi

DPKG_QUERY=/usr/bin/dpkg-query
APT_GET=/usr/bin/apt-get
if [ ! -x "$DPKG_QUERY" ]; then
  # Not Debian: nothing to check against; the tools themselves will say.
  echo "fwcast: no dpkg here: install the equivalents of the packages in $list by hand" >&2
  exit 0
fi

wanted=()
while read -r package uses; do
  uses=${uses%%#*}
  for use in $uses; do
    for asked in "$@"; do
      if [ "$asked" = all ] || [ "$asked" = "$use" ]; then
        wanted+=("$package")
        continue 3
      fi
    done
  done
done < <(sed -e 's/^[[:space:]]*#.*//' -e '/^[[:space:]]*$/d' "$list")

missing=()
for package in ${wanted[@]+"${wanted[@]}"}; do
  "$DPKG_QUERY" -W -f='${db:Status-Status}' "$package" 2>/dev/null | grep -qx installed || missing+=("$package")
done
[ ${#missing[@]} -eq 0 ] && exit 0

line="apt-get install -y --no-install-recommends ${missing[*]}"
if [ "$(id -u)" = 0 ] && [ -x "$APT_GET" ]; then
  echo "fwcast: installing ${#missing[@]} missing Debian package(s) for $*: $line" >&2
  export DEBIAN_FRONTEND=noninteractive
  # A fresh machine may have no package lists yet.
  "$APT_GET" update -qq >&2
  "$APT_GET" install -y -q --no-install-recommends "${missing[@]}" >&2
  exit 0
fi
echo "fwcast: missing Debian package(s) for $*: ${missing[*]}; install them first (as root): $line" >&2
exit 1
