#!/usr/bin/env bash
# `npm run package`: build fwcast_<version>_all.deb, installable on Raspberry Pi
# OS and any Debian 12 with Node.js 20 or later, then check it with lintian.
#
#   /usr/lib/fwcast/        built JavaScript (dist/), bin/, production
#                           node_modules (serialport's prebuilt binaries for
#                           arm64, armhf and amd64), hardware/raspberry-pi/
#   /usr/bin/fwcast, /usr/bin/fwcast-agent
#   /lib/systemd/system/    fwcast-agent.service, fwcast-serve.service
#   /etc/fwcast/            agent.json, serve.json (conffiles: examples to edit)
#
# The maintainer scripts create the system user `fwcast` (postinst) and remove
# the package's state on purge (postrm). Nothing is enabled or started: the
# configuration needs editing first.
#
#   scripts/package-deb.sh [--out DIR] [--no-build]     (default: build/deb)
set -euo pipefail
cd "$(dirname "$0")/.."
out=build/deb
build=1
while [ $# -gt 0 ]; do
  case $1 in
    --out) out=$2; shift 2 ;;
    --no-build) build=0; shift ;;   # dist/ is fresh already (the package test, after npm test's build)
    *) echo "usage: $0 [--out DIR] [--no-build]" >&2; exit 2 ;;
  esac
done

version=$(node -p "require('./package.json').version")
deb="$out/fwcast_${version}_all.deb"
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
lib=$stage/usr/lib/fwcast
doc=$stage/usr/share/doc/fwcast

[ "$build" = 0 ] || npm run --silent build
mkdir -p "$lib" "$stage/usr/bin" "$stage/lib/systemd/system" "$stage/etc/fwcast" "$doc" "$stage/usr/share/lintian/overrides" "$stage/DEBIAN" "$out"

# The program: what bin/launch.js runs when there are no TypeScript sources.
cp -r bin dist package.json package-lock.json "$lib/"
find "$lib/dist" -name '*.map' -delete
mkdir -p "$lib/hardware"
cp -r hardware/raspberry-pi "$lib/hardware/"
# Production dependencies only, from the tree npm ci installed (no network).
cp -r node_modules "$lib/"
(cd "$lib" && npm prune --omit=dev --offline --no-audit --no-fund --ignore-scripts >/dev/null)
rm "$lib/package-lock.json"
# Native code: serialport's glibc builds for the Pi (armv6/armv7, arm64) and
# amd64 only. cbor-x runs without its optional native decoder (bin/launch.js).
bindings=$lib/node_modules/@serialport/bindings-cpp
find "$bindings/prebuilds" -mindepth 1 -maxdepth 1 ! -name linux-arm ! -name linux-arm64 ! -name linux-x64 -exec rm -rf {} +
find "$bindings/prebuilds" -name '*musl*' -delete
rm -rf "$lib/node_modules/cbor-extract" "$lib/node_modules/@cbor-extract"
# Sources of native addons, test files and the like are not needed at run time.
rm -rf "$bindings/src" "$bindings/binding.gyp" "$lib/node_modules/node-addon-api"
# pkcs11js (signing through an HSM) is built by npm ci for this machine only; elsewhere
# `fwcast sign --pkcs11-*` says PKCS#11 cannot be loaded, and every other command works.
p11=$lib/node_modules/pkcs11js
rm -rf "$p11/src" "$p11/includes" "$p11/binding.gyp" "$p11/build/Release/obj.target" "$p11/build/Release/.deps"
find "$p11/build" -mindepth 1 ! -path "$p11/build/Release" ! -path "$p11/build/Release/pkcs11.node" -exec rm -rf {} + 2>/dev/null || true
chmod 0644 "$p11/build/Release/pkcs11.node"
find "$lib/node_modules" -name '.*' ! -name '.' -prune -exec rm -rf {} + 2>/dev/null || true
find "$lib/node_modules" -type d \( -name test -o -name tests -o -name example -o -name examples \) -prune -exec rm -rf {} +
find "$lib/node_modules" -type f \( -name '*.md' -o -name '*.markdown' -o -name '*.ts' -o -name '*.map' -o -name 'CHANGELOG*' \) ! -name '*.d.ts' -delete
find "$lib/node_modules" -name '*.d.ts' -delete
find "$stage" -type d -empty -delete
mkdir -p "$stage/usr/bin" "$stage/lib/systemd/system" "$stage/etc/fwcast" "$doc" "$stage/usr/share/lintian/overrides" "$stage/DEBIAN"
ln -s ../lib/fwcast/bin/fwcast.js "$stage/usr/bin/fwcast"
ln -s ../lib/fwcast/bin/fwcast-agent.js "$stage/usr/bin/fwcast-agent"

# The units and example configurations of hardware/raspberry-pi/, with the
# paths of a git checkout in /opt/fwcast moved to where the package puts them.
relocate() { sed -e 's|file:/opt/fwcast/README.md|file:/usr/share/doc/fwcast/README.md|g' -e 's|/opt/fwcast/|/usr/lib/fwcast/|g' "$1"; }
for unit in fwcast-agent.service fwcast-serve.service; do
  relocate "hardware/raspberry-pi/$unit" > "$stage/lib/systemd/system/$unit"
