/**
 * Realistic consecutive images for the delta benchmark, made with Debian's
 * tools:
 *
 * - a root file system (ext4, `mke2fs -d`) a package upgrade apart: a tree of
 *   this machine's library files plus libssl3 as Debian ships it, once at its
 *   older and once at its newer version in the archive (`apt-get download`,
 *   cached in ~/.cache/fwcast-bench/debs, extracted with `dpkg-deb -x`);
 *   mke2fs with a fixed UUID, hash seed and clock, so a tree makes one image;
 * - MCU firmware (avr-gcc for the ATmega2560, `avr-objcopy -O binary`) built
 *   twice with one constant changed.
 */
import { execFileSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { homedir, tmpdir } from 'node:os';
import { join } from 'node:path';

export interface ImagePair {
  name: string;
  what: string;
  base: Uint8Array;
  next: Uint8Array;
}

const PACKAGE = 'libssl3';
/**
 * Library trees copied into the root file system, as far as they exist here,
 * until `treeBytes` is reached: the full run's image is about 80 MiB, the smoke
 * run's about 20.
 */
export const FULL_TREES = ['/usr/lib/python3.11', '/usr/lib/x86_64-linux-gnu/perl', '/usr/share/perl', '/usr/lib/x86_64-linux-gnu/gconv', '/usr/share/zoneinfo'];
export const SMOKE_TREES = ['/usr/share/zoneinfo', '/usr/lib/x86_64-linux-gnu/gconv', '/usr/share/perl'];

function run(cmd: string, args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv } = {}): string {
  return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], ...opts });
}

/** The two newest versions of `pkg` in the apt archive, older first. */
function twoVersions(pkg: string): [string, string] {
  const versions = run('apt-cache', ['madison', pkg]).split('\n').map((l) => l.split('|')[1]?.trim()).filter((v): v is string => !!v);
  const unique = [...new Set(versions)];
  unique.sort((a, b) => (versionBelow(a, b) ? -1 : 1));
  if (unique.length < 2) throw new Error(`apt-cache madison ${pkg} lists ${unique.length} version(s); two are needed (run apt-get update)`);
  return [unique.at(-2)!, unique.at(-1)!];
}

