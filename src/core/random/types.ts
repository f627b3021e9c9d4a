/**
 * Seeded random sources owned by the coordinator. Every draw in a generation (initial noise, ancestral
 * noise, pixel-interaction permutations, window jitter) comes from one of these, so a run is a pure
 * function of its settings and seed. Portable: no Node APIs.
 */
export interface RandomSource {
  /** Standard normal float32 values; for the torch-compatible source this equals torch.randn(shape). */
  randn(shape: readonly number[]): Float32Array;
  /** Uniform integer in [0, n). */
  randint(n: number): number;
  /** Uniform float in [0, 1). */
  uniform(): number;
  /**
   * Optional fast path: out[i] = randint(ranges[i % ranges.length]) for i ascending, the same values as those calls.
   * Sources without it are asked one randint at a time.
   */
  randintsInto?(ranges: readonly number[], out: Float64Array): void;
}
