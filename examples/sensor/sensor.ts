/**
 * A sensor on fwcast's messaging library: one process publishes readings on a
 * channel named after the sensor, any number of readers join the same name
 * and get them, with no broker and no server (or through one, with --mqtt).
 * Each reading is a Librecast message carrying a line of JSON.
 *
 *   npx tsx examples/sensor/sensor.ts --iface eth0 --sensor greenhouse --count 10
 *   npx tsx examples/sensor/sensor.ts --iface eth0 --sensor greenhouse --read
 *
 * Publishing: --count readings, one every --interval milliseconds (default
 * 1000), each {"sensor","seq","celsius","at"}. Reading: one JSON line per
 * reading heard, {"event":"sensor.reading",…}, after {"event":"sensor.joined"};
 * it leaves after --count readings or --seconds (default: runs until stopped).
 */
import { parseArgs } from 'node:util';
import { Context } from 'fwcast/channels';

const { values } = parseArgs({
  options: {
    iface: { type: 'string' },
    mqtt: { type: 'string' },
    sensor: { type: 'string' },
    read: { type: 'boolean', default: false },
    count: { type: 'string' },
    interval: { type: 'string', default: '1000' },
    seconds: { type: 'string' },
  },
});
const count = values.count === undefined ? undefined : Number(values.count);
const interval = Number(values.interval);
if (!values.sensor || (!values.iface && !values.mqtt) || (count !== undefined && !(Number.isInteger(count) && count > 0)) || !(interval > 0)) {
  console.error('usage: sensor.ts (--iface IFACE | --mqtt URL) --sensor NAME [--read] [--count N] [--interval MS] [--seconds S]');
  process.exit(2);
}

const ctx = await Context.create({
  ...(values.iface ? { iface: values.iface, udp: { hops: 8 } } : {}),
  ...(values.mqtt ? { mqtt: { url: values.mqtt } } : {}),
});
const channel = ctx.channel(`sensors/${values.sensor}`);
const socket = ctx.socket();
const print = (o: object): void => void process.stdout.write(`${JSON.stringify(o)}\n`);

if (values.read) {
  const stop = new AbortController();
  if (values.seconds !== undefined) setTimeout(() => stop.abort(), Number(values.seconds) * 1000).unref();
  await socket.join(channel, { signal: stop.signal });
  print({ event: 'sensor.joined', channel: channel.name, group: channel.group, port: channel.port });
  let heard = 0;
  try {
    for await (const m of socket.messages({ signal: stop.signal })) {
      try {
        print({ event: 'sensor.reading', from: m.from, ...(JSON.parse(new TextDecoder().decode(m.payload)) as object) });
      } catch {
        print({ event: 'sensor.unreadable', from: m.from, bytes: m.payload.length });
      }
      if (count !== undefined && ++heard >= count) break;
    }
  } catch (err) {
    if (!stop.signal.aborted) throw err;
  }
  print({ event: 'sensor.left', heard, dropped: socket.stats().dropped });
} else {
  for (let seq = 1; count === undefined || seq <= count; seq++) {
    // A made-up temperature: a slow wave around 21 °C.
    const reading = { sensor: values.sensor, seq, celsius: Math.round((21 + 3 * Math.sin(seq / 10)) * 100) / 100, at: new Date().toISOString() };
    socket.send(channel, new TextEncoder().encode(JSON.stringify(reading)));
    print({ event: 'sensor.sent', seq });
    await new Promise((r) => setTimeout(r, interval));
  }
}
await ctx.close();
