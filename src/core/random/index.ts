/** Seeded randomness: torch-compatible CPU noise and the derived streams a run draws from. */
export { createRandom, randn, TorchGenerator, type RandomStream } from './generator.ts';
export { Mt19937 } from './mt19937.ts';
export type { RandomSource } from './types.ts';
