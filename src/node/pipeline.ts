/**
 * The text-to-image pipeline: the coordinator. It owns the latent, the scheduler state and the random
 * generators; device workers own the ONNX Runtime sessions. A generation is a pure function of its settings and
 * seed, whatever the number of devices.
 */
import path from 'node:path';
import { AsgdError, throwIfAborted } from '../core/errors.ts';
import { chwToRgb8, type RgbImage } from '../core/image.ts';
import { buildMetadata, type GenerationMetadata } from '../core/metadata.ts';
import type { ProgressEvent as MethodProgress, UnetUnit, UnitResult } from '../core/methods/types.ts';
import { resolveParams, type GenerateParams, type ResolvedParams } from '../core/params.ts';
import { createRandom } from '../core/random/index.ts';
import { createScheduler } from '../core/schedulers/index.ts';
import { ClipTokenizer, type TokenizedPrompt } from '../core/text/clip-tokenizer.ts';
import { axisWeights, blendTile, planAxis } from '../core/vae/tiling.ts';
import { runMethod } from './sampling.ts';
import { readModelFolder, type ModelSpec } from './model/folder.ts';
import { DeviceWorker } from './runner/device-worker.ts';
import { checkProvidersAvailable, parseDevices, type DeviceSpec } from './runner/devices.ts';
import { DevicePool } from './runner/pool.ts';
import type { ComponentName } from './runner/protocol.ts';
import type { TextConditioning } from '../onnx/unet.ts';
import type { IoInfo } from '../onnx/session.ts';

export const TOOL_VERSION = 'asgdiffusion 0.1.0';

export interface PipelineOptions {
  /** Comma-separated device list ("cpu", "cpu,cpu", "webgpu:0", "cuda:0,cuda:1") or parsed specs. Default "cpu". */
  devices?: string | DeviceSpec[];
  /** Intra-op threads per CPU worker (0: ONNX Runtime's default). */
  threads?: number;
  /** Build the attention-probe UNet for the cross-attention mask (default true; false skips it). */
  attentionProbe?: boolean;
  /** Test hook: make device `index` fail after `after` UNet calls. */
  injectFailure?: { device: number; after: number };
}

export type GenerationPhase = 'text' | 'denoise' | 'decode';

export interface GenerationProgress {
  phase: GenerationPhase;
  /** 1 or 2 for the two-stage methods, 1 otherwise. */
  stage: number;
  /** Steps completed (0..totalSteps). */
  step: number;
  totalSteps: number;
  /** UNet evaluations completed and planned in total. */
  unitsDone: number;
  unitsTotal: number;
  /** VAE tiles decoded so far, during 'decode'. */
  tilesDone?: number;
  tilesTotal?: number;
}

export interface GenerateRunOptions {
  onProgress?: (p: GenerationProgress) => void;
  /** Called with warnings a user should see (prompt truncated, mask unavailable). */
  onWarning?: (message: string) => void;
  /** Called every `previewEvery` steps with a low-resolution preview (key patch / downscaled latent) as RGB. */
  onPreview?: (image: RgbImage, step: number) => void;
  previewEvery?: number;
  signal?: AbortSignal;
}

export interface GenerationTimings {
  textMs: number;
  denoiseMs: number;
  /** Time the coordinator waited on UNet calls. */
  unetMs: number;
  /** Everything in the denoising loop outside UNet calls (methods, scheduler, RNG). */
  hostMs: number;
  decodeMs: number;
  totalMs: number;
}

export interface GenerateResult {
  image: RgbImage;
  metadata: GenerationMetadata;
  /** Final latent [1, C, h, w] (before VAE scaling). */
  latent: Float32Array;
  unetEvaluations: number;
  timings: GenerationTimings;
  warnings: string[];
}

export interface ModelInfo {
  dir: string;
  name: string;
  family: string;
  layout: string;
  className: string;
  nativeWidth: number;
  nativeHeight: number;
  latentChannels: number;
  scheduler: { className: string; config: Record<string, unknown> };
  vae: { scalingFactor: number; forceUpcast: boolean };
  components: Partial<Record<ComponentName, { file: string; inputs: IoInfo[]; outputs: IoInfo[] }>>;
  attentionProbe: { available: boolean; layers: string[]; reason?: string };
  /** Set when the UNet export fixed its spatial input size (static-shape exports). */
  staticLatentSize?: { height: number; width: number };
  notes: string[];
}

