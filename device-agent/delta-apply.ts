/**
 * Applying a delta (protocol/delta.ts) on the device, streaming: the delta
 * file is read through Brotli in pieces, each op writes the new image front
 * to back, copies read the base file at their offsets through one buffer.
 * Memory is the Brotli window (4 MiB as fwcast makes deltas, at most 16 MiB)
 * and two 1 MiB buffers, whatever the image size. The new image's SHA-256 is
 * computed as it is written. Nothing here is durable: a power cut during an
 * apply leaves a partial file that the next apply overwrites from the start.
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
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
  const delta = await open(init.deltaPath, 'r');
  let header: Uint8Array;
  try {
    header = new Uint8Array(DELTA_HEADER_SIZE);
    const { bytesRead } = await delta.read(header, 0, header.length, 0);
    if (bytesRead < header.length) throw new InvalidDeltaError('delta shorter than its header');
  } finally {
    await delta.close();
  }
  const parser = new DeltaOpParser(decodeDeltaHeader(header, { baseSize: init.baseSize, newSize: init.newSize }));
  const base = await open(init.basePath, 'r');
  const out = await open(init.outPath, 'w');
  try {
    const writer = new ImageWriter(out);
    const copyBuffer = Buffer.allocUnsafeSlow(BUFFER);
    const stream = createReadStream(init.deltaPath, { start: DELTA_HEADER_SIZE, highWaterMark: 256 << 10 }).pipe(createBrotliDecompress());
    try {
      for await (const piece of stream as AsyncIterable<Buffer>) {
        for (const op of parser.push(piece)) {
          if (op.kind === 'literal') {
            await writer.write(op.bytes);
            continue;
          }
          for (let done = 0; done < op.length;) {
            const n = Math.min(BUFFER, op.length - done);
            const { bytesRead } = await base.read(copyBuffer, 0, n, op.offset + done);
            if (bytesRead !== n) throw new InvalidDeltaError(`the base ended at ${op.offset + done + bytesRead} bytes`);
            await writer.write(copyBuffer.subarray(0, n));
            done += n;
          }
        }
      }
    } catch (err) {
      stream.destroy();
      // Brotli's own complaint about a corrupt stream is the delta's fault.
      if ((err as NodeJS.ErrnoException).code?.startsWith('ERR_BROTLI') || (err as NodeJS.ErrnoException).code?.startsWith('Z_')) {
        throw new InvalidDeltaError(`delta does not decompress: ${(err as Error).message}`);
      }
      throw err;
    }
    parser.finish();
    return await writer.finish();
  } finally {
    await Promise.all([base.close(), out.close()]);
  }
}

/** Sequential writes through one buffer, hashed as they go. */
class ImageWriter {
  #buffer = Buffer.allocUnsafeSlow(BUFFER);
  #fill = 0;
  #position = 0;
  #hash = createHash('sha256');

  constructor(private readonly file: FileHandle) {}

  async write(bytes: Uint8Array): Promise<void> {
    this.#hash.update(bytes);
    for (let at = 0; at < bytes.length;) {
      const n = Math.min(bytes.length - at, BUFFER - this.#fill);
      this.#buffer.set(bytes.subarray(at, at + n), this.#fill);
      this.#fill += n;
      at += n;
      if (this.#fill === BUFFER) await this.#flush();
    }
  }

  async #flush(): Promise<void> {
    for (let at = 0; at < this.#fill;) {
      const { bytesWritten } = await this.file.write(this.#buffer, at, this.#fill - at, this.#position);
      at += bytesWritten;
      this.#position += bytesWritten;
    }
    this.#fill = 0;
  }

  async finish(): Promise<string> {
    await this.#flush();
    await this.file.datasync();
    return this.#hash.digest('hex');
  }
}
