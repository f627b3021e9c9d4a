/**
 * A stage-1 step taken unit by unit (barrier-step.ts) in WebAssembly memory: the latent, the step's guided outputs
 * and stepped latent, and what guidance reads live in one KernelMemory for the step, and each unit's output is
 * guided and stepped in one pass by kernels.wat unitStep, with the arithmetic of guideUnit followed by the Euler
 * step (same bits; about 4x faster than those two TypeScript loops, docs/benchmarks.md). Copies: the latent,
 * layout and permutations when the step is set up (while the devices work), each unit's output as it comes in, and
 * the results out once the last unit is in.
 * Portable: no Node APIs.
 */
import { AsgdError } from '../errors.ts';
import type { EulerCoefficients } from '../kernels/euler-range.ts';
import type { KernelMemory } from '../kernels/memory.ts';
import type { StepGuidance } from './guidance.ts';
import type { Permutations } from './pixel-interaction.ts';
import type { PatchLayout } from './polyphase.ts';

export interface UnitKernelSetup {
  /** The patches at the step, where `layout` puts them. */
  latent: Float32Array;
  layout: PatchLayout;
  perm: Permutations | null;
  n: number;
  /** Values per patch (and per unit). */
  size: number;
  euler: EulerCoefficients;
}

/** Guidance modes of unitStep. */
const MODE = { none: 0, eps: 1, x0: 2 } as const;

export class UnitKernel {
  private readonly at: {
    out: number; lat: number; eps: number; nxt: number; key: number; wts: number; base: number; off: number; perm: number; kLat: number; kOut: number;
  };
  private readonly permBytes: number;
  private guidance: { mode: number; alpha: number; sigma: number; plane: number } = { mode: MODE.none, alpha: 1, sigma: 0, plane: 1 };

  constructor(private readonly km: KernelMemory, private readonly s: UnitKernelSetup) {
    const { latent, layout, perm, n, size } = s;
    const L = latent.length;
    this.permBytes = perm === null ? 0 : perm.BYTES_PER_ELEMENT;
    // Weights are one float64 per position of a patch's plane, never more than `size`.
    const [out, lat, eps, nxt, key, wts, base, off, permAt, kLat, kOut] = km.layout([
      size * 4, L * 4, L * 4, L * 4, size * 4, size * 8, n * 4, size * 4, perm === null ? 0 : perm.byteLength, size * 4, size * 4,
    ]) as [number, number, number, number, number, number, number, number, number, number, number];
    this.at = { out, lat, eps, nxt, key, wts, base, off, perm: permAt, kLat, kOut };
    km.owner = this;
    km.f32(lat, L).set(latent);
    km.i32(base, n).set(layout.base);
    km.i32(off, size).set(layout.offset);
    if (perm !== null) km.same(perm, permAt).set(perm);
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
    const plane = g.weights.length;
    if (plane > this.s.size) throw new AsgdError('Guidance weights longer than a patch', { kind: 'internal', expected: `at most ${this.s.size}`, received: String(plane) });
    this.km.f32(this.at.key, this.s.size).set(g.key);
    this.km.f64(this.at.wts, plane).set(g.weights);
    this.guidance = { mode: g.space === 'x0' ? MODE.x0 : MODE.eps, alpha: g.alpha, sigma: g.sigma, plane };
  }

  /** Unit j's output guided and stepped where its elements lie. */
  take(output: Float32Array, j: number): void {
    this.claimed();
    const { n, size, euler: c } = this.s;
    const a = this.at;
    const g = this.guidance;
    this.km.f32(a.out, size).set(output);
    this.km.kernels.unitStep(
      a.out, a.lat, a.eps, a.nxt, a.key, a.wts, a.base, a.off, a.perm, this.permBytes, a.kLat, a.kOut,
      j, n, 0, size, g.plane, g.mode, g.alpha, g.sigma, c.kind, c.sigma, c.dt, c.cOut, c.s2p1,
    );
  }

  /** Once every unit is in: the guided outputs, the stepped latent and the key patch's latent and output, copied out. */
  finish(eps: Float32Array, next: Float32Array, keyLatent: Float32Array, keyOutput: Float32Array): void {
    this.claimed();
    const L = this.s.latent.length;
    const { size } = this.s;
    eps.set(this.km.f32(this.at.eps, L));
    next.set(this.km.f32(this.at.nxt, L));
    keyLatent.set(this.km.f32(this.at.kLat, size));
    keyOutput.set(this.km.f32(this.at.kOut, size));
    this.km.owner = null;
  }
}
