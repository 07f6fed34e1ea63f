/**
 * Worker thread for RaptorQ work: each worker has its own WASM instance, so
 * segments encode (or decode) on all cores at once. Messages:
 *   { id, op: 'encode', data, symbolSize, count }      → { id, symbols } (count × T bytes, ESI order)
 *   { id, op: 'decode', length, symbolSize, esis, symbols } → { id, bytes } or { id, error }
 *   { id, op: 'warm-up' }                              → { id } (see warmUpCodec)
 */
import { parentPort } from 'node:worker_threads';
import { SegmentDecoder, SegmentEncoder, warmUpCodec } from '../protocol/fec.js';

export type CodecRequest =
  | { id: number; op: 'encode'; data: Uint8Array; symbolSize: number; count: number }
  | { id: number; op: 'decode'; length: number; symbolSize: number; esis: Uint32Array; symbols: Uint8Array }
  | { id: number; op: 'warm-up' };

export type CodecResponse = { id: number; symbols?: Uint8Array; bytes?: Uint8Array; error?: string };

function handle(req: CodecRequest): CodecResponse {
  if (req.op === 'warm-up') {
    warmUpCodec();
    return { id: req.id };
  }
  if (req.op === 'encode') {
    const encoder = new SegmentEncoder(req.data, req.symbolSize);
    try {
      const out = new Uint8Array(req.count * req.symbolSize);
      for (const { esi, data } of encoder.symbols(req.count)) out.set(data, esi * req.symbolSize);
      return { id: req.id, symbols: out };
    } finally {
      encoder.free();
    }
  }
  const decoder = new SegmentDecoder(req.length, req.symbolSize);
  try {
    for (let i = 0; i < req.esis.length; i++) {
      const bytes = decoder.push(req.esis[i]!, req.symbols.subarray(i * req.symbolSize, (i + 1) * req.symbolSize));
      if (bytes) return { id: req.id, bytes };
    }
    return { id: req.id, error: `not enough symbols to decode (${req.esis.length})` };
  } finally {
    decoder.free();
  }
}

parentPort!.on('message', (req: CodecRequest) => {
  let res: CodecResponse;
  try {
    res = handle(req);
  } catch (err) {
    res = { id: req.id, error: (err as Error).message };
  }
  const transfer = [res.symbols?.buffer, res.bytes?.buffer].filter((b): b is ArrayBuffer => b instanceof ArrayBuffer);
  parentPort!.postMessage(res, transfer);
});
