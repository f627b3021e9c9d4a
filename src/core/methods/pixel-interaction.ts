/**
 * Pixel interaction (CutDiffusion): every step, each latent element (c, y, x) of a patch gets its own
 * uniform random permutation of the N patches; unit j is fed, at element e, the value of patch perm_e[j].
 * The UNet outputs are un-shuffled back before guidance and the scheduler step.
 *
 * Permutations are stored flat: perm[e * N + j] = patch fed to unit j at element e. Portable: no Node APIs.
 */
import type { RandomSource } from '../random/types.ts';

export type Permutations = Uint8Array | Uint16Array;

/**
 * One Fisher-Yates permutation of N per element, drawn element by element (e ascending), each with
 * k = N-1 down to 1: r = rng.randint(k + 1), swap(k, r). N = 1 draws nothing.
 */
export function drawPermutations(rng: RandomSource, elements: number, n: number): Permutations {
  const perm = n <= 256 ? new Uint8Array(elements * n) : new Uint16Array(elements * n);
  for (let e = 0, base = 0; e < elements; e++, base += n) {
    for (let k = 0; k < n; k++) perm[base + k] = k;
    for (let k = n - 1; k > 0; k--) {
      const r = rng.randint(k + 1);
      const t = perm[base + k];
      perm[base + k] = perm[base + r];
      perm[base + r] = t;
    }
  }
  return perm;
}

/**
 * Unit inputs from patches [N, E]: unit j gets patches[perm_e[j]][e] * scale. Each unit gets its own
 * Float32Array with its own ArrayBuffer (so a caller may transfer it to a worker). `perm` null = identity.
 */
export function shuffleToUnits(
  patches: Float32Array,
  perm: Permutations | null,
  n: number,
  elements: number,
  scale = 1,
): Float32Array[] {
  const units: Float32Array[] = [];
  for (let j = 0; j < n; j++) {
    const dst = new Float32Array(elements);
    if (perm === null || n === 1) {
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
