#!/bin/sh
# fwcast-agent install and steps for the Raspberry Pi's own A/B boot:
# `tryboot` with autoboot.txt (Pi 4, 400, CM4, Pi 5 firmware). The install is
# tried before it is kept (README: "Trying an install before keeping it").
#
#   "installer": { "type": "command", "command": "/opt/fwcast/hardware/raspberry-pi/hooks/tryboot-steps.sh" },
#   "steps": {
#     "activate": "/opt/fwcast/hardware/raspberry-pi/hooks/tryboot-steps.sh",
#     "health":   "FWCAST_HEALTH_COMMAND=/usr/local/bin/app-healthy /opt/fwcast/hardware/raspberry-pi/hooks/tryboot-steps.sh",
#     "commit":   "/opt/fwcast/hardware/raspberry-pi/hooks/tryboot-steps.sh",
#     "rollback": "/opt/fwcast/hardware/raspberry-pi/hooks/tryboot-steps.sh",
#     "healthTimeoutSeconds": 600
#   }
#
# autoboot.txt, on the first FAT partition, names the partition booted
# normally and the one booted once after `reboot "0 tryboot"`:
#
#   [all]
#   tryboot_a_b=1
#   boot_partition=2
#   [tryboot]
#   boot_partition=3
#
#   install   writes the image (FWCAST_IMAGE: a boot partition image) to the
#             [tryboot] partition, never the one running
#   activate  reboot "0 tryboot": the firmware boots the [tryboot] partition
#             once; any reboot after that boots [all]'s again
#   health    succeeds only when running in tryboot mode from the [tryboot]
#             partition (/proc/device-tree/chosen/bootloader/tryboot and
#             partition), and FWCAST_HEALTH_COMMAND (if set) succeeds there
#   commit    rewrites autoboot.txt (temp file, rename) so that the running
#             partition is [all]'s and the other one [tryboot]'s
#   rollback  nothing to undo in autoboot.txt; reboots if the tried
#             partition runs, so that the firmware boots the previous one
#
# Every step may run again after a power cut: each is idempotent. Settings
# (environment): FWCAST_BOOT_DIR (default /boot/firmware), FWCAST_PARTITION_PREFIX
# (default /dev/mmcblk0p: partition N is ${prefix}N), FWCAST_DT_BOOTLOADER
# (default /proc/device-tree/chosen/bootloader), FWCAST_TRYBOOT_REBOOT (default systemctl
# reboot "0 tryboot"), FWCAST_REBOOT (default systemctl reboot), FWCAST_HEALTH_COMMAND.
set -eu

: "${FWCAST_IMAGE:?not set: this script is run by fwcast-agent}"
boot="${FWCAST_BOOT_DIR:-/boot/firmware}"
autoboot="$boot/autoboot.txt"
prefix="${FWCAST_PARTITION_PREFIX:-/dev/mmcblk0p}"
dt="${FWCAST_DT_BOOTLOADER:-/proc/device-tree/chosen/bootloader}"
say() { echo "fwcast tryboot ${FWCAST_STEP:-install}: $*" >&2; }

# boot_partition of a section of autoboot.txt ([all] or [tryboot]).
section_partition() {
  awk -v want="[$1]" '
    /^\[/ { section = $0; next }
    section == want && /^boot_partition=/ { sub(/^boot_partition=/, ""); print; exit }
  ' "$autoboot"
}

# A device-tree cell: a 32-bit big-endian number (0 if absent).
dt_cell() {
  if [ -r "$dt/$1" ]; then od -An -tu4 --endian=big "$dt/$1" | tr -d ' \n'; else echo 0; fi
}

normal=$(section_partition all)
spare=$(section_partition tryboot)
[ -n "$normal" ] && [ -n "$spare" ] && [ "$normal" != "$spare" ] || { say "$autoboot needs different boot_partition values in [all] and [tryboot]"; exit 1; }
running=$(dt_cell partition)
tryboot=$(dt_cell tryboot)

case "${FWCAST_STEP:-install}" in
  install)
    [ "$running" != "$spare" ] || { say "partition $spare runs: commit or roll back first"; exit 1; }
    echo "${FWCAST_SHA256:?}  ${FWCAST_IMAGE}" | sha256sum -c --status - || { say "image digest changed, not installing"; exit 1; }
    dd if="$FWCAST_IMAGE" of="$prefix$spare" bs=1M conv=fsync,notrunc status=none
    say "wrote ${FWCAST_VERSION:-?} to partition $spare"
    ;;
  activate)
    sync
    say "rebooting once into partition $spare (tryboot)"
    eval "${FWCAST_TRYBOOT_REBOOT:-systemctl reboot \"0 tryboot\"}"
    ;;
  health)
    [ "$tryboot" = 1 ] && [ "$running" = "$spare" ] || { say "running partition $running (tryboot $tryboot), not the tried $spare"; exit 1; }
    if [ -n "${FWCAST_HEALTH_COMMAND:-}" ]; then sh -c "$FWCAST_HEALTH_COMMAND"; fi
    ;;
  commit)
    if [ "$running" = "$normal" ]; then say "partition $running is already the default"; exit 0; fi
    [ "$running" = "$spare" ] || { say "running partition $running, neither $normal nor $spare"; exit 1; }
    # The running partition becomes the default, the previous one the next to try.
    awk -v new="$spare" -v old="$normal" '
      /^\[/ { section = $0 }
      /^boot_partition=/ { if (section == "[all]") $0 = "boot_partition=" new; else if (section == "[tryboot]") $0 = "boot_partition=" old }
      { print }
    ' "$autoboot" > "$autoboot.new"
    sync "$autoboot.new" 2>/dev/null || sync
    mv "$autoboot.new" "$autoboot"
    sync
    say "partition $spare is now the default, $normal the next to try"
    ;;
  rollback)
    if [ "$running" = "$spare" ]; then
      say "partition $spare is not kept; rebooting into $normal"
      eval "${FWCAST_REBOOT:-systemctl reboot}"
    fi
    ;;
  *) say "unknown step ${FWCAST_STEP}"; exit 2 ;;
esac
