/**
 * A bound on the MQTT packets a broker may send us, enforced on the raw byte
 * stream before MQTT.js sees it. MQTT.js's own check (MQTT 5
 * `maximumPacketSize`) runs only once its parser has buffered the whole packet:
 * a 150 MB PUBLISH is 150 MB of memory before it is refused. Announcing the
 * limit in CONNECT (MQTT 5) makes a conforming broker drop such messages for
 * us; this guard covers a broker that does not (MQTT 3.1.1 has no way to ask)
 * by reading each packet's fixed header (MQTT 5 §2.1: one type byte and a
 * variable byte integer of at most four bytes, the remaining length) as the
 * bytes arrive and cutting the connection as soon as one declares more.
 */

export class MqttPacketLimit {
  /** 0: next byte is a packet's type; 1: in its remaining length; 2: skipping its body. */
  #state = 0;
  #length = 0;
  #lengthBytes = 0;
  #multiplier = 1;
  #left = 0;

  /** `limit`: largest whole packet (fixed header included), bytes. */
  constructor(readonly limit: number) {}

  /**
   * Reads the next bytes of the stream. Returns a description of the first
   * packet over the limit (or of a malformed length), else undefined.
   */
  push(chunk: Uint8Array): string | undefined {
    let i = 0;
    while (i < chunk.length) {
      if (this.#state === 2) {
        const skip = Math.min(this.#left, chunk.length - i);
        this.#left -= skip;
        i += skip;
        if (this.#left === 0) this.#state = 0;
        continue;
      }
      const byte = chunk[i++]!;
      if (this.#state === 0) {
        this.#state = 1;
        this.#length = 0;
        this.#lengthBytes = 0;
        this.#multiplier = 1;
        continue;
      }
      this.#length += (byte & 0x7f) * this.#multiplier;
      this.#multiplier *= 128;
      this.#lengthBytes++;
      if (byte & 0x80) {
        if (this.#lengthBytes === 4) return 'an MQTT packet with a malformed remaining length';
        continue;
      }
      const size = 1 + this.#lengthBytes + this.#length;
      if (size > this.limit) return `an MQTT packet of ${size} bytes (most ${this.limit})`;
      this.#left = this.#length;
      this.#state = this.#left > 0 ? 2 : 0;
    }
    return undefined;
  }
}
