/**
 * A hostile host for flood tests: listens on a channel's multicast group to
 * learn the current release (its id, its manifest, real packets), then sends
 * to the same group and port, paced and bounded:
 *
 *   random        random bytes, 0..1500 long (a quarter behind a valid fwcast header)
 *   mutated       a captured genuine packet with bit flips, truncation, extension,
 *                 or a changed header field (magic, version, type, release id,
 *                 segment, ESI, SBN, manifest length/offset, auth leaf/depth)
 *   forged-symbol a well-formed SYMBOL for the current release: valid segment and
 *                 ESI, the right symbol size, random symbol bytes
 *   forged-auth   a well-formed AUTH for the current release: valid leaf, path
 *                 depth and chunk header, wrong digests and/or path
 *   replay        a captured genuine packet, unchanged
 *
 * Kinds that need a capture (all but random) wait until one is available; until
 * then only random datagrams go out. Sends only on the given interface with a
 * hop limit of 1: run it only inside a lab namespace (scripts/lab/netlab.ts).
 *
 *   node --import tsx test/helpers/attacker.ts --group ADDR [--port 4242] [--iface eth0]
 *        [--rate 3000] [--count 200000] [--duration 60] [--mix random=1,mutated=1,...]
 *
 * Prints "attacker: ready" on stderr once its sockets are set up, then one JSON
 * summary line on stdout when it stops (count or duration reached, SIGTERM, SIGINT).
 */
import { randomBytes, randomFillSync } from 'node:crypto';
import dgram from 'node:dgram';
import { once } from 'node:events';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { ChunkLayout, CHUNK_HEADER_SIZE, NODE_SIZE } from '../../protocol/auth.js';
import { decodeCoseSign1 } from '../../protocol/cose-sign1.js';
import { decodeManifest, releaseIdOf, type Manifest } from '../../protocol/manifest.js';
import {
  AUTH_OVERHEAD, HEADER_SIZE, MAGIC_0, MAGIC_1, MANIFEST_OVERHEAD, PacketType, RELEASE_ID_SIZE, SYMBOL_OVERHEAD, WIRE_VERSION,
} from '../../protocol/packet.js';
import { hex } from '../../protocol/hex.js';
import { multicastSender, runPacedFlood, type FloodTimes } from './paced-flood.js';

export const KINDS = ['random', 'mutated', 'forged-symbol', 'forged-auth', 'replay'] as const;
export type Kind = (typeof KINDS)[number];

export interface AttackerSummary {
  /** Datagrams sent, by kind. */
  sent: Record<Kind, number>;
  total: number;
  /** Mutated datagrams by mutation. */
  mutations: Record<string, number>;
  sendErrors: number;
  lastSendError?: string;
  /** Genuine datagrams captured, by type (1 manifest, 2 symbol, 3 auth, other). */
  captured: Record<string, number>;
  /** Release id (hex) the forgeries targeted, once learned. */
  releaseId?: string;
  /** Unix ms: process start, first and last send, first and last capture, stop. */
  startedAt: number;
  firstSendAt?: number;
  lastSendAt?: number;
  firstCaptureAt?: number;
  lastCaptureAt?: number;
  /** When the manifest was captured and decoded (forged symbols and AUTH possible from then). */
  manifestAt?: number;
  stoppedAt: number;
  stopReason: string;
  /** Datagrams per second over [firstSendAt, lastSendAt]; by kind over [manifestAt, lastSendAt] for forgeries. */
  rate: number;
  forgedSymbolRate: number;
  /** Genuine datagrams and symbols per second seen over [firstCaptureAt, lastCaptureAt]. */
  capturedRate: number;
  capturedSymbolRate: number;
  /** Every ~100 ms while sending: [unix ms, then the cumulative count sent of each kind, in KINDS order]. */
  timeline: number[][];
}

/**
 * Datagrams of each kind sent within [from, to] (unix ms), from a summary's
 * timeline: between the first sample at or after `from` and the last at or
 * before `to`, so `ms` (the span counted) is at most to − from.
 */
