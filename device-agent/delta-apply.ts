/**
 * Applying a delta (protocol/delta.ts) on the device, streaming: the delta
 * file is read through Brotli in pieces, each op writes the new image front
 * to back, copies read the base file at their offsets through one buffer.
 * Memory is the Brotli window (4 MiB as fwcast makes deltas, at most 16 MiB)
 * and two 1 MiB buffers, whatever the image size. The new image's SHA-256 is
 * computed as it is written. Reads and writes of the base and the new image
 * are synchronous (from the page cache, most of them): an ext4 image's delta
 * has a hundred thousand small copies, and a thread-pool round trip for each
 * took 19 s for 80 MiB instead of under one; the loop turns between pieces of
 * the delta. Nothing here is durable: a power cut during an
 * apply leaves a partial file that the next apply overwrites from the start.
 */
import { createHash } from 'node:crypto';
import { closeSync, createReadStream, fdatasyncSync, openSync, readSync, writeSync } from 'node:fs';
import { createBrotliDecompress } from 'node:zlib';
import { decodeDeltaHeader, DELTA_HEADER_SIZE, DeltaOpParser } from '../protocol/delta.js';
import { InvalidDeltaError } from '../protocol/errors.js';

const BUFFER = 1 << 20;

export interface ApplyInit {
  /** The delta object (as decoded from its sub-channel). */
  deltaPath: string;
  /** The base image the device holds (its digest already checked). */
  basePath: string;
  /** Where the new image goes (replaced). */
  outPath: string;
  /** Sizes the manifest gives: the delta's header must say the same. */
  baseSize: number;
  newSize: number;
}

/** Rebuilds the new image; resolves with its SHA-256 (hex). Throws InvalidDeltaError on a delta that breaks the format. */
export async function applyDelta(init: ApplyInit): Promise<string> {
  const delta = openSync(init.deltaPath, 'r');
  const header = new Uint8Array(DELTA_HEADER_SIZE);
  try {
    if (readSync(delta, header, 0, header.length, 0) < header.length) throw new InvalidDeltaError('delta shorter than its header');
  } finally {
    closeSync(delta);
  }
  const parser = new DeltaOpParser(decodeDeltaHeader(header, { baseSize: init.baseSize, newSize: init.newSize }));
  const base = openSync(init.basePath, 'r');
  let out: number;
  try {
    out = openSync(init.outPath, 'w');
  } catch (err) {
    closeSync(base);
    throw err;
  }
  try {
    const writer = new ImageWriter(out);
    const copyBuffer = Buffer.allocUnsafeSlow(BUFFER);
    const stream = createReadStream(init.deltaPath, { start: DELTA_HEADER_SIZE, highWaterMark: 256 << 10 }).pipe(createBrotliDecompress());
    try {
      for await (const piece of stream as AsyncIterable<Buffer>) {
        for (const op of parser.push(piece)) {
          if (op.kind === 'literal') {
            writer.write(op.bytes);
            continue;
          }
          for (let done = 0; done < op.length;) {
            const n = Math.min(BUFFER, op.length - done);
            const bytesRead = readSync(base, copyBuffer, 0, n, op.offset + done);
            if (bytesRead !== n) throw new InvalidDeltaError(`the base ended at ${op.offset + done + bytesRead} bytes`);
            writer.write(copyBuffer.subarray(0, n));
            done += n;
          }
        }
      }
    } catch (err) {
      stream.destroy();
      // Brotli's complaint about a corrupt or cut stream (ERR__ERROR_FORMAT_…, Z_BUF_ERROR) is the delta's fault; a read error (EIO) is not.
      if (/^(ERR_|Z_)/.test((err as NodeJS.ErrnoException).code ?? '')) {
        throw new InvalidDeltaError(`delta does not decompress: ${(err as Error).message}`);
      }
      throw err;
    }
    parser.finish();
    return writer.finish();
  } finally {
    closeSync(base);
    closeSync(out);
  }
}

/** Sequential writes through one buffer, hashed as they go. */
class ImageWriter {
  #buffer = Buffer.allocUnsafeSlow(BUFFER);
  #fill = 0;
  #position = 0;
  #hash = createHash('sha256');

  constructor(private readonly fd: number) {}

  write(bytes: Uint8Array): void {
    this.#hash.update(bytes);
    for (let at = 0; at < bytes.length;) {
      const n = Math.min(bytes.length - at, BUFFER - this.#fill);
      this.#buffer.set(bytes.subarray(at, at + n), this.#fill);
      this.#fill += n;
      at += n;
      if (this.#fill === BUFFER) this.#flush();
    }
  }

  #flush(): void {
    for (let at = 0; at < this.#fill;) {
      const bytesWritten = writeSync(this.fd, this.#buffer, at, this.#fill - at, this.#position);
      at += bytesWritten;
      this.#position += bytesWritten;
    }
    this.#fill = 0;
  }

  finish(): string {
    this.#flush();
    fdatasyncSync(this.fd);
    return this.#hash.digest('hex');
  }
}
