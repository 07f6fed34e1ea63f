// Intel HEX (as avr-objcopy -O ihex writes it) to a flat image. Record types
// 00 data, 01 end, 02 extended segment address, 04 extended linear address;
// 03 and 05 (start addresses) carry no flash bytes and are ignored.

export class IntelHexError extends Error {
  override readonly name = 'IntelHexError';
}

export interface FlatImage {
  /** Address of data[0]. */
  base: number;
  /** Gaps are 0xff, the erased flash value. */
  data: Uint8Array;
}

export function looksLikeIntelHex(bytes: Uint8Array): boolean {
  const text = Buffer.from(bytes.subarray(0, 64)).toString('latin1').trimStart();
  return /^:[0-9A-Fa-f]{10}/.test(text);
}

export function parseIntelHex(text: string): FlatImage {
  const chunks: { address: number; bytes: Buffer }[] = [];
  let upper = 0;
  let ended = false;
  const lines = text.split(/\r?\n/);
  lines.forEach((raw, index) => {
    const line = raw.trim();
    if (line === '' || ended) return;
    const where = `line ${index + 1}`;
    if (!/^:([0-9A-Fa-f]{2})+$/.test(line)) throw new IntelHexError(`${where}: not an Intel HEX record`);
    const record = Buffer.from(line.slice(1), 'hex');
    const length = record[0]!;
    if (record.length !== length + 5) throw new IntelHexError(`${where}: length field ${length} does not match the record`);
    let sum = 0;
    for (const b of record) sum = (sum + b) & 0xff;
    if (sum !== 0) throw new IntelHexError(`${where}: checksum mismatch`);
    const offset = record.readUInt16BE(1);
    const type = record[3]!;
    const data = record.subarray(4, 4 + length);
    switch (type) {
      case 0x00: chunks.push({ address: upper + offset, bytes: data }); break;
      case 0x01: ended = true; break;
      case 0x02: upper = data.readUInt16BE(0) << 4; break;
      case 0x04: upper = (data.readUInt16BE(0) << 16) >>> 0; break;
      case 0x03: case 0x05: break;
      default: throw new IntelHexError(`${where}: unknown record type ${type}`);
    }
  });
  if (!ended) throw new IntelHexError('no end-of-file record (truncated file?)');
  if (chunks.length === 0) throw new IntelHexError('no data records');
  const base = Math.min(...chunks.map((c) => c.address));
  const end = Math.max(...chunks.map((c) => c.address + c.bytes.length));
  const data = new Uint8Array(end - base).fill(0xff);
  for (const c of chunks) data.set(c.bytes, c.address - base);
  return { base, data };
}
