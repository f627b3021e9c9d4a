/**
 * The denoising loop: a method fuses one model output for the whole latent per step, the scheduler steps it.
 * Initial noise is torch-compatible: randn([N, C, p_h, p_w], seed) relocated into the HR latent, which at N = 1
 * is exactly diffusers' starting latent for the same seed.
 */
import { createMethod } from '../core/methods/index.ts';
import type { MethodPreview, ProgressEvent, UnetUnit, UnitResult } from '../core/methods/types.ts';
import { patchesToLatent } from '../core/methods/polyphase.ts';
import type { ResolvedParams } from '../core/params.ts';
import { createRandom } from '../core/random/index.ts';
import type { Scheduler, SchedulerState } from '../core/schedulers/types.ts';
import { throwIfAborted } from '../core/errors.ts';

export interface SamplingInput {
  params: ResolvedParams;
  scheduler: Scheduler;
  latentHeight: number;
  latentWidth: number;
  nativeHeight: number;
  nativeWidth: number;
  channels: number;
  latentMultiple: number;
  timeIds?: boolean;
  evaluate(units: UnetUnit[]): Promise<UnitResult[]>;
  maskTokens: readonly number[];
  signal?: AbortSignal;
  onWarning?(message: string): void;
  onProgress?(event: ProgressEvent, unitsTotal: number, unitsDone: number): void;
  previewEvery: number;
  onPreviewLatent?(latent: Float32Array, height: number, width: number, step: number): void;
  /** Test instrument: sees every step's fused output and latent. */
  onStep?(step: number, fused: Float32Array, latent: Float32Array, state: SchedulerState): void;
}

export interface SamplingResult {
  latent: Float32Array;
  unitEvaluations: number;
  /** The method's options as resolved (defaults filled in), for the metadata. */
  methodOptions: Record<string, unknown>;
}

export async function runMethod(input: SamplingInput): Promise<SamplingResult> {
  const { params: p, scheduler } = input;
  const method = createMethod(p.method, { ...p.methodOptions, previewEvery: input.previewEvery }, {
    height: input.latentHeight,
    width: input.latentWidth,
    nativeHeight: input.nativeHeight,
    nativeWidth: input.nativeWidth,
    latentMultiple: input.latentMultiple,
    channels: input.channels,
    numSteps: scheduler.numSteps,
    timeIds: input.timeIds,
  });
  const geo = method.plan.geometry;
  // As diffusers does, ancestral noise continues the same torch generator after the initial latent.
  const noiseGen = createRandom(p.seed, 'noise');
  const noise = noiseGen.randn([geo.count, geo.channels, geo.patchHeight, geo.patchWidth]);
  const sigma0 = scheduler.initNoiseSigma;
  if (sigma0 !== 1) for (let i = 0; i < noise.length; i++) noise[i] = noise[i]! * sigma0;
  let latent = patchesToLatent(noise, geo);
  let state = scheduler.initialState();
  const ctx = {
    scheduler,
    evaluate: input.evaluate,
    random: { permutation: createRandom(p.seed, 'permutation'), jitter: createRandom(p.seed, 'jitter') },
    maskTokens: input.maskTokens,
    signal: input.signal,
    onProgress: (e: ProgressEvent) => input.onProgress?.(e, method.unitsTotal, e.unitsDone),
    onWarning: input.onWarning,
    onPreview: input.onPreviewLatent
      ? (pv: MethodPreview) => {
          const t = pv.denoised ?? pv.latent;
          input.onPreviewLatent!(t.data, t.shape[2]!, t.shape[3]!, pv.step);
        }
      : undefined,
  };
  for (let k = 0; k < scheduler.numSteps; k++) {
    throwIfAborted(input.signal);
    const fused = await method.predict(latent, k, ctx);
    const r = scheduler.step(state, fused, latent, noiseGen);
    input.onStep?.(k, fused, r.prevSample, r.state);
    latent = r.prevSample;
    state = r.state;
  }
  const methodOptions: Record<string, unknown> = { ...method.options };
  delete methodOptions['previewEvery'];
  return { latent, unitEvaluations: method.unitsTotal, methodOptions };
}
