/**
 * A pool of RaptorQ worker threads (codec-worker.ts): segments are
 * independent, so they encode and decode in parallel, one per core.
 */
import { availableParallelism } from 'node:os';
import type { Worker } from 'node:worker_threads';
import { startModuleWorker } from '../runtime/worker-thread.js';
import type { CodecRequest, CodecResponse } from './codec-worker.js';

/**
 * Jobs handed to a worker at once: the next one already waits in its message
 * queue when it finishes one, instead of a round trip through this thread.
 */
const DEPTH = 2;

type Pending = { resolve: (r: CodecResponse) => void; reject: (e: Error) => void };
type Job = CodecRequest extends infer R ? (R extends unknown ? Omit<R, 'id'> : never) : never;

export class CodecPool {
  #workers: Worker[] = [];
  /** One entry per job a worker may take now: each worker holds up to DEPTH. */
  #idle: Worker[] = [];
  #queue: Array<{ job: Job; pending: Pending }> = [];
  #pending = new Map<number, Pending>();
  #nextId = 0;

  constructor(size = availableParallelism()) {
    for (let i = 0; i < Math.max(1, size); i++) {
      const worker = startModuleWorker(import.meta.url, 'codec-worker');
      worker.on('message', (res: CodecResponse) => {
        const p = this.#pending.get(res.id);
        this.#pending.delete(res.id);
        this.#release(worker);
        if (!p) return;
        if (res.error) p.reject(new Error(res.error));
        else p.resolve(res);
      });
      worker.on('error', (err) => {
        for (const p of this.#pending.values()) p.reject(err);
        this.#pending.clear();
      });
      this.#workers.push(worker);
    }
    // Interleaved, so that two jobs go to two workers.
    for (let d = 0; d < DEPTH; d++) this.#idle.push(...this.#workers);
  }

  get size(): number {
    return this.#workers.length;
  }

  #release(worker: Worker): void {
    const next = this.#queue.shift();
    if (next) this.#dispatch(worker, next.job, next.pending);
    else this.#idle.push(worker);
  }

  #dispatch(worker: Worker, job: Job, pending: Pending): void {
    const id = this.#nextId++;
    this.#pending.set(id, pending);
    const buffers = job.op === 'encode' ? [job.data.buffer] : job.op === 'decode' ? [job.symbols.buffer, job.esis.buffer] : [];
    const transfer = [...new Set(buffers.filter((b): b is ArrayBuffer => b instanceof ArrayBuffer))];
    worker.postMessage({ ...job, id } as CodecRequest, transfer);
  }

  #run(job: Job): Promise<CodecResponse> {
    return new Promise((resolve, reject) => {
      const pending = { resolve, reject };
      const worker = this.#idle.pop();
      if (worker) this.#dispatch(worker, job, pending);
      else this.#queue.push({ job, pending });
    });
  }

  /**
   * Brings every worker's codec to its steady-state speed (warmUpCodec, about
   * 0.2 s of CPU each, in parallel). Only before the first job: each worker
   * must get exactly one warm-up.
   */
  async warmUp(): Promise<void> {
    if (this.#idle.length !== this.#workers.length * DEPTH) throw new Error('CodecPool.warmUp() must run before any other job');
    this.#idle.splice(this.#idle.length - this.#workers.length);
    await Promise.all(this.#workers.map((worker) => new Promise<CodecResponse>((resolve, reject) => this.#dispatch(worker, { op: 'warm-up' }, { resolve, reject }))));
  }

  /**
   * The first `count` encoding symbols of a segment, ESI order, as one buffer
   * of count × T bytes. `data`'s buffer moves to the worker (it is detached
   * here): pass a copy, such as `image.slice(…)`, not a view of something kept.
   */
  async encode(data: Uint8Array, symbolSize: number, count: number): Promise<Uint8Array> {
    return (await this.#run({ op: 'encode', data, symbolSize, count })).symbols!;
  }

  /** Decodes a segment from symbols (n × T bytes) with the given ESIs; their buffers move to the worker, as with encode(). */
  async decode(length: number, symbolSize: number, esis: Uint32Array, symbols: Uint8Array): Promise<Uint8Array> {
    return (await this.#run({ op: 'decode', length, symbolSize, esis, symbols })).bytes!;
  }

  async close(): Promise<void> {
    await Promise.all(this.#workers.map((w) => w.terminate()));
    this.#workers = [];
    this.#idle = [];
  }
}
