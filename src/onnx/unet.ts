/**
 * The UNet adapter: one classifier-free-guided evaluation of one latent ([1,C,h,w]) per call, with the batch
 * [uncond, cond], or one CFG half alone (batch 1, raw output) when the coordinator splits a unit across devices.
 * Reads the session's metadata for the timestep's dtype and rank, float16 inputs, static batch
 * and the SDXL extra inputs. When the session is the attention-probe graph, also returns the conditional branch's
 * attn2 probabilities. The tensor names are a parameter (DenoiserNames): transformer.ts gives SD3's.
 */
import { AsgdError } from '../core/errors.ts';
import type { AttentionMap } from '../core/methods/types.ts';
import { combineCfg } from '../core/dispatch/cfg.ts';
import type { CfgPart } from '../core/dispatch/tasks.ts';
import type { IoInfo } from './io.ts';
import { findIo, floatTensor, readFloat, type OpenSession, makeTensor, type OrtTensor, type RunOutputs } from './tensors.ts';

/** Graph outputs added by the attention probe are named with this prefix followed by the layer name. */
import { PROBE_OUTPUT_PREFIX } from '../graph/attention-probe.ts';

export type { TextConditioning } from '../core/conditioning.ts';
import type { TextConditioning } from '../core/conditioning.ts';

export interface UnetCall {
  sample: Float32Array;
  channels: number;
  height: number;
  width: number;
  timestep: number;
  guidanceScale: number;
  /** SDXL [orig_h, orig_w, crop_top, crop_left, target_h, target_w]. */
  timeIds?: readonly number[];
  /** 'both' (default): CFG-combined output; 'uncond' / 'cond': that branch alone at batch 1, raw output. */
  part?: CfgPart;
}

export interface UnetOutput {
  output: Float32Array;
  attention?: AttentionMap[];
}

/** The tensor names a denoiser adapter looks for (first match wins); see transformer.ts for SD3's. */
export interface DenoiserNames {
  component: string;
  sample: string[];
  timestep: string[];
  hidden: string[];
  /** Pooled text input: SDXL's text_embeds, SD3's pooled_projections. */
  pooled: string[];
  output: string[];
}

export const UNET_NAMES: DenoiserNames = {
  component: 'unet',
  sample: ['sample'],
  timestep: ['timestep', 'timesteps', 't'],
  hidden: ['encoder_hidden_states'],
  pooled: ['text_embeds'],
  output: ['out_sample'],
};

export class UnetAdapter {
  readonly sample: IoInfo;
  readonly timestep: IoInfo;
  readonly hidden: IoInfo;
  readonly textEmbeds?: IoInfo;
  readonly timeIds?: IoInfo;
  readonly out: IoInfo;
  readonly probeOutputs: string[];
  /** Fixed batch of the sample input if the export is static, else undefined. */
  readonly staticBatch?: number;

  constructor(readonly s: OpenSession, names: DenoiserNames = UNET_NAMES) {
    const comp = names.component;
    this.sample = findIo(s.inputs, names.sample, `${names.sample[0]} input`, comp, 0);
    this.timestep = findIo(s.inputs, names.timestep, 'timestep input', comp);
    this.hidden = findIo(s.inputs, names.hidden, 'encoder_hidden_states input', comp);
    this.textEmbeds = s.inputs.find((io) => names.pooled.includes(io.name));
    this.timeIds = s.inputs.find((io) => io.name === 'time_ids');
    this.out = findIo(s.outputs, names.output, 'output', comp, 0);
    this.probeOutputs = s.outputs.filter((o) => o.name.startsWith(PROBE_OUTPUT_PREFIX)).map((o) => o.name);
    const b = this.sample.shape[0];
    this.staticBatch = typeof b === 'number' && b > 0 ? b : undefined;
    if (this.sample.shape.length !== 4) {
      throw new AsgdError('The UNet sample input is not rank 4', {
        kind: 'model', parameter: comp, expected: '[batch, channels, height, width]', received: `[${this.sample.shape.join(', ')}]`,
        hint: 'The model does not match the Stable Diffusion ONNX contract',
      });
    }
    if (!['int64', 'int32', 'float32', 'float16'].includes(this.timestep.type)) {
      throw new AsgdError('The UNet timestep input has an unsupported element type', {
        kind: 'model', parameter: comp, expected: 'int64, int32, float32 or float16', received: this.timestep.type,
        hint: 'The model does not match the Stable Diffusion ONNX contract',
      });
    }
  }

  get isSdxl(): boolean {
    return this.textEmbeds !== undefined || this.timeIds !== undefined;
  }

  /** Static spatial size of the sample input, if the export fixed it. */
  get staticSize(): { height: number; width: number } | undefined {
    const [, , h, w] = this.sample.shape;
    return typeof h === 'number' && typeof w === 'number' && h > 0 && w > 0 ? { height: h, width: w } : undefined;
  }

