/** Lower-case hex of bytes: how release ids, key ids and digests appear in logs, paths and JSON. */
export function hex(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('hex');
}