function contractError(message: string, parameter: string, expected: string, received: string): AsgdError {
  return new AsgdError(message, { kind: 'model', parameter, expected, received, hint: 'The model does not match the Stable Diffusion ONNX contract; re-export it with optimum-cli' });
}

export class Pipeline {
  private closed = false;
  private constructor(
    readonly spec: ModelSpec,
    readonly devices: DeviceSpec[],
    private workers: DeviceWorker[],
    private readonly pool: DevicePool,
    private readonly tokenizer: ClipTokenizer,
    readonly info: ModelInfo,
    private readonly probeLayers: string[],
  ) {}

  static async load(dir: string, options: PipelineOptions = {}): Promise<Pipeline> {
    const spec = readModelFolder(dir);
    if (spec.family === 'sdxl') {
      throw new AsgdError('SDXL models are not supported yet', { kind: 'model', parameter: 'model', received: spec.className, hint: 'Use an SD 1.x or 2.x export for now' });
    }
    const devices = typeof options.devices === 'string' || options.devices === undefined
      ? parseDevices(options.devices ?? 'cpu', options.threads ?? 0)
      : options.devices;
    checkProvidersAvailable(devices);
    const tokenizer = new ClipTokenizer(spec.tokenizer, 'tokenizer');

    let probe: { file: string; layers: string[] } | { reason: string } = { reason: 'disabled' };
    if (options.attentionProbe !== false) {
      const { prepareAttentionProbe } = await import('./probe.ts');
      probe = await prepareAttentionProbe(spec.paths.unet);
    }
    const workers: DeviceWorker[] = [];
    try {
      for (const [i, d] of devices.entries()) {
        const w = new DeviceWorker(d);
        workers.push(w);
        const paths: Partial<Record<ComponentName, string>> = { unet: spec.paths.unet };
        if (i === 0) {
          paths.textEncoder = spec.paths.textEncoder;
          paths.vaeDecoder = spec.paths.vaeDecoder;
          if ('file' in probe) paths.unetProbe = probe.file;
        }
        await w.request<'ok'>(
          {
            type: 'init', paths, session: { provider: d.provider, deviceId: d.deviceId, threads: d.threads },
            failAfterUnetCalls: options.injectFailure?.device === i ? options.injectFailure.after : undefined,
          },
          'loading the model',
        );
      }
      const desc = await workers[0]!.request<'describe'>({ type: 'describe' }, 'describing the model');
      const info = describeModel(spec, desc.components, probe);
      const pool = new DevicePool(workers, new Set('file' in probe ? [0] : []));
      return new Pipeline(spec, devices, workers, pool, tokenizer, info, 'layers' in probe ? probe.layers : []);
    } catch (err) {
      await Promise.all(workers.map((w) => w.terminate()));
      throw err;
    }
  }

  get nativeSize(): { width: number; height: number } {
    return { width: this.info.nativeWidth, height: this.info.nativeHeight };
  }

