/**
 * `card.js schedule`: issue 15's scheduling targets with the card's own measurements in place of the latency model's
 * assumptions. The real methods, scheduler and dispatcher drive latency-model devices (bench/latency-model.ts) whose
 * unit time, CFG-half cost and key-patch (attention-probe) cost are what the card's UNet parts measured through this
 * project's runtime; the coordinator's host work is this machine's own (charged on the virtual clock), so the row
 * with host time is the prediction for this machine with K such GPUs.
 *
 * And a check of the model itself: one device at the geometry of the card's whole generation (gen-1) against that
 * generation's measured denoising time.
 */
import fs from 'node:fs';
import type { SplitMode } from '../src/core/dispatch/tasks.ts';
import { PARAM_OPTIONS, METHOD_OPTIONS } from '../src/core/options/registry.ts';
import { SDXL_GEOMETRIES, simulateGeneration, type Geometry, type LatencyParams } from './latency-model.ts';

/** Issue 15's targets at the shipped defaults: speed-up over one device. */
const TARGETS = [
  { geometry: SDXL_GEOMETRIES[0]!, devices: 4, target: 3.6 },
  { geometry: SDXL_GEOMETRIES[1]!, devices: 8, target: 6.5 },
];

export interface CardMeasurements {
  /** One whole CFG call (batch 2) through the UNet adapter at the native latent, ms. */
  unitMs: number;
  /** A CFG half through the adapter relative to the whole call. */
  halfCost: number;
  /**
   * The key unit's extra cost: the attention-probe graph with its maps read, relative to a unit that is not probed
   * (the probe graph with the noise prediction fetched alone where measured, else the plain UNet; batch 2).
   */
  probeExtra: number;
  /** Native latent side of the UNet measured (128 for SDXL at full size). */
  nativeLatent: number;
  batch4OverBatch2?: number;
  sources: Record<string, string>;
}

function readJson(file: string): Record<string, unknown> {
  const doc = JSON.parse(fs.readFileSync(file, 'utf8')) as Record<string, unknown>;
  if (typeof doc['error'] === 'string') throw new Error(`${file} records a failed part: ${doc['error']}`);
  return doc;
}

function field(doc: Record<string, unknown>, file: string, ...keys: string[]): number {
  let v: unknown = doc;
  for (const k of keys) v = (v as Record<string, unknown> | undefined)?.[k];
  if (typeof v !== 'number' || !Number.isFinite(v)) throw new Error(`${file}: expected a number at ${keys.join('.')}, found ${JSON.stringify(v)}`);
  return v;
}

/** The numbers the model needs, from `card.js unet` (required) and `card.js probe` (optional: 0.15 without). */
export function readMeasurements(unetFile: string, probeFile?: string): CardMeasurements {
  const unet = readJson(unetFile);
  const m: CardMeasurements = {
    unitMs: field(unet, unetFile, 'adapter_both', 'medianMs'),
    halfCost: field(unet, unetFile, 'adapter_half_over_both'),
    probeExtra: 0.15,
    nativeLatent: field(unet, unetFile, 'latent'),
    sources: { unitMs: `${unetFile}: adapter_both.medianMs`, halfCost: `${unetFile}: adapter_half_over_both`, probeExtra: 'assumed 0.15 (no probe part)' },
  };
  const b4 = unet['run_batch4_over_batch2'];
  if (typeof b4 === 'number') m.batch4OverBatch2 = b4;
  if (probeFile && fs.existsSync(probeFile)) {
    const probe = readJson(probeFile);
    const whole = field(probe, probeFile, 'batch2', 'probeOverPlain');
    const noise = (probe['batch2'] as Record<string, unknown> | undefined)?.['probeNoiseOverPlain'];
    if (typeof noise === 'number' && Number.isFinite(noise) && noise > 0) {
      // Every unit runs on the probe graph (pipeline.ts, probeServesUnet): one that is not probed fetches the noise
      // prediction alone, and the key unit's extra is its maps' read over that.
      m.unitMs *= noise;
      m.probeExtra = Math.max(0, whole / noise - 1);
      m.sources['unitMs'] += ` x ${probeFile}: batch2.probeNoiseOverPlain`;
      m.sources['probeExtra'] = `${probeFile}: batch2.probeOverPlain / batch2.probeNoiseOverPlain - 1`;
    } else {
      m.probeExtra = Math.max(0, whole - 1);
      m.sources['probeExtra'] = `${probeFile}: batch2.probeOverPlain - 1`;
    }
  }
  return m;
}

function shippedDefault(key: string): number {
  const spec = [...PARAM_OPTIONS, ...METHOD_OPTIONS].find((o) => o.key === key) as { default?: unknown } | undefined;
  if (typeof spec?.default !== 'number') throw new Error(`no numeric default for ${key} in the option registry`);
  return spec.default;
}

