/**
 * A fast deterministic engine for the server's tests: it walks the phases and steps of a generation with a fixed
 * delay per step, reports previews, honours cancellation between steps, and writes a small image whose pixels
 * depend only on the seed, with the library's metadata, atomically. `log` gets one line per completed file.
 */
import fs from 'node:fs';
import path from 'node:path';
import { AsgdError } from '../../src/core/errors.ts';
import { buildMetadata } from '../../src/core/metadata.ts';
import { resolveParams, type GenerateParams } from '../../src/core/params.ts';
import { encodeImage, saveImage } from '../../src/node/image/write.ts';
import { TOOL_VERSION } from '../../src/node/version.ts';
import type { DeviceActivity } from '../../src/core/generation/progress.ts';
import type { DeviceEntry, Engine, EngineResult, EngineRunContext, ModelEntry } from '../../src/server/engine.ts';
import type { UpscaleParams } from '../../src/node/pipeline.ts';

/** Prompts of more words than this make the fake engine warn (as the library warns of a prompt beyond the model's tokens). */
export const FAKE_PROMPT_WORDS = 20;
/** A prompt holding this makes the fake engine's run fail as a device failure does. */
export const FAKE_FAIL = '[fail]';

export interface FakeEngineOptions {
  stepMs?: number;
  /** Append the file name of every completed output here. */
  log?: string;
  /** Preview every n steps (default 2). */
  previewEvery?: number;
  /**
   * Device labels: progress then carries their activity as the library's does (each step runs on one device in
   * turn: it shows busy when the step is handed over, then idle with its call counted).
   */
  devices?: string[];
}

/** The fake devices' activity after `done` steps, with the device of step `running` (1-based) busy, if any. */
function activity(ids: readonly string[], done: number, running?: number): DeviceActivity[] {
  return ids.map((id, i) => ({
    id,
    busy: running !== undefined && (running - 1) % ids.length === i,
    calls: done > i ? Math.floor((done - 1 - i) / ids.length) + 1 : 0,
  }));
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(new AsgdError('Generation cancelled', { kind: 'cancelled' }));
    const t = setTimeout(() => {
      signal.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(t);
      reject(new AsgdError('Generation cancelled', { kind: 'cancelled' }));
    };
    signal.addEventListener('abort', onAbort, { once: true });
  });
}

function picture(seed: bigint, width: number, height: number, shade: number) {
  const data = new Uint8Array(width * height * 3);
  const r = Number(seed % 256n);
  const g = Number((seed >> 8n) % 256n);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const i = (y * width + x) * 3;
      data[i] = (r + x) & 255;
      data[i + 1] = (g + y) & 255;
      data[i + 2] = shade & 255;
    }
  }
  return { data, width, height };
}

export class FakeEngine implements Engine {
  readonly deviceSet = 'cpu';
  /** Jobs started (including ones later cancelled). */
  started = 0;

  constructor(private readonly o: FakeEngineOptions = {}) {}

  models(): ModelEntry[] {
    // SD 1.x-like facts: the server checks jobs against them before queueing, as it does a real model's.
    return [
      { name: 'fake-64', nativeWidth: 64, nativeHeight: 64, family: 'sd', latentChannels: 4 },
      { name: 'fake-other', nativeWidth: 96, nativeHeight: 80, family: 'sd', latentChannels: 4 },
    ];
  }

  async devices(): Promise<DeviceEntry[]> {
    return [{ name: 'cpu', available: true, note: 'fake engine' }];
  }

