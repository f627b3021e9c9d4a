/**
 * What `asgd tune` recommends from the UNet call times it measured on one device: the loading settings whose best
 * value depends on the device and ONNX Runtime's kernels there, not on the image (none of them changes what is
 * generated beyond float rounding). Portable: the measuring is src/node/tune.ts.
 */
import { PIPELINE_OPTIONS, optionSpec } from './options/registry.ts';

/** Median times of one device's UNet calls at the native latent, in ms. */
export interface UnetCallTimes {
  /** A whole CFG unit (batch 2). */
  wholeMs: number;
  /** One CFG half (batch 1); absent where the export's batch is fixed at 2, so units cannot be split. */
  halfMs?: number;
}

/**
 * Two graphs' calls compared call by call (each call over the other graph's call of the same round): the median ratio
 * and its quartiles, the timing's noise.
 */
export interface CallRatios {
  ratio?: number;
  ratioLow?: number;
  ratioHigh?: number;
}

/** The fused graph's times, measured alternating with the plain graph's (ratios: fused whole unit over plain). */
export interface FusedCallTimes extends UnetCallTimes, CallRatios {}

/**
 * One worker count's short generation: its denoising time, or why it was not run. CPU lists by default; a GPU list's
 * first device repeated where asked (several workers on one GPU).
 */
export interface WorkerLayoutTimes {
  workers: number;
  /** The device list run, e.g. "cpu,cpu" or "webgpu:0,webgpu:0". */
  devices: string;
  /** CPU: intra-op threads per worker (0: ONNX Runtime's default, every core). */
  threads?: number;
  denoiseMs?: number;
  /** Whether its image is the first layout's byte for byte (undefined for the first). */
  sameImage?: boolean;
  skipped?: string;
}

export interface TuneMeasurement {
  /** The execution provider measured ('cpu', 'webgpu', 'cuda'). */
  provider: string;
  /** Devices in the list the advice is for (several of this kind share the units of a generation). */
  devices: number;
  /** The UNet as exported. */
  plain: UnetCallTimes;
  /** The UNet with `fuseAttention`, as the pipeline writes it for this device list; absent where nothing fuses. */
  fused?: FusedCallTimes;
  /**
   * The attention-probe graph serving a unit that is not probed (noise prediction fetched alone), against the graph
   * it serves (the fused one where fusion is advised), whole units, calls alternating; absent without a probe graph.
   */
  probe?: CallRatios & {
    graphMs: number;
    probeMs: number;
  };
  /** The same short generation on several worker counts (CPU lists by default). */
  layouts?: WorkerLayoutTimes[];
  /**
   * A float32 export converted to float16 (`unetPrecision` 'float16'), fused where fusion is advised, against the
   * graph it would replace, whole units, calls alternating; GPU lists with a float32 export only.
   */
  float16?: CallRatios & {
    graphMs: number;
    float16Ms: number;
  };
}

export interface TuneAdvice {
  fuseAttention: boolean;
  splitCfg: 'auto' | 'always';
  probeSession: 'shared' | 'separate';
  /** Where worker counts were timed: the count advised. */
  workers?: number;
  /** Where a float16 conversion was timed: whether to run it. */
  unetPrecision?: 'native' | 'float16';
  /** The command-line flags that differ from the defaults. */
  flags: string[];
  /** Why each setting is advised, one sentence each, with the figures. */
  reasons: string[];
}

/**
 * The fused call must take at most this share of the plain one to be advised (a smaller gain is within noise), in three
 * calls of four (the upper quartile of the call-by-call ratios, where measured).
 */
export const FUSE_GAIN = 0.95;
/** A CFG half at or below this share of a whole unit: splitting every unit pays even on one device. */
export const SPLIT_ALWAYS_ONE = 0.5;
/**
 * With several devices: 'always' up to this share. At SDXL's measured half (0.475 of a whole unit on an H200 through
 * WebGPU) the latency model gave 3.88x on 4 devices and 7.29x on 8 against 3.17x and 5.65x whole; at 0.71 it lost
 * (2.60x and 4.87x): docs/benchmarks.md, "Scheduling targets with the card's costs".
 */
