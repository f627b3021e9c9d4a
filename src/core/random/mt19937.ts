/**
 * MT19937, the 32-bit Mersenne Twister, laid out exactly like torch's CPU engine (at::mt19937): a
 * 624-word state seeded from the low 32 bits of the seed, regenerated in one block when exhausted.
 * All arithmetic is 32-bit integer math (Math.imul and >>> 0); no BigInt, so it is fast in V8.
 */
import { invalidArgument } from '../errors.ts';
import { scratchKernels } from '../kernels/memory.ts';

/** The state's length in 32-bit words (a kernel's copy of the state needs this much of its memory). */
export const STATE_WORDS = 624;
const N = STATE_WORDS;
const M = 397;
const MATRIX_A = 0x9908b0df;
const UPPER_MASK = 0x80000000;
const LOWER_MASK = 0x7fffffff;

/** The 32-bit Mersenne Twister laid out as torch's CPU engine (see the top of this file). */
export class Mt19937 {
  private readonly state = new Uint32Array(N);
  /** Index of the next state word to temper; N means the block is used up. */
  private next = N;

  /** `seed32` is taken modulo 2^32, as torch keeps only the low 32 bits of its 64-bit seed. */
  constructor(seed32: number) {
    const s = this.state;
    s[0] = seed32 >>> 0;
    for (let j = 1; j < N; j++) {
      const prev = s[j - 1];
      s[j] = (Math.imul(1812433253, (prev ^ (prev >>> 30)) >>> 0) + j) >>> 0;
    }
    this.next = N;
  }

  /**
   * A generator seeded from a whole key of 32-bit words (the reference init_by_array of MT19937, the
   * seeding Python's random.seed(int) uses), so that more than 32 bits of seed reach the state.
   */
  static fromKey(key: readonly number[]): Mt19937 {
    const mt = new Mt19937(19650218);
    const s = mt.state;
    const len = Math.max(1, key.length);
    let i = 1;
    let j = 0;
    for (let k = Math.max(N, len); k > 0; k--) {
      const prev = s[i - 1] ^ (s[i - 1] >>> 30);
      s[i] = ((s[i] ^ Math.imul(prev, 1664525)) + ((key[j] ?? 0) >>> 0) + j) >>> 0;
      i++;
      j++;
      if (i >= N) {
        s[0] = s[N - 1];
        i = 1;
      }
      if (j >= len) j = 0;
    }
    for (let k = N - 1; k > 0; k--) {
      const prev = s[i - 1] ^ (s[i - 1] >>> 30);
      s[i] = ((s[i] ^ Math.imul(prev, 1566083941)) - i) >>> 0;
      i++;
      if (i >= N) {
        s[0] = s[N - 1];
        i = 1;
      }
    }
    s[0] = 0x80000000;
    return mt;
  }

  /** Next raw 32-bit output as an unsigned integer in [0, 2^32). */
  nextUint32(): number {
    if (this.next >= N) this.twist();
    let y = this.state[this.next++];
    y ^= y >>> 11;
    y ^= (y << 7) & 0x9d2c5680;
    y ^= (y << 15) & 0xefc60000;
    y ^= y >>> 18;
    return y >>> 0;
  }

  /** Fills `out` with successive outputs; same stream as calling nextUint32 `out.length` times. */
  fillUint32(out: Uint32Array): void {
    this.fillMapped(out, 0, out.length, 0xffffffff, 1);
  }

  /**
   * Writes ((output & mask) * scale) to out[start..end) for successive outputs: one pass for the common
   * "keep some bits and scale" conversions (torch's float uniform is mask 0xffffff, scale 2^-24).
   */
  fillMapped(out: Uint32Array | Float32Array | Float64Array, start: number, end: number, mask: number, scale: number): void {
    const s = this.state;
    let i = start;
    while (i < end) {
      if (this.next >= N) this.twist();
      const stop = Math.min(end, i + (N - this.next));
      let k = this.next;
      for (; i < stop; i++) {
        let y = s[k++];
        y ^= y >>> 11;
        y ^= (y << 7) & 0x9d2c5680;
        y ^= (y << 15) & 0xefc60000;
        y ^= y >>> 18;
        out[i] = ((y & mask) >>> 0) * scale;
      }
      this.next = k;
    }
  }

  /**
   * Uniform integers in [0, n) into out[start..end) for n from 1 to 2^32: each is an output below the largest multiple
   * of n taken modulo n, the outputs at or above it skipped (rejection sampling), in one pass over the state.
   */
  fillBelow(out: Float64Array, start: number, end: number, n: number): void {
    if (!Number.isInteger(n) || n < 1 || n > 4294967296) {
      throw invalidArgument('n', 'an integer from 1 to 2^32', n, 'fillBelow draws from [0, n) with one output per value.');
    }
    const limit = 4294967296 - (4294967296 % n);
    const s = this.state;
    const km = n <= 2147483648 && end > start ? scratchKernels() : null;
    const count = end - start;
    const at = km?.layout([N * 4, count * 8]);
    if (km && at) {
      // The WebAssembly kernel (kernels.wat fillBelow; about 3x faster, same stream).
      const [st, o] = at;
      this.inKernel(km.u32(st, N), (next) => km.kernels.fillBelow(st, next, o, count, n, limit === 4294967296 ? 0 : limit));
      out.set(km.f64(o, count), start);
      return;
    }
    let i = start;
    while (i < end) {
      if (this.next >= N) this.twist();
      let k = this.next;
      while (i < end && k < N) {
        let y = s[k++];
        y ^= y >>> 11;
        y ^= (y << 7) & 0x9d2c5680;
        y ^= (y << 15) & 0xefc60000;
        y ^= y >>> 18;
        y >>>= 0;
        // y - floor(y / n) * n is y mod n exactly below 2^32, and several times faster than floating-point %.
        if (y < limit) out[i++] = y - Math.floor(y / n) * n;
      }
      this.next = k;
    }
  }

  /**
   * Continues this stream in a WebAssembly kernel: the state copied into `words` (624 words of the kernels' memory),
   * `draw` given the index of the next word to temper (624: used up) and returning it after, the state copied back.
   */
  inKernel(words: Uint32Array, draw: (next: number) => number): void {
    words.set(this.state);
    this.next = draw(this.next);
    this.state.set(words);
  }

  /** An independent copy with the same position in the stream. */
  clone(): Mt19937 {
    const copy = new Mt19937(0);
    copy.state.set(this.state);
    copy.next = this.next;
    return copy;
  }

  /** Regenerates all 624 words (the reference "next_state" step). */
  private twist(): void {
    const s = this.state;
    let k = 0;
    for (; k < N - M; k++) {
      const y = (s[k] & UPPER_MASK) | (s[k + 1] & LOWER_MASK);
      s[k] = s[k + M] ^ (y >>> 1) ^ (y & 1 ? MATRIX_A : 0);
    }
    for (; k < N - 1; k++) {
      const y = (s[k] & UPPER_MASK) | (s[k + 1] & LOWER_MASK);
      s[k] = s[k + M - N] ^ (y >>> 1) ^ (y & 1 ? MATRIX_A : 0);
    }
    const y = (s[N - 1] & UPPER_MASK) | (s[0] & LOWER_MASK);
    s[N - 1] = s[M - 1] ^ (y >>> 1) ^ (y & 1 ? MATRIX_A : 0);
    this.next = 0;
  }
}
