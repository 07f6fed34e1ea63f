/**
 * A systematic Reed–Solomon erasure code over GF(2^8), for AUTH chunks: g data
 * pieces of equal length and r·g parity pieces, any g of which give back the
 * data. Parity piece j is Σ_i c(j, i)·data_i with the Cauchy matrix
 *
 *     c(j, i) = 1 / (x_j + y_i),   y_i = i (0 ≤ i < g),   x_j = g + j (0 ≤ j < r·g)
 *
 * in GF(2^8) with the polynomial x^8 + x^4 + x^3 + x^2 + 1 (0x11d); addition
 * is XOR. Every square submatrix of a Cauchy matrix is invertible, so every
 * g rows of [identity; c] are: the code is MDS as long as (r + 1)·g ≤ 256.
 */

const EXP = new Uint8Array(512);
const LOG = new Uint8Array(256);
{
  let x = 1;
  for (let i = 0; i < 255; i++) {
    EXP[i] = x;
    LOG[x] = i;
    x <<= 1;
    if (x & 0x100) x ^= 0x11d;
  }
  for (let i = 255; i < 512; i++) EXP[i] = EXP[i - 255]!;
}

function mul(a: number, b: number): number {
  return a === 0 || b === 0 ? 0 : EXP[LOG[a]! + LOG[b]!]!;
}

function inv(a: number): number {
  if (a === 0) throw new RangeError('0 has no inverse in GF(256)');
  return EXP[255 - LOG[a]!]!;
}

/** out ^= c·piece, byte by byte. */
function addScaled(out: Uint8Array, piece: Uint8Array, c: number): void {
  if (c === 0) return;
  const lc = LOG[c]!;
  for (let i = 0; i < piece.length; i++) {
    const b = piece[i]!;
    if (b !== 0) out[i]! ^= EXP[LOG[b]! + lc]!;
  }
}

/** Largest number of data pieces for `parityPerData` parity pieces each: (r + 1)·g ≤ 256. */
export function maxDataPieces(parityPerData: number): number {
  return Math.floor(256 / (parityPerData + 1));
}

function checkShape(g: number, parity: number): void {
  if (!Number.isInteger(g) || g < 1 || !Number.isInteger(parity) || parity < 0 || g + parity > 256) {
    throw new RangeError(`a code of ${g} data and ${parity} parity pieces does not fit GF(256)`);
  }
}

/** The coefficient of data piece i in parity piece j. */
function coefficient(g: number, j: number, i: number): number {
  return inv((g + j) ^ i);
}

/** Parity piece j (0 ≤ j < parity count) of `data`, g pieces of equal length. */
export function parityPiece(data: readonly Uint8Array[], j: number, parityCount: number): Uint8Array {
  const g = data.length;
  checkShape(g, parityCount);
  if (!Number.isInteger(j) || j < 0 || j >= parityCount) throw new RangeError(`parity index ${j} is not below ${parityCount}`);
  const length = data[0]!.length;
  const out = new Uint8Array(length);
  data.forEach((piece, i) => {
    if (piece.length !== length) throw new RangeError('data pieces must have equal lengths');
    addScaled(out, piece, coefficient(g, j, i));
  });
  return out;
}

/**
 * The g data pieces from any g distinct pieces, each given by its index
 * (0 … g − 1: data piece i, g + j: parity piece j). Undefined if fewer than g
 * distinct indices are given. Pieces must have equal lengths.
 */
export function recoverData(g: number, parityCount: number, pieces: ReadonlyMap<number, Uint8Array>): Uint8Array[] | undefined {
  checkShape(g, parityCount);
  const rows = [...pieces.keys()].filter((k) => Number.isInteger(k) && k >= 0 && k < g + parityCount).sort((a, b) => a - b).slice(0, g);
  if (rows.length < g) return undefined;
  const length = pieces.get(rows[0]!)!.length;
  if (rows.some((k) => pieces.get(k)!.length !== length)) throw new RangeError('pieces must have equal lengths');
  if (rows[g - 1] === g - 1) return rows.map((k) => pieces.get(k)!);
  // m: the generator rows we hold (g × g); invert it by Gauss–Jordan beside the identity.
  const m = rows.map((k) => Array.from({ length: g }, (_, i) => (k < g ? Number(k === i) : coefficient(g, k - g, i))));
  const w = rows.map((_, r) => Array.from({ length: g }, (_, c) => Number(r === c)));
  for (let col = 0; col < g; col++) {
    const pivot = m.findIndex((row, r) => r >= col && row[col] !== 0);
    [m[col], m[pivot]] = [m[pivot]!, m[col]!];
    [w[col], w[pivot]] = [w[pivot]!, w[col]!];
    const scale = inv(m[col]![col]!);
    for (let c = 0; c < g; c++) {
      m[col]![c] = mul(m[col]![c]!, scale);
      w[col]![c] = mul(w[col]![c]!, scale);
    }
    for (let r = 0; r < g; r++) {
      const f = m[r]![col]!;
      if (r === col || f === 0) continue;
      for (let c = 0; c < g; c++) {
        m[r]![c]! ^= mul(f, m[col]![c]!);
        w[r]![c]! ^= mul(f, w[col]![c]!);
      }
    }
  }
  return Array.from({ length: g }, (_, i) => {
    if (pieces.has(i)) return pieces.get(i)!;
    const out = new Uint8Array(length);
    rows.forEach((k, n) => addScaled(out, pieces.get(k)!, w[i]![n]!));
    return out;
  });
}
