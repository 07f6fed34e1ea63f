/**
 * Wire-level constants and the default bounds a receiver enforces on what a
 * sender declares. Receivers may tighten the bounds (see ReceiverLimits).
 */

/** UDP payload that never fragments at the IPv6 minimum MTU: 1280 − 40 (IPv6) − 8 (UDP). */
export const DEFAULT_DATAGRAM_SIZE = 1232;

/** RaptorQ symbol alignment Al (RFC 6330 §4.2); the raptorq crate uses 8. */
export const SYMBOL_ALIGNMENT = 8;

/**
 * Largest source block fwcast uses. Keeps every segment a single RaptorQ source
 * block with one sub-block (Z = 1, N = 1) under the crate's 10 MB working-memory
 * default, and well inside RFC 6330's K'max of 56403.
 */
export const MAX_SOURCE_SYMBOLS = 8192;

/**
 * Largest segment: keeps K'·T under the raptorq crate's 10 MB working-memory
 * bound, above which it would split the block into sub-blocks (N > 1) and no
 * longer match the advertised OTI.
 */
export const MAX_SEGMENT_SIZE = 8 << 20;

/**
 * Default segment size, rounded up to whole symbols (2605 of 1208 bytes).
 * Bandwidth first: the worst of a fleet needs K/(1 − p) symbols of every
 * segment, so bigger segments (larger K) cost fewer bytes on the wire, while
 * an agent's memory (one segment decoded at a time) and the codec's speed per
 * core grow worse with them. Chosen by measurement (bench/segment-size.ts,
 * bench/results/README.md): with 1000 agents at 0–30% loss 1.026–1.028× the
 * ideal (1 MiB: 1.049–1.054×), agent peak RSS at 10% loss on a 256 MiB image
 * 91–93 MiB, encode and decode 0.79–0.89× the speed per core of 1 MiB.
 */
export const DEFAULT_SEGMENT_SIZE = 3 << 20;

export interface ReceiverLimits {
  /** Largest image a receiver will accept, bytes. */
  maxImageSize: number;
  /** Largest number of segments in one release. */
  maxSegments: number;
  /** Largest symbol size T, bytes. */
  maxSymbolSize: number;
  /** Largest signed manifest, bytes. */
  maxManifestSize: number;
}

export const DEFAULT_LIMITS: Readonly<ReceiverLimits> = {
  maxImageSize: 2 ** 31,
  maxSegments: 4096,
  maxSymbolSize: 8192,
  maxManifestSize: 256 * 1024,
};