export const SPLIT_ALWAYS_SEVERAL = 0.55;
/**
 * The probe graph serving a unit that is not probed costs at least this share more, in three calls of four (the
 * lower quartile of the call-by-call ratios, where measured): keep the two sessions apart.
 */
export const PROBE_SEPARATE = 1.03;
/** Another worker count is advised where its generation's denoising took at most this share of the list's own. */
export const LAYOUT_GAIN = 0.9;
/**
 * The float16 conversion must take at most this share of the float32 call, in three calls of four: it changes the
 * images by float16 rounding, so a gain within the noise is not worth it.
 */
export const FLOAT16_GAIN = 0.95;

const flag = (key: 'fuseAttention' | 'splitCfg' | 'probeSession' | 'devices' | 'unetPrecision') => optionSpec(PIPELINE_OPTIONS, key).cli?.flag ?? key;
const share = (x: number) => x.toFixed(2);
/** "0.35 (call by call 0.33-0.37)": the median ratio, where measured call by call, else the medians' ratio. */
const shareOf = (r: CallRatios, medians: number) =>
  `${share(r.ratio ?? medians)}${r.ratioLow !== undefined && r.ratioHigh !== undefined ? ` (call by call ${share(r.ratioLow)}-${share(r.ratioHigh)})` : ''}`;

export function recommendSettings(m: TuneMeasurement): TuneAdvice {
  const reasons: string[] = [];
  const flags: string[] = [];
  const fusedShare = m.fused ? m.fused.wholeMs / m.plain.wholeMs : undefined;
  const fuseAttention = fusedShare !== undefined && (m.fused!.ratioHigh ?? fusedShare) <= FUSE_GAIN;
  if (fusedShare === undefined) reasons.push(`${flag('fuseAttention')}: nothing in this UNet fuses, so it stays off.`);
  else {
    const rule = m.fused!.ratioHigh !== undefined ? `on where three calls of four take ${FUSE_GAIN} or less` : `on at ${FUSE_GAIN} or less`;
    reasons.push(`${flag('fuseAttention')}: ${fuseAttention ? 'on' : 'off'}; the fused call takes ${shareOf(m.fused!, fusedShare)} of the plain one (${rule}).`);
    if (fuseAttention) flags.push(flag('fuseAttention'));
  }
  const runs = fuseAttention ? m.fused! : m.plain;
  const half = runs.halfMs === undefined ? undefined : runs.halfMs / runs.wholeMs;
  let splitCfg: TuneAdvice['splitCfg'] = 'auto';
  if (half === undefined) {
    reasons.push(`${flag('splitCfg')}: auto; this export's batch is fixed at 2, so a unit cannot run as two CFG halves.`);
  } else if (m.provider === 'cpu') {
    reasons.push(`${flag('splitCfg')}: auto; on CPU workers it splits to balance them, which gives the same images on any number of them (a half takes ${share(half)} of a whole unit here).`);
  } else {
    const limit = m.devices > 1 ? SPLIT_ALWAYS_SEVERAL : SPLIT_ALWAYS_ONE;
    if (half <= limit) splitCfg = 'always';
    const pair = `two halves cost ${share(2 * half)} of a whole unit`;
    const why = splitCfg === 'always'
      ? half > SPLIT_ALWAYS_ONE ? `${pair}, and ${m.devices} devices share halves more evenly than whole units` : pair
      : m.devices > 1 ? `${pair}: above ${limit} splitting loses more than it balances ${m.devices} devices` : `${pair} on one device`;
    reasons.push(`${flag('splitCfg')}: ${splitCfg === 'always' ? 'always' : 'auto (whole units on GPUs)'}; a CFG half takes ${share(half)} of a whole unit: ${why}. 'always' gives the same images on any number of devices.`);
    if (splitCfg === 'always') flags.push(flag('splitCfg'), 'always');
  }
  let probeSession: TuneAdvice['probeSession'] = 'shared';
  if (m.probe) {
    const cost = m.probe.probeMs / m.probe.graphMs;
    if ((m.probe.ratioLow ?? cost) >= PROBE_SEPARATE) probeSession = 'separate';
    const rule = m.probe.ratioLow !== undefined ? `separate where three calls of four cost ${PROBE_SEPARATE} or more` : `separate at ${PROBE_SEPARATE} or more`;
    reasons.push(`${flag('probeSession')}: ${probeSession}; a unit that is not probed takes ${shareOf(m.probe, cost)} of the UNet's call on the probe graph (${rule}${probeSession === 'separate' ? ', for a second copy of the UNet\'s weights on the device holding the probe' : ''}).`);
    if (probeSession === 'separate') flags.push(flag('probeSession'), 'separate');
  } else {
    reasons.push(`${flag('probeSession')}: shared; nothing to choose here (no probe graph that could share the UNet's session).`);
  }
  const workers = m.layouts ? adviseLayout(m.devices, m.layouts, reasons, flags) : undefined;
  let unetPrecision: TuneAdvice['unetPrecision'];
  if (m.float16) {
    const cost = m.float16.float16Ms / m.float16.graphMs;
    unetPrecision = (m.float16.ratioHigh ?? cost) <= FLOAT16_GAIN ? 'float16' : 'native';
    const rule = m.float16.ratioHigh !== undefined ? `float16 where three calls of four take ${FLOAT16_GAIN} or less` : `float16 at ${FLOAT16_GAIN} or less`;
    reasons.push(`${flag('unetPrecision')}: ${unetPrecision}; the float32 export converted to float16 takes ${shareOf(m.float16, cost)} of its call (${rule}; images then differ by float16 rounding).`);
    if (unetPrecision === 'float16') flags.push(flag('unetPrecision'), 'float16');
  }
  return { fuseAttention, splitCfg, probeSession, ...(workers !== undefined ? { workers } : {}), ...(unetPrecision ? { unetPrecision } : {}), flags, reasons };
}

