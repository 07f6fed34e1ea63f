/**
 * A hostile host with no key that goes for the agent's log: unsigned
 * manifests, each with a fresh release id (so each is refused, not counted as
 * a repeat), carrying line breaks, terminal escapes, bidi overrides and 64 KB
 * strings in every field an attacker controls before the signature is
 * checked: the COSE algorithm and key id (as text, bytes, maps), extra and
 * unprotected header labels, the protected header itself, the payload, and
 * CBOR that breaks fwcast's profile.
 *
 *   node --import tsx test/helpers/log-attacker.ts --group ADDR [--port 4242] [--iface eth0]
 *        [--rate 100] [--count 2000] [--duration 10] [--fragment 16000]
 *
 * --rate and --count are in manifests; a manifest goes out in fragments of at
 * most --fragment bytes (a 64 KB string needs several). Sends only on the
 * given interface with a hop limit of 1: run it only inside a lab namespace.
 * Prints "log-attacker: ready" on stderr once set up, then one JSON summary
 * line on stdout when it stops (count or duration reached, SIGTERM).
 */
import { randomBytes } from 'node:crypto';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { encodeCbor, Tag } from '../../protocol/cbor.js';
import { ALG_EDDSA, COSE_SIGN1_TAG } from '../../protocol/cose-sign1.js';
import { releaseIdOf } from '../../protocol/manifest.js';
import { encodeManifestFragment } from '../../protocol/packet.js';
import { multicastSender, runPacedFlood } from './paced-flood.js';

/** A line a log reader would take for the agent's own, if it reached the log unescaped. Its year marks it. */
export const FORGED_LINE = '2001-01-01T00:00:00.000Z info  agent:rpi4: installed rpi4 9.9.9 (seq 999) at /data/rootfs.img event=release.installed';

/** Every kind of character that breaks a line or a terminal: LF, CR, an ANSI colour and screen clear, an OSC title, a C1 CSI, U+2028, a bidi override, NUL. */
export const HOSTILE = `\n${FORGED_LINE}\r\n\u001b[31;1mRED\u001b[2J\u001b]0;pwned\u0007\u009b2J\u2028\u202eevil\u0000`;

/** `length` characters of HOSTILE, repeated. */
export const hostileText = (length: number): string => HOSTILE.repeat(Math.ceil(length / HOSTILE.length)).slice(0, length);

const BIG = 64 * 1024;

/** What each variant puts where; `nonce` makes every manifest, and so its release id, unique. */
export const VARIANTS = {
  'alg-text': (nonce: Uint8Array) => cose(new Map<number, unknown>([[1, HOSTILE], [4, nonce]])),
  'alg-text-64k': (nonce: Uint8Array) => cose(new Map<number, unknown>([[1, hostileText(BIG)], [4, nonce]])),
  'alg-bytes-64k': (nonce: Uint8Array) => cose(new Map<number, unknown>([[1, randomBytes(BIG)], [4, nonce]])),
  'alg-map': (nonce: Uint8Array) => cose(new Map<number, unknown>([[1, new Map([[HOSTILE, hostileText(BIG)]])], [4, nonce]])),
  'kid-bytes-64k': (nonce: Uint8Array) => cose(new Map<number, unknown>([[1, ALG_EDDSA], [4, new Uint8Array([...nonce, ...randomBytes(BIG)])]])),
  'kid-text': (nonce: Uint8Array) => cose(new Map<number, unknown>([[1, ALG_EDDSA], [4, HOSTILE + hostileText(BIG)], [99, nonce]])),
  'extra-label': (nonce: Uint8Array) => cose(new Map<number | string, unknown>([[1, ALG_EDDSA], [4, nonce], [HOSTILE, hostileText(BIG)]])),
  'unprotected': (nonce: Uint8Array) => cose(new Map<number, unknown>([[1, ALG_EDDSA], [4, nonce]]), new Map([[HOSTILE, hostileText(BIG)]])),
  'protected-not-map': (nonce: Uint8Array) => cose([HOSTILE, nonce, hostileText(BIG)]),
  'payload': (nonce: Uint8Array) => cose(new Map<number, unknown>([[1, ALG_EDDSA], [4, nonce]]), new Map(),
    new Map<number, unknown>([[1, 1], [2, HOSTILE + hostileText(BIG)], [4, HOSTILE]])),
  'not-fwcast-cbor': (nonce: Uint8Array) => new Uint8Array([0xd2, 0x84, 0x5f, ...nonce, ...new TextEncoder().encode(hostileText(BIG))]),
} satisfies Record<string, (nonce: Uint8Array) => Uint8Array>;
export type Variant = keyof typeof VARIANTS;