  private timestepTensor(t: number, batch: number): OrtTensor {
    const io = this.timestep;
    const rank0 = io.shape.length === 0;
    const dims = rank0 ? [] : [batch];
    const n = rank0 ? 1 : batch;
    switch (io.type) {
      case 'int64':
        // optimum's pipelines cast the scheduler's timestep to the input's dtype (numpy truncation).
        return makeTensor('int64', new BigInt64Array(n).fill(BigInt(Math.trunc(t))), dims);
      case 'int32':
        return makeTensor('int32', new Int32Array(n).fill(Math.trunc(t)), dims);
      default:
        return floatTensor(io.type, new Float32Array(n).fill(t), dims, 'unet timestep');
    }
  }

  async run(call: UnetCall, cond: TextConditioning): Promise<UnetOutput> {
    const { channels: c, height: h, width: w } = call;
    const n = c * h * w;
    if (call.sample.length !== n) throw new Error(`unet: sample has ${call.sample.length} elements, expected ${n}`);
    const part = call.part ?? 'both';
    if (part !== 'both') return this.runHalf(call, cond, part === 'uncond' ? 0 : 1);
    const batch2 = new Float32Array(2 * n);
    batch2.set(call.sample, 0);
    batch2.set(call.sample, n);
    const feeds = this.feeds(call, cond, batch2, [0, 1]);
    let results: RunOutputs;
    if (this.staticBatch === 1) {
      // Static batch-1 exports: two calls, one per CFG half.
      results = await this.runSplit(feeds, c, h, w, cond);
    } else {
      results = await this.s.session.run(feeds);
    }
    const raw = readFloat(results[this.out.name]!, 'unet output');
    const output = combineCfg(raw.subarray(0, n), raw.subarray(n, 2 * n), call.guidanceScale);
    let attention: AttentionMap[] | undefined;
    if (this.probeOutputs.length > 0) {
      attention = this.probeOutputs.map((name) => condAttention(name, readFloat(results[name]!, name), 2, h, w, cond.tokens));
    }
    return { output, attention };
  }

  /**
   * Whether this session gives a unit split into two batch-1 CFG halves (combined as the coordinator does) the
   * same bits as one batch-2 call, on a deterministic input of the given latent size. ONNX Runtime's CPU provider
   * does for the models tried; GPU kernels generally do not (they pick algorithms by batch size).
   */
  async checkCfgSplit(height: number, width: number): Promise<{ identical: boolean; maxAbs: number }> {
    const fixed = this.staticSize;
    const h = fixed?.height ?? height;
    const w = fixed?.width ?? width;
    const c = typeof this.sample.shape[1] === 'number' ? this.sample.shape[1] : 4;
    const tokens = typeof this.hidden.shape[1] === 'number' ? this.hidden.shape[1] : 77;
    const dim = this.hidden.shape[2];
    const pooled = this.textEmbeds?.shape[1];
    if (typeof dim !== 'number' || (this.textEmbeds && typeof pooled !== 'number')) return { identical: false, maxAbs: NaN };
    const fill = (n: number, k: number) => Float32Array.from({ length: n }, (_, i) => Math.sin(i * 0.618 + k));
    const cond: TextConditioning = { hidden: fill(2 * tokens * dim, 1), tokens, dim };
    if (this.textEmbeds) {
      cond.textEmbeds = fill(2 * (pooled as number), 2);
      cond.pooledDim = pooled as number;
    }
    const call: UnetCall = {
      sample: fill(c * h * w, 3), channels: c, height: h, width: w, timestep: 500, guidanceScale: 7.5,
      timeIds: this.timeIds ? [8 * h, 8 * w, 0, 0, 8 * h, 8 * w] : undefined,
    };
    const both = (await this.run({ ...call, part: 'both' }, cond)).output;
    const u = (await this.run({ ...call, part: 'uncond' }, cond)).output;
    const k = (await this.run({ ...call, part: 'cond' }, cond)).output;
    const split = combineCfg(u, k, call.guidanceScale);
    let identical = true;
    let maxAbs = 0;
    for (let i = 0; i < both.length; i++) {
      if (!Object.is(both[i], split[i])) identical = false;
      maxAbs = Math.max(maxAbs, Math.abs(both[i]! - split[i]!));
    }
    return { identical, maxAbs };
  }

  /** One CFG branch (row 0: uncond, 1: cond of the conditioning) at batch 1; the output is the raw model output. */
  private async runHalf(call: UnetCall, cond: TextConditioning, row: 0 | 1): Promise<UnetOutput> {
    if (this.staticBatch !== undefined && this.staticBatch !== 1) {
      throw new AsgdError('This UNet export has a static batch size, so a unit cannot run as two CFG halves', {
        kind: 'invalid-argument', parameter: 'splitCfg', expected: 'a UNet with a dynamic batch (or static batch 1)', received: `batch ${this.staticBatch}`,
        hint: 'Turn CFG splitting off (splitCfg: never, --split-cfg never)',
      });
    }
    const { channels: c, height: h, width: w } = call;
    // A private copy: the caller's buffer may be shared memory, which ONNX Runtime does not accept.
    const sample = Float32Array.from(call.sample);
    const results = await this.s.session.run(this.feeds(call, cond, sample, [row]));
    const raw = readFloat(results[this.out.name]!, 'unet output');
    const output = raw.byteOffset === 0 && raw.buffer.byteLength === raw.byteLength ? raw : raw.slice();
    let attention: AttentionMap[] | undefined;
    if (this.probeOutputs.length > 0 && row === 1) {
      attention = this.probeOutputs.map((name) => condAttention(name, readFloat(results[name]!, name), 1, h, w, cond.tokens));
    }
    return { output, attention };
  }

