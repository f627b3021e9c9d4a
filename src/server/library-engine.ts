/**
 * The real engine: the library's loadPipeline / generate / saveImage. One pipeline is kept loaded (the model of
 * the last job); a cancelled generation ends its pipeline's workers, so the next job loads it again.
 */
import path from 'node:path';
import { AsgdError } from '../core/errors.ts';
import { checkPrompt } from '../core/generation/check.ts';
import type { GenerateParams } from '../core/params.ts';
import { ClipTokenizer } from '../core/text/clip-tokenizer.ts';
import { readTokenizerFiles } from '../node/model/folder.ts';
import { encodeImage, saveImage } from '../node/image/write.ts';
import { loadPipeline, type GenerateResult, type GenerateRunOptions, type Pipeline, type PipelineOptions, type UpscaleParams } from '../node/pipeline.ts';
import { checkAvailableDevices } from '../node/runner/devices.ts';
import type { DeviceEntry, Engine, EngineResult, EngineRunContext, ModelEntry } from './engine.ts';
import { checkModelFolders, readModelFolderFacts } from './model-facts.ts';

export class LibraryEngine implements Engine {
  private loaded?: { name: string; pipeline: Pipeline };
  private readonly entries: { name: string; dir: string }[];
  /** Each model's CLIP tokenizer, read once when a job first names mask words. */
  private readonly tokenizers = new Map<string, ClipTokenizer>();
  readonly deviceSet: string;

  constructor(modelDirs: string[], private readonly options: PipelineOptions = {}) {
    if (modelDirs.length === 0) throw new Error('LibraryEngine: no model folder');
    this.entries = checkModelFolders(modelDirs, true);
    this.deviceSet = typeof options.devices === 'string' ? options.devices : 'cpu';
  }

  models(): ModelEntry[] {
    return this.entries.map((e) => ({ name: e.name, ...readModelFolderFacts(e.dir) }));
  }

  async devices(): Promise<DeviceEntry[]> {
    return (await checkAvailableDevices()).map((d) => ({ name: d.name, available: d.available, note: d.note }));
  }

  checkMaskWords(model: string | undefined, prompt: string, maskWords: string[]): void {
    const entry = this.entry(model);
    let tokenizer = this.tokenizers.get(entry.dir);
    if (!tokenizer) {
      tokenizer = new ClipTokenizer(readTokenizerFiles(path.join(entry.dir, 'tokenizer'), 'tokenizer'), 'tokenizer');
      this.tokenizers.set(entry.dir, tokenizer);
    }
    checkPrompt({ prompt, negativePrompt: '', maskWords }, tokenizer);
  }

  generate(params: GenerateParams, model: string | undefined, file: string, ctx: EngineRunContext): Promise<EngineResult> {
    return this.run(model, params.steps ?? 30, file, ctx, (pipeline, run) => pipeline.generate(params, run));
  }

  upscale(source: string, params: Omit<UpscaleParams, 'image'>, model: string | undefined, file: string, ctx: EngineRunContext): Promise<EngineResult> {
    return this.run(model, params.steps ?? 30, file, ctx, (pipeline, run) => pipeline.upscale({ ...params, image: source }, run));
  }

  /** Runs one job on the model's pipeline (loaded once, reloaded after a cancel) and saves its image. */
  private async run(
    model: string | undefined, steps: number, file: string, ctx: EngineRunContext,
    job: (pipeline: Pipeline, run: GenerateRunOptions) => Promise<GenerateResult>,
  ): Promise<EngineResult> {
    const entry = this.entry(model);
    ctx.onProgress({ phase: 'load', stage: 1, step: 0, totalSteps: steps, unitsDone: 0, unitsTotal: 0 });
    if (this.loaded && this.loaded.name !== entry.name) {
      await this.loaded.pipeline.close();
      this.loaded = undefined;
    }
    // A job cancelled while its model loads ends the load too (a large model takes a while).
    this.loaded ??= { name: entry.name, pipeline: await loadPipeline(entry.dir, { ...this.options, signal: ctx.signal }) };
    const pipeline = this.loaded.pipeline;
    let result;
    try {
      result = await job(pipeline, {
        signal: ctx.signal,
        onProgress: (p) => ctx.onProgress({ ...p }),
        previewEvery: Math.max(1, Math.round(steps / 10)),
        onPreview: (img) => void encodeImage(img, 'png').then((png) => ctx.onPreview(png), () => undefined),
      });
    } catch (err) {
      // After a cancellation or a device failure the pipeline's workers are gone: load it again next time.
      if (err instanceof AsgdError && (err.kind === 'cancelled' || err.kind === 'device')) {
        await pipeline.close().catch(() => undefined);
        if (this.loaded?.pipeline === pipeline) this.loaded = undefined;
      }
      throw err;
    }
    ctx.onProgress({ phase: 'save', stage: 2, step: steps, totalSteps: steps, unitsDone: result.unetEvaluations, unitsTotal: result.unetEvaluations });
    await saveImage(file, result.image, result.metadata, false);
    return { warnings: result.warnings };
  }

  /** The entry of `model` (undefined: the first); throws naming the model when unknown. */
  private entry(model: string | undefined): { name: string; dir: string } {
    const entry = model === undefined ? this.entries[0]! : this.entries.find((e) => e.name === model);
    if (!entry) throw new AsgdError(`Unknown model ${model}`, { kind: 'invalid-argument', parameter: 'model', expected: this.entries.map((e) => e.name).join(', ') });
    return entry;
  }

  async close(): Promise<void> {
    await this.loaded?.pipeline.close();
    this.loaded = undefined;
  }
}