export interface ScheduleRow {
  geometry: string;
  devices: number;
  split: SplitMode;
  hostCharged: boolean;
  seconds: number;
  speedup: number;
  target: number;
  met: boolean;
  idle: number[];
  /**
   * Split 'always' only: one device running every unit as two CFG halves, over one device running whole units. The
   * speed-up is over the latter (the wait a user sees); 'always' gives the same result for any device count on any
   * provider, so on a GPU it is the split that keeps a generation a pure function of its settings.
   */
  oneDeviceOverNever?: number;
}

/** The targets' rows (split balance, never and always; balance again with host time charged) and the model check. */
export async function scheduleFromCard(m: CardMeasurements, gen?: { file: string; steps: number; width: number; nativeLatent: number; denoiseMs: number }): Promise<Record<string, unknown>> {
  const stageSplit = shippedDefault('stageSplit');
  const steps = 50;
  const latency = (native: number): LatencyParams => ({ unitMs: m.unitMs, nativeArea: native * native, halfCost: m.halfCost, probeExtra: m.probeExtra, callOverheadMs: 0 });
  const sim = (geometry: Geometry, devices: number, split: SplitMode, chargeHost: boolean, n = steps) =>
    simulateGeneration({ geometry, devices, steps: n, pixelInteraction: true, guidanceSync: false, split, latency: latency(geometry.native), stageSplit, chargeHost });
  const rows: ScheduleRow[] = [];
  for (const t of TARGETS) {
    for (const [split, chargeHost] of [['balance', false], ['never', false], ['always', false], ['balance', true]] as const) {
      const one = await sim(t.geometry, 1, 'never', chargeHost);
      const r = await sim(t.geometry, t.devices, split, chargeHost);
      const speedup = one.makespanMs / r.makespanMs;
      const row: ScheduleRow = { geometry: t.geometry.name, devices: t.devices, split, hostCharged: chargeHost, seconds: r.makespanMs / 1000, speedup, target: t.target, met: speedup >= t.target, idle: r.idle };
      if (split === 'always') row.oneDeviceOverNever = (await sim(t.geometry, 1, 'always', chargeHost)).makespanMs / one.makespanMs;
      rows.push(row);
    }
  }
  console.error('[card] scheduling at the shipped defaults with the measured unit, CFG half and probe costs:');
  for (const r of rows) {
    console.error(`[card]   ${r.geometry}, ${r.devices} devices, split ${r.split}${r.hostCharged ? ', host charged' : ''}: ${r.speedup.toFixed(2)}x (target ${r.target}x ${r.met ? 'met' : 'not met'}), ${r.seconds.toFixed(1)} s` +
      (r.oneDeviceOverNever !== undefined ? `; on one device ${r.oneDeviceOverNever.toFixed(2)}x the time of whole units` : ''));
  }
  const result: Record<string, unknown> = { measured: m, stageSplit, steps, rows };
  if (gen) {
    // The whole generation the card ran on one device, as the model sees it: host time charged, no CFG split.
    const geometry: Geometry = { name: `gen ${gen.width}px`, latent: gen.width / 8, native: gen.nativeLatent };
    const one = await sim(geometry, 1, 'never', true, gen.steps);
    const check = { file: gen.file, geometry, steps: gen.steps, predictedDenoiseMs: one.makespanMs, measuredDenoiseMs: gen.denoiseMs, measuredOverPredicted: gen.denoiseMs / one.makespanMs };
    console.error(`[card]   model check (${gen.file}): predicted ${(one.makespanMs / 1000).toFixed(1)} s of denoising, measured ${(gen.denoiseMs / 1000).toFixed(1)} s (${check.measuredOverPredicted.toFixed(2)}x)`);
    result['modelCheck'] = check;
  }
  return result;
}

/** `card.js schedule --unet-json F [--probe-json F] [--gen-json F]`. */
export async function benchSchedule(args: Record<string, string>): Promise<Record<string, unknown>> {
  const unetFile = args['unet-json'];
  if (!unetFile) throw new Error('card schedule: --unet-json is required (the JSON of `card.js unet` on the SDXL-sized UNet)');
  const m = readMeasurements(unetFile, args['probe-json']);
  const genFile = args['gen-json'];
  let gen: Parameters<typeof scheduleFromCard>[1];
  let partialGen: string | undefined;
  if (genFile && fs.existsSync(genFile) && !('result' in readJson(genFile))) {
    // A generation cut short by its time limit leaves its progress only (`partial`): no denoising time to check.
    partialGen = `${genFile} holds a generation cut short (${JSON.stringify(readJson(genFile)['partial'] ?? null)}): the one-device check is left out`;
  } else if (genFile && fs.existsSync(genFile)) {
    const doc = readJson(genFile);
    if (doc['devices'] !== 'webgpu:0' && doc['devices'] !== 'cpu') throw new Error(`${genFile}: the model check needs a one-device generation, found devices ${String(doc['devices'])}`);
    gen = { file: genFile, steps: field(doc, genFile, 'steps'), width: field(doc, genFile, 'width'), nativeLatent: m.nativeLatent, denoiseMs: field(doc, genFile, 'result', 'timings', 'denoiseMs') };
  }
  const result = await scheduleFromCard(m, gen);
  return partialGen ? { ...result, genCheck: partialGen } : result;
}
