/**
 * High-resolution methods. A method turns the current whole latent into one fused model output for the
 * whole latent at a step; the scheduler then steps it. Methods never step patches themselves.
 *
 * The unit of work is one classifier-free-guided UNet evaluation of one native-size (or, for `direct`,
 * full-size) latent at one step. Units handed to `evaluate` in one call are independent of each other and
 * may run on different devices in any order; a unit that depends on another unit's result is handed over
 * in a later call. Portable: no Node APIs.
 */
import type { StatefulKernelStep } from '../kernels/stateful-coefficients.ts';
import type { EulerCoefficients } from '../kernels/euler-range.ts';
import type { RandomSource } from '../random/types.ts';
import type { Scheduler } from '../schedulers/types.ts';
import type { Tensor } from '../tensor.ts';
import type { AbortSignalLike } from '../platform.ts';

export type { MethodName } from '../options/registry.ts';
import type { MethodName } from '../options/registry.ts';

export type UnitKind = 'full' | 'patch' | 'window';

export interface UnetUnit {
  /** Stable identity, e.g. "s1/k12/p3", used in progress events and error messages. */
  id: string;
  kind: UnitKind;
  /** Step index (0-based) this unit belongs to. */
  step: number;
  /** Patch or window index within its step. */
  index: number;
  /**
   * Model input, already multiplied by scheduler.inputScale(step): shape [1, C, height, width]. Each unit's
   * sample has its own ArrayBuffer. It is valid until the evaluate promise settles: the method reuses the
   * buffer at a later step (copy it to keep it; transferring it to a worker is fine, a detached buffer is
   * replaced). Likewise the method copies what it needs out of UnitResult and never keeps it: it reads a result
   * before it next awaits anything, though it may hand other units over first (staged.ts builds the mask after
   * the next step's units are out).
   */
  sample: Float32Array;
  height: number;
  width: number;
  /** Model timestep for this unit (scheduler.timesteps[step]). */
  timestep: number;
  /** Ask for the cross-attention probe outputs (only the key patch does). */
  wantAttention: boolean;
  /**
   * With wantAttention: the text token columns the structure mask averages (MethodContext.maskTokens). The probe
   * graph averages them on the device, so only one value per query position comes back (AttentionMap.meanOver).
   */
  maskTokens?: readonly number[];
  /** SDXL micro-conditioning: [orig_h, orig_w, crop_top, crop_left, target_h, target_w] in pixels. */
  timeIds?: readonly number[];
}

/** Cross-attention probabilities of one up-block attn2 layer, conditional branch, averaged over heads. */
export interface AttentionMap {
  /** Layer name as found in the graph, e.g. "/up_blocks.1/attentions.0/transformer_blocks.0/attn2". */
  layer: string;
  /** Spatial size of the layer's query grid. */
  height: number;
  width: number;
  /** The text length (the probabilities' last axis). */
  tokens: number;
  /**
   * Present when the map is already averaged over text tokens (the probe graph does it): those token columns,
   * as maskColumns() picks them (mask.ts checks they are the ones it reads).
   */
  meanOver?: readonly number[];
  /** [height * width, tokens], row-major; [height * width] when `meanOver` is set. */
  data: Float32Array;
}

export interface UnitResult {
  /** CFG-combined model output, same shape as the unit's sample. */
  output: Float32Array;
  /** Present when the unit asked for attention and the model supports it. */
  attention?: AttentionMap[];
}

export interface ProgressEvent {
  stage: 1 | 2;
  step: number;
  totalSteps: number;
  unitsDone: number;
  unitsTotal: number;
  unitId?: string;
}

/** A look at the generation in progress, for a live preview (the caller decodes it with the VAE). */
export interface MethodPreview {
  stage: 1 | 2;
  step: number;
  /** 'key-patch': stage-1 key patch 0 (a low-resolution view); 'downscaled': the HR latent box-averaged by n_h x n_w. */
  kind: 'key-patch' | 'downscaled';
  /** The latent passed to predict at this step (not input-scaled), [1, C, height, width]. */
  latent: Tensor;
  /** Denoised estimate x0 = (x - sigma * eps) / alpha from the fused output; only for epsilon-prediction schedulers. */
  denoised?: Tensor;
}

export interface EvaluateHint {
  /** Higher runs first among queued calls (default 0). */
  priority?: number;
  /**
   * One unit of a stream (the stage-2 dataflow, a run-ahead chain): more units follow as soon as others finish, so a
   * device idle now will have work shortly. The dispatcher's 'balance' then does not split it into CFG halves: two
   * halves on two devices cost more device time than the whole unit on one, which the units that follow would need.
   */
  stream?: boolean;
  /**
   * Called with each unit's result as soon as it is in (any order, each unit once), before the promise resolves, so
   * that host work on it overlaps the units still running (the dispatcher starts the freed device's next task first). Optional for an evaluator: one that never calls it just
   * resolves, and the method takes the results from there. An exception thrown by it fails the evaluation.
   */
  onResult?(index: number, result: UnitResult): void;
}

