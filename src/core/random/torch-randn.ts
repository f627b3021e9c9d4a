/**
 * torch.randn on the CPU generator, reproduced bit for bit (reference: torch 1.13, AVX2 kernel, the one
 * x86-64 CPUs with AVX2 run; see scripts/reference/torch_randn.py).
 *
 * torch fills a float32 tensor in one of two ways:
 *  - numel >= 16 (contiguous): draw numel uniform floats (24 random bits each), then turn every block
 *    of 16 into normals with Box-Muller, u1 = 1 - data[j] and u2 = data[j + 8] for j < 8. If numel is
 *    not a multiple of 16, draw 16 fresh uniforms into the last 16 slots and transform those again.
 *    The AVX2 kernel evaluates log, sin and cos with the Cephes polynomials of avx_mathfun.h in
 *    float32, and GCC contracts each multiply-add there into an FMA; both are emulated exactly below.
 *  - numel < 16: one double-precision Box-Muller pair per two values (53-bit uniforms from two 32-bit
 *    draws); the unused second value is cached in the generator and returned by the next such draw.
 * The first way runs in the WebAssembly kernels where they are there (kernels.wat fillNormal: the same operations,
 * about 2.5x faster), else in the TypeScript below; both give the same bits.
 */
import { invalidArgument } from '../errors.ts';
import { scratchKernels } from '../kernels/memory.ts';
import { STATE_WORDS, type Mt19937 } from './mt19937.ts';

/** The generator state torch keeps besides MT19937: the cached second value of a double Box-Muller pair. */
export interface NormalCache {
  next: number | undefined;
}

const f = Math.fround;
const TWO_POW_24 = 16777216;
const TWO_POW_MINUS_24 = 1 / TWO_POW_24;
const TWO_POW_MINUS_53 = 2 ** -53;
const TWO_POW_32 = 4294967296;

/** Largest tensor randn builds; Float32Array lengths beyond this are impractical anyway. */
const MAX_NUMEL = 2 ** 31 - 1;

/**
 * Validates a seed and reduces it modulo 2^64 as torch's manual_seed does (negative seeds are taken as
 * their two's complement, so -1 is 2^64 - 1).
 */
export function torchSeed(seed: number | bigint, parameter = 'seed'): bigint {
  const expected = 'an integer from -2^63 to 2^64-1 (a number must be a safe integer; use a bigint beyond 2^53)';
  if (typeof seed === 'number') {
    if (!Number.isSafeInteger(seed)) throw invalidArgument(parameter, expected, seed, 'Pass a whole number such as 42.');
    return BigInt.asUintN(64, BigInt(seed));
  }
  if (typeof seed === 'bigint') {
    if (seed < -(2n ** 63n) || seed >= 2n ** 64n) {
      throw invalidArgument(parameter, expected, seed, 'torch.Generator.manual_seed accepts this range only.');
    }
    return BigInt.asUintN(64, seed);
  }
  throw invalidArgument(parameter, expected, seed, 'Pass a number or a bigint.');
}

/** Number of elements of `shape`, validated: every dimension a non-negative integer. */
export function numelOf(shape: readonly number[], parameter = 'shape'): number {
  if (!Array.isArray(shape)) {
    throw invalidArgument(parameter, 'an array of non-negative integers', shape, 'Pass e.g. [1, 4, 64, 64].');
  }
  let n = 1;
  for (const dim of shape) {
    if (!Number.isInteger(dim) || dim < 0) {
      throw invalidArgument(parameter, 'an array of non-negative integers', shape, 'Every dimension must be a whole number >= 0.');
    }
    n *= dim;
  }
  if (n > MAX_NUMEL) {
    throw invalidArgument(parameter, `at most ${MAX_NUMEL} elements`, `${n} elements`, 'Draw the noise in smaller pieces.');
  }
  return n;
}

/** Fills `out` exactly like torch.randn(out.length) continues the stream of the generator (mt, cache). */
export function torchRandnInto(mt: Mt19937, cache: NormalCache, out: Float32Array): void {
  if (out.length >= 16) fillNormalVectorized(mt, out);
  else for (let i = 0; i < out.length; i++) out[i] = nextNormalDouble(mt, cache);
}

