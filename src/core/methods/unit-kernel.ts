/**
 * A stage-1 step taken unit by unit (barrier-step.ts) in WebAssembly memory: the latent, the step's guided outputs
 * and stepped latent, and what guidance reads live in one KernelMemory for the step, and each unit's output is
 * guided and stepped in one pass by kernels.wat unitStep, with the arithmetic of guideUnit followed by the Euler
 * step (same bits; with its copies about 2.5x faster than those two TypeScript loops, docs/benchmarks.md). Copies: the latent,
 * layout and permutations when the step is set up (while the devices work), each unit's output as it comes in, and
 * the results out once the last unit is in. The next step's units can be shuffled from the stepped latent where it
 * lies (shuffleNext), so that after the last unit only that unit's pass and the shuffle stand between the devices and
 * their next work; the results are copied out after the hand-over.
 * Portable: no Node APIs.
 */
import { AsgdError } from '../errors.ts';
import type { EulerCoefficients } from '../kernels/euler-range.ts';
import type { StatefulKernelStep } from '../kernels/stateful-coefficients.ts';
import type { KernelMemory } from '../kernels/memory.ts';
import type { StepGuidance } from './guidance.ts';
import type { PatchLayout } from './polyphase.ts';

export interface UnitKernelSetup {
  /** The patches at the step, where `layout` puts them. */
  latent: Float32Array;
  layout: PatchLayout;
  /** Byte permutations (pixel-interaction.ts draws bytes for up to 256 patches), or null for none; at most 256 patches. */
  perm: Uint8Array | null;
  n: number;
  /** Values per patch (and per unit). */
  size: number;
  /** The scheduler's step: an Euler-type one (EulerCoefficients), or one that reads a whole-latent array (StatefulKernelStep: DPM-Solver++'s history, Euler ancestral's noise). */
  step: { euler: EulerCoefficients } | { stateful: StatefulKernelStep };
  /** Values the guidance key may hold: `size` (default), or n * size for one structure target per patch. */
  keyLength?: number;
}

/**
 * Up to this many patches unitStep keeps the key patch's output by a bit mask, beyond it by a `select` (a branch):
 * with every fourth element the key's, the branch mispredicts often enough to cost more than the mask; with one in
 * nine or fewer it costs less (a `.scratch` timing of take, ns per element: 4 patches 5.0 select, 4.4 mask; 9
 * patches 5.05 and 5.5; 16 patches 6.25 and 7.07).
 */
const MASK_KEY_PATCHES = 4;

/** Guidance modes of unitStep. */
const MODE = { none: 0, eps: 1, x0: 2 } as const;

/** unitStep's `keep` toward structure targets: no patch keeps its output (patch numbers are bytes, below 256). */
const KEEP_NONE = 256;

/**
 * unitStep's step arguments (kind, sigma, dt, cOut, s2p1, c1, invR0): DPM-Solver++'s sigma, alpha, ratio and c0 in the
 * Euler kinds' four slots, c1 and invR0 in their own; Euler ancestral's as the Euler kinds', sigma_up in c1's.
 */
function unitStepArgs(step: UnitKernelSetup['step']): [number, number, number, number, number, number, number] {
  if ('euler' in step) {
    const c = step.euler;
    return [c.kind, c.sigma, c.dt, c.cOut, c.s2p1, 0, 0];
  }
  const c = step.stateful.coefficients;
  return 'up' in c ? [c.kind, c.sigma, c.dt, c.cOut, c.s2p1, c.up, 0] : [c.kind, c.sigma, c.alpha, c.ratio, c.c0, c.c1, c.invR0];
}

export class UnitKernel {
  /** unitStep's kind, sigma, dt, cOut, s2p1, c1 and invR0. */
  private readonly stepArgs: [number, number, number, number, number, number, number];
  private guidance: { mode: number; alpha: number; sigma: number; keep: number; keyStride: number } = { mode: MODE.none, alpha: 1, sigma: 0, keep: 0, keyStride: 0 };

  private constructor(
    private readonly km: KernelMemory,
    private readonly s: UnitKernelSetup,
    private readonly at: Record<'out' | 'lat' | 'eps' | 'nxt' | 'key' | 'wts' | 'base' | 'off' | 'perm' | 'kLat' | 'kOut' | 'units' | 'nextPerm' | 'hin' | 'hout', number>,
  ) {
    const { latent, layout, perm, n, size } = s;
    km.owner = this;
    km.f32(at.lat, latent.length).set(latent);
    const input = 'stateful' in s.step ? s.step.stateful.input : null;
    if (input !== null) km.f32(at.hin, latent.length).set(input);
    this.stepArgs = unitStepArgs(s.step);
    km.i32(at.base, n).set(layout.base);
    km.i32(at.off, size).set(layout.offset);
    const table = km.u8(at.perm, size * n);
    if (perm !== null) table.set(perm);
    else for (let p = 0; p < table.length; p++) table[p] = p % n; // no interaction: unit j is patch j
  }