  async generate(params: GenerateParams, model: string | undefined, file: string, ctx: EngineRunContext): Promise<EngineResult> {
    this.started += 1;
    const native = this.models().find((m) => m.name === model) ?? this.models()[0]!;
    const p = resolveParams(params, { width: native.nativeWidth!, height: native.nativeHeight! });
    if (p.prompt.includes(FAKE_FAIL)) throw new AsgdError('Device cpu#0 failed (the fake engine was asked to fail)', { kind: 'device' });
    const stepMs = this.o.stepMs ?? 5;
    const every = this.o.previewEvery ?? 2;
    const total = p.steps;
    ctx.onProgress({ phase: 'load', stage: 1, step: 0, totalSteps: total, unitsDone: 0, unitsTotal: total * 2 });
    await sleep(stepMs, ctx.signal);
    ctx.onProgress({ phase: 'text', stage: 1, step: 0, totalSteps: total, unitsDone: 0, unitsTotal: total * 2 });
    const ids = this.o.devices;
    const stageOf = (step: number) => (step <= total * 0.8 ? 1 : 2);
    for (let step = 1; step <= total; step++) {
      // As the library does, the units handed to a device show it busy at once (repeating the last step's numbers).
      if (ids) ctx.onProgress({ phase: 'denoise', stage: stageOf(Math.max(1, step - 1)), step: step - 1, totalSteps: total, unitsDone: (step - 1) * 2, unitsTotal: total * 2, devices: activity(ids, step - 1, step) });
      await sleep(stepMs, ctx.signal);
      ctx.onProgress({ phase: 'denoise', stage: stageOf(step), step, totalSteps: total, unitsDone: step * 2, unitsTotal: total * 2, ...(ids ? { devices: activity(ids, step) } : {}) });
      if (step % every === 0) ctx.onPreview(await encodeImage(picture(p.seed, 16, 16, step * 16), 'png'));
    }
    await sleep(stepMs, ctx.signal);
    ctx.onProgress({ phase: 'decode', stage: 2, step: total, totalSteps: total, unitsDone: total * 2, unitsTotal: total * 2 });
    const metadata = buildMetadata(p, { name: model ?? 'fake-64', family: 'sd' }, p.scheduler ?? 'euler', TOOL_VERSION);
    await saveImage(file, picture(p.seed, p.width, p.height, 128), metadata, false);
    if (this.o.log) fs.appendFileSync(this.o.log, `${path.basename(file)}\n`);
    // As the library warns of a prompt beyond the model's tokens: here beyond FAKE_PROMPT_WORDS words.
    const words = p.prompt.split(/\s+/).filter(Boolean).length;
    return { warnings: words > FAKE_PROMPT_WORDS ? [`The prompt is too long: ${words - FAKE_PROMPT_WORDS} word(s) beyond the fake engine's ${FAKE_PROMPT_WORDS} were dropped`] : [] };
  }

  /** Upscale: the source's pixels scaled by nearest neighbour (deterministic), with the settings in the metadata. */
  async upscale(source: string, params: Omit<UpscaleParams, 'image'>, model: string | undefined, file: string, ctx: EngineRunContext): Promise<EngineResult> {
    this.started += 1;
    const { readSourceImage } = await import('../../src/node/image/read.ts');
    const src = (await readSourceImage(source)).image;
    const scale = params.scale ?? 2;
    const width = Math.round(src.width * scale);
    const height = Math.round(src.height * scale);
    // The generation settings alone: the upscale's own (scale, strength, ...) are not generation settings.
    const { scale: _s, strength: _t, structureSource: _u, maxPixels: _m, width: _w, height: _h, ...settings } = params;
    const p = resolveParams({ ...settings, prompt: params.prompt ?? '', width: Math.ceil(width / 8) * 8, height: Math.ceil(height / 8) * 8 }, { width: 64, height: 64 });
    for (let step = 1; step <= p.steps; step++) {
      await sleep(this.o.stepMs ?? 5, ctx.signal);
      ctx.onProgress({ phase: 'denoise', stage: 1, step, totalSteps: p.steps, unitsDone: step, unitsTotal: p.steps });
    }
    const data = new Uint8Array(width * height * 3);
    for (let y = 0; y < height; y++) {
      for (let x = 0; x < width; x++) {
        const s = (Math.floor(y / scale) * src.width + Math.floor(x / scale)) * 3;
        data.set(src.data.subarray(s, s + 3), (y * width + x) * 3);
      }
    }
    const metadata = buildMetadata(p, { name: model ?? 'fake-64', family: 'sd' }, 'euler', TOOL_VERSION);
    await saveImage(file, { data, width, height }, metadata, false);
    if (this.o.log) fs.appendFileSync(this.o.log, `${path.basename(file)}\n`);
    return { warnings: [] };
  }

  async close(): Promise<void> {}
}