  async generate(params: GenerateParams, run: GenerateRunOptions = {}): Promise<GenerateResult> {
    if (this.closed) throw new AsgdError('The pipeline is closed', { kind: 'invalid-argument', parameter: 'pipeline', hint: 'Load it again' });
    const p = resolveParams(params, this.nativeSize);
    const signal = run.signal;
    const warnings: string[] = [];
    const warn = (m: string) => {
      warnings.push(m);
      run.onWarning?.(m);
    };
    const onAbort = () => void this.abortWorkers();
    signal?.addEventListener('abort', onAbort, { once: true });
    try {
      throwIfAborted(signal);
      const t0 = performance.now();
      const { cond, prompt } = await this.encodeText(p, warn);
      const maskTokens = this.maskTokens(p, prompt);
      await Promise.all(this.workers.map((w) => w.request<'ok'>({ type: 'setConditioning', cond }, 'receiving the text embeddings')));
      const tText = performance.now();

      this.checkStaticSize(p);
      const scheduler = createScheduler(this.spec.schedulerConfig, p.steps, p.scheduler);
      const latentH = p.height / 8;
      const latentW = p.width / 8;
      let unetMs = 0;
      const evaluate = async (units: UnetUnit[]): Promise<UnitResult[]> => {
        const t = performance.now();
        try {
          return await this.pool.evaluate(units, p.guidanceScale, signal);
        } finally {
          unetMs += performance.now() - t;
        }
      };
      const sampled = await runMethod({
        params: p,
        scheduler,
        latentHeight: latentH,
        latentWidth: latentW,
        nativeHeight: this.info.nativeHeight / 8,
        nativeWidth: this.info.nativeWidth / 8,
        channels: this.info.latentChannels,
        latentMultiple: this.latentMultiple(),
        evaluate,
        maskTokens,
        signal,
        onWarning: warn,
        onProgress: (e: MethodProgress, unitsTotal: number, unitsDone: number) =>
          run.onProgress?.({ phase: 'denoise', stage: e.stage, step: e.step, totalSteps: p.steps, unitsDone, unitsTotal }),
        previewEvery: run.onPreview ? run.previewEvery ?? 5 : 0,
        onPreviewLatent: run.onPreview
          ? (latent, h, w, step) => void this.decodeLatent(latent, h, w, { ...p.vae, tiling: 'off' }).then((img) => run.onPreview!(img, step), () => undefined)
          : undefined,
      });
      const tDenoise = performance.now();
      throwIfAborted(signal);
      const image = await this.decodeLatent(sampled.latent, latentH, latentW, p.vae, (done, total) =>
        run.onProgress?.({ phase: 'decode', stage: 2, step: p.steps, totalSteps: p.steps, unitsDone: sampled.unitEvaluations, unitsTotal: sampled.unitEvaluations, tilesDone: done, tilesTotal: total }),
      );
      throwIfAborted(signal);
      const tEnd = performance.now();
      const metadata = buildMetadata(p, { name: path.basename(this.spec.dir), family: this.spec.family }, scheduler.name, TOOL_VERSION);
      metadata.methodOptions = sampled.methodOptions;
      return {
        image,
        metadata,
        latent: sampled.latent,
        unetEvaluations: sampled.unitEvaluations,
        warnings,
        timings: {
          textMs: tText - t0,
          denoiseMs: tDenoise - tText,
          unetMs,
          hostMs: tDenoise - tText - unetMs,
          decodeMs: tEnd - tDenoise,
          totalMs: tEnd - t0,
        },
      };
    } catch (err) {
      if (signal?.aborted) {
        await this.abortWorkers();
        throw new AsgdError('Generation cancelled', { kind: 'cancelled' });
      }
      throw err;
    } finally {
      signal?.removeEventListener('abort', onAbort);
    }
  }

  /** Static-shape UNets accept one latent size: every unit must be exactly native-sized. */
  private checkStaticSize(p: ResolvedParams): void {
    const fixed = this.info.staticLatentSize;
    if (!fixed) return;
    const nh = fixed.height * 8;
    const nw = fixed.width * 8;
    const multiple = p.width % nw === 0 && p.height % nh === 0;
    if (!multiple || (p.method === 'direct' && (p.width !== nw || p.height !== nh))) {
      throw new AsgdError('This UNet export has a static input size', {
        kind: 'invalid-argument',
        parameter: 'width/height',
        expected: p.method === 'direct' ? `${nw}x${nh} with method direct, or multiples of it with a patch method` : `multiples of ${nw}x${nh}`,
        received: `${p.width}x${p.height}`,
        hint: 'Re-export the model with dynamic axes (optimum-cli does by default) to use other sizes',
      });
    }
  }

  private latentMultiple(): number {
    // Three downsamplings in SD's UNet: latent sizes must be multiples of 8; the probe of smaller UNets may allow less.
    return 8;
  }

