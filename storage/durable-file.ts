/**
 * Writes that survive a power cut and never leave a half-written file, for
 * both sides (the agent's store and installers, the server's release store and
 * symbol cache).
 *
 * A file is replaced in five steps: a temp file beside it is created
 * exclusively, written, fsynced, renamed over the file, and the directory is
 * fsynced (which makes the rename itself durable). A power cut at any point
 * leaves the old file or the new one. The temp file is created with O_EXCL and
 * O_NOFOLLOW under a name nobody can guess: a symlink or file planted there
 * makes the write fail instead of redirecting it.
 */
import { randomBytes } from 'node:crypto';
import { closeSync, constants, fstatSync, fsyncSync, openSync, readSync, renameSync, rmSync, writeSync } from 'node:fs';
import { dirname } from 'node:path';

export function fsyncPath(path: string): void {
  const fd = openSync(path, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** Makes a rename or file creation in `dir` durable. */
export function fsyncDir(dir: string): void {
  fsyncPath(dir);
}

const EXCLUSIVE = constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW;

/**
 * Creates `path` for writing; fails (EEXIST) if anything, a symlink included,
 * is already there, so nothing planted at `path` is written through.
 */
export function openExclusive(path: string, mode = 0o644): number {
  return openSync(path, EXCLUSIVE, mode);
}

/**
 * A temp name beside `path`: same directory (so the rename stays on one file
 * system), this process's pid, and 64 random bits. The `.tmp-` marks leftovers
 * of a crash for removal (see ReleaseStore.open).
 */
function temporaryPath(path: string): string {
  return `${path}.tmp-${process.pid}-${randomBytes(8).toString('hex')}`;
}

/** Writes all of `bytes` at the file position (writeSync may write less than asked). */
export function writeAll(fd: number, bytes: Uint8Array): void {
  for (let done = 0; done < bytes.length; ) done += writeSync(fd, bytes, done, bytes.length - done);
}

/**
 * Replaces `path` with what `fill` writes to the open temp file, in as many
 * pieces as it likes. If `fill`, the fsync or the rename fails, the temp file
 * is removed and `path` is as it was; if only the directory fsync fails, the
 * new file is in place but the error is still thrown (durability unknown).
 */
export function replaceFile(path: string, fill: (fd: number) => void, mode = 0o644): void {
  const tmp = temporaryPath(path);
  const fd = openExclusive(tmp, mode);
  try {
    try {
      fill(fd);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, path);
  } catch (err) {
    rmSync(tmp, { force: true });
    throw err;
  }
  fsyncDir(dirname(path));
}

/** Replaces `path` with `data` (see replaceFile). */
export function writeFileAtomic(path: string, data: string | Uint8Array, mode = 0o644): void {
  replaceFile(path, (fd) => writeAll(fd, typeof data === 'string' ? Buffer.from(data, 'utf8') : data), mode);
}

/** Bytes copied per read in copyFileAtomic. */
const COPY_CHUNK = 1 << 20;

/** Replaces `path` with a copy of the file `source`, with its permissions unless `mode` is given (see replaceFile). */
export function copyFileAtomic(source: string, path: string, mode?: number): void {
  const from = openSync(source, 'r');
  try {
    const buffer = Buffer.allocUnsafe(COPY_CHUNK);
    replaceFile(path, (fd) => {
      for (let n; (n = readSync(from, buffer, 0, buffer.length, null)) > 0; ) writeAll(fd, buffer.subarray(0, n));
    }, mode ?? fstatSync(from).mode & 0o777);
  } finally {
    closeSync(from);
  }
}
