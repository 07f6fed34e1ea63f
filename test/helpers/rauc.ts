/**
 * A RAUC machine for tests: Debian's real `rauc` service on a private D-Bus
 * system bus (dbus-daemon with a config of its own), two file-backed raw
 * slots A and B, bundles signed by a test CA (openssl), and a stand-in
 * bootloader: RAUC's custom bootloader backend keeps the primary slot and
 * each slot's good/bad state in files, and `reboot()` restarts the service
 * booted into the primary slot, as a bootloader would boot it.
 *
 * Inside the lab (a user namespace) RAUC cannot mount a bundle: mount(2) of
 * squashfs needs privileges in the initial user namespace. `installStandIn`
 * does what `rauc install` does at RAUC's interfaces, with the mount replaced
 * by unsquashfs: `rauc info` checks the bundle's signature and compatible,
 * the target slot is marked bad, `rauc write-slot` writes it, and `rauc
 * status mark-active` makes it primary.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

export interface RaucStatus {
  booted: string;
  boot_primary: string;
  slots: Array<Record<string, { bootname: string; state: string; boot_status: string; device: string }>>;
}

const COMPATIBLE = 'fwcast-test-board';

export class RaucMachine {
  readonly dir: string;
  readonly conf: string;
  readonly bus: string;
  readonly slotDevice: Record<'A' | 'B', string>;
  /** Commands that reached `rauc` through the PATH shim (`bin/rauc`), one per line. */
  readonly trace: string;
  /** The stand-in of `rauc install` for the lab (see the top of this file). */
  readonly installStandIn: string;
  #dbus: ChildProcess | undefined;
  #service: ChildProcess | undefined;
  serviceLog = '';

  constructor(dir: string) {
    this.dir = dir;
    mkdirSync(join(dir, 'boot'), { recursive: true });
    mkdirSync(join(dir, 'bin'), { recursive: true });
    mkdirSync(join(dir, 'data'), { recursive: true });
    this.bus = `unix:path=${join(dir, 'bus.sock')}`;
    this.trace = join(dir, 'rauc-commands');
    this.slotDevice = { A: join(dir, 'slot-a.img'), B: join(dir, 'slot-b.img') };
    for (const slot of Object.values(this.slotDevice)) writeFileSync(slot, Buffer.alloc(256 << 10));
    const openssl = (...args: string[]): void => void execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
    openssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'ca.key.pem', '-out', 'ca.cert.pem', '-subj', '/CN=fwcast test CA', '-days', '2',
      '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign,digitalSignature');
    openssl('req', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'signer.key.pem', '-out', 'signer.csr', '-subj', '/CN=fwcast test bundle signer');
    writeFileSync(join(dir, 'signer.ext'), 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n');
    openssl('x509', '-req', '-in', 'signer.csr', '-CA', 'ca.cert.pem', '-CAkey', 'ca.key.pem', '-CAcreateserial', '-out', 'signer.cert.pem', '-days', '2', '-extfile', 'signer.ext');
    // The stand-in bootloader's storage, through RAUC's custom backend interface.
    const backend = join(dir, 'bootloader-backend.sh');
    writeFileSync(backend, `#!/bin/sh
d=${join(dir, 'boot')}
echo "$*" >> "$d/calls"
case "$1" in
  get-primary) cat "$d/primary" 2>/dev/null || echo A ;;
  set-primary) echo "$2" > "$d/primary" ;;
  get-state) cat "$d/state-$2" 2>/dev/null || echo good ;;
  set-state) echo "$3" > "$d/state-$2" ;;
  get-current) cat "$d/booted" ;;
  *) exit 1 ;;
esac
`);
    chmodSync(backend, 0o755);
    this.conf = join(dir, 'system.conf');
    writeFileSync(this.conf, `[system]
compatible=${COMPATIBLE}
bootloader=custom
data-directory=${join(dir, 'data')}

[keyring]
path=${join(dir, 'ca.cert.pem')}

[handlers]
bootloader-custom-backend=${backend}

[slot.rootfs.0]
device=${this.slotDevice.A}
type=raw
bootname=A

[slot.rootfs.1]
device=${this.slotDevice.B}
type=raw
bootname=B
`);
    writeFileSync(join(dir, 'bus.conf'), `<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <listen>${this.bus}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
`);
    // Every rauc command the hook runs, traced, then run by the real rauc.
    const shim = join(dir, 'bin', 'rauc');
    writeFileSync(shim, `#!/bin/sh\necho "rauc $*" >> ${this.trace}\nexec /usr/bin/rauc "$@"\n`);
    chmodSync(shim, 0o755);
    this.installStandIn = join(dir, 'rauc-install-standin.sh');
    writeFileSync(this.installStandIn, `#!/bin/sh
# rauc install BUNDLE, minus the bundle mount the lab does not permit.
set -eu
bundle="$1"
rauc info --conf ${this.conf} "$bundle" > /dev/null
eval "$(rauc status --output-format=shell)"
i=0; target=""
for name in $RAUC_SYSTEM_SLOTS; do
  i=$((i + 1)); eval "state=\\$RAUC_SLOT_STATE_$i"
  [ "$state" = booted ] || target=$name
done
x=$(mktemp -d)
trap 'rm -rf "$x"' EXIT
unsquashfs -q -n -d "$x/content" "$bundle" > /dev/null
rauc status mark-bad "$target"
rauc write-slot --conf ${this.conf} "$target" "$x/content/rootfs.img"
rauc status mark-active "$target"
`);
    chmodSync(this.installStandIn, 0o755);
  }

  /** Environment for the agent and its steps: the private bus, and the traced rauc first on PATH. */
  get env(): Record<string, string> {
    return { DBUS_SYSTEM_BUS_ADDRESS: this.bus, PATH: `${join(this.dir, 'bin')}:${process.env.PATH ?? ''}` };
  }

  /** A bundle of one raw rootfs image, signed by the test CA's signer. */
  bundle(version: string, image: Uint8Array): string {
    const content = join(this.dir, `content-${version}`);
    mkdirSync(content, { recursive: true });
    writeFileSync(join(content, 'rootfs.img'), image);
    writeFileSync(join(content, 'manifest.raucm'), `[update]\ncompatible=${COMPATIBLE}\nversion=${version}\n\n[bundle]\nformat=plain\n\n[image.rootfs]\nfilename=rootfs.img\n`);
    const out = join(this.dir, `bundle-${version}.raucb`);
    execFileSync('rauc', ['bundle', '--cert', 'signer.cert.pem', '--key', 'signer.key.pem', '--keyring', 'ca.cert.pem', content, out], { cwd: this.dir, stdio: 'pipe' });
    return out;
  }

  async #waitForService(): Promise<void> {
    const deadline = Date.now() + 15_000;
    for (;;) {
      try {
        this.status();
        return;
      } catch (err) {
        if (Date.now() > deadline) throw new Error(`the RAUC service did not answer: ${(err as Error).message}\n${this.serviceLog}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  }

  /** Powers on: the bus, then RAUC booted into the bootloader's primary slot. */
  async boot(): Promise<void> {
    if (!this.#dbus) {
      this.#dbus = spawn('dbus-daemon', [`--config-file=${join(this.dir, 'bus.conf')}`, '--nofork'], { stdio: 'ignore' });
      const deadline = Date.now() + 10_000;
      while (!existsSync(join(this.dir, 'bus.sock'))) {
        if (Date.now() > deadline) throw new Error('dbus-daemon did not start');
        await new Promise((r) => setTimeout(r, 50));
      }
    }
    const primary = existsSync(join(this.dir, 'boot', 'primary')) ? readFileSync(join(this.dir, 'boot', 'primary'), 'utf8').trim() : 'A';
    writeFileSync(join(this.dir, 'boot', 'booted'), `${primary}\n`);
    this.#service = spawn('rauc', ['service', '--conf', this.conf, `--override-boot-slot=${primary}`], { env: { ...process.env, DBUS_SYSTEM_BUS_ADDRESS: this.bus }, stdio: ['ignore', 'pipe', 'pipe'] });
    this.#service.stdout!.on('data', (d: Buffer) => (this.serviceLog += d.toString()));
    this.#service.stderr!.on('data', (d: Buffer) => (this.serviceLog += d.toString()));
    await this.#waitForService();
  }

  /** A reboot: RAUC stops, the bootloader boots the primary slot. */
  async reboot(): Promise<void> {
    await this.#stopService();
    await this.boot();
  }

  async #stopService(): Promise<void> {
    const s = this.#service;
    if (!s || s.exitCode !== null) return;
    const exited = new Promise((r) => s.once('exit', r));
    s.kill('SIGTERM');
    await exited;
  }

  async stop(): Promise<void> {
    await this.#stopService();
    this.#dbus?.kill('SIGTERM');
  }

  /** What RAUC says, through its service. */
  status(): RaucStatus {
    return JSON.parse(execFileSync('/usr/bin/rauc', ['status', '--output-format=json'], { env: { ...process.env, DBUS_SYSTEM_BUS_ADDRESS: this.bus }, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] })) as RaucStatus;
  }

  /** The boot status RAUC reports per bootname. */
  bootStatus(): Record<string, string> {
    return Object.fromEntries(this.status().slots.map((s) => Object.values(s)[0]!).map((s) => [s.bootname, s.boot_status]));
  }

  /** What RAUC asked of the bootloader, one call per line (get-primary, set-state B bad, …). */
  bootloaderCalls(): string[] {
    const file = join(this.dir, 'boot', 'calls');
    return existsSync(file) ? readFileSync(file, 'utf8').trim().split('\n') : [];
  }

  /** The rauc commands the hook ran (through the traced rauc). */
  commands(): string[] {
    return existsSync(this.trace) ? readFileSync(this.trace, 'utf8').trim().split('\n') : [];
  }
}
