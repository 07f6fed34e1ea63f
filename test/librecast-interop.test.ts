/**
 * Librecast interop: fwcast's channel API (fwcast/channels) and a C program
 * linked against Debian's liblibrecast (test/librecast/lc-msg.c, built here
 * with gcc into test/librecast/build/) exchange messages over real IPv6
 * multicast in the lab (scripts/lab.sh: multicast on lo). Each side uses its
 * own library's channel derivation from the name, so a message only arrives if
 * both derive the same group, and only reads back right if both agree on the
 * lc_msg header. Messages of 0, 1, 1000 bytes and the largest size, byte for
 * byte and in order: towards fwcast, the largest a UDP datagram carries behind
 * the header; towards Librecast, the largest its lc_msg_recv reads whole
 * (8159 bytes: 0.5.1 reads 8192 bytes of a datagram, shown Librecast to
 * Librecast below); ASCII and non-ASCII
 * channel names. A port per run, not fwcast's 4242, so nothing else on the
 * host hears these channels.
 */
import test from 'ava';
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Context, type Message } from '../channels/index.js';
import { channelGroup } from '../protocol/channel.js';
import { LIBRECAST_MAX_PAYLOAD, LIBRECAST_RECV_MAX_PAYLOAD } from '../protocol/librecast-message.js';
import { MAX_DATAGRAM } from '../protocol/packet.js';

const INSTALL = 'apt-get install -y gcc liblibrecast-dev';
const SOURCE = fileURLToPath(new URL('./librecast/lc-msg.c', import.meta.url));
const BUILD_DIR = fileURLToPath(new URL('./librecast/build/', import.meta.url));
const PEER = `${BUILD_DIR}lc-msg`;
const WAIT_MS = 20_000;

test.before(() => {
  mkdirSync(BUILD_DIR, { recursive: true });
  const cc = spawnSync('gcc', ['-O2', '-Wall', '-Werror', '-o', PEER, SOURCE, '-llibrecast'], { encoding: 'utf8' });
  if (cc.error) throw new Error(`cannot run gcc (${cc.error.message}); install it with: ${INSTALL}`);
  if (cc.status !== 0) throw new Error(`building the Librecast peer failed (is liblibrecast-dev installed? ${INSTALL}):\n${cc.stderr}`);
});

const run = randomBytes(3).toString('hex');
const port = 20_000 + (randomBytes(2).readUInt16BE() % 40_000);
const SIZES = [0, 1, 1000, LIBRECAST_MAX_PAYLOAD];
const TO_LIBRECAST = [0, 1, 1000, LIBRECAST_RECV_MAX_PAYLOAD];
const NAMES = [`fwcast-interop/${run}`, `fwcast-interop/héllo ✓ 频道 🛰/${run}`];

/** Messages of these sizes, each with its own bytes. */
const payloads = (sizes = SIZES): Buffer[] => sizes.map((n) => randomBytes(n));

/** (u32 BE length, bytes) records, lc-msg's stdin and stdout format. */
function frame(messages: Buffer[]): Buffer {
  return Buffer.concat(messages.flatMap((m) => {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(m.length);
    return [len, m];
  }));
}

function unframe(bytes: Buffer): Buffer[] {
  const out: Buffer[] = [];
  for (let at = 0; at < bytes.length;) {
    const len = bytes.readUInt32BE(at);
    out.push(bytes.subarray(at + 4, at + 4 + len));
    at += 4 + len;
  }
  return out;
}

/** Runs lc-msg to its end (bounded), feeding `input`; resolves with its output, or rejects with its stderr. */
function peer(args: string[], input?: Buffer, onStderr?: (text: string) => void): Promise<Buffer> {
  const child = spawn(PEER, args, { stdio: ['pipe', 'pipe', 'pipe'] });
  const out: Buffer[] = [];
  let err = '';
  child.stdout.on('data', (d: Buffer) => out.push(d));
  child.stderr.setEncoding('utf8').on('data', (d: string) => {
    err += d;
    onStderr?.(err);
  });
  // A receiving peer exits without reading its stdin.
  child.stdin.on('error', () => {});
  child.stdin.end(input ?? Buffer.alloc(0));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => child.kill('SIGKILL'), WAIT_MS);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      if (code === 0) resolve(Buffer.concat(out));
      else reject(new Error(`lc-msg ${args.join(' ')} ended with ${code ?? signal}:\n${err}`));
    });
  });
}

async function lab(): Promise<Context> {
  return Context.create({ iface: 'lo', udp: { hops: 1, maxDatagramSize: MAX_DATAGRAM } });
}

test('Librecast and fwcast derive the same group from a channel name, non-ASCII included', async (t) => {
  for (const name of NAMES) t.is((await peer(['group', name])).toString().trim(), channelGroup(name), name);
});

