/**
 * TorchGenerator: torch.Generator('cpu') in TypeScript. Successive randn calls continue the stream exactly
 * like successive torch.randn(..., generator=g) calls; randint and uniform are extras that torch does not
 * define the same way (they draw from the same MT19937 stream).
 */
import { invalidArgument } from '../errors.ts';
import { Mt19937 } from './mt19937.ts';
import { numelOf, torchRandnInto, torchSeed, type NormalCache } from './torch-randn.ts';
import type { RandomSource } from './types.ts';

const TWO_POW_32 = 4294967296;
const TWO_POW_MINUS_53 = 2 ** -53;

export class TorchGenerator implements RandomSource {
  private mt: Mt19937;
  private readonly cache: NormalCache = { next: undefined };
  private seedValue: bigint;

  /** Same as torch.Generator('cpu').manual_seed(seed). */
  constructor(seed: number | bigint) {
    this.seedValue = torchSeed(seed);
    this.mt = new Mt19937(Number(this.seedValue & 0xffffffffn));
  }

  /** A generator whose MT19937 state comes from `mt` (used for derived streams). */
  static fromEngine(mt: Mt19937, seed: bigint): TorchGenerator {
    const g = new TorchGenerator(0);
    g.mt = mt;
    g.seedValue = seed;
    return g;
  }

  /** torch's initial_seed(): the seed modulo 2^64. */
  get seed(): bigint {
    return this.seedValue;
  }

  /** Restarts the stream like g.manual_seed(seed), also dropping the cached normal value. */
  manualSeed(seed: number | bigint): this {
    this.seedValue = torchSeed(seed);
    this.mt = new Mt19937(Number(this.seedValue & 0xffffffffn));
    this.cache.next = undefined;
    return this;
  }

  /** torch.randn(shape, generator=this, dtype=torch.float32), flattened in row-major order. */
  randn(shape: readonly number[]): Float32Array {
    const out = new Float32Array(numelOf(shape));
    torchRandnInto(this.mt, this.cache, out);
    return out;
  }

  /** Uniform integer in [0, n), unbiased (rejection sampling); n an integer from 1 to 2^53 - 1. */
  randint(n: number): number {
    if (!Number.isSafeInteger(n) || n < 1) {
      throw invalidArgument('n', 'an integer from 1 to 2^53-1', n, 'randint(n) draws from [0, n).');
    }
    if (n <= TWO_POW_32) {
      // Accept only draws below the largest multiple of n, so every residue is equally likely.
      const limit = TWO_POW_32 - (TWO_POW_32 % n);
      let r = this.mt.nextUint32();
      while (r >= limit) r = this.mt.nextUint32();
      return r % n;
    }
    const limit = 2 ** 53 - (2 ** 53 % n);
    let r = this.next53();
    while (r >= limit) r = this.next53();
    return r % n;
  }

  /**
   * out[i] = randint(ranges[i % ranges.length]) for i ascending: exactly the values (and the stream position) of those
   * randint calls, drawn in one pass without a call per value.
   */
  randintsInto(ranges: readonly number[], out: Float64Array): void {
    const limits = ranges.map((n, i) => {
      if (!Number.isSafeInteger(n) || n < 1) {
        throw invalidArgument(`ranges[${i}]`, 'an integer from 1 to 2^53-1', n, 'randintsInto draws each value from [0, range).');
      }
      return n <= TWO_POW_32 ? TWO_POW_32 - (TWO_POW_32 % n) : 2 ** 53 - (2 ** 53 % n);
    });
    const cycle = ranges.length;
    if (cycle === 0) {
      if (out.length > 0) throw invalidArgument('ranges', 'at least one range', '[]', 'Give the range of each draw.');
      return;
    }
    const mt = this.mt;
    if (cycle === 1 && ranges[0]! <= TWO_POW_32) {
      // The common case (pixel interaction of up to 12 patches): one range on the one-word path.
      mt.fillBelow(out, 0, out.length, ranges[0]!);
      return;
    }
    for (let i = 0, c = 0; i < out.length; i++) {
      const n = ranges[c]!;
      const limit = limits[c]!;
      if (n <= TWO_POW_32) {
        let r = mt.nextUint32();
        while (r >= limit) r = mt.nextUint32();
        out[i] = r - Math.floor(r / n) * n; // r mod n, exact below 2^32 (Mt19937.fillBelow)
      } else {
        let r = this.next53();
        while (r >= limit) r = this.next53();
        out[i] = r % n;
      }
      if (++c === cycle) c = 0;
    }
  }

  /** Uniform float in [0, 1) with 53 random bits. */
  uniform(): number {
    return this.next53() * TWO_POW_MINUS_53;
  }

  /** An independent copy at the same point of the stream (MT19937 state and cached normal). */
  clone(): TorchGenerator {
    const g = TorchGenerator.fromEngine(this.mt.clone(), this.seedValue);
    g.cache.next = this.cache.next;
    return g;
  }

  private next53(): number {
    const hi = this.mt.nextUint32() >>> 6; // 26 bits
    const lo = this.mt.nextUint32() >>> 5; // 27 bits
    return hi * 134217728 + lo;
  }
}

/** randn(shape, seed) === torch.randn(shape, generator=torch.Generator('cpu').manual_seed(seed)). */
export function randn(shape: readonly number[], seed: number | bigint): Float32Array {
  return new TorchGenerator(seed).randn(shape);
}

/** Names of the seeded streams a run uses; any other lower-case name also works. */
export type RandomStream = 'noise' | 'permutation' | 'jitter' | 'ancestral' | (string & {});

const STREAM_NAME = /^[a-z][a-z0-9_-]{0,63}$/;

/**
 * Independent, reproducible random streams from one user seed.
 *
 * - 'noise' is exactly torch.Generator('cpu').manual_seed(seed), so the initial latents equal diffusers'.
 * - Any other stream is an MT19937 seeded by init_by_array with the key
 *   [seed mod 2^32, floor(seed / 2^32) mod 2^32, name length, name bytes packed 4 per word little-endian]
 *   (seed taken modulo 2^64 as torch does). The key holds the full 64-bit seed and the name, so two
 *   (seed, stream) pairs never share a key, and no derived stream equals the torch 'noise' stream
 *   (torch seeds with init_genrand, not init_by_array).
 */
export function createRandom(seed: number | bigint, stream: RandomStream): TorchGenerator {
  const seed64 = torchSeed(seed);
  if (typeof stream !== 'string' || !STREAM_NAME.test(stream)) {
    throw invalidArgument(
      'stream',
      'a lower-case name of 1 to 64 characters (a-z, 0-9, "_", "-") starting with a letter',
      stream,
      "Use e.g. 'noise', 'permutation', 'jitter' or 'ancestral'.",
    );
  }
  if (stream === 'noise') return new TorchGenerator(seed64);
  const key = [Number(seed64 & 0xffffffffn), Number(seed64 >> 32n), stream.length];
  for (let i = 0; i < stream.length; i += 4) {
    let word = 0;
    for (let b = 0; b < 4 && i + b < stream.length; b++) word |= stream.charCodeAt(i + b) << (8 * b);
    key.push(word >>> 0);
  }
  return TorchGenerator.fromEngine(Mt19937.fromKey(key), seed64);
}
