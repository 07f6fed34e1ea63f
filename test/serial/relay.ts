// A bad cable between two pty pairs: forwards bytes both ways, flips one
// random bit in a random byte at a bounded rate (never two corrupted bytes
// closer than `minGap`), and can be "unplugged" (bytes discarded) for a while.
import { openSerialPort, type SerialLink } from '../../device-agent/serial/link.js';

export interface RelayInit {
  /** The relay's end of the host-side pty pair. */
  hostSide: string;
  /** The relay's end of the device-side pty pair. */
  deviceSide: string;
  /** Mean bytes between corruptions (0 = clean line). */
  corruptEvery?: number;
  /** Fewest clean bytes between two corrupted ones. */
  minGap?: number;
  /** Which direction gets noise; default both. */
  noisy?: 'both' | 'toHost';
  seed?: number;
}

export interface Relay {
  corrupted: number;
  /** Bytes carried host → device and device → host, and both together. */
  toDevice: number;
  toHost: number;
  readonly forwarded: number;
  /** Answers: device-to-host traffic right after host-to-device traffic (one per request/response exchange). */
  roundTrips: number;
  /** Discard everything in both directions for `ms` (0 = until plugged back). */
  unplug(ms?: number): void;
  plug(): void;
  close(): Promise<void>;
}

export async function startRelay(init: RelayInit): Promise<Relay> {
  const host = await openSerialPort({ path: init.hostSide });
  const device = await openSerialPort({ path: init.deviceSide });
  let seed = (init.seed ?? 1) >>> 0 || 1;
  const random = (): number => {
    seed ^= seed << 13; seed >>>= 0; seed ^= seed >>> 17; seed ^= seed << 5; seed >>>= 0;
    return seed / 0x100000000;
  };
  const every = init.corruptEvery ?? 0;
  const minGap = init.minGap ?? 64;
  let sinceLast = 0;
  let unplugged = false;
  let closed = false;
  let lastToDevice = false;
  const relay: Relay = {
    corrupted: 0,
    toDevice: 0,
    toHost: 0,
    roundTrips: 0,
    get forwarded() { return this.toDevice + this.toHost; },
    unplug(ms = 0) {
      unplugged = true;
      if (ms > 0) setTimeout(() => { unplugged = false; }, ms);
    },
    plug() { unplugged = false; },
    async close() {
      closed = true;
      await Promise.all([host.close(), device.close()]);
    },
  };
  const pump = async (from: SerialLink, to: SerialLink, toDevice: boolean, noisy: boolean): Promise<void> => {
    while (!closed) {
      let chunk: Uint8Array;
      try {
        chunk = await from.readAvailable({ timeoutMs: 1000 });
      } catch {
        return;
      }
      if (chunk.length === 0 || unplugged) continue;
      const out = new Uint8Array(chunk);
      for (let i = 0; i < out.length; i++) {
        sinceLast++;
        if (noisy && every > 0 && sinceLast > minGap && random() < 1 / every) {
          out[i]! ^= 1 << Math.floor(random() * 8);
          relay.corrupted++;
          sinceLast = 0;
        }
      }
      if (toDevice) relay.toDevice += out.length;
      else relay.toHost += out.length;
      if (!toDevice && lastToDevice) relay.roundTrips++;
      lastToDevice = toDevice;
      try { await to.write(out); } catch { return; }
    }
  };
  void pump(host, device, true, (init.noisy ?? 'both') === 'both');
  void pump(device, host, false, true);
  return relay;
}