for (const name of NAMES) {
  test.serial(`Librecast → fwcast on "${name}": 0, 1, 1000 and ${LIBRECAST_MAX_PAYLOAD} bytes, exact and in order`, async (t) => {
    const ctx = await lab();
    t.teardown(() => ctx.close());
    const channel = ctx.channel(name, { port });
    const socket = ctx.socket();
    await socket.join(channel);
    const sent = payloads();
    const got: Message[] = [];
    const signal = AbortSignal.timeout(WAIT_MS);
    const reading = (async () => {
      for await (const m of socket.messages({ signal })) if (got.push(m) === sent.length) break;
    })();
    await peer(['send', 'lo', name, String(port)], frame(sent));
    await reading;
    t.is(got.length, sent.length, 'every message arrived before the deadline');
    t.deepEqual(got.map((m) => m.payload.length), SIZES);
    got.forEach((m, i) => t.true(Buffer.from(m.payload).equals(sent[i]!), `message ${i} byte for byte`));
    t.deepEqual(got.map((m) => m.seq), [1n, 2n, 3n, 4n], "Librecast's per-channel sequence numbers");
    t.deepEqual(got.map((m) => [m.op, m.from]), sent.map(() => [0, '::1']), 'DATA messages from the loopback address');
    t.like(socket.stats(), { received: 4, dropped: { malformed: 0, 'limit-exceeded': 0, overflow: 0 } });
  });

  test.serial(`fwcast → Librecast on "${name}": 0, 1, 1000 and ${LIBRECAST_RECV_MAX_PAYLOAD} bytes, exact and in order`, async (t) => {
    const ctx = await lab();
    t.teardown(() => ctx.close());
    const channel = ctx.channel(name, { port });
    const socket = ctx.socket();
    const sent = payloads(TO_LIBRECAST);
    let ready!: () => void;
    const joined = new Promise<void>((r) => (ready = r));
    const receiving = peer(['recv', 'lo', name, String(port), String(sent.length)], undefined, (err) => {
      if (/^ready$/m.test(err)) ready();
    });
    await Promise.race([joined, receiving]);
    for (const m of sent) {
      t.true(socket.send(channel, m));
      await new Promise((r) => setTimeout(r, 5));
    }
    const got = unframe(await receiving);
    t.deepEqual(got.map((m) => m.length), TO_LIBRECAST);
    got.forEach((m, i) => t.true(m.equals(sent[i]!), `message ${i} byte for byte`));
    t.is(ctx.stats().sendErrors, 0);
  });
}

test.serial(`Librecast's own receiver reads at most ${LIBRECAST_RECV_MAX_PAYLOAD} bytes of a message, also from Librecast`, async (t) => {
  const name = `fwcast-interop/limit/${run}`;
  const sent = payloads([LIBRECAST_RECV_MAX_PAYLOAD + 1]);
  let ready!: () => void;
  const joined = new Promise<void>((r) => (ready = r));
  const receiving = peer(['recv', 'lo', name, String(port), '1'], undefined, (err) => {
    if (/^ready$/m.test(err)) ready();
  });
  await Promise.race([joined, receiving]);
  await peer(['send', 'lo', name, String(port)], frame(sent));
  const [got] = unframe(await receiving);
  t.is(got?.length, LIBRECAST_RECV_MAX_PAYLOAD);
  t.true(got?.equals(sent[0]!.subarray(0, LIBRECAST_RECV_MAX_PAYLOAD)));
});

test.serial('datagrams that are not Librecast messages are dropped and counted, the valid ones between them delivered', async (t) => {
  const ctx = await lab();
  t.teardown(() => ctx.close());
  const channel = ctx.channel(`fwcast-interop/bad/${run}`, { port });
  const socket = ctx.socket();
  await socket.join(channel);
  const drops: string[] = [];
  socket.on('drop', (d) => drops.push(d.reason));
  const raw = ctx.socket({ framing: 'raw' });
  const valid = Buffer.from('valid');
  const header = Buffer.from('18ef1a9affff984d0000000000000001aae450aa8c54c5d900', 'hex');
  const wrongLen = Buffer.concat([header, Buffer.from('0000000000000009', 'hex'), Buffer.from('abc')]);
  const badOp = Buffer.concat([header.subarray(0, 24), Buffer.from([7]), Buffer.from('0000000000000003', 'hex'), Buffer.from('abc')]);
  raw.send(channel, Buffer.from('short'));
  raw.send(channel, wrongLen);
  socket.send(channel, valid);
  raw.send(channel, badOp);
  socket.send(channel, Buffer.from('end'));
  const got: string[] = [];
  for await (const m of socket.messages({ signal: AbortSignal.timeout(WAIT_MS) })) {
    got.push(Buffer.from(m.payload).toString());
    if (got.length === 2) break;
  }
  t.deepEqual(got, ['valid', 'end']);
  t.deepEqual(drops, ['malformed', 'malformed', 'malformed']);
  t.like(socket.stats(), { received: 2, dropped: { malformed: 3 } });
});
