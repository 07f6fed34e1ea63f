/**
 * The server's halts (SPEC §17.5): signed statements that a release must not
 * be installed, pushed by the publisher (`fwcast halt`, `fwcast push`) and
 * carouselled on the release's channel for as long as the server runs.
 *
 *   STORE/halts/<release id>.halt   the signed halt, as `fwcast halt` wrote it
 *
 * A halt is verified against the server's trusted keys, as uploads are, and
 * must name a served model. At most MAX_STORED_HALTS are kept: a halt is
 * small, but every one goes out on its channel again and again.
 */
import { mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { FwcastError } from '../../protocol/errors.js';
import { openSignedHalt, type Halt } from '../../protocol/halt.js';
import { hex } from '../../protocol/hex.js';
import type { PublicKey } from '../../protocol/keys.js';
import { errorFields, type Logger } from '../../protocol/log.js';
import { encodeHaltPacket } from '../../protocol/packet.js';
import { writeFileAtomic } from '../../storage/durable-file.js';
import { RejectedError, REJECTIONS, type RejectionReason } from './release-store.js';

export const MAX_STORED_HALTS = 256;

export interface StoredHalt {
  model: string;
  releaseId: string;
  /** ISO 8601, from the halt. */
  issued: string;
  keyId: string;
}

function refuse(reason: RejectionReason, message: string): RejectedError {
  return new RejectedError(REJECTIONS[reason], reason, message);
}

export class HaltStore {
  #halts = new Map<string, { halt: Halt; kid: Uint8Array; signed: Uint8Array }>();

  /**
   * `trusted()`: the keys a halt's signature may be checked with (the
   * configured ones, and with a root those it delegates). `authorize`, with a
   * root: throws unless the root lets that key speak for the model, as for a
   * release (protocol/root.ts authorizeRelease).
   */
  constructor(
    readonly dir: string,
    private readonly trusted: () => readonly PublicKey[],
    private readonly models: ReadonlySet<string>,
    private readonly log: Logger,
    private readonly authorize: (halt: Halt, kid: Uint8Array) => void = () => undefined,
  ) {}

  open(): void {
    mkdirSync(this.dir, { recursive: true });
    for (const name of readdirSync(this.dir)) {
      if (!name.endsWith('.halt')) continue;
      try {
        this.#accept(new Uint8Array(readFileSync(join(this.dir, name))));
      } catch (err) {
        this.log.event('serve.release-ignored', { file: join(this.dir, name), ...errorFields(err) }, `ignoring stored halt ${name}: ${(err as Error).message}`);
      }
    }
  }

  #accept(signed: Uint8Array): { stored: StoredHalt; created: boolean } {
    let verified;
    try {
      verified = openSignedHalt(signed, this.trusted());
      this.authorize(verified.halt, verified.kid);
    } catch (err) {
      if (err instanceof FwcastError && err.reason in REJECTIONS) throw refuse(err.reason as RejectionReason, err.message);
      if (err instanceof FwcastError) throw refuse('malformed', err.message);
      throw err;
    }
    const { halt, kid } = verified;
    if (!this.models.has(halt.model)) throw refuse('wrong-model', `halt is for model "${halt.model}", this server publishes ${[...this.models].map((m) => `"${m}"`).join(', ')}`);
    const id = hex(halt.releaseId);
    const known = this.#halts.get(id);
    if (known) return { stored: describe(known.halt, known.kid), created: false };
    if (this.#halts.size >= MAX_STORED_HALTS) throw refuse('limit-exceeded', `the server keeps at most ${MAX_STORED_HALTS} halts`);
    this.#halts.set(id, { halt, kid, signed });
    return { stored: describe(halt, kid), created: true };
  }

  /** Verifies and keeps a signed halt; throws RejectedError if it is not acceptable. */
  add(signed: Uint8Array): { stored: StoredHalt; created: boolean } {
    const result = this.#accept(signed);
    if (result.created) writeFileAtomic(join(this.dir, `${result.stored.releaseId}.halt`), signed);
    return result;
  }

  list(): StoredHalt[] {
    return [...this.#halts.values()].map((h) => describe(h.halt, h.kid));
  }

  /** The HALT datagrams of a model's channel. */
  datagrams(model: string): Uint8Array[] {
    return [...this.#halts.values()].filter((h) => h.halt.model === model).map((h) => encodeHaltPacket({ releaseId: h.halt.releaseId, signed: h.signed }));
  }
}

function describe(halt: Halt, kid: Uint8Array): StoredHalt {
  return { model: halt.model, releaseId: hex(halt.releaseId), issued: new Date(halt.issued * 1000).toISOString(), keyId: hex(kid) };
}