// ---------------------------------------------------------------- numel >= 16: the AVX2 kernel

function fillNormalVectorized(mt: Mt19937, data: Float32Array): void {
  const n = data.length;
  const km = scratchKernels();
  const at = km?.layout([STATE_WORDS * 4, n * 4]);
  if (km && at) {
    // The WebAssembly kernel (kernels.wat fillNormal, the same operations two lanes at a time): same bits.
    const [st, o] = at;
    mt.inKernel(km.u32(st, STATE_WORDS), (next) => km.kernels.fillNormal(st, next, o, n));
    data.set(km.f32(o, n));
    return;
  }
  mt.fillMapped(data, 0, n, 0xffffff, TWO_POW_MINUS_24);
  boxMullerBlocks(data);
  if (n % 16 !== 0) {
    const base = n - 16;
    mt.fillMapped(data, base, n, 0xffffff, TWO_POW_MINUS_24);
    boxMuller16(data, base);
  }
}

/*
 * Every multiply-add below is a float32 FMA in torch's binary (GCC contracts a*b+c under -mfma). Here it
 * is f(a * b + c): a * b is exact in double, so the only possible error is double rounding, when the
 * double sum lands exactly halfway between two floats. An exhaustive check over every input the kernel
 * can see (all 2^24 values of u1 and of u2, see test/randn.test.ts, RANDN_EXHAUSTIVE=1) found no input
 * where this differs from a correctly rounded FMA, so the fast form is exact here.
 */
// Cephes constants as avx_mathfun.h rounds them to float32.
const SQRT_HALF = f(0.707106781186547524);
const LOG_P0 = f(7.0376836292e-2);
const LOG_P1 = f(-1.151461031e-1);
const LOG_P2 = f(1.167699874e-1);
const LOG_P3 = f(-1.2420140846e-1);
const LOG_P4 = f(1.4249322787e-1);
const LOG_P5 = f(-1.6668057665e-1);
const LOG_P6 = f(2.0000714765e-1);
const LOG_P7 = f(-2.4999993993e-1);
const LOG_P8 = f(3.3333331174e-1);
const LOG_Q1 = f(-2.1219444e-4);
const LOG_Q2 = f(0.693359375);
const FOUR_OVER_PI = f(1.27323954473516);
const MINUS_DP1 = f(-0.78515625);
const MINUS_DP2 = f(-2.4187564849853515625e-4);
const MINUS_DP3 = f(-3.77489497744594108e-8);
const SIN_P0 = f(-1.9515295891e-4);
const SIN_P1 = f(8.3321608736e-3);
const SIN_P2 = f(-1.6666654611e-1);
const COS_P0 = f(2.443315711809948e-5);
const COS_P1 = f(-1.388731625493765e-3);
const COS_P2 = f(4.166664568298827e-2);
/** 2 * pi computed in double, then rounded to float, as `_mm256_set1_ps(2.0f * c10::pi<double>)`. */
const TWO_PI_F = f(2 * Math.PI);

/** 2^-k for k = 0..25, to normalise a 24-bit integer mantissa without touching float bits. */
const POW2_NEG = Float64Array.from({ length: 26 }, (_, k) => 2 ** -k);

/** boxMuller16 on every block of 16 of `data` in TypeScript (the kernel's `boxMuller` is checked against it). */
export function boxMullerBlocks(data: Float32Array): void {
  for (let i = 0; i + 16 <= data.length; i += 16) boxMuller16(data, i);
}

