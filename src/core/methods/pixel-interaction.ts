/**
 * Pixel interaction (CutDiffusion): every step, each latent element (c, y, x) of a patch gets its own
 * uniform random permutation of the N patches; unit j is fed, at element e, the value of patch perm_e[j].
 * The UNet outputs are un-shuffled back before guidance and the scheduler step.
 *
 * Permutations are stored flat: perm[e * N + j] = patch fed to unit j at element e. Portable: no Node APIs.
 */
import type { RandomSource } from '../random/types.ts';
import { scratchKernels } from '../kernels/memory.ts';
import type { PatchLayout } from './polyphase.ts';

export type Permutations = Uint8Array | Uint16Array;

/** Largest range one randint draw may cover: 2^32 keeps a 32-bit generator on its one-word path. */
const GROUP_LIMIT = 4294967296;

/**
 * Splits Fisher-Yates' swap ranges k + 1 (k = N-1 down to 1) into consecutive groups whose product stays
 * within GROUP_LIMIT. For N = 16: [16..8] (product 4,151,347,200) and [7..2] (5,040).
 */
export function fisherYatesGroups(n: number): number[][] {
  const groups: number[][] = [];
  let current: number[] = [];
  let product = 1;
  for (let k = n - 1; k > 0; k--) {
    if (product * (k + 1) > GROUP_LIMIT) {
      groups.push(current);
      current = [];
      product = 1;
    }
    current.push(k);
    product *= k + 1;
  }
  if (current.length > 0) groups.push(current);
  return groups;
}

/** Elements drawn per pass: bounds the buffer of raw draws (8192 x groups doubles). */
const CHUNK = 8192;

/**
 * Permutations of up to TABLE_N patches are looked up in a table of all of them (7! rows of 7 bytes: 35 KiB, small
 * enough to stay in cache). For 8 to HEAD_MAX_N patches (one group of swaps) the draw R splits into the first swaps'
 * digits, R mod (N! / 7!), looked up in a table of their own, and the last six swaps' (k = 6..1), floor(R / (N! / 7!)),
 * looked up in the 7-patch table; the two rows compose.
 */
const TABLE_N = 7;
const HEAD_MAX_N = 11;

const tables = new Map<string, Uint8Array>();

/**
 * Applies the mixed-radix draw r to row `base` of perm (swap(k, r mod (k+1)) for each k of the flattened ks[from..to),
 * r = floor(r / (k+1)) after each) and returns what is left of r.
 */
function applyDraw(perm: Permutations, base: number, ks: Int32Array, from: number, to: number, r: number): number {
  for (let i = from; i < to; i++) {
    const k = ks[i]!;
    const m = k + 1;
    const q = Math.floor(r / m); // r may exceed 2^31: avoid the slow floating-point %
    const j = r - q * m;
    r = q;
    const t = perm[base + k]!;
    perm[base + k] = perm[base + j]!;
    perm[base + j] = t;
  }
  return r;
}

/**
 * Row r of the table is the permutation that the draw r makes with the swaps k = N-1 down to `lowest` (one group):
 * `lowest` 1 gives every permutation of N, a larger `lowest` only the first swaps'.
 */
function permutationTable(n: number, lowest = 1): Uint8Array {
  const name = `${n}/${lowest}`;
  let table = tables.get(name);
  if (table === undefined) {
    const ks = Int32Array.from({ length: Math.max(n - lowest, 0) }, (_, i) => n - 1 - i);
    let range = 1;
    for (let k = lowest + 1; k <= n; k++) range *= k;
    table = new Uint8Array(range * n);
    for (let r = 0, base = 0; r < range; r++, base += n) {
      for (let k = 0; k < n; k++) table[base + k] = k;
      applyDraw(table, base, ks, 0, ks.length, r);
    }
    tables.set(name, table);
  }
  return table;
}

/** out[i] = rng.randint(ranges[i % ranges.length]) in order, in one pass where the source offers it. */
function randints(rng: RandomSource, ranges: readonly number[], out: Float64Array): void {
  if (rng.randintsInto) {
    rng.randintsInto(ranges, out);
    return;
  }
  for (let i = 0, c = 0; i < out.length; i++) {
    out[i] = rng.randint(ranges[c]!);
    if (++c === ranges.length) c = 0;
  }
}

/**
 * One uniform permutation of N per element, drawn element by element (e ascending) by Fisher-Yates
 * (k = N-1 down to 1: swap(k, r_k) with r_k uniform in [0, k]). The r_k of a group of consecutive k come
 * from ONE rng.randint(prod (k+1)) read as mixed-radix digits (r_k = R mod (k+1), R = floor(R / (k+1))),
 * which makes them exactly independent and uniform while calling the generator 2 times per element
 * instead of 15 for N = 16 (8x less host time). N = 1 draws nothing. The draws are taken in passes of
 * CHUNK elements, and up to 11 patches the permutation of each draw is looked up in tables (TABLE_N): the same
 * permutations, several times faster.
 */