  /** Feeds for the batch rows `rows` of the conditioning (0: uncond, 1: cond); `sample` holds one latent per row. */
  private feeds(call: UnetCall, cond: TextConditioning, sample: Float32Array, rows: readonly number[]): Record<string, OrtTensor> {
    const { channels: c, height: h, width: w } = call;
    const b = rows.length;
    const pick = (data: Float32Array, per: number): Float32Array => {
      if (b === 2) return data;
      return data.subarray(rows[0]! * per, (rows[0]! + 1) * per);
    };
    const feeds: Record<string, OrtTensor> = {
      [this.sample.name]: floatTensor(this.sample.type, sample, [b, c, h, w], 'unet sample'),
      [this.timestep.name]: this.timestepTensor(call.timestep, b),
      [this.hidden.name]: floatTensor(this.hidden.type, pick(cond.hidden, cond.tokens * cond.dim), [b, cond.tokens, cond.dim], 'unet encoder_hidden_states'),
    };
    if (this.textEmbeds) {
      if (!cond.textEmbeds || !cond.pooledDim) throw new Error('unet: SDXL model needs pooled text embeddings');
      feeds[this.textEmbeds.name] = floatTensor(this.textEmbeds.type, pick(cond.textEmbeds, cond.pooledDim), [b, cond.pooledDim], 'unet text_embeds');
    }
    if (this.timeIds) {
      if (!call.timeIds || call.timeIds.length !== 6) throw new Error('unet: SDXL model needs 6 time ids');
      const ids = new Float32Array(6 * b);
      for (let r = 0; r < b; r++) ids.set(call.timeIds, 6 * r);
      feeds[this.timeIds.name] = floatTensor(this.timeIds.type, ids, [b, 6], 'unet time_ids');
    }
    return feeds;
  }

  private async runSplit(
    feeds: Record<string, OrtTensor>, c: number, h: number, w: number, cond: TextConditioning,
  ): Promise<RunOutputs> {
    const halves: RunOutputs[] = [];
    for (let b = 0; b < 2; b++) {
      const part: Record<string, OrtTensor> = {};
      part[this.sample.name] = sliceBatch(feeds[this.sample.name]!, b, [1, c, h, w]);
      part[this.timestep.name] = this.timestepTensor(Number(readScalar(feeds[this.timestep.name]!)), 1);
      part[this.hidden.name] = sliceBatch(feeds[this.hidden.name]!, b, [1, cond.tokens, cond.dim]);
      if (this.textEmbeds) part[this.textEmbeds.name] = sliceBatch(feeds[this.textEmbeds.name]!, b, [1, cond.pooledDim!]);
      if (this.timeIds) part[this.timeIds.name] = sliceBatch(feeds[this.timeIds.name]!, b, [1, 6]);
      halves.push(await this.s.session.run(part));
    }
    const merged: Record<string, OrtTensor> = {};
    for (const name of Object.keys(halves[0]!)) {
      const a = readFloat(halves[0]![name]!, name);
      const bb = readFloat(halves[1]![name]!, name);
      const data = new Float32Array(a.length + bb.length);
      data.set(a, 0);
      data.set(bb, a.length);
      const dims = [...halves[0]![name]!.dims];
      dims[0] = 2;
      merged[name] = makeTensor('float32', data, dims);
    }
    return merged as RunOutputs;
  }
}

function readScalar(t: OrtTensor): number | bigint {
  return (t.data as ArrayLike<number | bigint>)[0]!;
}

function sliceBatch(t: OrtTensor, b: number, dims: number[]): OrtTensor {
  const per = dims.reduce((a, d) => a * d, 1);
  const data = t.data as Float32Array | Uint16Array;
  return makeTensor(t.type as 'float32', data.slice(b * per, (b + 1) * per) as Float32Array, dims);
}

/** The conditional row (the last) of a probe output [rows, HW, T], with its grid found among latent / 2^k. */
function condAttention(name: string, data: Float32Array, rows: number, latentH: number, latentW: number, tokens: number): AttentionMap {
  const layer = name.slice(PROBE_OUTPUT_PREFIX.length);
  const half = data.length / rows;
  const hw = half / tokens;
  let height = latentH;
  let width = latentW;
  for (let k = 0; k < 8 && height * width !== hw; k++) {
    height = Math.ceil(height / 2);
    width = Math.ceil(width / 2);
  }
  if (height * width !== hw) throw new Error(`unet: cannot infer the grid of attention output ${name} (${half} values per batch)`);
  return { layer, height, width, tokens, data: data.subarray(data.length - half) };
}