  private async encodeText(p: ResolvedParams, warn: (m: string) => void): Promise<{ cond: TextConditioning; prompt: TokenizedPrompt }> {
    const prompt = this.tokenizer.encode(p.prompt);
    const negative = this.tokenizer.encode(p.negativePrompt);
    if (prompt.truncated > 0) warn(`The prompt is too long: ${prompt.truncated} token(s) beyond the model's ${this.tokenizer.maxLength - 2} were dropped`);
    if (negative.truncated > 0) warn(`The negative prompt is too long: ${negative.truncated} token(s) were dropped`);
    const r = await this.workers[0]!.request<'encodeText'>(
      { type: 'encodeText', which: 'textEncoder', rows: [negative.ids, prompt.ids], layer: 'last' },
      'encoding the prompt',
    );
    return { cond: { hidden: r.hidden, tokens: r.tokens, dim: r.dim }, prompt };
  }

  /** Token positions whose cross-attention forms the mask: content tokens, or the words the user named. */
  private maskTokens(p: ResolvedParams, prompt: TokenizedPrompt): number[] {
    const content = prompt.tokens.map((_, i) => i + 1);
    if (!p.maskWords) return content;
    const norm = (t: string) => t.replace(/<\/w>$/, '').toLowerCase();
    const picked: number[] = [];
    for (const word of p.maskWords) {
      const pieces = this.tokenizer.encode(word).tokens.map(norm);
      let found = false;
      for (let i = 0; i + pieces.length <= prompt.tokens.length; i++) {
        if (pieces.every((piece, k) => norm(prompt.tokens[i + k]!) === piece)) {
          for (let k = 0; k < pieces.length; k++) picked.push(i + k + 1);
          found = true;
        }
      }
      if (!found) {
        throw new AsgdError(`The mask word ${JSON.stringify(word)} is not in the prompt`, {
          kind: 'invalid-argument', parameter: 'maskWords', expected: 'words that appear in the prompt', received: JSON.stringify(word),
          hint: `Prompt words: ${[...new Set(prompt.tokens.map(norm))].join(' ')}`,
        });
      }
    }
    return [...new Set(picked)].sort((a, b) => a - b);
  }

  /** VAE decoding, tiled when the latent exceeds the tile (or when asked); latents divided by the scaling factor. */
  async decodeLatent(
    latent: Float32Array, h: number, w: number, opts: ResolvedParams['vae'], onTile?: (done: number, total: number) => void,
  ): Promise<RgbImage> {
    const c = this.info.latentChannels;
    const inv = 1 / this.spec.vae.scalingFactor;
    const scaled = new Float32Array(latent.length);
    for (let i = 0; i < latent.length; i++) scaled[i] = latent[i]! * inv;
    const tile = opts.tiling === 'on' || (opts.tiling === 'auto' && (h > opts.tileSize || w > opts.tileSize));
    const decoder = this.workers[0]!;
    if (!tile) {
      const r = await decoder.request<'vaeDecode'>({ type: 'vaeDecode', latent: scaled, channels: c, height: h, width: w }, 'VAE decoding', [scaled.buffer]);
      onTile?.(1, 1);
      return chwToRgb8(r.data, r.height, r.width);
    }
    const ys = planAxis(h, opts.tileSize, opts.overlap);
    const xs = planAxis(w, opts.tileSize, opts.overlap);
    let canvas: Float32Array | undefined;
    let scale = 8;
    let wy: Float32Array[] = [];
    let wx: Float32Array[] = [];
    let done = 0;
    for (const [iy, ty] of ys.entries()) {
      for (const [ix, tx] of xs.entries()) {
        const th = ty.end - ty.start;
        const tw = tx.end - tx.start;
        const part = new Float32Array(c * th * tw);
        for (let ch = 0; ch < c; ch++) {
          for (let y = 0; y < th; y++) {
            const src = (ch * h + ty.start + y) * w + tx.start;
            part.set(scaled.subarray(src, src + tw), (ch * th + y) * tw);
          }
        }
        const r = await decoder.request<'vaeDecode'>({ type: 'vaeDecode', latent: part, channels: c, height: th, width: tw }, `VAE tile ${done + 1}`, [part.buffer]);
        if (!canvas) {
          scale = r.height / th;
          canvas = new Float32Array(3 * h * scale * w * scale);
          wy = axisWeights(ys, h, opts.overlap, scale);
          wx = axisWeights(xs, w, opts.overlap, scale);
        }
        blendTile(canvas, h * scale, w * scale, r.data, { y: ty, x: tx }, wy[iy]!, wx[ix]!, scale);
        onTile?.(++done, ys.length * xs.length);
      }
    }
    return chwToRgb8(canvas!, h * scale, w * scale);
  }

