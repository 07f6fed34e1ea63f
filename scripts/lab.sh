#!/usr/bin/env bash
# Runs a command inside a private "lab": its own user, mount and network
# namespaces. Test hosts created there with `ip netns add` live only as long as
# the command does, and no packet can leave for the machine's real interfaces.
set -euo pipefail

if [ "${FWCAST_LAB:-}" != "1" ]; then
  if ! command -v unshare >/dev/null || ! command -v ip >/dev/null; then
    echo "fwcast lab: needs unshare and ip: apt-get install -y util-linux iproute2" >&2
    exit 1
  fi
  export FWCAST_LAB=1
  # Publishers in the lab cache encoded symbols in a cache of the lab's own,
  # emptied at every start, not in the user's ~/.cache/fwcast.
  export XDG_CACHE_HOME="${TMPDIR:-/tmp}/fwcast-lab-cache"
  rm -rf "$XDG_CACHE_HOME"
  mkdir -p "$XDG_CACHE_HOME"
  # Where we may (root), give `ip netns` its usual directory, so the lab need
  # not hide the rest of /run behind a tmpfs.
  mkdir -p /run/netns 2>/dev/null || true
  exec unshare --user --map-root-user --net --mount --propagation private bash "$0" "$@"
fi

# `ip netns add` bind-mounts under /run/netns; give it a private tmpfs there.
if [ -d /run/netns ]; then
  mount -t tmpfs fwcast-lab /run/netns
else
  mount -t tmpfs fwcast-lab /run
  mkdir -p /run/netns
fi
ip link set lo up
# Multicast on loopback only: every ff00::/8 destination is delivered locally.
ip -6 route add local ff00::/8 dev lo table local
exec "$@"
