/**
 * Our binding to the `raptorq` package's WASM build (raptorq_bg.wasm): one
 * RaptorqWasm per WebAssembly instance, each with its own memory and object
 * table, all made from one compiled Module per thread.
 *
 * Why not the package's own glue (raptorq.js): wasm-bindgen keeps its one
 * instance, and the table of JS objects the WASM code refers to, in module
 * scope. Replacing that instance after a trap made every encoder and decoder
 * in the process unusable, every other model's included. Instances of one
 * Module share its compiled (and tiered-up) code, so one costs about 0.2 ms
 * and 1.1 MiB of initial memory.
 *
 * Only the calls fwcast uses are bound: Encoder.with_defaults / encode / free
 * and Decoder.with_defaults / decode / free. The calling convention, as the
 * glue uses it:
 *  - a byte slice goes in as (pointer, length) of a copy made with
 *    `__wbindgen_malloc`; the Rust side owns and frees it;
 *  - results come back in a 16-byte return area taken off the WASM shadow
 *    stack (`__wbindgen_add_to_stack_pointer(-16)`, given back with +16):
 *    two little-endian i32, (pointer, length). A Vec<u8> is copied out and
 *    freed; pointer 0 is None. A Vec of JS objects is an array of u32 object
 *    table indices;
 *  - the WASM code holds JS objects as indices into the instance's object
 *    table: 0..31 are wasm-bindgen's borrowed-reference stack (unused by these
 *    calls), 32..35 the constants undefined, null, true, false; above that,
 *    slots are allocated by the imports and released by `object_drop_ref`.
 *
 * These raw calls do no validation: malformed input traps (an `unreachable`
 * after a Rust panic), and the trap's unwinding leaks the instance's memory.
 * fec.ts's SegmentEncoder and SegmentDecoder are the checked API.
 *
 * Reading the .wasm file here is the one read protocol/ does: it is code, not
 * data, and happens once per thread.
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';

/** The WebAssembly JS API, typed here: the project's libs (ES2022, node) do not declare it. */
interface WebAssemblyApi {
  Module: { new (bytes: Uint8Array): WasmModule; imports(module: WasmModule): Array<{ module: string; name: string; kind: string }> };
  Instance: new (module: WasmModule, imports: Record<string, Record<string, unknown>>) => { exports: Record<string, unknown> };
  Memory: abstract new (...args: never[]) => WasmMemory;
  RuntimeError: abstract new (...args: never[]) => Error;
}
type WasmModule = object;
interface WasmMemory {
  readonly buffer: ArrayBuffer;
}
const wasmApi = (globalThis as unknown as { WebAssembly: WebAssemblyApi }).WebAssembly;

/** The crate functions this binding calls, with their WASM signatures. */
interface RaptorqExports {
  memory: WasmMemory;
  __wbindgen_malloc(size: number): number;
  __wbindgen_free(ptr: number, size: number): void;
  __wbindgen_add_to_stack_pointer(delta: number): number;
  encoder_with_defaults(dataPtr: number, dataLen: number, mtu: number): number;
  encoder_encode(retptr: number, encoder: number, repairPacketsPerBlock: number): void;
  __wbg_encoder_free(encoder: number): void;
  decoder_with_defaults(transferLength: bigint, mtu: number): number;
  decoder_decode(retptr: number, decoder: number, packetPtr: number, packetLen: number): void;
  __wbg_decoder_free(decoder: number): void;
}
const FUNCTIONS = [
  '__wbindgen_malloc', '__wbindgen_free', '__wbindgen_add_to_stack_pointer',
  'encoder_with_defaults', 'encoder_encode', '__wbg_encoder_free',
  'decoder_with_defaults', 'decoder_decode', '__wbg_decoder_free',
] as const;

/** An encoder or decoder inside one RaptorqWasm: a pointer into its memory. */
export type EncoderHandle = number & { readonly __encoder: unique symbol };
export type DecoderHandle = number & { readonly __decoder: unique symbol };

/** A trap inside the WASM code; the message is the Rust panic's, when there was one. */
export class RaptorqTrapError extends Error {
  override name = 'RaptorqTrapError';
}

let compiled: WasmModule | undefined;

/** The compiled raptorq Module of this thread (read and compiled on first use). */
function raptorqModule(): WasmModule {
  if (!compiled) {
    const path = createRequire(import.meta.url).resolve('raptorq/raptorq_bg.wasm');
    compiled = new wasmApi.Module(readFileSync(path));
  }
  return compiled;
}

/** Object table indices below this are reserved (see the header). */
const RESERVED = 36;
const RETURN_AREA = 16;
const utf8 = new TextDecoder('utf-8', { fatal: false });

