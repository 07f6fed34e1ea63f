/**
 * `fwcast`: the publisher's command line. keygen → sign → inspect → publish.
 */
import { escapeUnsafe } from '../protocol/quote.js';
import { readFileSync, statSync } from 'node:fs';
import { Command, Option } from 'commander';
import { createConsoleLogger } from '../cli/console-log.js';
import { endQuietlyOnClosedStdout, UsageError } from '../cli/fail.js';
import { commonSettings, exitCodesInHelp, runProgram } from '../cli/program.js';
import { EXIT } from '../cli/exit-codes.js';
import { publicKeyPath, readTrustedKey, writeKeyPair, writePublicKey } from '../cli/key-files.js';
import { formatRate, parseDuration, parseRate } from '../cli/units.js';
import { DEFAULT_CHUNK_CODING, type ChunkCoding } from '../protocol/auth.js';
import { channelGroup, DEFAULT_PORT, modelChannelName } from '../protocol/channel.js';
import { addCountersignature, decodeCoseSign1, verifyCoseSign1 } from '../protocol/cose-sign1.js';
import * as ed25519 from '../protocol/ed25519.js';
import { DEFAULT_DATAGRAM_SIZE, DEFAULT_LIMITS, DEFAULT_SEGMENT_SIZE, MAX_SEGMENT_SIZE } from '../protocol/limits.js';
import { maxDataPieces } from '../protocol/reed-solomon.js';
import { checkModelName, decodeManifest, releaseIdOf, type Manifest } from '../protocol/manifest.js';
import { ChannelTransport } from '../channels/channel-transport.js';
import { createTransport, mqttSummary } from '../transport/create.js';
import { checkNetworkInterface } from '../transport/network-interface.js';
import type { TransportStats } from '../transport/transport.js';
import { ExpiredManifestError } from '../protocol/errors.js';
import { Carousel } from '../carousel/carousel.js';
import { channelCounts, IPV6_UDP_HEADERS, Publisher, type ChannelStats, type PublisherEntry } from '../carousel/publisher.js';
import { HaltCarousel } from '../carousel/halt-carousel.js';
import { deltaCarousels, deltaSummary, deltasFromFiles } from './delta-build.js';
import { buildReleaseParallel, DEFAULT_REPAIR_PERCENT, readReleaseFile, readReleaseManifest, writeReleaseFile } from './release.js';
import { symbolSizeFor } from '../protocol/release.js';
import { CodecPool } from './codec-pool.js';
import { symbolSetFor } from './symbol-cache.js';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { addServeCommands } from './serve/serve-command.js';
import { addReleasesCommand } from './serve/releases-command.js';
import { hex } from '../protocol/hex.js';
import { addPkcs11Options, addSignerOptions, openSigner, pkcs11Ref, type SignerFlags } from './signer/signer-options.js';
import { generatePkcs11Key } from './signer/pkcs11-signer.js';
import type { Logger } from '../protocol/log.js';
import { checkChainAuthorizes, collectRoots, readRootChainFiles } from '../cli/root-files.js';
import { decodeRootChain, decodeSignedRoot } from '../protocol/root.js';
import { addRootCommand } from './root-command.js';
import { addListenerOptions, followListeners, openListeners } from './listener-options.js';
import { addHaltCommand, addRolloutOptions, haltSummary, looksLikeHalt, readHaltFile, rolloutPolicy, rolloutSummary, type RolloutFlags } from './rollout-command.js';
import { encodeHaltPacket } from '../protocol/packet.js';
import { encryptForRecipients, encryptionSummary } from './encrypt-release.js';
import { collectKeyFiles, readRecipientKeys, writeDeviceKeyPair, writeGroupKey } from '../cli/encryption-key-files.js';
import { MAX_ENCRYPTION_CHUNK, MIN_ENCRYPTION_CHUNK } from '../protocol/encryption.js';

function integer(name: string, min: number, max = Number.MAX_SAFE_INTEGER) {
  return (value: string): number => {
    const n = Number(value);
    if (!/^\d+$/.test(value.trim()) || !Number.isSafeInteger(n) || n < min || n > max) throw new UsageError(`${name} must be an integer in ${min}..${max}, got "${value}"`);
    return n;
  };
}

/** Largest --datagram-size whose symbols receivers accept (their default maxSymbolSize). */
const MAX_DATAGRAM_SIZE = (() => {
  let size = DEFAULT_DATAGRAM_SIZE;
  while (symbolSizeFor(size + 1) <= DEFAULT_LIMITS.maxSymbolSize) size++;
  return size;
})();