export function drawPermutations(rng: RandomSource, elements: number, n: number, out?: Permutations): Permutations {
  const perm =
    out !== undefined && out.length === elements * n && (n <= 256) === out instanceof Uint8Array
      ? out
      : n <= 256
        ? new Uint8Array(elements * n)
        : new Uint16Array(elements * n);
  const groups = fisherYatesGroups(n);
  // Flattened: ranges[g] = product of group g; stops[g] = index in ks where group g ends.
  const ranges = groups.map((ks) => ks.reduce((p, k) => p * (k + 1), 1));
  const ks = Int32Array.from(groups.flat());
  const stops = Int32Array.from(groups.map((_, g) => groups.slice(0, g + 1).flat().length));
  const draws = ranges.length;
  if (draws === 0) {
    for (let i = 0; i < elements * n; i++) perm[i] = i % Math.max(n, 1);
    return perm;
  }
  const table = n <= TABLE_N ? permutationTable(n) : null;
  const head = n > TABLE_N && n <= HEAD_MAX_N ? permutationTable(n, TABLE_N) : null;
  const tail = head !== null ? permutationTable(TABLE_N) : null;
  const headRange = head !== null ? head.length / n : 0;
  const values = new Float64Array(Math.min(elements, CHUNK) * draws);
  for (let e0 = 0; e0 < elements; e0 += CHUNK) {
    const count = Math.min(CHUNK, elements - e0);
    const batch = count * draws === values.length ? values : values.subarray(0, count * draws);
    randints(rng, ranges, batch);
    if (table !== null && n === 4 && perm.byteOffset % 4 === 0 && perm instanceof Uint8Array) {
      // Four patches (the 2 x 2 grid): a row is one 32-bit word.
      const words = new Uint32Array(perm.buffer, perm.byteOffset, perm.length / 4);
      const rows = new Uint32Array(table.buffer, table.byteOffset, table.length / 4);
      for (let c = 0; c < count; c++) words[e0 + c] = rows[batch[c]!]!;
      continue;
    }
    if (table !== null) {
      for (let c = 0, base = e0 * n; c < count; c++, base += n) {
        const row = (batch[c]! * n) | 0;
        for (let k = 0; k < n; k++) perm[base + k] = table[row + k]!;
      }
      continue;
    }
    if (head !== null && tail !== null) {
      if (composeKernel(batch, head, tail, n, headRange, perm.subarray(e0 * n, (e0 + count) * n))) continue;
      for (let c = 0, base = e0 * n; c < count; c++, base += n) {
        const r = batch[c]! | 0; // below 11! < 2^31: integer arithmetic
        const q = (r / headRange) | 0;
        const h = (r - q * headRange) * n;
        const t = q * TABLE_N;
        for (let i = 0; i < TABLE_N; i++) perm[base + i] = head[h + tail[t + i]!]!;
        for (let i = TABLE_N; i < n; i++) perm[base + i] = head[h + i]!;
      }
      continue;
    }
    for (let c = 0, v = 0, base = e0 * n; c < count; c++, base += n) {
      for (let k = 0; k < n; k++) perm[base + k] = k;
      for (let g = 0, from = 0; g < draws; g++) {
        const to = stops[g]!;
        applyDraw(perm, base, ks, from, to, batch[v++]!);
        from = to;
      }
    }
  }
  return perm;
}

/**
 * drawPermutations' composition of two tables (8 to 11 patches) through the WebAssembly kernel (kernels.wat
 * composePermutations) on the thread's scratch memory: the draws and tables copied in, the rows out. The same bytes;
 * false where WebAssembly is unavailable or its memory cannot grow.
 */
function composeKernel(draws: Float64Array, head: Uint8Array, tail: Uint8Array, n: number, headRange: number, out: Permutations): boolean {
  const km = scratchKernels();
  const at = out instanceof Uint8Array ? km?.layout([draws.byteLength, out.length, head.length, tail.length]) : null;
  if (!km || !at) return false;
  const [d, o, h, t] = at;
  km.f64(d, draws.length).set(draws);
  km.u8(h, head.length).set(head);
  km.u8(t, tail.length).set(tail);
  km.kernels.composePermutations(d, o, h, t, draws.length, n, headRange);
  out.set(km.u8(o, out.length));
  return true;
}

/**
 * The patch groups a stage-1 step shuffles within (MethodOptions.interactionGroups): all N patches ('all'), or the
 * patches of one phase row (even rounds) and of one phase column (odd rounds) of the rows x cols polyphase grid
 * ('lines'), so that a patch's next input reads only its line's outputs while two rounds still mix every patch.
 * A round is linesPeriod interacting steps (staged.ts linesRound): within a round the lines are independent, so on
 * several devices they run ahead of each other; a swap needs every patch. Patch j has phase (floor(j / cols), j % cols).
 */
export function interactionGroups(mode: 'all' | 'lines', rows: number, cols: number, round: number): number[][] {
  const all = Array.from({ length: rows * cols }, (_, j) => j);
  if (mode === 'all' || rows === 1 || cols === 1) return [all];
  if (round % 2 === 0) return Array.from({ length: rows }, (_, a) => all.slice(a * cols, (a + 1) * cols));
  return Array.from({ length: cols }, (_, b) => all.filter((j) => j % cols === b));
}

