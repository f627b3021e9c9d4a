/**
 * Numeric helpers that reproduce what diffusers' schedulers compute with NumPy and with float32 torch
 * scalars. diffusers keeps its schedule (alphas_cumprod, sigmas) as float32 tensors and does the
 * per-step scalar arithmetic on 0-d float32 tensors; near t = 0 the expression (1 - abar) / abar
 * amplifies a one-ulp difference in abar about a thousandfold, so the float32 rounding has to be
 * reproduced, not approximated in float64. `f32` (Math.fround) after every scalar operation does that
 * exactly for + - * / and sqrt (float64 has enough bits that the double rounding is harmless).
 */

export const f32 = Math.fround;

/** sqrt of a float32 value, rounded to float32 (torch's `x ** 0.5` on a float32 tensor is sqrt). */
export function sqrt32(x: number): number {
  return f32(Math.sqrt(x));
}

/**
 * log of a float32 value rounded to float32. torch evaluates a 0-d float tensor's log with the C
 * library's logf; rounding the float64 log to float32 agrees with it except in rare last-ulp cases.
 */
export function log32(x: number): number {
  return f32(Math.log(x));
}

export function exp32(x: number): number {
  return f32(Math.exp(x));
}

/** NumPy's round(): half to even. */
export function roundHalfEven(x: number): number {
  const r = Math.round(x);
  // Math.round rounds .5 up; step back when that landed on an odd integer.
  if (Math.abs(x - Math.trunc(x)) === 0.5 && r % 2 !== 0) return r - 1;
  return r;
}

/** np.linspace(start, stop, num) in float64, element for element as NumPy computes it. */
export function linspace(start: number, stop: number, num: number): number[] {
  if (num <= 0) return [];
  const div = num - 1;
  const delta = stop - start;
  const out: number[] = [];
  for (let i = 0; i < num; i++) {
    // NumPy: y = arange(num) * (delta / div) + start, then y[-1] = stop.
    out.push(div > 0 ? i * (delta / div) + start : i * delta + start);
  }
  if (num > 1) out[num - 1] = stop;
  return out;
}

/**
 * np.arange(start, stop, step) for a float step, as NumPy fills it: the length is
 * ceil((stop - start) / step) and element i is start + i * ((start + step) - start).
 */
export function arange(start: number, stop: number, step: number): number[] {
  const length = Math.max(0, Math.ceil((stop - start) / step));
  const delta = start + step - start;
  const out: number[] = [];
  for (let i = 0; i < length; i++) out.push(i === 0 ? start : i === 1 ? start + step : start + i * delta);
  return out;
}

/**
 * np.interp(x, arange(len(fp)), fp) for x inside [0, len - 1] (clamped outside, as NumPy does), in
 * float64.
 */
export function interpIndex(x: number, fp: ArrayLike<number>): number {
  const last = fp.length - 1;
  if (x <= 0) return fp[0]!;
  if (x >= last) return fp[last]!;
  const j = Math.floor(x);
  const slope = fp[j + 1]! - fp[j]!;
  return slope * (x - j) + fp[j]!;
}
