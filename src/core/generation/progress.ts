/** The progress events of a generation, the same from the Node pipeline and the browser pipeline. Portable. */
import type { RgbImage } from '../image.ts';

/** What a progress event is about: encoding the prompt, VAE encoding an upscale's input, denoising, or VAE decoding. */
export type GenerationPhase = 'text' | 'encode' | 'denoise' | 'decode';

export interface GenerationProgress {
  phase: GenerationPhase;
  /** 1 or 2 for the two-stage methods, 1 otherwise. */
  stage: number;
  /** The step running or just run, from 1 (0 while the prompt is encoded; decode events carry totalSteps). */
  step: number;
  totalSteps: number;
  /** UNet evaluations completed and planned in total (both 0 in the text event, before the plan's count is known). */
  unitsDone: number;
  unitsTotal: number;
  /**
   * VAE tile runs done so far ('encode', 'decode') and planned: one per tile, or, where the exact statistics of
   * tiled decoding take several passes over the tiles, one per tile and pass (a pass that converges early ends the
   * count at its total).
   */
  tilesDone?: number;
  tilesTotal?: number;
  /**
   * What each device is doing, in the order of the device list (the Node pipeline; absent where there is one
   * implicit device, as in the browser). During denoising an event comes when a batch of units is done and, from
   * the second batch on, also when one is handed to the devices (the last event's numbers, the devices busy).
   */
  devices?: DeviceActivity[];
}

/** What one device of a pipeline is doing at the time of a progress event. */
export interface DeviceActivity {
  /** The device's label, as errors and logs name it: cpu#0, cpu#1, cuda:0, webgpu:0. */
  id: string;
  /** Whether it is running a model call (UNet, text encoder or VAE) right now. */
  busy: boolean;
  /** UNet calls it completed in this run (a unit split into its two CFG halves counts as two). */
  calls: number;
  /** Given up after a failure (with retry on, the other devices took over its work). */
  lost?: boolean;
}

/**
 * The stage of a method's last step, which decode events report: 1 for direct (one stage) and when stage 1 takes
 * every step, else 2 (multidiffusion's steps are all stage 2).
 */
export function finalStage(method: { name: string; numSteps: number; stage1Steps: number }): 1 | 2 {
  return method.name === 'direct' || method.numSteps <= method.stage1Steps ? 1 : 2;
}

/**
 * A run's warnings, collected and told to `onWarning` as each comes; `first` (the pipeline's own, about how the model
 * meets the devices) are told at once. `wording` rewrites each first (the browser pipeline: settings' names for flags).
 */
export function collectWarnings(
  onWarning: ((message: string) => void) | undefined, first: readonly string[] = [], wording: (message: string) => string = (m) => m,
): { warnings: string[]; warn: (message: string) => void } {
  const warnings: string[] = [];
  const warn = (message: string) => {
    const m = wording(message);
    warnings.push(m);
    onWarning?.(m);
  };
  first.forEach(warn);
  return { warnings, warn };
}

/** What a caller of the Node or browser pipeline's generate may watch (each adds its own cancellation signal). */
export interface GenerationCallbacks {
  onProgress?: (p: GenerationProgress) => void;
  /** Warnings a user should see (prompt truncated, mask unavailable). */
  onWarning?: (message: string) => void;
  /** Called every `previewEvery` steps with a low-resolution preview (key patch / downscaled latent) as RGB. */
  onPreview?: (image: RgbImage, step: number) => void;
  previewEvery?: number;
}

/** Where a generation's time went, ms. */
export interface GenerationTimings {
  textMs: number;
  denoiseMs: number;
  /** Time the coordinator waited on UNet calls. */
  unetMs: number;
  /** Everything in the denoising loop outside UNet calls (methods, scheduler, RNG). */
  hostMs: number;
  decodeMs: number;
  totalMs: number;
  /** Upscales: resizing and VAE-encoding the input (and the structure target). */
  encodeMs?: number;
}
