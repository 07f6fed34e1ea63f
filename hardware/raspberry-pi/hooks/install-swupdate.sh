#!/bin/sh
# fwcast-agent install command: hand the verified image to SWUpdate for an A/B install.
#
#   "installer": { "type": "command", "command": "/opt/fwcast/hardware/raspberry-pi/hooks/install-swupdate.sh", "timeoutSeconds": 1800 }
#
# The agent runs this with FWCAST_IMAGE (the verified image: here an SWUpdate
# .swu), FWCAST_MODEL, FWCAST_VERSION, FWCAST_SEQ and FWCAST_SHA256 set; exit 0
# means installed. `swupdate -i` installs the .swu locally: its sw-description
# chooses the inactive copy (e.g. with -e stable,copy2) and updates the
# bootloader environment to boot it next time.
#
# `swupdate -i` writes block devices and the bootloader environment, so it needs
# root: install swupdate-root.conf as a drop-in for fwcast-agent.service
# (/etc/systemd/system/fwcast-agent.service.d/swupdate.conf).
#
# Settings (environment, e.g. Environment= in that drop-in):
#   FWCAST_SWUPDATE_SELECTION  software set and mode for -e, e.g. "stable,copy2"
#   FWCAST_SWUPDATE_KEY        public key for -k, if the .swu images are signed
set -eu

: "${FWCAST_IMAGE:?not set: this script is run by fwcast-agent as its install command}"
echo "fwcast: installing ${FWCAST_MODEL:-?} ${FWCAST_VERSION:-?} (seq ${FWCAST_SEQ:-?}) with SWUpdate" >&2

if [ -n "${FWCAST_SHA256:-}" ]; then
  echo "${FWCAST_SHA256}  ${FWCAST_IMAGE}" | sha256sum -c --status - || { echo "fwcast: image digest changed, not installing" >&2; exit 1; }
fi

set -- -i "$FWCAST_IMAGE"
[ -n "${FWCAST_SWUPDATE_SELECTION:-}" ] && set -- "$@" -e "$FWCAST_SWUPDATE_SELECTION"
[ -n "${FWCAST_SWUPDATE_KEY:-}" ] && set -- "$@" -k "$FWCAST_SWUPDATE_KEY"
swupdate "$@"
echo "fwcast: SWUpdate installed ${FWCAST_VERSION:-?}; it boots on the next restart" >&2