/**
 * Permutations within groups: element e of unit j (j in group G) is fed from patch G[q_e[i]] where j = G[i] and q_e
 * a uniform permutation of |G| (drawPermutations per group, groups in order). One group of all N patches draws
 * exactly what drawPermutations(rng, elements, N) draws.
 */
export function drawGroupPermutations(rng: RandomSource, elements: number, n: number, groups: readonly (readonly number[])[], out?: Permutations): Permutations {
  if (groups.length === 1 && groups[0]!.length === n) return drawPermutations(rng, elements, n, out);
  const perm = out !== undefined && out.length === elements * n && (n <= 256) === out instanceof Uint8Array ? out : n <= 256 ? new Uint8Array(elements * n) : new Uint16Array(elements * n);
  for (const g of groups) {
    const sub = drawPermutations(rng, elements, g.length);
    const k = g.length;
    for (let e = 0, base = 0, sb = 0; e < elements; e++, base += n, sb += k) {
      for (let i = 0; i < k; i++) perm[base + g[i]!] = g[sub[sb + i]!]!;
    }
  }
  return perm;
}

/**
 * Unit inputs from patches [N, E]: unit j gets patches[perm_e[j]][e] * scale, written into `into[j]` when
 * given (reused buffers) or into new arrays, each with its own ArrayBuffer (so a caller may transfer it to a
 * worker). `perm` null = identity. With `layout` the patches lie where it says (e.g. in the latent itself).
 */
export function shuffleToUnits(
  patches: Float32Array,
  perm: Permutations | null,
  n: number,
  elements: number,
  scale = 1,
  into?: readonly Float32Array[],
  layout?: PatchLayout,
): Float32Array[] {
  if (layout) {
    const done = shuffleKernel(patches, layout, perm, n, elements, scale, into);
    if (done) return done;
  }
  const units: Float32Array[] = [];
  for (let j = 0; j < n; j++) {
    const dst = into?.[j] ?? new Float32Array(elements);
    if (layout) {
      const { base, offset } = layout;
      if (perm === null) {
        const b = base[j]!;
        for (let e = 0; e < elements; e++) dst[e] = patches[b + offset[e]!]! * scale;
      } else {
        for (let e = 0, p = j; e < elements; e++, p += n) dst[e] = patches[base[perm[p]!]! + offset[e]!]! * scale;
      }
    } else if (perm === null || n === 1) {
      const src = patches.subarray(j * elements, (j + 1) * elements);
      if (scale === 1) dst.set(src);
      else for (let e = 0; e < elements; e++) dst[e] = src[e] * scale;
    } else if (scale === 1) {
      for (let e = 0, p = j; e < elements; e++, p += n) dst[e] = patches[perm[p] * elements + e];
    } else {
      for (let e = 0, p = j; e < elements; e++, p += n) dst[e] = patches[perm[p] * elements + e] * scale;
    }
    units.push(dst);
  }
  return units;
}

/**
 * shuffleToUnits from a layout through the WebAssembly kernel (kernels.wat shuffleUnits) on the thread's scratch
 * memory: the latent, layout and permutations copied in, the units out. Same bits; null where WebAssembly is
 * unavailable or its memory cannot grow.
 */
function shuffleKernel(
  latent: Float32Array,
  layout: PatchLayout,
  perm: Permutations | null,
  n: number,
  elements: number,
  scale: number,
  into?: readonly Float32Array[],
): Float32Array[] | null {
  const km = scratchKernels();
  if (km === null) return null;
  const at = km.layout([latent.length * 4, n * elements * 4, n * 4, elements * 4, perm?.byteLength ?? 0]);
  if (at === null) return null;
  const [lat, units, base, off, permAt] = at;
  km.f32(lat, latent.length).set(latent);
  km.i32(base, n).set(layout.base);
  km.i32(off, elements).set(layout.offset);
  if (perm !== null) km.same(perm, permAt).set(perm);
  km.kernels.shuffleUnits(lat, units, base, off, permAt, perm === null ? 0 : perm.BYTES_PER_ELEMENT, n, elements, scale);
  return Array.from({ length: n }, (_, j) => {
    const dst = into?.[j] ?? new Float32Array(elements);
    dst.set(km.f32(units + j * elements * 4, elements));
    return dst;
  });
}

/** Inverse of shuffleToUnits (without the scale): patches[perm_e[j]][e] = outputs[j][e], into [N, E]. */
export function unshuffleFromUnits(
  outputs: readonly Float32Array[],
  perm: Permutations | null,
  n: number,
  elements: number,
  out?: Float32Array,
): Float32Array {
  const dst = out ?? new Float32Array(n * elements);
  for (let j = 0; j < n; j++) {
    const src = outputs[j];
    if (src.length !== elements) {
      throw new Error(`pixel interaction: unit ${j} output has ${src.length} values, expected ${elements}`);
    }
    if (perm === null || n === 1) dst.set(src, j * elements);
    else for (let e = 0, p = j; e < elements; e++, p += n) dst[perm[p] * elements + e] = src[e];
  }
  return dst;
}