done
for config in agent.json serve.json; do
  relocate "hardware/raspberry-pi/$config" > "$stage/etc/fwcast/$config"
  relocate "hardware/raspberry-pi/$config" > "$lib/hardware/raspberry-pi/$config"
done
for unit in fwcast-agent.service fwcast-serve.service; do relocate "hardware/raspberry-pi/$unit" > "$lib/hardware/raspberry-pi/$unit"; done
printf '/etc/fwcast/agent.json\n/etc/fwcast/serve.json\n' > "$stage/DEBIAN/conffiles"

cp README.md "$doc/README.md"
gzip -9n "$doc/README.md"
cat > "$doc/copyright" <<EOF
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: fwcast
Comment: JavaScript dependencies under /usr/lib/fwcast/node_modules carry their
 own licenses (MIT, ISC, Apache-2.0, BSD); see each package.json.

Files: *
Copyright: the fwcast authors
License: see the fwcast source repository
EOF
printf 'fwcast (%s) unstable; urgency=medium\n\n  * Built by scripts/package-deb.sh from the fwcast repository.\n\n -- fwcast developers <fwcast@example.org>  %s\n' \
  "$version" "$(date -R -d "@${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}")" | gzip -9n > "$doc/changelog.gz"

# Native addons in an arch-all package: each is loaded only on its own architecture.
cat > "$stage/usr/share/lintian/overrides/fwcast" <<'EOF'
fwcast: arch-independent-package-contains-binary-or-object *
fwcast: binary-from-other-architecture *
fwcast: unstripped-binary-or-object *
fwcast: shared-library-lacks-prerequisites *
fwcast: library-not-linked-against-libc *
fwcast: hardening-no-fortify-functions *
EOF

# DPKG_ROOT: dpkg --root --force-script-chrootless installs into another tree
# (an image being built, or the package test's throwaway root).
cat > "$stage/DEBIAN/postinst" <<'EOF'
#!/bin/sh
set -e
if [ "$1" = configure ]; then
  # The units run as this unprivileged user (useradd exits 9 when it exists
  # already: an upgrade); serial installers need group dialout, where there is one.
  useradd ${DPKG_ROOT:+--prefix "$DPKG_ROOT"} --system --user-group --home-dir /nonexistent --no-create-home \
    --shell /usr/sbin/nologin --comment "fwcast firmware updates" fwcast 2>/dev/null || [ $? -eq 9 ]
  usermod ${DPKG_ROOT:+--prefix "$DPKG_ROOT"} --append --groups dialout fwcast 2>/dev/null || true
  if [ -z "$DPKG_ROOT" ] && [ -d /run/systemd/system ]; then systemctl --system daemon-reload >/dev/null || true; fi
fi
exit 0
EOF
cat > "$stage/DEBIAN/postrm" <<'EOF'
#!/bin/sh
set -e
if [ "$1" = purge ]; then
  # The agent's and the server's stores. The system user stays, as Debian
  # policy asks: files it owned elsewhere must not pass to a later user.
  rm -rf "${DPKG_ROOT}/var/lib/fwcast" "${DPKG_ROOT}/var/lib/fwcast-serve"
  rmdir "${DPKG_ROOT}/etc/fwcast" 2>/dev/null || true
fi
if [ -z "$DPKG_ROOT" ] && [ -d /run/systemd/system ]; then systemctl --system daemon-reload >/dev/null || true; fi
exit 0
EOF
chmod 0755 "$stage/DEBIAN/postinst" "$stage/DEBIAN/postrm"

size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
cat > "$stage/DEBIAN/control" <<EOF
Package: fwcast
Version: $version
Architecture: all
Maintainer: fwcast developers <fwcast@example.org>
Installed-Size: $size
Depends: nodejs (>= 20), passwd, libc6
Section: admin
Priority: optional
Homepage: https://librecast.net
Description: firmware updates for device fleets over IPv6 multicast
 fwcast signs firmware images, encodes them with RaptorQ and sends them round
 and round on one IPv6 multicast channel per device model, with no
 back-channel. The device agent verifies every manifest and symbol against a
 trusted Ed25519 key, rebuilds the image from any large enough set of packets
 and installs it (a file, a command such as RAUC or SWUpdate, or a serial
 bootloader).
 .
 This package holds the publisher (fwcast, fwcast serve), the device agent
 (fwcast-agent), their systemd units and example configurations.
EOF
(cd "$stage" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z | xargs -0 md5sum) > "$stage/DEBIAN/md5sums"
find "$stage" -type d -exec chmod 0755 {} +
find "$stage" -type f ! -path "$stage/DEBIAN/*" -exec chmod go-w {} +

/usr/bin/dpkg-deb --root-owner-group -Zxz --build "$stage" "$deb" >/dev/null
# Policy checks; lintian exits non-zero on an error.
/usr/bin/lintian --fail-on error "$deb" >&2
echo "$deb"