export class RaptorqWasm {
  #exports: RaptorqExports;
  #bytes = new Uint8Array(0);
  #objects: unknown[] = [...new Array<undefined>(32), undefined, null, true, false];
  #freeSlots: number[] = [];
  /** What the Rust panic hook reported just before a trap. */
  #panic: string | undefined;
  /** A decoded object left in place for the caller (decoderDecode 'in-place'), freed by the next call that allocates. */
  #lent: [ptr: number, length: number] | undefined;

  /** `module`: the compiled raptorq Module (tests pass others, to see a mismatch refused). */
  constructor(module: WasmModule = raptorqModule()) {
    const instance = new wasmApi.Instance(module, this.#imports(module));
    const exports = instance.exports;
    if (!(exports.memory instanceof wasmApi.Memory)) throw new Error('raptorq.wasm exports no memory: the raptorq package changed; update protocol/raptorq-wasm.ts');
    for (const name of FUNCTIONS) {
      if (typeof exports[name] !== 'function') throw new Error(`raptorq.wasm exports no function ${name}: the raptorq package changed; update protocol/raptorq-wasm.ts`);
    }
    this.#exports = exports as unknown as RaptorqExports;
  }

  /** Current size of this instance's linear memory, in bytes (it only grows). */
  get memoryBytes(): number {
    return this.#exports.memory.buffer.byteLength;
  }

  /** Encoder.with_defaults: one source block of `data`, symbols of `symbolSize` bytes. */
  encoderNew(data: Uint8Array, symbolSize: number): EncoderHandle {
    this.#takeBack();
    return this.#trapping(() => {
      const ptr = this.#copyIn(data);
      return this.#exports.encoder_with_defaults(ptr, data.length, symbolSize) as EncoderHandle;
    });
  }

  /** Encoder.encode: the K source packets, then `repairs` repair packets (4-byte payload ID + symbol each). */
  encoderEncode(encoder: EncoderHandle, repairs: number): Uint8Array[] {
    this.#takeBack();
    return this.#withReturnArea((ret) => {
      this.#exports.encoder_encode(ret, encoder, repairs);
      const [ptr, count] = this.#returned(ret);
      const packets: Uint8Array[] = new Array(count);
      const bytes = this.#memory();
      for (let i = 0; i < count; i++) packets[i] = this.#take(readU32(bytes, ptr + 4 * i)) as Uint8Array;
      this.#exports.__wbindgen_free(ptr, 4 * count);
      return packets;
    });
  }

  encoderFree(encoder: EncoderHandle): void {
    this.#exports.__wbg_encoder_free(encoder);
  }

  /** Decoder.with_defaults: an object of `length` bytes in one source block. */
  decoderNew(length: number, symbolSize: number): DecoderHandle {
    this.#takeBack();
    return this.#trapping(() => this.#exports.decoder_with_defaults(BigInt(length), symbolSize) as DecoderHandle);
  }

  /**
   * Decoder.decode: adds one packet (payload ID + symbol); the object's bytes
   * once it decodes, in a new buffer, or with `inPlace` a view of this
   * instance's memory, valid until the next call that allocates here
   * (encoderNew, encoderEncode, decoderNew, decoderDecode; the free calls do
   * not): no segment-sized copy at all.
   */
  decoderDecode(decoder: DecoderHandle, packet: Uint8Array, inPlace = false): Uint8Array | undefined {
    this.#takeBack();
    return this.#withReturnArea((ret) => {
      const ptr = this.#copyIn(packet);
      this.#exports.decoder_decode(ret, decoder, ptr, packet.length);
      const [out, length] = this.#returned(ret);
      if (out === 0) return undefined;
      const result = this.#memory().subarray(out, out + length);
      if (inPlace) {
        this.#lent = [out, length];
        return result;
      }
      const bytes = result.slice();
      this.#exports.__wbindgen_free(out, length);
      return bytes;
    });
  }

  /** Frees what decoderDecode lent in place: its view is no longer in use once the caller calls in again. */
  #takeBack(): void {
    if (!this.#lent) return;
    this.#exports.__wbindgen_free(...this.#lent);
    this.#lent = undefined;
  }

  decoderFree(decoder: DecoderHandle): void {
    this.#exports.__wbg_decoder_free(decoder);
  }

  /** The memory as bytes; a new view after the memory grew (growing detaches the old buffer). */
  #memory(): Uint8Array {
    if (this.#bytes.byteLength === 0) this.#bytes = new Uint8Array(this.#exports.memory.buffer);
    return this.#bytes;
  }

  #copyIn(data: Uint8Array): number {
    const ptr = this.#exports.__wbindgen_malloc(data.length);
    this.#memory().set(data, ptr);
    return ptr;
  }

  #copyString(text: string): [ptr: number, length: number] {
    const bytes = new TextEncoder().encode(text);
    return [this.#copyIn(bytes), bytes.length];
  }

  #returned(ret: number): [ptr: number, length: number] {
    const bytes = this.#memory();
    return [readU32(bytes, ret), readU32(bytes, ret + 4)];
  }

  #withReturnArea<T>(body: (ret: number) => T): T {
    return this.#trapping(() => {
      const ret = this.#exports.__wbindgen_add_to_stack_pointer(-RETURN_AREA);
      try {
        return body(ret);
      } finally {
        this.#exports.__wbindgen_add_to_stack_pointer(RETURN_AREA);
      }
    });
  }

  /** Runs a call into the instance; a trap comes out as a RaptorqTrapError with the panic's message. */
  #trapping<T>(call: () => T): T {
    this.#panic = undefined;
    try {
      return call();
    } catch (err) {
      if (!(err instanceof wasmApi.RuntimeError)) throw err;
      throw new RaptorqTrapError(`raptorq WASM trapped: ${this.#panic ?? err.message}`, { cause: err });
    }
  }

  #add(value: unknown): number {
    const slot = this.#freeSlots.pop();
    if (slot === undefined) return this.#objects.push(value) - 1;
    this.#objects[slot] = value;
    return slot;
  }

  #drop(index: number): void {
    if (index < RESERVED) return;
    this.#objects[index] = undefined;
    this.#freeSlots.push(index);
  }

  #take(index: number): unknown {
    const value = this.#objects[index];
    this.#drop(index);
    return value;
  }

  /**
   * The instance's imports, found by name in the Module: wasm-bindgen names
   * them `__wbindgen_<what>`, or `__wbg_<what>_<hash>` with a hash that
   * changes between builds, so they are matched on <what>. Missing one is a
   * clear error at instantiation, not a failure in the middle of a decode.
   */
  #imports(module: WasmModule): Record<string, Record<string, unknown>> {
    const byWhat: Record<string, (...args: number[]) => unknown> = {
      object_drop_ref: (index) => this.#drop(index),
      memory: () => this.#add(this.#exports.memory),
      // Encoder.encode builds each packet as a copy of a view into the memory.
      buffer: (index) => this.#add((this.#objects[index] as WasmMemory).buffer),
      newwithbyteoffsetandlength: (index, offset, length) =>
        this.#add(new Uint8Array(this.#objects[index] as ArrayBuffer, offset >>> 0, length >>> 0)),
      // Two constructors share this name: Uint8Array's (from an array) and
      // Error's (no argument, for the panic hook). The JS API does not show an
      // import's signature, so the argument count tells them apart.
      new: (...args) => this.#add(args.length === 0 ? new Error() : new Uint8Array(this.#objects[args[0]!] as Uint8Array)),
      // The panic hook asks for the JS stack: of no use here, so it gets an empty one.
      stack: (ret) => {
        const [ptr, length] = this.#copyString('');
        const bytes = this.#memory();
        writeU32(bytes, ret, ptr);
        writeU32(bytes, ret + 4, length);
      },
      // The panic hook's message, just before the trap: kept for the error instead of printed.
      error: (ptr, length) => {
        this.#panic = utf8.decode(this.#memory().subarray(ptr, ptr + length)).split('\n')[0];
        this.#exports.__wbindgen_free(ptr, length);
      },
      throw: (ptr, length) => {
        throw new RaptorqTrapError(`raptorq WASM threw: ${utf8.decode(this.#memory().subarray(ptr, ptr + length))}`);
      },
    };
    const imports: Record<string, Record<string, unknown>> = {};
    for (const { module: from, name, kind } of wasmApi.Module.imports(module)) {
      const what = /^__wbindgen_(.+)$/.exec(name)?.[1] ?? /^__wbg_(.+)_[0-9a-f]+$/.exec(name)?.[1];
      const fn = kind === 'function' && what !== undefined ? byWhat[what] : undefined;
      if (!fn) throw new Error(`raptorq.wasm imports ${from}.${name}, which protocol/raptorq-wasm.ts does not provide: the raptorq package changed`);
      (imports[from] ??= {})[name] = fn;
    }
    return imports;
  }
}

function readU32(bytes: Uint8Array, at: number): number {
  return (bytes[at]! | (bytes[at + 1]! << 8) | (bytes[at + 2]! << 16) | (bytes[at + 3]! << 24)) >>> 0;
}

function writeU32(bytes: Uint8Array, at: number, value: number): void {
  bytes[at] = value;
  bytes[at + 1] = value >>> 8;
  bytes[at + 2] = value >>> 16;
  bytes[at + 3] = value >>> 24;
}
