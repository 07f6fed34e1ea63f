#!/bin/sh
# fwcast-agent install and steps for RAUC's A/B slots: the install is tried
# before it is kept (README: "Trying an install before keeping it").
#
#   "installer": { "type": "command", "command": "/opt/fwcast/hardware/raspberry-pi/hooks/rauc-steps.sh" },
#   "steps": {
#     "activate": "/opt/fwcast/hardware/raspberry-pi/hooks/rauc-steps.sh",
#     "health":   "FWCAST_HEALTH_COMMAND=/usr/local/bin/app-healthy /opt/fwcast/hardware/raspberry-pi/hooks/rauc-steps.sh",
#     "commit":   "/opt/fwcast/hardware/raspberry-pi/hooks/rauc-steps.sh",
#     "rollback": "/opt/fwcast/hardware/raspberry-pi/hooks/rauc-steps.sh",
#     "healthTimeoutSeconds": 600
#   }
#
# The agent sets FWCAST_STEP (activate, health, commit, rollback; unset for
# the installer) and the release: FWCAST_IMAGE (here a RAUC bundle),
# FWCAST_RELEASE, FWCAST_SEQ, FWCAST_VERSION, FWCAST_SHA256.
#
#   install   checks the digest and links the bundle as $FWCAST_RAUC_DIR/fwcast-SEQ.raucb
#   activate  `rauc install` (RAUC writes the inactive slot and makes it primary),
#             notes which slot is tried and which one it came from, reboots
#   health    succeeds only once the tried slot is the booted one, and
#             FWCAST_HEALTH_COMMAND (if set) succeeds there
#   commit    `rauc status mark-good booted`
#   rollback  `rauc status mark-bad TRIED`, `rauc status mark-active FROM`,
#             and a reboot if the tried slot is the one running
#
# Every step may run again after a power cut: each is idempotent.
# Settings (environment): FWCAST_RAUC_DIR (default /var/lib/fwcast/rauc),
# FWCAST_REBOOT (default `systemctl reboot`), FWCAST_RAUC_INSTALL (default
# `rauc install`), FWCAST_HEALTH_COMMAND. The agent (user "fwcast") needs
# fwcast-rauc-dbus.conf in /etc/dbus-1/system.d/ to talk to RAUC.
set -eu

: "${FWCAST_IMAGE:?not set: this script is run by fwcast-agent}"
: "${FWCAST_RELEASE:=seq-${FWCAST_SEQ:-0}}"
dir="${FWCAST_RAUC_DIR:-/var/lib/fwcast/rauc}"
bundle="$dir/fwcast-${FWCAST_SEQ:-0}.raucb"
tried_file="$dir/$FWCAST_RELEASE.tried"
from_file="$dir/$FWCAST_RELEASE.from"
say() { echo "fwcast rauc ${FWCAST_STEP:-install}: $*" >&2; }

# The slot names RAUC reports: booted, and the primary (the next boot's).
rauc_slots() {
  eval "$(rauc status --output-format=shell)"
  booted=""
  i=0
  for name in $RAUC_SYSTEM_SLOTS; do
    i=$((i + 1))
    eval "state=\${RAUC_SLOT_STATE_$i:-}"
    [ "$state" = booted ] && booted=$name
  done
  primary=$RAUC_BOOT_PRIMARY
  [ -n "$booted" ] || { say "RAUC reports no booted slot"; exit 1; }
}

case "${FWCAST_STEP:-install}" in
  install)
    echo "${FWCAST_SHA256:?}  ${FWCAST_IMAGE}" | sha256sum -c --status - || { say "image digest changed, not installing"; exit 1; }
    mkdir -p "$dir"
    # The .raucb name RAUC's tools use, without a copy (same file system).
    ln -f "$FWCAST_IMAGE" "$bundle" 2>/dev/null || cp "$FWCAST_IMAGE" "$bundle"
    ;;
  activate)
    rauc_slots
    from=$booted
    ${FWCAST_RAUC_INSTALL:-rauc install} "$bundle"
    rauc_slots
    [ "$primary" != "$from" ] || { say "RAUC installed, but the primary slot is still the booted $from"; exit 1; }
    echo "$primary" > "$tried_file.tmp" && mv "$tried_file.tmp" "$tried_file"
    echo "$from" > "$from_file.tmp" && mv "$from_file.tmp" "$from_file"
    sync
    say "RAUC installed ${FWCAST_VERSION:-?} to $primary (from $from); rebooting into it"
    ${FWCAST_REBOOT:-systemctl reboot}
    ;;
  health)
    rauc_slots
    tried=$(cat "$tried_file" 2>/dev/null || true)
    [ -n "$tried" ] || { say "no slot was noted for this release: it was not activated"; exit 1; }
    [ "$booted" = "$tried" ] || { say "running $booted, not the tried $tried (yet)"; exit 1; }
    if [ -n "${FWCAST_HEALTH_COMMAND:-}" ]; then sh -c "$FWCAST_HEALTH_COMMAND"; fi
    ;;
  commit)
    rauc status mark-good booted
    rm -f "$bundle" "$tried_file" "$from_file"
    ;;
  rollback)
    rauc_slots
    tried=$(cat "$tried_file" 2>/dev/null || true)
    from=$(cat "$from_file" 2>/dev/null || true)
    # Not noted (a power cut right after `rauc install`): the tried slot is the one not running.
    if [ -z "$tried" ] || [ -z "$from" ]; then from=$booted; tried=other; fi
    rauc status mark-bad "$tried"
    rauc status mark-active "$from"
    rm -f "$bundle"
    if [ "$booted" != "$from" ]; then
      say "marked $tried bad and $from active; rebooting into $from"
      ${FWCAST_REBOOT:-systemctl reboot}
    fi
    ;;
  *) say "unknown step ${FWCAST_STEP}"; exit 2 ;;
esac