function versionBelow(a: string, b: string): boolean {
  try {
    execFileSync('dpkg', ['--compare-versions', a, 'lt', b], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/** The two .debs of the root file system pair, downloaded into the cache if missing: outside the lab, which has no network. */
export function fetchDebs(): string[] {
  return twoVersions(PACKAGE).map((v) => debFor(PACKAGE, v));
}

function debFor(pkg: string, version: string): string {
  const cache = join(homedir(), '.cache', 'fwcast-bench', 'debs');
  mkdirSync(cache, { recursive: true });
  const found = readdirSync(cache).find((f) => f.startsWith(`${pkg}_${version.replace(/^\d+:/, '').replace(/:/g, '%3a')}_`) && f.endsWith('.deb'));
  if (found) return join(cache, found);
  run('apt-get', ['download', `${pkg}=${version}`], { cwd: cache });
  const got = readdirSync(cache).find((f) => f.startsWith(`${pkg}_`) && f.includes(version.replace(/^\d+:/, '').replace(/:/g, '%3a')) && f.endsWith('.deb'));
  if (!got) throw new Error(`apt-get download ${pkg}=${version} left no .deb in ${cache}`);
  return join(cache, got);
}

function duBytes(dir: string): number {
  return Number(run('du', ['-sb', dir]).split('\t')[0]);
}

function ext4(tree: string, out: string, sizeKiB: number): Uint8Array {
  const uuid = '6f0a3b1e-2c4d-4e5f-8a9b-0c1d2e3f4a5b';
  run('/usr/sbin/mke2fs', ['-q', '-F', '-t', 'ext4', '-b', '4096', '-U', uuid, '-E', `hash_seed=${uuid},root_owner=0:0`, '-d', tree, out, `${sizeKiB}k`], { env: { ...process.env, E2FSPROGS_FAKE_TIME: '1700000000' } });
  return new Uint8Array(readFileSync(out));
}

/** Two ext4 root file systems, libssl3 at two versions, the rest alike; about `treeBytes` of files. */
export function rootfsPair(trees: readonly string[], treeBytes: number): ImagePair {
  const [older, newer] = twoVersions(PACKAGE);
  const debs = [debFor(PACKAGE, older), debFor(PACKAGE, newer)];
  const dir = mkdtempSync(join(tmpdir(), 'fwcast-bench-rootfs-'));
  try {
    const common = join(dir, 'common');
    mkdirSync(common);
    for (const tree of trees) {
      if (!existsSync(tree) || duBytes(common) >= treeBytes) continue;
      cpSync(tree, join(common, tree), { recursive: true, dereference: false, verbatimSymlinks: true });
    }
    const images = debs.map((deb, i) => {
      const tree = join(dir, `tree${i}`);
      cpSync(common, tree, { recursive: true, verbatimSymlinks: true });
      run('dpkg-deb', ['-x', deb, tree]);
      return tree;
    });
    // One size for both, with room to spare: the same file system layout parameters.
    const sizeKiB = Math.ceil((Math.max(...images.map(duBytes)) * 1.25) / 1024 / 4096) * 4096 + 8192;
    const [base, next] = images.map((tree, i) => ext4(tree, join(dir, `fs${i}.img`), sizeKiB)) as [Uint8Array, Uint8Array];
    return { name: 'rootfs', what: `ext4 root file system, ${PACKAGE} ${older} → ${newer}`, base, next };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const FIRMWARE = (threshold: number): string => `
#include <avr/io.h>
#include <avr/pgmspace.h>
#include <stdio.h>
#include <util/delay.h>
#define THRESHOLD ${threshold}
static const uint16_t table[512] PROGMEM = {${Array.from({ length: 512 }, (_, i) => (i * 2654435761) % 65521).join(',')}};
static int put(char c, FILE *f) { (void)f; while (!(UCSR0A & (1 << UDRE0))) {} UDR0 = c; return 0; }
static FILE out = FDEV_SETUP_STREAM(put, NULL, _FDEV_SETUP_WRITE);
int main(void) {
  UBRR0 = 8; UCSR0B = (1 << TXEN0); stdout = &out; DDRB = 0xff;
  uint16_t i = 0;
  for (;;) {
    uint16_t v = pgm_read_word(&table[i++ & 511]);
    uint16_t adc = ADC;
    if (adc > THRESHOLD) PORTB ^= 1;
    printf("t=%u v=%u adc=%u %s\\n", i, v, adc, adc > THRESHOLD ? "over" : "under");
    _delay_ms(100);
  }
}
`;

/** The same firmware for the ATmega2560 built with THRESHOLD 100 and 101. */
export function firmwarePair(): ImagePair {
  const dir = mkdtempSync(join(tmpdir(), 'fwcast-bench-fw-'));
  try {
    const [base, next] = [100, 101].map((threshold) => {
      const src = join(dir, `fw${threshold}.c`);
      writeFileSync(src, FIRMWARE(threshold));
      run('avr-gcc', ['-mmcu=atmega2560', '-DF_CPU=16000000UL', '-Os', '-o', join(dir, `fw${threshold}.elf`), src]);
      run('avr-objcopy', ['-O', 'binary', join(dir, `fw${threshold}.elf`), join(dir, `fw${threshold}.bin`)]);
      return new Uint8Array(readFileSync(join(dir, `fw${threshold}.bin`)));
    }) as [Uint8Array, Uint8Array];
    return { name: 'mcu', what: 'ATmega2560 firmware (avr-gcc -Os), one constant changed', base, next };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

// `tsx bench/delta-images.ts --fetch` (npm run bench, before it enters the lab).
if (process.argv[1] && import.meta.url.endsWith(process.argv[1].replace(/^.*\//, '/')) && process.argv.includes('--fetch')) {
  try {
    for (const deb of fetchDebs()) process.stderr.write(`bench: ${deb}\n`);
  } catch (err) {
    process.stderr.write(`bench: the root file system pair will be missing: ${(err as Error).message}\n`);
  }
}