/** A file argument that must be a readable regular file: one line naming it, not ENOENT. */
function readableFile(what: string, path: string): string {
  let stat;
  try {
    stat = statSync(path);
  } catch (err) {
    throw new UsageError(`${what} ${path}: ${(err as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : `cannot read it (${(err as NodeJS.ErrnoException).code})`}`);
  }
  if (!stat.isFile()) throw new UsageError(`${what} ${path}: not a file${stat.isDirectory() ? ' (a directory)' : ''}`);
  return path;
}

/** `--expires`: a positive duration, in whole seconds (the manifest's unit). */
function expiresSeconds(value: string): number {
  let ms: number;
  try {
    ms = parseDuration(value);
  } catch (err) {
    throw new UsageError(`--expires: ${(err as Error).message}`);
  }
  if (!(ms >= 1000)) throw new UsageError(`--expires must be at least 1s, got "${value}"`);
  return Math.ceil(ms / 1000);
}

/** `--rate`: within RATE_BOUNDS, else a usage error naming the flag. */
function rateFlag(name: string) {
  return (value: string): number => {
    try {
      return parseRate(value);
    } catch (err) {
      throw new UsageError(`${name}: ${(err as Error).message}`);
    }
  };
}

/** `channel MODEL`: the rule `sign` and every agent apply. */
function modelArgument(model: string): string {
  try {
    return checkModelName(model);
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
}

/** `--auth-coding`: "G:R" (largest group of chunks, parity pieces per chunk) or "off". */
function chunkCoding(value: string): ChunkCoding | false {
  if (value.trim() === 'off') return false;
  const m = /^\s*(\d+):(\d+)\s*$/.exec(value);
  const g = Number(m?.[1]);
  const r = Number(m?.[2]);
  if (!m || g < 1 || r < 1 || g > maxDataPieces(r)) {
    throw new UsageError(`--auth-coding must be "off" or G:R with G ≥ 1 chunks in the largest group, R ≥ 1 parity pieces per chunk and (R + 1)·G ≤ 256, got "${value}"`);
  }
  return { groupChunks: g, parityPerChunk: r };
}

function manifestSummary(m: Manifest, releaseId: Uint8Array, kid: Uint8Array) {
  return {
    releaseId: hex(releaseId),
    model: m.model,
    version: m.version,
    seq: m.seq,
    created: new Date(m.created * 1000).toISOString(),
    expires: m.expires !== undefined ? new Date(m.expires * 1000).toISOString() : null,
    imageSize: m.imageSize,
    sha256: hex(m.imageSha256),
    keyId: hex(kid),
    channel: modelChannelName(m.model),
    group: channelGroup(modelChannelName(m.model)),
    fec: { scheme: 'RaptorQ (RFC 6330)', symbolSize: m.symbolSize, segmentSize: m.segmentSize, segments: m.segments.length, repairPercent: m.repairPercent },
    // Each segment's RaptorQ object as a decoder needs it: OTI fields as protocol/oti.ts names them (SPEC §6.2).
    segments: m.segments.map((s) => ({ index: s.index, offset: s.offset, oti: { ...s.oti }, sourceSymbols: s.sourceSymbols, published: s.published, sha256: hex(s.sha256) })),
    auth: { digestLength: m.auth.digestLength, chunkSymbols: m.auth.chunkSymbols, coding: m.auth.coding ? `${m.auth.coding.groupChunks}:${m.auth.coding.parityPerChunk}` : 'off' },
    rollout: rolloutSummary(m.rollout),
    ...(m.encryption ? { encryption: encryptionSummary(m.encryption) } : {}),
    ...(m.deltas ? { deltas: deltaSummary(m) } : {}),
  };
}

export function buildProgram(json = false): Command {
  const program = commonSettings(new Command('fwcast'), json)
    .description('Sign firmware releases and multicast them to device fleets (RaptorQ over IPv6 multicast).');

  addRootCommand(program);

  addPkcs11Options(program.command('keygen')
    .description('create an Ed25519 publisher key pair: DIR/publisher.key (mode 0600) and DIR/publisher.pub; with --pkcs11-module, inside the token (non-extractable) and only DIR/publisher.pub')
    .requiredOption('--out <dir>', 'directory for the key files')
    .option('--force', 'replace existing key files')
    .addOption(new Option('--device', 'instead: an X25519 device key pair for confidential firmware, DIR/NAME.key (stays on the device) and DIR/NAME.pub (for `sign --encrypt-for`)').conflicts('group'))
    .option('--group', 'instead: a group key for confidential firmware, DIR/NAME.key, for the publisher and every device of the group')
    .option('--name <name>', 'file name of --device or --group keys, without extension (default: device or group)'))
    .action(async (opts: { out: string; force?: boolean; device?: boolean; group?: boolean; name?: string } & SignerFlags) => {
      if (opts.device) {
        const r = writeDeviceKeyPair(opts.out, opts.name ?? 'device', opts.force ?? false);
        process.stdout.write(`private key: ${r.privatePath} (stays on the device: its agent's --decryption-key)\npublic key:  ${r.publicPath} (give it to the publisher: sign --encrypt-for)\nkey id:      ${r.kid}\n`);
        return;
      }
      if (opts.group) {
        const r = writeGroupKey(opts.out, opts.name ?? 'group', opts.force ?? false);
        process.stdout.write(`group key:   ${r.path} (secret: for sign --encrypt-for, and every device of the group's --decryption-key)\nkey id:      ${r.kid}\n`);
        return;
      }
      const ref = pkcs11Ref(opts);
      if (ref) {
        publicKeyPath(opts.out, opts.force ?? false);
        const key = await generatePkcs11Key(ref);
        const r = writePublicKey(opts.out, key.publicKey, opts.force ?? false);
        process.stdout.write(`private key: in PKCS#11 token "${ref.token}" as "${ref.key}" (sensitive: ${key.sensitive}, extractable: ${key.extractable})\npublic key:  ${r.publicPath} (give it to agents)\nkey id:      ${r.kid}\n`);
        return;
      }
      const r = await writeKeyPair(opts.out, opts.force ?? false);
      process.stdout.write(`private key: ${r.privatePath} (keep it secret, e.g. a CI secret)\npublic key:  ${r.publicPath} (give it to agents)\nkey id:      ${r.kid}\n`);
    });

  addRolloutOptions(addSignerOptions(program.command('sign')
    .description('sign an image into a release file (manifest + image), e.g. as a CI artifact; the key in a file (--key), an HSM (--pkcs11-*) or behind a command (--signer-command)')
    .argument('<image>', 'firmware image file'))
    .requiredOption('--model <model>', 'device model the image is for (its channel is fw/<model>; case-sensitive)', modelArgument)
    .requiredOption('--version <version>', 'human-readable version, e.g. 1.4.2')
    .requiredOption('--seq <n>', 'sequence number; agents only install a higher one than they have', integer('--seq', 0))
    .requiredOption('--out <file>', 'release file to write')
    .option('--expires <duration>', 'reject the release after this long, e.g. 30d', expiresSeconds)
    .option('--segment-size <bytes>', 'largest segment (independent RaptorQ object), rounded up to whole symbols', integer('--segment-size', 1024, MAX_SEGMENT_SIZE), DEFAULT_SEGMENT_SIZE)
    .option('--repair <percent>', 'repair symbols published per segment, percent of its source symbols', integer('--repair', 0, 10000), DEFAULT_REPAIR_PERCENT)
    .option('--datagram-size <bytes>', 'UDP payload size of symbol datagrams', integer('--datagram-size', 128, MAX_DATAGRAM_SIZE), DEFAULT_DATAGRAM_SIZE)
    .addOption(new Option('--auth-coding <G:R|off>', 'AUTH chunks erasure-coded in groups of up to G chunks (never across a round) with R parity pieces per chunk')
      .argParser(chunkCoding).default(DEFAULT_CHUNK_CODING, `${DEFAULT_CHUNK_CODING.groupChunks}:${DEFAULT_CHUNK_CODING.parityPerChunk}`))
    .option('--root <file>', 'a signed root document (`fwcast root`) that delegates the signing key, carried inside the release file; repeat for the chain, oldest first', collectRoots)
    .option('--encrypt-for <key>', 'confidential firmware: encrypt for a group key file or a device public key (`keygen --device`), or every *.pub/*.key in a directory (repeatable)', collectKeyFiles)
    .option('--encryption-chunk <bytes>', 'plaintext bytes per AES-GCM chunk of an encrypted image', integer('--encryption-chunk', MIN_ENCRYPTION_CHUNK, MAX_ENCRYPTION_CHUNK))
    .option('--delta-from <files...>', 'also make deltas from these earlier release files (agents holding one take its delta, on its own sub-channel)')
    .option('--json', 'print the release made as JSON'))
    .action(async (imagePath: string, opts: SignerFlags & RolloutFlags & { root?: string[]; model: string; version: string; seq: number; out: string; expires?: number; segmentSize: number; repair: number; datagramSize: number; authCoding: ChunkCoding | false; encryptFor?: string[]; encryptionChunk?: number; deltaFrom?: string[]; json?: boolean }) => {
      // A delta of ciphertext against ciphertext is as large as the image: the two are not combined (yet).
      if (opts.deltaFrom && opts.encryptFor) throw new UsageError('--delta-from and --encrypt-for cannot be combined: a delta between two encrypted images saves nothing');
      readableFile('IMAGE', imagePath);
      let image: Uint8Array = new Uint8Array(readFileSync(imagePath));
      const rootChain = opts.root ? readRootChainFiles(opts.root) : undefined;
      const encrypted = opts.encryptFor ? encryptForRecipients(image, readRecipientKeys(opts.encryptFor), opts.encryptionChunk) : undefined;
      if (encrypted) image = encrypted.ciphertext;
      // Before encoding, which may take a while: a wrong PIN or key label fails at once.
      const signer = await openSigner(opts);
      const created = Math.floor(Date.now() / 1000);
      const rollout = rolloutPolicy(opts, created);
      const pool = new CodecPool();
      const content = {
        image, model: opts.model, version: opts.version, seq: opts.seq, created,
        ...(opts.expires ? { expires: created + opts.expires } : {}),
        segmentSize: opts.segmentSize, repairPercent: opts.repair, datagramSize: opts.datagramSize,
        chunkCoding: opts.authCoding, ...(rollout ? { rollout } : {}), ...(encrypted ? { encryption: encrypted.block } : {}),
      };
      const release = await (async () => {
        const deltas = await deltasFromFiles(opts.deltaFrom ?? [], content, pool);
        const built = await buildReleaseParallel({ ...content, signer, ...(deltas.length > 0 ? { deltas: deltas.map((d) => d.entry) } : {}) }, pool);
        return deltas.length > 0 ? { ...built, deltaObjects: deltas.map((d) => d.object) } : built;
      })().finally(() => Promise.all([pool.close(), signer.close()]));
      // A chain whose newest root would not let this key sign this model makes a release every agent refuses.
      const pending = rootChain ? checkChainAuthorizes(rootChain, release.signed, created).pending : undefined;
      writeReleaseFile(opts.out, { ...release, ...(rootChain ? { rootChain } : {}) });
      if (pending) process.stderr.write(`fwcast sign: note: ${pending}: co-sign it with \`fwcast cosign ${opts.out} --key …\` before publishing\n`);
      const m = release.manifest;
      if (opts.json) {
        process.stdout.write(JSON.stringify({ ok: true, file: opts.out, ...manifestSummary(m, release.releaseId, decodeCoseSign1(release.signed).kid) }) + '\n');
        return;
      }
      process.stdout.write(`${opts.out}: ${m.model} ${m.version} seq ${m.seq}, ${m.imageSize} bytes, sha256 ${hex(m.imageSha256)}, release ${hex(release.releaseId)}\n`);
    });

  addSignerOptions(program.command('cosign')
    .description('add a co-signature to a release file, for a root delegation whose threshold needs several keys; each key holder runs it in turn (the release id changes)')
    .argument('<file>', 'release file from `fwcast sign` (or co-signed already)'))
    .requiredOption('--out <file>', 'release file to write (may be the same file)')
    .option('--json', 'print the co-signed release as JSON')
    .action(async (file: string, opts: SignerFlags & { out: string; json?: boolean }) => {
      readableFile('FILE', file);
      const release = readReleaseFile(file);
      const signer = await openSigner(opts);
      const signed = await addCountersignature(release.signed, signer).finally(() => signer.close());
      const now = Math.floor(Date.now() / 1000);
      const pending = release.rootChain ? checkChainAuthorizes(release.rootChain, signed, now).pending : undefined;
      writeReleaseFile(opts.out, { signed, image: release.image, ...(release.rootChain ? { rootChain: release.rootChain } : {}) });
      const cose = decodeCoseSign1(signed);
      const summary = { ...manifestSummary(release.manifest, releaseIdOf(signed), cose.kid), cosigners: cose.countersignatures.map((c) => hex(c.kid)) };
      if (pending) process.stderr.write(`fwcast cosign: note: ${pending}\n`);
      if (opts.json) {
        process.stdout.write(JSON.stringify({ ok: true, file: opts.out, ...summary, ...(release.rootChain ? { authorized: !pending } : {}) }) + '\n');
        return;
      }
      process.stdout.write(`${opts.out}: co-signed by ${hex(signer.kid)}; ${1 + cose.countersignatures.length} signatures; release ${hex(releaseIdOf(signed))}\n`);
    });

  program.command('inspect')
    .description('show what a release file (or a halt file) contains; with --key, also check its signature')
    .argument('<file>', 'release file, or halt file from `fwcast halt`')
    .option('--key <pub>', 'publisher public key to verify against')
    .option('--json', 'print JSON')
    .action(async (file: string, opts: { key?: string; json?: boolean }) => {
      readableFile('FILE', file);
      await ed25519.ready();
      if (looksLikeHalt(file)) return inspectHalt(file, opts);
      const signed = readReleaseManifest(file);
      const cose = decodeCoseSign1(signed);
      const summary: Record<string, unknown> = manifestSummary(decodeManifest(cose.payload), releaseIdOf(signed), cose.kid);
      if (cose.countersignatures.length > 0) summary.cosigners = cose.countersignatures.map((c) => hex(c.kid));
      if (opts.key) {
        const key = readTrustedKey(opts.key);
        summary.signature = Buffer.compare(key.kid, cose.kid) === 0 && verifyCoseSign1(cose, key.publicKey) ? 'valid' : 'INVALID';
      }
      const { rootChain } = readReleaseFile(file);
      if (rootChain) summary.rootChain = decodeRootChain(rootChain).map((r) => decodeSignedRoot(r).root.version);
      summary.image = 'matches manifest';
      if (opts.json) {
        process.stdout.write(JSON.stringify(summary) + '\n');
      } else {
        for (const [k, v] of Object.entries(summary)) {
          if (k === 'segments') for (const { index, ...seg } of v as Array<{ index: number }>) process.stdout.write(`${`segment ${index}`.padEnd(11)} ${JSON.stringify(seg)}\n`);
          // A release file is not trusted yet: its strings reach the terminal escaped.
          else if (v === null) process.stdout.write(`${k.padEnd(11)} ${k === 'rollout' ? 'none: every device installs at once' : 'never'}\n`);
          else process.stdout.write(`${k.padEnd(11)} ${escapeUnsafe(typeof v === 'object' ? JSON.stringify(v) : String(v))}\n`);
        }
      }
      if (summary.signature === 'INVALID') process.exitCode = EXIT.refused;
    });

  program.command('channel')
    .description("show a model's channel name and IPv6 multicast group (Librecast-compatible)")
    .argument('<model>', 'device model (case-sensitive: rpi4 and RPi4 are two channels)', modelArgument)
    .option('--json', 'print JSON')
    .action((model: string, opts: { json?: boolean }) => {
      const name = modelChannelName(model);
      const out = { model, channel: name, group: channelGroup(name), port: DEFAULT_PORT };
      process.stdout.write(opts.json ? JSON.stringify(out) + '\n' : `${out.channel} [${out.group}]:${out.port}\n`);
    });

  program.command('publish')
    .description("carousel release files, each on its model's channel, until stopped")
    .argument('[files...]', 'release files from `fwcast sign`')
    .option('--iface <name>', 'network interface to multicast on (optional with --mqtt; both may be given)')
    .option('--rate <rate>', 'total rate on the wire, 10kbit..100gbit, e.g. 20mbit', rateFlag('--rate'), parseRate('20mbit'))
    .addOption(new Option('--duration <duration>', 'stop after this long, e.g. 10m').conflicts('rounds'))
    .addOption(new Option('--rounds <n>', 'stop after every channel sent this many rounds').argParser(integer('--rounds', 1)))
    .option('--port <port>', 'UDP port', integer('--port', 1, 65535), DEFAULT_PORT)
    .option('--hops <n>', 'multicast hop limit', integer('--hops', 1, 255), 8)
    .option('--group <model=address...>', 'override the group of a model, e.g. rpi4=ff15::42')
    .option('--mqtt <url>', 'also (or instead of --iface) publish through an MQTT broker, e.g. mqtts://broker:8883 (topic fwcast/<channel>)')
    .option('--mqtt-ca <file>', 'CA certificate (PEM) for mqtts')
    .option('--mqtt-cert <file>', 'client certificate (PEM) for mqtts')
    .option('--mqtt-key <file>', 'client private key (PEM) for mqtts')
    .option('--mqtt-username <user>', 'MQTT username')
    .option('--mqtt-password-file <file>', 'file holding the MQTT password')
    .option('--mqtt-topic-prefix <prefix>', 'topic prefix (default fwcast)')
    .option('--cache <dir>', 'keep encoded symbols here, so a restart does not encode again', defaultCacheDir())
    .option('--no-cache', 'encode at every start')
    .option('--quiet', 'no progress display')
    .option('--force-expired', 'send a release whose expiry has passed (agents refuse it; for tests of that refusal)')
    .option('--root <file>', 'a signed root document (`fwcast root`) to carry on every channel instead of the chain each release file carries; repeat for the chain, oldest first', collectRoots)
    .option('--halt <file>', 'a halt from `fwcast halt` to carry on its model\'s channel, with that model\'s release or alone (repeatable)', (v: string, p: string[] = []) => [...p, v])
    .addOption(new Option('--log-format <format>', 'log line format').choices(['text', 'json']).default('text'))
    .option('--json', 'at exit, print a JSON summary on stdout: per channel, rounds, datagrams and bytes sent')
    .action(async (files: string[], opts: { halt?: string[]; root?: string[]; json?: boolean; logFormat: 'text' | 'json'; cache: string | false; iface?: string; forceExpired?: boolean; mqtt?: string; mqttCa?: string; mqttCert?: string; mqttKey?: string; mqttUsername?: string; mqttPasswordFile?: string; mqttTopicPrefix?: string; rate: number; duration?: string; rounds?: number; port: number; hops: number; group?: string[]; quiet?: boolean }) => {
      if (!opts.iface && !opts.mqtt) throw new UsageError('publish needs --iface (IPv6 multicast), --mqtt (a broker), or both');
      // Before encoding, which may take a while: a mistyped name would send by the default route.
      if (opts.iface) checkNetworkInterface(opts.iface, '--iface');
      const listenerSource = openListeners(opts);
      for (const file of files) readableFile('FILE', file);
      if (files.length === 0 && !opts.halt) throw new UsageError('publish needs release files, --halt files, or both');
      const rate = opts.rate;
      const overrides = new Map((opts.group ?? []).map((g) => {
        const at = g.indexOf('=');
        if (at < 1) throw new UsageError(`--group expects model=address, got "${g}"`);
        return [g.slice(0, at), g.slice(at + 1)] as const;
      }));
      const live = !opts.quiet && process.stderr.isTTY && opts.logFormat === 'text';
      const log = createConsoleLogger({ format: opts.logFormat, beforeWrite: () => live && clearLine() }).child('publish');
      const rootChain = opts.root ? readRootChainFiles(opts.root) : undefined;
      const halts = new Map<string, Uint8Array[]>();
      for (const file of opts.halt ?? []) {
        const { signed, halt } = readHaltFile(readableFile('--halt', file));
        halts.set(halt.model, [...(halts.get(halt.model) ?? []), encodeHaltPacket({ releaseId: halt.releaseId, signed })]);
        log.event('publish.halt-loaded', { file, model: halt.model, release: hex(halt.releaseId), channel: modelChannelName(halt.model) }, `${file}: halt of ${halt.model} release ${hex(halt.releaseId)}`);
      }
      const pool = new CodecPool();
      const entries: PublisherEntry[] = [];
      let maxDatagramSize = DEFAULT_DATAGRAM_SIZE;
      try {
        for (const file of files) {
          const release = readReleaseFile(file);
          if (!opts.forceExpired) refuseExpired(file, release.manifest);
          const name = modelChannelName(release.manifest.model);
          const channel = { name, group: overrides.get(release.manifest.model) ?? channelGroup(name), port: opts.port };
          const started = performance.now();
          const { set, source } = await symbolSetFor(release, { pool, ...(opts.cache ? { dir: opts.cache } : {}) });
          const m = release.manifest;
          const ms = Math.round(performance.now() - started);
          log.event('publish.release-loaded', {
            file, model: m.model, version: m.version, seq: m.seq, release: hex(release.releaseId), channel: name, group: channel.group, port: channel.port, symbols: source, ms,
          }, `${file}: ${m.model} ${m.version} seq ${m.seq} on ${name} [${channel.group}]:${channel.port}; symbols ${source === 'cache' ? 'from cache' : 'encoded'} in ${ms} ms`);
          const carried = rootChain ?? release.rootChain;
          entries.push({ channel, carousel: new Carousel({ ...release, symbolSet: set, ...(carried ? { rootChain: carried } : {}), ...(halts.has(m.model) ? { halts: halts.get(m.model)! } : {}) }) });
          entries.push(...deltaCarousels(release, opts.port, carried ? { rootChain: carried } : {}));
          maxDatagramSize = Math.max(maxDatagramSize, entries.at(-1)!.carousel.largestDatagram);
        }
        // Halts of models with no release here go out alone.
        for (const [model, datagrams] of halts) {
          const name = modelChannelName(model);
          if (entries.some((e) => e.channel.name === name)) continue;
          entries.push({ channel: { name, group: overrides.get(model) ?? channelGroup(name), port: opts.port }, carousel: new HaltCarousel(datagrams) });
        }
      } finally {
        await pool.close();
      }
      const mqtt = opts.mqtt ? { url: opts.mqtt, ca: opts.mqttCa, cert: opts.mqttCert, key: opts.mqttKey, username: opts.mqttUsername, passwordFile: opts.mqttPasswordFile, topicPrefix: opts.mqttTopicPrefix } : undefined;
      // Channel sockets through the messaging library, the one implementation of them.
      const transport = new ChannelTransport({ transport: createTransport({ iface: opts.iface, hops: opts.hops, mqtt, maxDatagramSize }, log.child('mqtt'), '--mqtt') });
      const abort = new AbortController();
      const stop = (): void => abort.abort();
      process.once('SIGINT', stop);
      process.once('SIGTERM', stop);
      let lastLine = 0;
      const publisher = new Publisher({ transport, rate, ...(opts.rounds !== undefined ? { rounds: opts.rounds } : {}) });
      for (const entry of entries) publisher.set(entry);
      const listeners = followListeners(listenerSource, opts, publisher, entries.map((e) => e.channel), log);
      log.event('publish.started', { channels: entries.length, rate, transport: transport.description },
        `sending ${entries.length} channel(s) at ${formatRate(rate)} via ${transport.description}`);
      const rounds = new RoundLog(log);
      const sendingSince = performance.now();
      await publisher.run({
        signal: abort.signal,
        ...(opts.duration ? { durationMs: parseDuration(opts.duration) } : {}),
        onTick: (ms) => {
          rounds.update(publisher.stats(), ms);
          if (opts.quiet) return;
          const line = progressLine(publisher.stats(), ms);
          if (live) process.stderr.write(`\r\x1b[K${line}`);
          else if (ms - lastLine >= 5000) {
            lastLine = ms;
            log.event('publish.progress', { seconds: Number((ms / 1000).toFixed(1)), bitsPerSecond: Math.round(sentBitsPerSecond(publisher.stats(), ms)) }, line);
          }
        },
      });
      if (live) process.stderr.write('\n');
      await listeners?.stop();
      await transport.close();
      const seconds = (performance.now() - sendingSince) / 1000;
      for (const s of publisher.stats()) {
        const perSecond = Math.round(s.packets / seconds);
        log.event('carousel.stopped', {
          ...channelCounts(s), seconds: Number(seconds.toFixed(2)), datagramsPerSecond: perSecond,
        }, `${s.channel}: ${s.rounds} rounds, ${s.packets} datagrams, ${s.bytes} bytes in ${seconds.toFixed(2)} s (${perSecond} datagrams/s)`);
      }
      const sent = transport.stats();
      if (sent.sendErrors > 0) {
        const last = sent.lastSendError?.message;
        log.event('publish.send-errors', { count: sent.sendErrors, detail: last }, `${sent.sendErrors} datagrams could not be sent (last error: ${last})`);
      }
      for (const path of undeliveredPaths(sent)) {
        const last = path.lastSendError?.message;
        log.event('publish.undelivered', { transport: path.description, datagrams: path.sent + path.sendErrors, ...(last ? { detail: last } : {}) },
          `nothing could be delivered via ${path.description}: every datagram failed${last ? ` (last error: ${last})` : ''}`);
        process.exitCode = 1;
      }
      if (opts.json) {
        process.stdout.write(JSON.stringify({
          ok: process.exitCode === undefined || process.exitCode === 0, seconds: Number(seconds.toFixed(2)), rate,
          channels: publisher.stats().map((s) => channelCounts(s)), sendErrors: sent.sendErrors,
        }) + '\n');
      }
      const mq = mqttSummary(transport);
      if (mq) {
        log.child('mqtt').event('mqtt.stats', { ...mq },
          `mqtt: ${mq.published} published, ${mq.droppedOffline} dropped while disconnected, ${mq.droppedBackpressure} dropped on a full write buffer, ${mq.reconnects} reconnects`);
      }
      process.removeListener('SIGINT', stop);
      process.removeListener('SIGTERM', stop);
    });

  addListenerOptions(program.commands.find((c) => c.name() === 'publish')!);
  addHaltCommand(program);
  addServeCommands(program);
  addReleasesCommand(program);
  exitCodesInHelp(program);
  return program;
}

/** `fwcast inspect` of a halt file. */
function inspectHalt(file: string, opts: { key?: string; json?: boolean }): void {
  const { signed, halt, kid } = readHaltFile(file);
  const summary: Record<string, unknown> = haltSummary(halt, kid);
  if (opts.key) {
    const key = readTrustedKey(opts.key);
    summary.signature = Buffer.compare(key.kid, kid) === 0 && verifyCoseSign1(decodeCoseSign1(signed), key.publicKey) ? 'valid' : 'INVALID';
  }
  if (opts.json) process.stdout.write(JSON.stringify(summary) + '\n');
  else for (const [k, v] of Object.entries(summary)) process.stdout.write(`${k.padEnd(11)} ${escapeUnsafe(String(v))}\n`);
  if (summary.signature === 'INVALID') process.exitCode = EXIT.refused;
}

/** An expired release is one every agent refuses: sending it is almost always a mistake. */
function refuseExpired(file: string, m: Manifest): void {
  if (m.expires === undefined || m.expires * 1000 > Date.now()) return;
  throw new ExpiredManifestError(`${file}: ${m.model} ${m.version} (seq ${m.seq}) expired at ${new Date(m.expires * 1000).toISOString()}; agents refuse it. Sign it again, or pass --force-expired to send it anyway`,
    { seq: m.seq, expires: m.expires });
}

/**
 * The transports (each network path, e.g. multicast and MQTT apart) that tried
 * to send and delivered nothing: every datagram refused, or failed after it
 * left (a refusal counted as 'network' follows its `sent`).
 */
function undeliveredPaths(stats: TransportStats): TransportStats[] {
  if (stats.parts.length > 0) return stats.parts.flatMap(undeliveredPaths);
  const attempted = stats.sent + stats.sendErrors;
  return attempted > 0 && (stats.sent === 0 || stats.sendErrorsBy.network >= stats.sent) ? [stats] : [];
}

/** $XDG_CACHE_HOME/fwcast, else ~/.cache/fwcast. */
function defaultCacheDir(): string {
  return join(process.env.XDG_CACHE_HOME || join(homedir(), '.cache'), 'fwcast');
}

function clearLine(): void {
  if (process.stderr.isTTY) process.stderr.write('\r\x1b[K');
}

/** Bits per second on the wire so far (IPv6 and UDP headers included). */
function sentBitsPerSecond(stats: ChannelStats[], ms: number): number {
  const bytes = stats.reduce((n, s) => n + s.bytes + s.packets * IPV6_UDP_HEADERS, 0);
  return (bytes * 8 * 1000) / Math.max(ms, 1);
}

function progressLine(stats: ChannelStats[], ms: number): string {
  const channels = stats.map((s) => `${s.channel} ${s.rounds} rounds done, ${s.packets} pkts`).join(' | ');
  return `${(ms / 1000).toFixed(1)}s ${formatRate(sentBitsPerSecond(stats, ms))} | ${channels}`;
}

/**
 * `publish.round` lines: one when a channel completes a round, at most one per
 * channel every 5 s (a small image at a high rate completes hundreds a second).
 */
class RoundLog {
  #logged = new Map<string, { rounds: number; atMs: number }>();
  constructor(private readonly log: Logger) {}

  update(stats: ChannelStats[], ms: number): void {
    for (const s of stats) {
      const key = `${s.channel} ${s.releaseId}`;
      const last = this.#logged.get(key) ?? { rounds: 0, atMs: -Infinity };
      if (s.rounds <= last.rounds || ms - last.atMs < 5000) continue;
      this.#logged.set(key, { rounds: s.rounds, atMs: ms });
      this.log.event('publish.round', channelCounts(s),
        `${s.channel}: round ${s.rounds} done, ${s.packets} datagrams, ${s.bytes} bytes`);
    }
  }
}

export async function main(argv = process.argv): Promise<void> {
  endQuietlyOnClosedStdout();
  await runProgram('fwcast', buildProgram, argv);
}
