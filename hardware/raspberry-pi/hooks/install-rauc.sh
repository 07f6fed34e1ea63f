#!/bin/sh
# fwcast-agent install command: hand the verified image to RAUC for an A/B install.
#
#   "installer": { "type": "command", "command": "/opt/fwcast/hardware/raspberry-pi/hooks/install-rauc.sh", "timeoutSeconds": 1800 }
#
# The agent runs this with FWCAST_IMAGE (the verified image: here a RAUC bundle),
# FWCAST_MODEL, FWCAST_VERSION, FWCAST_SEQ and FWCAST_SHA256 set; exit 0 means
# installed. `rauc install` asks the RAUC service over D-Bus, which writes the
# inactive slot and switches the bootloader to it for the next boot: the running
# system is untouched, and a failed boot falls back to the old slot. RAUC checks
# the bundle's own signature too, against its keyring.
#
# The agent runs as the unprivileged user "fwcast": allow it to talk to RAUC
# with fwcast-rauc-dbus.conf (install it to /etc/dbus-1/system.d/).
# After rebooting into the new slot, mark it good (e.g. `rauc status mark-good`
# from a health-check service), or RAUC falls back on the next boot.
set -eu

: "${FWCAST_IMAGE:?not set: this script is run by fwcast-agent as its install command}"
echo "fwcast: installing ${FWCAST_MODEL:-?} ${FWCAST_VERSION:-?} (seq ${FWCAST_SEQ:-?}) with RAUC" >&2

# Belt and braces: the agent verified this digest; check the file was not swapped since.
if [ -n "${FWCAST_SHA256:-}" ]; then
  echo "${FWCAST_SHA256}  ${FWCAST_IMAGE}" | sha256sum -c --status - || { echo "fwcast: image digest changed, not installing" >&2; exit 1; }
fi

# Give the bundle the .raucb name RAUC's tools use, without copying it (same file system).
dir="${FWCAST_RAUC_DIR:-/var/lib/fwcast/rauc}"
mkdir -p "$dir"
bundle="$dir/fwcast-${FWCAST_SEQ:-0}.raucb"
ln -f "$FWCAST_IMAGE" "$bundle" 2>/dev/null || cp "$FWCAST_IMAGE" "$bundle"
trap 'rm -f "$bundle"' EXIT

rauc install "$bundle"
echo "fwcast: RAUC installed ${FWCAST_VERSION:-?} to the inactive slot; it boots on the next restart" >&2