export interface MethodContext {
  scheduler: Scheduler;
  /**
   * Evaluates independent units (possibly in parallel); results are in the same order as `units`. Several calls
   * may be outstanding at once (stage-1 run-ahead); `hint.priority` orders queued calls (higher first).
   */
  evaluate(units: UnetUnit[], hint?: EvaluateHint): Promise<UnitResult[]>;
  /**
   * One scheduler step of part of the latent: `sample` and `modelOutput` hold the same positions of the latent and
   * of the fused output at `step`, and the result (`into`, or a new array) equals those positions of the whole-latent
   * step bit for bit; with `at`, only the positions it lists are stepped (Scheduler.stepPositions). Arrays that
   * hold a part of the latent compactly (a patch, a tile) come with `positions`, the latent position of each element:
   * a scheduler with a history per position (DPM-Solver++, LMS, PNDM) steps each position from its own, and Euler
   * ancestral takes its positions' share of the step's noise. Every position is stepped once per step, in step order.
   * Present only where that holds (a step that treats each position by itself: every built-in scheduler's,
   * Scheduler.stepPositions or Scheduler.elementwise) and the latent is not changed between steps; with it, stage-1 patches run ahead of each other between pixel-interaction steps (staged.ts) and stage-2
   * windows start before the previous step is done (window-flow.ts). The loop takes the latent the method stepped this
   * way (HighResMethod.steppedLatent) instead of stepping it again.
   */
  advance?(step: number, modelOutput: Float32Array, sample: Float32Array, into?: Float32Array, at?: Int32Array, positions?: Int32Array): Float32Array;
  /**
   * Where `advance` is an Euler step: its scalars at `step` (null where the kernels cannot take that step), so that a
   * method may take it fused with its own elementwise work in WebAssembly (barrier-step.ts), with the same bits.
   */
  eulerStep?(step: number): EulerCoefficients | null;
  /**
   * Where `advance` is a DPM-Solver++ or Euler ancestral step (Scheduler.statefulCoefficients): step `step` of every
   * position in the kernels, with the history or noise it reads (null where the kernels cannot take it), so that a
   * method may take it fused with its own elementwise work in WebAssembly (barrier-step.ts), with the same bits. Asking
   * records nothing (for Euler ancestral it draws the step's noise, as the step's first part would); `commit` records
   * the step.
   */
  statefulStep?(step: number): StatefulKernelStep | null;
  /** Seeded streams owned by the coordinator. */
  random: { permutation: RandomSource; jitter: RandomSource };
  /** Token indices (into the 77 tokens) whose attention forms the mask. */
  maskTokens: readonly number[];
  /** Why the model gives no attention maps, when the pipeline knows: the mask's warning says it. */
  noMapsReason?: string;
  signal?: AbortSignalLike;
  /** Called after every evaluate call returns (unitsDone/unitsTotal count over the whole run). */
  onProgress?(event: ProgressEvent): void;
  /** Call onPreview every n steps (after steps n-1, 2n-1, ...); 0 or absent: never. */
  previewEvery?: number;
  /** Called every `previewEvery` steps. */
  onPreview?(preview: MethodPreview): void;
  /** Called once per distinct warning (e.g. the model gave no attention maps, mask fell back to 1). */
  onWarning?(message: string): void;
  /**
   * asg: a fixed x0 target for structure guidance, replacing the key patch's estimate: one patch [C, p_h, p_w]
   * for all (an upscale's input encoded at the patch size), or one per patch [N, C, p_h, p_w] (patch order of
   * polyphase.ts). Every patch, the key patch too, is guided toward it in x0 space.
   */
  structureTarget?: Float32Array;
}

export interface HighResMethod {
  readonly name: MethodName;
  /** Warnings recorded so far (also reported through ctx.onWarning), e.g. the mask fallback. */
  readonly warnings: readonly string[];
  /** Total units over all steps (sum of unitsAt). */
  readonly unitsTotal: number;
  /** Number of UNet units the method evaluates at this step (for progress and the evaluation-count test). */
  unitsAt(step: number): number;
  /**
   * Fused model output for the whole latent at `step`. `latent` is the current latent [1, C, h, w]
   * (not input-scaled). Methods may keep state across steps (the stale key output and mask).
   */
  predict(latent: Float32Array, step: number, ctx: MethodContext): Promise<Float32Array>;
  /**
   * The latent after `step` when the method already stepped all of it with ctx.advance while that step ran (stage-1
   * run-ahead, the stage-2 dataflow): bit for bit the scheduler's whole-latent step, so the denoise loop takes it
   * instead of stepping again. Undefined otherwise. Valid right after predict(step) returns; read once.
   */
  steppedLatent?(step: number): Float32Array | undefined;
}