  private async abortWorkers(): Promise<void> {
    // Terminating stops an in-flight model call at once; the pipeline cannot be used afterwards.
    this.closed = true;
    await Promise.all(this.workers.map((w) => w.terminate()));
  }

  async close(): Promise<void> {
    if (this.closed) {
      await Promise.all(this.workers.map((w) => w.terminate()));
      return;
    }
    this.closed = true;
    await Promise.all(this.workers.map((w) => w.request<'ok'>({ type: 'close' }, 'closing').catch(() => undefined)));
    await Promise.all(this.workers.map((w) => w.terminate()));
  }
}

function describeModel(
  spec: ModelSpec,
  components: Partial<Record<ComponentName, { inputs: IoInfo[]; outputs: IoInfo[] }>>,
  probe: { file: string; layers: string[] } | { reason: string },
): ModelInfo {
  const unet = components.unet;
  const te = components.textEncoder;
  if (!unet || !te) throw new Error('describeModel: components missing');
  const sample = unet.inputs.find((i) => i.name === 'sample') ?? unet.inputs[0]!;
  const channels = typeof sample.shape[1] === 'number' ? sample.shape[1] : 4;
  const hidden = unet.inputs.find((i) => i.name === 'encoder_hidden_states');
  const teOut = te.outputs.find((o) => o.name === 'last_hidden_state') ?? te.outputs[0]!;
  const unetDim = hidden?.shape[2];
  const teDim = teOut.shape[2];
  if (typeof unetDim === 'number' && typeof teDim === 'number' && unetDim !== teDim) {
    throw contractError('The text encoder and the UNet disagree on the text embedding width', 'unet', `encoder_hidden_states width ${teDim} (the text encoder's)`, String(unetDim));
  }
  const staticH = sample.shape[2];
  let native = spec.unetSampleSize ? spec.unetSampleSize * 8 : typeof staticH === 'number' && staticH > 0 ? staticH * 8 : 512;
  if (!spec.unetSampleSize && typeof staticH !== 'number') spec.notes.push('no unet/config.json sample_size: assuming a native size of 512 px');
  native = Math.max(64, native);
  const files: Record<string, string> = {
    textEncoder: spec.paths.textEncoder, unet: spec.paths.unet, vaeDecoder: spec.paths.vaeDecoder,
  };
  const out: ModelInfo['components'] = {};
  for (const [k, v] of Object.entries(components) as [ComponentName, { inputs: IoInfo[]; outputs: IoInfo[] }][]) {
    if (k === 'unetProbe') continue;
    out[k] = { file: path.relative(spec.dir, files[k] ?? ''), ...v };
  }
  const sc = spec.schedulerConfig as Record<string, unknown>;
  return {
    dir: spec.dir,
    name: path.basename(spec.dir),
    family: spec.family,
    layout: spec.layout,
    className: spec.className,
    nativeWidth: native,
    nativeHeight: native,
    latentChannels: channels,
    scheduler: { className: typeof sc['_class_name'] === 'string' ? (sc['_class_name'] as string) : 'EulerDiscreteScheduler', config: sc },
    vae: spec.vae,
    components: out,
    staticLatentSize: typeof staticH === 'number' && typeof sample.shape[3] === 'number' ? { height: staticH, width: sample.shape[3] } : undefined,
    attentionProbe: 'file' in probe ? { available: true, layers: probe.layers } : { available: false, layers: [], reason: probe.reason },
    notes: spec.notes,
  };
}

export async function loadPipeline(dir: string, options?: PipelineOptions): Promise<Pipeline> {
  return Pipeline.load(dir, options);
}