/** A COSE_Sign1 of the given headers and payload with a signature of zeros: no key needed. */
function cose(protectedHeader: unknown, unprotected = new Map(), payload: unknown = new Map([[1, 1]])): Uint8Array {
  return encodeCbor(new Tag([encodeCbor(protectedHeader), unprotected, encodeCbor(payload), new Uint8Array(64)], COSE_SIGN1_TAG));
}

/** A signed-manifest lookalike as the manifest fragments that carry it, under its true release id. */
export function fragmentsOf(signed: Uint8Array, fragmentSize: number): Uint8Array[] {
  const releaseId = releaseIdOf(signed);
  const out: Uint8Array[] = [];
  for (let offset = 0; offset < signed.length; offset += fragmentSize) {
    out.push(encodeManifestFragment({ releaseId, totalLength: signed.length, offset, bytes: signed.subarray(offset, offset + fragmentSize) }));
  }
  return out;
}

export interface LogAttackerSummary {
  /** Manifests sent, by variant, and in all. */
  manifests: Record<string, number>;
  total: number;
  datagrams: number;
  bytes: number;
  sendErrors: number;
  /** Unix ms. */
  firstSendAt?: number;
  lastSendAt?: number;
  stopReason: string;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      group: { type: 'string' },
      port: { type: 'string', default: '4242' },
      iface: { type: 'string', default: 'eth0' },
      rate: { type: 'string', default: '100' },
      count: { type: 'string', default: '2000' },
      duration: { type: 'string', default: '10' },
      fragment: { type: 'string', default: '16000' },
    },
  });
  if (!values.group || !/^ff[0-9a-f]{2}:[0-9a-f:]*$/i.test(values.group)) throw new Error('--group: an IPv6 multicast address is required');
  const rate = Number(values.rate);
  const maxCount = Number(values.count);
  const maxDuration = Number(values.duration) * 1000;
  const fragmentSize = Number(values.fragment);
  if (!(rate > 0 && rate <= 2000)) throw new Error('--rate: 1..2000 manifests per second');
  if (!(maxCount > 0 && maxCount <= 100_000)) throw new Error('--count: 1..100000');
  if (!(maxDuration > 0 && maxDuration <= 120_000)) throw new Error('--duration: up to 120 s');
  if (!(fragmentSize >= 100 && fragmentSize <= 60_000)) throw new Error('--fragment: 100..60000 bytes');

  const sender = await multicastSender(values.iface, '::', 8 << 20);
  const destination = `${values.group}%${values.iface}`;
  const port = Number(values.port);

  const names = Object.keys(VARIANTS) as Variant[];
  const manifests: Record<string, number> = Object.fromEntries(names.map((n) => [n, 0]));
  let total = 0;
  let datagrams = 0;
  let bytes = 0;
  let sendErrors = 0;
  const onSent = (err: Error | null): void => {
    if (err) sendErrors++;
  };
  process.stderr.write(`log-attacker: ready on ${destination} port ${port}, ${rate} manifests/s, at most ${maxCount} in ${maxDuration / 1000} s\n`);
  runPacedFlood({
    rate, maxCount, maxMs: maxDuration, burst: 32, intervalMs: 5,
    sendOne: (n) => {
      const name = names[n % names.length]!;
      for (const d of fragmentsOf(VARIANTS[name](randomBytes(8)), fragmentSize)) {
        sender.send(d, port, destination, onSent);
        datagrams++;
        bytes += d.length;
      }
      manifests[name]!++;
      total++;
    },
    summary: (stopReason, times): LogAttackerSummary => ({ manifests, total, datagrams, bytes, sendErrors, stopReason, ...times }),
    close: () => sender.close(),
  });
}

// Runs only as a program; tests import the variants.
if (process.argv[1] !== undefined && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().catch((err: unknown) => {
    process.stderr.write(`log-attacker: ${(err as Error).stack ?? String(err)}\n`);
    process.exit(1);
  });
}