export function sentBetween(summary: AttackerSummary, from: number, to: number): { ms: number; sent: Record<Kind, number>; total: number } {
  const a = summary.timeline.find((row) => row[0]! >= from);
  const b = [...summary.timeline].reverse().find((row) => row[0]! <= to);
  const sent = Object.fromEntries(KINDS.map((k) => [k, 0])) as Record<Kind, number>;
  if (!a || !b || b[0]! <= a[0]!) return { ms: 0, sent, total: 0 };
  KINDS.forEach((k, i) => (sent[k] = b[i + 1]! - a[i + 1]!));
  return { ms: b[0]! - a[0]!, sent, total: Object.values(sent).reduce((x, y) => x + y, 0) };
}

interface Target {
  releaseId: Uint8Array;
  manifest: Manifest;
  layout: ChunkLayout;
}

const rnd = (n: number): number => Math.floor(Math.random() * n);

function parseMix(text: string): Array<[Kind, number]> {
  const out: Array<[Kind, number]> = [];
  for (const part of text.split(',').filter(Boolean)) {
    const [name, weight] = part.split('=');
    if (!KINDS.includes(name as Kind)) throw new Error(`--mix: unknown kind "${name}" (kinds: ${KINDS.join(', ')})`);
    const w = weight === undefined ? 1 : Number(weight);
    if (!(w >= 0)) throw new Error(`--mix: bad weight for ${name}`);
    if (w > 0) out.push([name as Kind, w]);
  }
  if (out.length === 0) throw new Error('--mix selects no kind');
  return out;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      group: { type: 'string' },
      port: { type: 'string', default: '4242' },
      iface: { type: 'string', default: 'eth0' },
      rate: { type: 'string', default: '3000' },
      count: { type: 'string', default: '200000' },
      duration: { type: 'string', default: '60' },
      mix: { type: 'string', default: 'random=1,mutated=1,forged-symbol=3,forged-auth=1,replay=1' },
      capture: { type: 'string', default: '1024' },
    },
  });
  if (!values.group || !/^ff[0-9a-f]{2}:[0-9a-f:]*$/i.test(values.group)) throw new Error('--group: an IPv6 multicast address is required');
  const group = values.group;
  const port = Number(values.port);
  const iface = values.iface;
  const rate = Number(values.rate);
  const maxCount = Number(values.count);
  const maxDuration = Number(values.duration) * 1000;
  const mix = parseMix(values.mix);
  const captureSize = Number(values.capture);
  if (!(rate > 0 && rate <= 100_000)) throw new Error('--rate: 1..100000 datagrams per second');
  if (!(maxCount > 0 && maxCount <= 10_000_000)) throw new Error('--count: 1..10000000');
  if (!(maxDuration > 0 && maxDuration <= 600_000)) throw new Error('--duration: up to 600 s');

  const startedAt = Date.now();
  const sent = Object.fromEntries(KINDS.map((k) => [k, 0])) as Record<Kind, number>;
  const mutations: Record<string, number> = {};
  const captured: Record<string, number> = {};
  let capturedSymbols = 0;
  let total = 0;
  let sendErrors = 0;
  let lastSendError: string | undefined;
  let firstCaptureAt: number | undefined;
  let lastCaptureAt: number | undefined;
  let manifestAt: number | undefined;
  let forgedSinceManifest = 0;
  const timeline: number[][] = [];
  const sample = (): void => {
    timeline.push([Date.now(), ...KINDS.map((k) => sent[k])]);
  };

  // What we learn from the genuine stream.
  const ring: Uint8Array[] = [];
  let ringNext = 0;
  const ringByType: Record<number, Uint8Array[]> = { 1: [], 2: [], 3: [] };
  let currentId: Uint8Array | undefined;
  let target: Target | undefined;
  const reassembly = new Map<string, { bytes: Uint8Array; filled: Uint8Array; missing: number }>();

  const onCapture = (msg: Buffer): void => {
    const now = Date.now();
    firstCaptureAt ??= now;
    lastCaptureAt = now;
    const p = new Uint8Array(msg); // a copy
    const type = p.length >= HEADER_SIZE && p[0] === MAGIC_0 && p[1] === MAGIC_1 ? p[3]! : 0;
    captured[String(type)] = (captured[String(type)] ?? 0) + 1;
    if (type === 0) return;
    if (type === PacketType.Symbol) capturedSymbols++;
    if (ring.length < captureSize) ring.push(p);
    else ring[ringNext] = p;
    ringNext = (ringNext + 1) % captureSize;
    const byType = ringByType[type];
    if (byType) {
      if (byType.length < 64) byType.push(p);
      else byType[rnd(64)] = p;
    }
    const id = p.subarray(4, HEADER_SIZE);
    currentId = id;
    if (type !== PacketType.Manifest || p.length <= MANIFEST_OVERHEAD) return;
    const key = hex(id);
    if (target && hex(target.releaseId) === key) return;
    const view = new DataView(p.buffer, p.byteOffset, p.byteLength);
    const totalLength = view.getUint32(HEADER_SIZE);
    const offset = view.getUint32(HEADER_SIZE + 4);
    const bytes = p.subarray(MANIFEST_OVERHEAD);
    if (totalLength > 256 * 1024 || offset + bytes.length > totalLength) return;
    let r = reassembly.get(key);
    if (!r || r.bytes.length !== totalLength) {
      r = { bytes: new Uint8Array(totalLength), filled: new Uint8Array(totalLength), missing: totalLength };
      reassembly.set(key, r);
    }
    for (let i = 0; i < bytes.length; i++) {
      if (!r.filled[offset + i]) {
        r.filled[offset + i] = 1;
        r.bytes[offset + i] = bytes[i]!;
        r.missing--;
      }
    }
    if (r.missing > 0) return;
    reassembly.delete(key);
    if (hex(releaseIdOf(r.bytes)) !== key) return;
    try {
      // Not verified: an attacker has no key, but reads the public manifest all the same.
      const manifest = decodeManifest(decodeCoseSign1(r.bytes).payload);
      target = {
        releaseId: new Uint8Array(id),
        manifest,
        layout: new ChunkLayout(manifest.segments, manifest.auth.chunkSymbols, manifest.auth.coding),
      };
      manifestAt ??= now;
      process.stderr.write(`attacker: learned release ${key}: ${manifest.segments.length} segments, symbol size ${manifest.symbolSize}, ${target.layout.leaves} auth chunks\n`);
    } catch (err) {
      process.stderr.write(`attacker: could not decode manifest ${key}: ${(err as Error).message}\n`);
    }
  };

  // Capture: joined on the interface, like an agent.
  const listener = dgram.createSocket({ type: 'udp6', reuseAddr: true });
  listener.on('message', onCapture);
  const bound = once(listener, 'listening');
  listener.bind({ port, address: `${group}%${iface}` });
  await bound;
  listener.addMembership(group, `::%${iface}`);
  try {
    listener.setRecvBufferSize(8 << 20);
  } catch {
    // Kernel cap.
  }

  // Send: explicitly on the interface, one hop, never to ourselves.
  const sender = await multicastSender(iface, '::', 4 << 20);
  const destination = `${group}%${iface}`;

  const header = (type: number, id: Uint8Array, length: number): Uint8Array => {
    const out = new Uint8Array(length);
    out[0] = MAGIC_0;
    out[1] = MAGIC_1;
    out[2] = WIRE_VERSION;
    out[3] = type;
    out.set(id.subarray(0, RELEASE_ID_SIZE), 4);
    return out;
  };

  const makeRandom = (): Uint8Array => {
    const out = randomBytes(rnd(1501));
    if (out.length >= HEADER_SIZE && Math.random() < 0.25) {
      // Past the magic check: valid header, random type 1..3, random or current release id.
      out[0] = MAGIC_0;
      out[1] = MAGIC_1;
      out[2] = WIRE_VERSION;
      out[3] = 1 + rnd(3);
      if (currentId && Math.random() < 0.5) out.set(currentId, 4);
    }
    return new Uint8Array(out.buffer, out.byteOffset, out.length);
  };

  const mutate = (original: Uint8Array): Uint8Array => {
    let p: Uint8Array = original.slice();
    const view = (): DataView => new DataView(p.buffer, p.byteOffset, p.byteLength);
    const type = p[3];
    const choices = ['bitflip', 'truncate', 'extend', 'magic', 'version', 'type', 'release-id'];
    if (type === PacketType.Symbol) choices.push('segment', 'esi', 'sbn', 'symbol-bytes');
    if (type === PacketType.Manifest) choices.push('manifest-length', 'manifest-offset');
    if (type === PacketType.Auth) choices.push('auth-leaf', 'auth-depth');
    const m = choices[rnd(choices.length)]!;
    mutations[m] = (mutations[m] ?? 0) + 1;
    switch (m) {
      case 'bitflip': {
        const flips = 1 + rnd(8);
        for (let i = 0; i < flips; i++) {
          const at = rnd(p.length);
          p[at]! ^= 1 << rnd(8);
        }
        break;
      }
      case 'truncate':
        p = p.subarray(0, rnd(p.length));
        break;
      case 'extend': {
        const ext = new Uint8Array(Math.min(1500, p.length + 1 + rnd(268)));
        ext.set(p);
        randomFillSync(ext, p.length);
        p = ext;
        break;
      }
      case 'magic':
        p[rnd(2)]! ^= 1 + rnd(255);
        break;
      case 'version':
        p[2] = (WIRE_VERSION + 1 + rnd(255)) & 0xff;
        break;
      case 'type':
        p[3] = [0, 1, 2, 3, 4, 255].filter((t) => t !== type)[rnd(5)]!;
        break;
      case 'release-id':
        p[4 + rnd(RELEASE_ID_SIZE)]! ^= 1 + rnd(255);
        break;
      case 'segment': {
        const segments = target?.manifest.segments.length ?? 4;
        // Half just out of range, half anywhere.
        view().setUint32(HEADER_SIZE, Math.random() < 0.5 ? segments + rnd(4) : rnd(2 ** 32));
        break;
      }
      case 'esi': {
        const v = view();
        const esi = rnd(2 ** 24);
        p[HEADER_SIZE + 5] = esi >>> 16;
        v.setUint16(HEADER_SIZE + 6, esi & 0xffff);
        break;
      }
      case 'sbn':
        p[HEADER_SIZE + 4] = 1 + rnd(255);
        break;
      case 'symbol-bytes':
        for (let i = 0; i < 4; i++) p[SYMBOL_OVERHEAD + rnd(p.length - SYMBOL_OVERHEAD)]! ^= 1 + rnd(255);
        break;
      case 'manifest-length':
        view().setUint32(HEADER_SIZE, Math.random() < 0.5 ? rnd(2 ** 32) : Math.max(0, view().getUint32(HEADER_SIZE) + rnd(64) - 32));
        break;
      case 'manifest-offset':
        view().setUint32(HEADER_SIZE + 4, Math.random() < 0.5 ? rnd(2 ** 32) : rnd(view().getUint32(HEADER_SIZE) + 1));
        break;
      case 'auth-leaf':
        view().setUint32(HEADER_SIZE, Math.random() < 0.5 ? rnd(target?.layout.leaves ?? 64) : rnd(2 ** 32));
        break;
      case 'auth-depth':
        p[HEADER_SIZE + 4] = rnd(256);
        break;
    }
    return p;
  };

  const forgeSymbol = (t: Target): Uint8Array => {
    const m = t.manifest;
    const seg = m.segments[rnd(m.segments.length)]!;
    const out = header(PacketType.Symbol, t.releaseId, SYMBOL_OVERHEAD + m.symbolSize);
    const v = new DataView(out.buffer);
    v.setUint32(HEADER_SIZE, seg.index);
    const esi = rnd(seg.published);
    out[HEADER_SIZE + 4] = 0;
    out[HEADER_SIZE + 5] = esi >>> 16;
    v.setUint16(HEADER_SIZE + 6, esi & 0xffff);
    randomFillSync(out, SYMBOL_OVERHEAD);
    return out;
  };

  const forgeAuth = (t: Target): Uint8Array => {
    const auth = t.manifest.auth;
    const leaf = rnd(t.layout.chunkLeaves);
    const ref = t.layout.chunk(leaf);
    const depth = t.layout.depth;
    const bodyStart = AUTH_OVERHEAD + depth * NODE_SIZE;
    const out = header(PacketType.Auth, t.releaseId, bodyStart + CHUNK_HEADER_SIZE + ref.count * auth.digestLength);
    const v = new DataView(out.buffer);
    v.setUint32(HEADER_SIZE, leaf);
    out[HEADER_SIZE + 4] = depth;
    // Path: random, or (when we hold the genuine AUTH for this leaf) the genuine path.
    randomFillSync(out, AUTH_OVERHEAD, depth * NODE_SIZE);
    const genuine = ringByType[PacketType.Auth]!.find((g) => g.length === out.length && new DataView(g.buffer, g.byteOffset).getUint32(HEADER_SIZE) === leaf);
    if (genuine && Math.random() < 0.5) out.set(genuine.subarray(AUTH_OVERHEAD, bodyStart), AUTH_OVERHEAD);
    v.setUint32(bodyStart, ref.segment);
    v.setUint32(bodyStart + 4, ref.firstEsi);
    v.setUint16(bodyStart + 8, ref.count);
    randomFillSync(out, bodyStart + CHUNK_HEADER_SIZE);
    return out;
  };

  const pickKind = (): Kind => {
    const available = mix.filter(([k]) => {
      if (k === 'mutated' || k === 'replay') return ring.length > 0;
      if (k === 'forged-symbol' || k === 'forged-auth') return target !== undefined;
      return true;
    });
    if (available.length === 0) return 'random';
    let x = Math.random() * available.reduce((s, [, w]) => s + w, 0);
    for (const [k, w] of available) if ((x -= w) < 0) return k;
    return available[available.length - 1]![0];
  };

  const make = (kind: Kind): Uint8Array => {
    switch (kind) {
      case 'random': return makeRandom();
      case 'mutated': return mutate(ring[rnd(ring.length)]!);
      case 'replay': return ring[rnd(ring.length)]!;
      case 'forged-symbol': return forgeSymbol(target!);
      case 'forged-auth': return forgeAuth(target!);
    }
  };

  const onSent = (err: Error | null): void => {
    if (err) {
      sendErrors++;
      lastSendError = err.message;
    }
  };

  const summary = (reason: string, { firstSendAt, lastSendAt }: FloodTimes): AttackerSummary => {
    sample();
    const stoppedAt = Date.now();
    const span = (a?: number, b?: number): number => (a !== undefined && b !== undefined && b > a ? (b - a) / 1000 : 0);
    const sendSpan = span(firstSendAt, lastSendAt);
    const forgeSpan = span(manifestAt, lastSendAt);
    const captureSpan = span(firstCaptureAt, lastCaptureAt);
    return {
      sent, total, mutations, sendErrors, ...(lastSendError ? { lastSendError } : {}), captured,
      ...(target ? { releaseId: hex(target.releaseId) } : {}),
      startedAt,
      ...(firstSendAt !== undefined ? { firstSendAt } : {}),
      ...(lastSendAt !== undefined ? { lastSendAt } : {}),
      ...(firstCaptureAt !== undefined ? { firstCaptureAt } : {}),
      ...(lastCaptureAt !== undefined ? { lastCaptureAt } : {}),
      ...(manifestAt !== undefined ? { manifestAt } : {}),
      stoppedAt, stopReason: reason,
      rate: sendSpan ? Math.round(total / sendSpan) : 0,
      forgedSymbolRate: forgeSpan ? Math.round(forgedSinceManifest / forgeSpan) : 0,
      capturedRate: captureSpan ? Math.round(Object.values(captured).reduce((a, b) => a + b, 0) / captureSpan) : 0,
      capturedSymbolRate: captureSpan ? Math.round(capturedSymbols / captureSpan) : 0,
      timeline,
    };
  };

  process.stderr.write(`attacker: ready on ${destination} port ${port}, ${rate}/s, at most ${maxCount} datagrams in ${maxDuration / 1000} s\n`);
  runPacedFlood({
    rate, maxCount, maxMs: maxDuration, burst: 256, intervalMs: 1,
    onTick: () => {
      if (timeline.length === 0 || Date.now() - timeline[timeline.length - 1]![0]! >= 100) sample();
    },
    sendOne: () => {
      const kind = pickKind();
      sender.send(make(kind), port, destination, onSent);
      sent[kind]++;
      total++;
      if (kind === 'forged-symbol') forgedSinceManifest++;
    },
    summary,
    close: () => {
      listener.close();
      sender.close();
    },
  });
}

// Runs only as a program; tests import the summary type and sentBetween().
if (process.argv[1] !== undefined && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().catch((err: unknown) => {
    process.stderr.write(`attacker: ${(err as Error).stack ?? String(err)}\n`);
    process.exit(1);
  });
}
