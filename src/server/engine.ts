/**
 * What the server runs jobs through: an engine that generates one image into a file. The real one
 * (library-engine.ts) wraps loadPipeline / generate / saveImage; tests use a fast deterministic fake behind the
 * same interface.
 */
import type { SchedulerConfig } from '../core/schedulers/types.ts';
import type { GenerationPhase, GenerationProgress } from '../core/generation/progress.ts';
import type { GenerateParams } from '../core/params.ts';
import type { UpscaleParams } from '../node/pipeline.ts';

/** The library's progress, with the engine's own phases around it: loading the model and saving the file. */
export interface EngineProgress extends Omit<GenerationProgress, 'phase'> {
  phase: GenerationPhase | 'load' | 'save';
}

export interface EngineRunContext {
  signal: AbortSignal;
  onProgress(p: EngineProgress): void;
  /** A low-resolution preview, PNG-encoded. */
  onPreview(png: Uint8Array): void;
}

export interface ModelEntry {
  /** The name jobs use (the folder's name). */
  name: string;
  /** Native size in pixels, when known without loading the model. */
  nativeWidth?: number;
  nativeHeight?: number;
  /** The folder's scheduler config, when readable: estimates count the steps the scheduler runs. */
  schedulerConfig?: SchedulerConfig;
  /**
   * What jobs are checked against before they are queued (model-facts.ts), as the library's check stage does; with
   * no family, only the checks that need no model are made before queueing.
   */
  family?: 'sd' | 'sdxl' | 'sd3';
  latentChannels?: number;
  patchSize?: number;
  /** SD3: the transformer's position table side in patches (pos_embed_max_size). */
  posEmbedMaxSize?: number;
}

export interface DeviceEntry {
  name: string;
  available: boolean;
  note: string;
}

/** What a finished run reports besides its file. */
export interface EngineResult {
  /** What the library warned of (a prompt cut to the model's length, a scheduler replaced, ...); empty when nothing. */
  warnings: string[];
}

export interface Engine {
  models(): ModelEntry[];
  /** The device list jobs run on (one device set: jobs run one at a time). */
  readonly deviceSet: string;
  devices(): Promise<DeviceEntry[]>;
  /** Reads the model list again, for an engine whose models change while it runs (the fleet's workers come and go). */
  refresh?(): Promise<unknown>;
  /**
   * Checks that each of `maskWords` is in `prompt` as `model`'s tokenizer splits them (the library's check);
   * throws an AsgdError naming maskWords otherwise. An engine without the model's tokenizer (the fleet's, until a
   * worker shared it) leaves the check to where the job runs.
   */
  checkMaskWords?(model: string | undefined, prompt: string, maskWords: string[]): void;
  /**
   * Generates with `params` on `model` (undefined: the first) and writes the image with its metadata to `file`
   * atomically: the file exists complete or not at all. Rejects with an error of kind 'cancelled' on abort.
   */
  generate(params: GenerateParams, model: string | undefined, file: string, ctx: EngineRunContext): Promise<EngineResult>;
  /** Upscales the image in `source` (a file) with `params` and writes the result to `file`, as generate does. */
  upscale(source: string, params: Omit<UpscaleParams, 'image'>, model: string | undefined, file: string, ctx: EngineRunContext): Promise<EngineResult>;
  close(): Promise<void>;
}
