/**
 * The talk's chat, on fwcast's messaging library: every participant joins one
 * channel name and sends each line it reads; there is no server. Messages are
 * Librecast messages, so a C program using liblibrecast's lc_msg_send on the
 * same channel name takes part too.
 *
 *   npx tsx examples/chat/chat.ts --iface eth0 --nick alice [--channel lobby]
 *
 * Each line on stdin is sent as "<nick>: <line>"; each message heard is one
 * JSON line on stdout: {"event":"chat.message","from":…,"text":…}. When the
 * channel is joined it prints {"event":"chat.joined",…}; at the end of stdin
 * it keeps listening for --linger seconds (default 0), then leaves.
 */
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import { Context } from 'fwcast/channels';

const { values } = parseArgs({
  options: {
    iface: { type: 'string' },
    mqtt: { type: 'string' },
    nick: { type: 'string' },
    channel: { type: 'string', default: 'lobby' },
    linger: { type: 'string', default: '0' },
  },
});
if (!values.nick || (!values.iface && !values.mqtt)) {
  console.error('usage: chat.ts (--iface IFACE | --mqtt URL) --nick NAME [--channel NAME] [--linger SECONDS]');
  process.exit(2);
}

const ctx = await Context.create({
  ...(values.iface ? { iface: values.iface, udp: { hops: 8 } } : {}),
  ...(values.mqtt ? { mqtt: { url: values.mqtt } } : {}),
});
const channel = ctx.channel(`chat/${values.channel}`);
const socket = ctx.socket();
const done = new AbortController();
await socket.join(channel, { signal: done.signal });
const print = (o: object): void => void process.stdout.write(`${JSON.stringify(o)}\n`);
print({ event: 'chat.joined', channel: channel.name, group: channel.group, port: channel.port });

const listening = (async () => {
  for await (const m of socket.messages({ signal: done.signal })) {
    print({ event: 'chat.message', from: m.from, text: new TextDecoder().decode(m.payload) });
  }
})();

for await (const line of createInterface({ input: process.stdin })) {
  socket.send(channel, new TextEncoder().encode(`${values.nick}: ${line}`));
}
await new Promise((r) => setTimeout(r, Number(values.linger) * 1000));
done.abort();
await listening;
print({ event: 'chat.left', dropped: socket.stats().dropped });
await ctx.close();
