#!/usr/bin/env bash
# Runs a command inside a private "lab": its own user, mount and network
# namespaces. Test hosts created there with `ip netns add` live only as long as
# the command does, and no packet can leave for the machine's real interfaces.
set -euo pipefail

# Debian's tools come before anything else on PATH, here and in the lab: under
# npm, node_modules/.bin is first, and npm packages there can share a tool's
# name (@vercel/nft, which ava pulls in, installs an `nft` that exits 0).
SYSTEM_PATH=/usr/sbin:/usr/bin:/sbin:/bin

if [ "${FWCAST_LAB:-}" != "1" ]; then
  lab_refuses() {
    echo "fwcast lab: $1; install it first (as root): apt-get install -y --no-install-recommends $2" >&2
    exit 1
  }
  system_tool() {
    local dir
    for dir in ${SYSTEM_PATH//:/ }; do
      if [ -f "$dir/$1" ] && [ -x "$dir/$1" ]; then echo "$dir/$1"; return 0; fi
    done
    return 1
  }
  for tool in unshare:util-linux ip:iproute2 tc:iproute2; do
    system_tool "${tool%%:*}" >/dev/null || lab_refuses "${tool%%:*} is missing" "${tool#*:}"
  done
  # Loss is injected by nftables: a fake nft would give a lossless network
  # that the tests and the demo would report as lossy.
  nft=$(system_tool nft) || lab_refuses "nft is missing" nftables
  case "$("$nft" --version 2>/dev/null)" in
    nftables\ v*) ;;
    *) lab_refuses "$nft is not nftables' nft (its --version does not say nftables)" nftables ;;
  esac
  export FWCAST_LAB=1 FWCAST_LAB_NFT="$nft"
  # Publishers in the lab cache encoded symbols in a cache of the lab's own,
  # emptied at every start, not in the user's ~/.cache/fwcast.
  export XDG_CACHE_HOME="${TMPDIR:-/tmp}/fwcast-lab-cache"
  rm -rf "$XDG_CACHE_HOME"
  mkdir -p "$XDG_CACHE_HOME"
  # Where we may (root), give `ip netns` its usual directory, so the lab need
  # not hide the rest of /run behind a tmpfs.
  mkdir -p /run/netns 2>/dev/null || true
  exec "$(system_tool unshare)" --user --map-root-user --net --mount --propagation private bash "$0" "$@"
fi

# `ip netns add` bind-mounts under /run/netns; give it a private tmpfs there.
if [ -d /run/netns ]; then
  mount -t tmpfs fwcast-lab /run/netns
else
  mount -t tmpfs fwcast-lab /run
  mkdir -p /run/netns
fi
export PATH="$SYSTEM_PATH:$PATH"
ip link set lo up
# Multicast on loopback only: every ff00::/8 destination is delivered locally.
ip -6 route add local ff00::/8 dev lo table local
exec "$@"