  /** The step laid out in `km` (which it then holds), or null where the memory cannot grow to hold it. */
  static create(km: KernelMemory, s: UnitKernelSetup): UnitKernel | null {
    const { n, size } = s;
    const L = s.latent.length;
    // The key: the key patch's reference, or structure targets (keyLength). Weights: one float64 per
    // element of a unit (a plane's repeated over the channels). The next step's units and permutations for shuffleNext.
    // DPM-Solver++'s history before (the x0 predictions of the step before) and after, or Euler ancestral's noise
    // (and an unused region), laid out as the latent.
    const history = 'stateful' in s.step ? L * 4 : 0;
    const at = km.layout([size * 4, L * 4, L * 4, L * 4, (s.keyLength ?? size) * 4, size * 8, n * 4, size * 4, size * n, size * 4, size * 4, L * 4, size * n, history, history]);
    if (at === null) return null;
    const [out, lat, eps, nxt, key, wts, base, off, perm, kLat, kOut, units, nextPerm, hin, hout] = at;
    return new UnitKernel(km, s, { out, lat, eps, nxt, key, wts, base, off, perm, kLat, kOut, units, nextPerm, hin, hout });
  }

  private claimed(): void {
    if (this.km.owner !== this) {
      throw new AsgdError('A stage-1 step taken unit by unit lost its kernel memory to another step before it was complete', { kind: 'internal' });
    }
  }

  /** The step's guidance (asked when the first unit is in), or null for none. */
  guide(g: StepGuidance | null): void {
    this.claimed();
    if (g === null) return;
    const { n, size } = this.s;
    const plane = g.weights.length;
    if (size % plane !== 0) throw new AsgdError('Guidance weights that do not tile a patch', { kind: 'internal', expected: `a divisor of ${size}`, received: String(plane) });
    const perPatch = g.targets === 'per-patch';
    if (g.key.length !== (perPatch ? n * size : size) || g.key.length > (this.s.keyLength ?? size)) {
      throw new AsgdError('A guidance key of the wrong size', { kind: 'internal', expected: String(perPatch ? n * size : size), received: String(g.key.length) });
    }
    this.km.f32(this.at.key, g.key.length).set(g.key);
    const weights = this.km.f64(this.at.wts, size);
    for (let c = 0; c < size; c += plane) weights.set(g.weights, c);
    this.guidance = {
      mode: g.space === 'x0' ? MODE.x0 : MODE.eps, alpha: g.alpha, sigma: g.sigma,
      // Toward structure targets every patch is guided, the key patch too.
      keep: g.targets === undefined ? 0 : KEEP_NONE, keyStride: perPatch ? size * 4 : 0,
    };
  }

  /** Unit j's output guided and stepped where its elements lie. */
  take(output: Float32Array, j: number): void {
    this.claimed();
    const { n, size } = this.s;
    const a = this.at;
    const g = this.guidance;
    const [kind, sigma, dt, cOut, s2p1, c1, invR0] = this.stepArgs;
    this.km.f32(a.out, size).set(output);
    this.km.kernels.unitStep(
      a.out, a.lat, a.eps, a.nxt, a.key, a.wts, a.base, a.off, a.perm,
      j, n, 0, size, g.mode, g.alpha, g.sigma, n <= MASK_KEY_PATCHES ? 1 : 0, g.keep, g.keyStride, kind, sigma, dt, cOut, s2p1, a.hin, a.hout, c1, invR0,
    );
  }

  /**
   * Once every unit is in, before finish: the next step's units from the stepped latent, laid out as this step's
   * patches (the same layout), as pixel-interaction.ts shuffleToUnits takes them from it (kernels.wat shuffleUnits:
   * same bits), written into `into`.
   */
  shuffleNext(perm: Uint8Array | null, scale: number, into: readonly Float32Array[]): void {
    this.claimed();
    const { n, size } = this.s;
    const a = this.at;
    if (perm !== null) this.km.u8(a.nextPerm, perm.length).set(perm);
    this.km.kernels.shuffleUnits(a.nxt, a.units, a.base, a.off, a.nextPerm, perm === null ? 0 : 1, n, size, scale);
    into.forEach((dst, j) => dst.set(this.km.f32(a.units + j * size * 4, size)));
  }

  /** Once every unit is in: the guided outputs, the stepped latent and the key patch's latent and output, copied out. */
  finish(eps: Float32Array, next: Float32Array, keyLatent: Float32Array, keyOutput: Float32Array): void {
    this.claimed();
    const L = this.s.latent.length;
    const { size } = this.s;
    const a = this.at;
    // The key patch (patch 0), gathered from the latent and the outputs (its outputs are never guided).
    const key0 = this.s.layout.base[0]!;
    this.km.kernels.gatherPatch(a.lat, a.kLat, key0, a.off, size);
    this.km.kernels.gatherPatch(a.eps, a.kOut, key0, a.off, size);
    eps.set(this.km.f32(this.at.eps, L));
    next.set(this.km.f32(this.at.nxt, L));
    keyLatent.set(this.km.f32(this.at.kLat, size));
    keyOutput.set(this.km.f32(this.at.kOut, size));
    // The state after the step (every position was stepped here), with DPM-Solver++'s history after it.
    if ('stateful' in this.s.step) {
      const { stateful } = this.s.step;
      stateful.commit(stateful.coefficients.keeps ? Float32Array.from(this.km.f32(a.hout, L)) : null);
    }
    this.km.owner = null;
  }
}