/** "2 workers of 1 thread", "1 worker of ONNX Runtime's default threads" (CPU), "2 workers on webgpu:0". */
export const workersText = (l: { workers: number; devices: string; threads?: number }) => {
  const n = `${l.workers} worker${l.workers > 1 ? 's' : ''}`;
  if (l.threads === undefined) return `${n} on ${l.devices.split(',')[0]}`;
  return `${n} of ${l.threads === 0 ? "ONNX Runtime's default" : l.threads} thread${l.threads === 1 ? '' : 's'}`;
};

/** The worker count to run: the fastest whose generation took at most LAYOUT_GAIN of the list's own. */
function adviseLayout(current: number, layouts: WorkerLayoutTimes[], reasons: string[], flags: string[]): number {
  const timed = layouts.filter((l) => l.denoiseMs !== undefined && l.sameImage !== false);
  const own = timed.find((l) => l.workers === current);
  const best = timed.reduce<WorkerLayoutTimes | undefined>((b, l) => (b === undefined || l.denoiseMs! < b.denoiseMs! ? l : b), undefined);
  const differs = layouts.filter((l) => l.sameImage === false).map((l) => l.workers);
  const note = differs.length > 0 ? ` (worker counts ${differs.join(', ')} gave another image, which they should not: left out)` : '';
  if (!own || !best) {
    reasons.push(`${flag('devices')}: unchanged; the list's own worker count could not be timed${note}.`);
    return current;
  }
  const gain = best.denoiseMs! / own.denoiseMs!;
  const pick = best.workers !== current && gain <= LAYOUT_GAIN ? best : own;
  const others = timed.filter((l) => l !== own).map((l) => `${l.workers}: ${share(l.denoiseMs! / own.denoiseMs!)}`).join(', ');
  const skipped = layouts.filter((l) => l.skipped).map((l) => `${l.workers} (${l.skipped})`).join('; ');
  const list = pick.devices;
  const checked = timed.length > 1 && layouts.every((l) => l.sameImage !== false) ? ' They all gave the same image, byte for byte.' : '';
  const what = pick === own
    ? `unchanged; no other worker count took ${LAYOUT_GAIN} or less of the denoising time of ${workersText(own)}`
    : `${workersText(pick)} took ${share(gain)} of the denoising time of ${workersText(own)}`;
  reasons.push(`${flag('devices')}: ${list}; ${what} in the same short generation (each count's time over ${current}'s: ${others || 'none other timed'}; another count is advised at ${LAYOUT_GAIN} or less)${skipped ? `; not run: ${skipped}` : ''}${note}.${checked}`);
  if (pick !== own) flags.push(flag('devices'), list);
  return pick.workers;
}