/** Turns 16 uniforms at data[base..base+16) into 16 normals (normal_fill_16_AVX2). */
function boxMuller16(data: Float32Array, base: number): void {
  for (let j = 0; j < 8; j++) {
    // 1 - data[j] = m / 2^24 with m an integer in [1, 2^24].
    const radius = f(Math.sqrt(-2 * logAvx2(TWO_POW_24 - data[base + j]! * TWO_POW_24)));
    sinCosAvx2(f(TWO_PI_F * data[base + j + 8]!), sinCos);
    // torch stores fma(n, std = 1, mean = 0); "+ 0" reproduces its -0 -> +0.
    data[base + j] = f(radius * sinCos[1]!) + 0;
    data[base + j + 8] = f(radius * sinCos[0]!) + 0;
  }
}

const sinCos = new Float64Array(2);

/**
 * log256_ps of avx_mathfun.h (Cephes logf) for x = m / 2^24, m an integer in [1, 2^24], with torch's
 * FMA contractions. Exported for the exhaustive test.
 */
export function logAvx2(m: number): number {
  // frexp from the integer: mantissa m / 2^bits in [0.5, 1), exponent bits - 24.
  const bits = 32 - Math.clz32(m);
  let x = m * POW2_NEG[bits]!;
  let e = bits - 24;
  if (x < SQRT_HALF) {
    e -= 1;
    x = x + x - 1; // exact
  } else {
    x = x - 1; // exact
  }
  const z = f(x * x);
  let y = f(LOG_P0 * x + LOG_P1);
  y = f(y * x + LOG_P2);
  y = f(y * x + LOG_P3);
  y = f(y * x + LOG_P4);
  y = f(y * x + LOG_P5);
  y = f(y * x + LOG_P6);
  y = f(y * x + LOG_P7);
  y = f(y * x + LOG_P8);
  y = f(y * x);
  y = f(y * z + f(e * LOG_Q1));
  y = f(y - z * 0.5);
  return f(e * LOG_Q2 + f(x + y));
}

/**
 * sincos256_ps of avx_mathfun.h (Cephes sinf/cosf) for theta >= 0, with torch's FMA contractions;
 * writes [sin, cos] into `out`. Exported for the exhaustive test.
 */
export function sinCosAvx2(theta: number, out: Float64Array): void {
  // theta * 4/pi lies in [0, 8], so "| 0" is the truncating conversion (cvttps2dq).
  const octant = ((f(theta * FOUR_OVER_PI) | 0) + 1) & ~1;
  let r = f(octant * MINUS_DP1 + theta);
  r = f(octant * MINUS_DP2 + r);
  r = f(octant * MINUS_DP3 + r);
  const rr = f(r * r);
  let c = f(COS_P0 * rr + COS_P1);
  c = f(c * rr + COS_P2);
  c = f(c * rr);
  c = f(c * rr - rr * 0.5);
  c = f(c + 1);
  let s = f(SIN_P0 * rr + SIN_P1);
  s = f(s * rr + SIN_P2);
  s = f(s * rr);
  s = f(s * r + r);
  // Octants 2 mod 4 swap the polynomials; the sign bits follow the octant as in Cephes.
  const swap = (octant & 2) !== 0;
  let sin = swap ? c : s;
  let cos = swap ? s : c;
  if ((octant & 4) !== 0) sin = -sin;
  if (((octant - 2) & 4) === 0) cos = -cos;
  out[0] = sin;
  out[1] = cos;
}

// ---------------------------------------------------------------- numel < 16: normal_distribution<double>

/** A uniform double in [0, 1) from 53 bits of two successive draws (torch's random64, high word first). */
function nextUniformDouble(mt: Mt19937): number {
  const hi = mt.nextUint32() & 0x1fffff;
  const lo = mt.nextUint32();
  return (hi * TWO_POW_32 + lo) * TWO_POW_MINUS_53;
}

function nextNormalDouble(mt: Mt19937, cache: NormalCache): number {
  if (cache.next !== undefined) {
    const v = cache.next;
    cache.next = undefined;
    return f(v) + 0;
  }
  const u1 = nextUniformDouble(mt);
  const u2 = nextUniformDouble(mt);
  const radius = Math.sqrt(-2 * Math.log(1 - u2));
  const theta = 2 * Math.PI * u1;
  cache.next = radius * Math.sin(theta);
  return f(radius * Math.cos(theta)) + 0;
}
