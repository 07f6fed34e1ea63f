// A flash region backed by a file, so an emulated device keeps its contents
// across restarts (and a test can inspect them). Erased bytes read 0xff.
import { closeSync, existsSync, fstatSync, ftruncateSync, openSync, readSync, writeSync } from 'node:fs';

export interface FlashMemory {
  readonly bytes: Uint8Array;
  readonly size: number;
  write(offset: number, data: Uint8Array): void;
  erase(offset: number, length: number): void;
}

/** Flash that lives only as long as the process: for in-memory tests. */
export function memoryFlash(size: number): FlashMemory {
  const bytes = new Uint8Array(size).fill(0xff);
  return { bytes, size, write: (o, d) => bytes.set(d, o), erase: (o, l) => bytes.fill(0xff, o, o + l) };
}

export class FlashFile implements FlashMemory {
  readonly bytes: Uint8Array;
  private readonly fd: number;

  constructor(path: string, readonly size: number) {
    const fresh = !existsSync(path);
    this.fd = openSync(path, fresh ? 'w+' : 'r+');
    this.bytes = new Uint8Array(size).fill(0xff);
    const existing = fstatSync(this.fd).size;
    if (existing > 0) readSync(this.fd, this.bytes, 0, Math.min(existing, size), 0);
    if (existing !== size) {
      ftruncateSync(this.fd, size);
      writeSync(this.fd, this.bytes, 0, size, 0);
    }
  }

  write(offset: number, data: Uint8Array): void {
    this.bytes.set(data, offset);
    writeSync(this.fd, data, 0, data.length, offset);
  }

  erase(offset: number, length: number): void {
    this.write(offset, new Uint8Array(length).fill(0xff));
  }

  close(): void { closeSync(this.fd); }
}
