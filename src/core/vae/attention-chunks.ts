/**
 * Query chunks of the decoder's attention core (src/graph/vae-attention-split.ts): the scores of a whole large latent
 * do not fit in memory (tokens² values: 1 GiB of float32 for a 128x128 latent, 16 GiB for 256x256), but the core's
 * rows (queries) are independent, so it runs over chunks of query rows against all keys and values. Tensors here are
 * flat row-major arrays whose last two axes are [rows, features] (q: [..., N, d]; the output: [..., N, dv]).
 * Portable: no Node APIs.
 */

/**
 * Why a decoder without attention is not split: nothing is gained, so tiled decoding runs it whole per tile without
 * a warning (as a decoder without norm layers tiles plainly).
 */
export const NO_ATTENTION_REASON = 'the decoder has no self-attention (no Softmax or attention operator)';

/** Default bound on one chunk's attention scores (float32): 256 MiB. */
export const DEFAULT_ATTENTION_CHUNK_BYTES = 256 * 2 ** 20;

/** Any typed array the runtime hands back for float tensors (float32, or float16 as raw 16-bit words). */
export type FloatWords = Float32Array | Uint16Array;

/**
 * Query rows per chunk so that a chunk's scores (outer x rows x keys float32 values, outer = the product of the
 * leading axes, e.g. batch x heads) stay within `budgetBytes`; at least 1, at most `rows`.
 */
export function attentionChunkRows(outer: number, rows: number, keys: number, budgetBytes: number = DEFAULT_ATTENTION_CHUNK_BYTES): number {
  const perRow = Math.max(1, outer * keys * 4);
  return Math.max(1, Math.min(rows, Math.floor(budgetBytes / perRow)));
}

/** The bytes of float32 scores of the whole attention (outer x rows x keys). */
export function attentionScoresBytes(outer: number, rows: number, keys: number): number {
  return outer * rows * keys * 4;
}

function outerOf(dims: readonly number[]): number {
  return dims.slice(0, -2).reduce((s, d) => s * d, 1);
}

/** Rows [r0, r1) of every leading block of a [..., N, d] tensor, as a new [..., r1 - r0, d] array. */
export function sliceRows<T extends FloatWords>(data: T, dims: readonly number[], r0: number, r1: number): T {
  if (dims.length < 2) throw new RangeError(`sliceRows: a tensor of rank ${dims.length}`);
  const n = dims[dims.length - 2]!;
  const d = dims[dims.length - 1]!;
  const outer = outerOf(dims);
  if (!(0 <= r0 && r0 < r1 && r1 <= n)) throw new RangeError(`sliceRows: rows [${r0}, ${r1}) of ${n}`);
  const out = new (data.constructor as new (n: number) => T)(outer * (r1 - r0) * d);
  for (let o = 0; o < outer; o++) out.set(data.subarray((o * n + r0) * d, (o * n + r1) * d), o * (r1 - r0) * d);
  return out;
}

/** Writes a [..., r1 - r0, d] chunk into rows [r0, r1) of a [..., N, d] tensor (dims: the whole tensor's). */
export function placeRows<T extends FloatWords>(dst: T, dims: readonly number[], chunk: T, r0: number, r1: number): void {
  const n = dims[dims.length - 2]!;
  const d = dims[dims.length - 1]!;
  const outer = outerOf(dims);
  const rows = r1 - r0;
  if (chunk.length !== outer * rows * d) throw new RangeError(`placeRows: a chunk of ${chunk.length} values for ${outer} x ${rows} x ${d}`);
  for (let o = 0; o < outer; o++) dst.set(chunk.subarray(o * rows * d, (o + 1) * rows * d), (o * n + r0) * d);
}

/**
 * Why the head cannot run on an h x w latent: its attention cannot run in query chunks (`unchunkable` says why) and
 * its scores (at least one head of (hw)² float32 values) exceed the budget. Undefined when it can.
 */
export function headSizeProblem(unchunkable: string | undefined, h: number, w: number, budgetBytes: number = DEFAULT_ATTENTION_CHUNK_BYTES): string | undefined {
  if (unchunkable === undefined) return undefined;
  const bytes = attentionScoresBytes(1, h * w, h * w);
  if (bytes <= budgetBytes) return undefined;
  const mib = (b: number) => (b >= 2 ** 20 ? `${Math.round(b / 2 ** 20)} MiB` : `${Math.round(b / 1024)} KiB`);
  return `its attention cannot run in query chunks (${unchunkable}) and its scores for a ${w}x${h} latent take at least ${mib(bytes)}, over the ${mib(budgetBytes)} budget`;
}
