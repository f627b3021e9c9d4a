/**
 * The UNet adapter: one classifier-free-guided evaluation of one latent ([1,C,h,w]) per call, with the batch
 * [uncond, cond], or one CFG half alone (batch 1, raw output) when the coordinator splits a unit across devices.
 * Reads the session's metadata for the timestep's dtype and rank, float16 inputs, static batch
 * and the SDXL extra inputs. When the session is the attention-probe graph, also returns the conditional branch's
 * attn2 maps, averaged on the device over the call's mask tokens (fed as the probe's weights input). The tensor
 * names are a parameter (DenoiserNames): transformer.ts gives SD3's.
 *
 * With a DeviceConditioning (the Node worker gives one on the webgpu provider) the text conditioning is uploaded once
 * per conditioning and CFG rows and fed from the device; the sample and timestep cross every call (the host steps the
 * scheduler and fuses patches between calls). Float16 inputs are converted once on the host (the sample before it is
 * duplicated into the CFG batch), float16 outputs once back to float32; nothing else is copied.
 */
import { AsgdError } from '../core/errors.ts';
import type { AttentionMap } from '../core/methods/types.ts';
import { combineCfg } from '../core/dispatch/cfg.ts';
import type { CfgPart } from '../core/dispatch/tasks.ts';
import type { IoInfo } from './io.ts';
import { findIo, floatTensor, readFloat, type OpenSession, makeTensor, type OrtTensor, type RunOutputs } from './tensors.ts';
import { float32ToFloat16 } from '../core/float16.ts';
import { hostTensor, type DeviceConditioning, type HostTensor } from './device-conditioning.ts';

/** Graph outputs added by the attention probe are named with this prefix followed by the layer name. */
import { MASK_WEIGHTS_INPUT, PROBE_OUTPUT_PREFIX } from '../graph/attention-probe.ts';
import { maskColumns } from '../core/methods/mask.ts';

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
  /** The probe graph's maps are averaged over these text token columns (UnetUnit.maskTokens; none: zero maps). */
  maskTokens?: readonly number[];
  /**
   * false: the probe graph serving a unit that is not probed (pipeline.ts, probeServesUnet). Only the noise
   * prediction is fetched; the maps are not read, nor copied off a GPU. Default: the maps of a probe graph are read.
   */
  maps?: boolean;
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
  /** The probe graph's token weights input (attention-probe.ts), absent on a plain UNet. */
  readonly maskWeights?: IoInfo;
  /** Fixed batch of the sample input if the export is static, else undefined. */
  readonly staticBatch?: number;

  /** The device-resident text conditioning, when the session's provider has one (see device-conditioning.ts). */
  readonly device?: DeviceConditioning;

  constructor(readonly s: OpenSession, names: DenoiserNames = UNET_NAMES, options: { device?: DeviceConditioning } = {}) {
    this.device = options.device;
    const comp = names.component;
    this.sample = findIo(s.inputs, names.sample, `${names.sample[0]} input`, comp, 0);
    this.timestep = findIo(s.inputs, names.timestep, 'timestep input', comp);
    this.hidden = findIo(s.inputs, names.hidden, 'encoder_hidden_states input', comp);
    this.textEmbeds = s.inputs.find((io) => names.pooled.includes(io.name));
    this.timeIds = s.inputs.find((io) => io.name === 'time_ids');
    this.out = findIo(s.outputs, names.output, 'output', comp, 0);
    this.probeOutputs = s.outputs.filter((o) => o.name.startsWith(PROBE_OUTPUT_PREFIX)).map((o) => o.name);
    this.maskWeights = s.inputs.find((io) => io.name === MASK_WEIGHTS_INPUT);
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
    let results: RunOutputs;
    if (this.staticBatch === 1) {
      // Static batch-1 exports: two calls, one per CFG half.
      results = await this.runSplit(call, cond);
    } else {
      results = await this.runFetching(call, await this.feeds(call, cond, [0, 1]));
    }
    const raw = readFloat(results[this.out.name]!, 'unet output');
    const output = combineCfg(raw.subarray(0, n), raw.subarray(n, 2 * n), call.guidanceScale);
    return { output, attention: this.attention(results, call, cond) };
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
      timeIds: this.timeIds ? [8 * h, 8 * w, 0, 0, 8 * h, 8 * w] : undefined, maps: false,
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
    const results = await this.runFetching(call, await this.feeds(call, cond, [row]));
    const raw = readFloat(results[this.out.name]!, 'unet output');
    const output = raw.byteOffset === 0 && raw.buffer.byteLength === raw.byteLength ? raw : raw.slice();
    return { output, attention: row === 1 ? this.attention(results, call, cond) : undefined };
  }

  /** One run: every output, or the noise prediction alone where the call reads no maps (UnetCall.maps). */
  private runFetching(call: UnetCall, feeds: Record<string, OrtTensor>): Promise<RunOutputs> {
    return this.probeOutputs.length > 0 && call.maps === false ? this.s.session.run(feeds, [this.out.name]) : this.s.session.run(feeds);
  }

  /** The probe's maps of the conditional row, when this is the probe graph and the call reads them. */
  private attention(results: RunOutputs, call: UnetCall, cond: TextConditioning): AttentionMap[] | undefined {
    if (this.probeOutputs.length === 0 || call.maps === false) return undefined;
    const meanOver = this.maskWeights ? maskColumns(call.maskTokens ?? [], cond.tokens) : undefined;
    return this.probeOutputs.map((name) => {
      const t = results[name]!;
      return condAttention(name, readFloat(t, name), t.dims[0] ?? 1, call.height, call.width, cond.tokens, meanOver);
    });
  }

  /** The sample for `rows` CFG rows: one conversion to the input's type, then the copies the batch needs. */
  private sampleTensor(call: UnetCall, rows: number): OrtTensor {
    const { channels: c, height: h, width: w, sample } = call;
    const dims = [rows, c, h, w];
    const n = sample.length;
    if (this.sample.type === 'float16') {
      const half = float32ToFloat16(sample);
      if (rows === 1) return makeTensor('float16', half, dims);
      const both = new Uint16Array(2 * n);
      both.set(half, 0);
      both.set(half, n);
      return makeTensor('float16', both, dims);
    }
    // Always a private copy: the caller's buffer may be shared memory, which ONNX Runtime does not accept.
    const data = new Float32Array(rows * n);
    for (let r = 0; r < rows; r++) data.set(sample, r * n);
    return floatTensor(this.sample.type, data, dims, 'unet sample');
  }

  /** Feeds for the batch rows `rows` of the conditioning (0: uncond, 1: cond); bench/unet-io.ts runs them itself. */
  async feeds(call: UnetCall, cond: TextConditioning, rows: readonly number[]): Promise<Record<string, OrtTensor>> {
    const b = rows.length;
    const feeds: Record<string, OrtTensor> = {
      [this.sample.name]: this.sampleTensor(call, b),
      [this.timestep.name]: this.timestepTensor(call.timestep, b),
    };
    const text = (io: IoInfo, data: Float32Array, dims: number[], label: string): HostTensor => {
      const per = dims.reduce((a, d) => a * d, 1) / b;
      const part = b === 2 ? data : data.subarray(rows[0]! * per, (rows[0]! + 1) * per);
      if (io.type === 'float16') return { type: 'float16', data: float32ToFloat16(part), dims };
      const t = floatTensor(io.type, part, dims, label);
      return { type: 'float32', data: t.data as Float32Array, dims };
    };
    const rowsKey = rows.join('');
    const feed = async (io: IoInfo, host: () => HostTensor) => {
      if (this.device) {
        feeds[io.name] = await this.device.tensor(cond, `${io.name}/${rowsKey}`, host);
      } else {
        feeds[io.name] = hostTensor(host());
      }
    };
    await feed(this.hidden, () => text(this.hidden, cond.hidden, [b, cond.tokens, cond.dim], 'unet encoder_hidden_states'));
    if (this.textEmbeds) {
      const pooled = cond.textEmbeds;
      const pooledDim = cond.pooledDim;
      if (!pooled || !pooledDim) throw new Error('unet: SDXL model needs pooled text embeddings');
      await feed(this.textEmbeds, () => text(this.textEmbeds!, pooled, [b, pooledDim], 'unet text_embeds'));
    }
    if (this.maskWeights) {
      // Each mask token's weight in the probe's maps: their mean, repeats counted as the host's mean counts them.
      const columns = maskColumns(call.maskTokens ?? [], cond.tokens);
      const weights = new Float32Array(cond.tokens);
      for (const t of columns) weights[t]! += 1 / columns.length;
      feeds[this.maskWeights.name] = makeTensor('float32', weights, [cond.tokens, 1]);
    }
    if (this.timeIds) {
      if (!call.timeIds || call.timeIds.length !== 6) throw new Error('unet: SDXL model needs 6 time ids');
      const ids = new Float32Array(6 * b);
      for (let r = 0; r < b; r++) ids.set(call.timeIds, 6 * r);
      feeds[this.timeIds.name] = floatTensor(this.timeIds.type, ids, [b, 6], 'unet time_ids');
    }
    return feeds;
  }

  /** The CFG batch as two batch-1 calls (static batch-1 exports), outputs merged into batch 2. */
  private async runSplit(call: UnetCall, cond: TextConditioning): Promise<RunOutputs> {
    const halves: RunOutputs[] = [];
    for (const row of [0, 1]) halves.push(await this.runFetching(call, await this.feeds(call, cond, [row])));
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

/**
 * The conditional row (the last) of a probe output, [rows, HW] averaged over the tokens `meanOver` (the probe
 * graph's), or [rows, HW, T] (`meanOver` undefined), with its grid found among latent / 2^k.
 */
function condAttention(
  name: string, data: Float32Array, rows: number, latentH: number, latentW: number, tokens: number, meanOver: readonly number[] | undefined,
): AttentionMap {
  const layer = name.slice(PROBE_OUTPUT_PREFIX.length);
  const half = data.length / rows;
  const hw = meanOver ? half : half / tokens;
  let height = latentH;
  let width = latentW;
  for (let k = 0; k < 8 && height * width !== hw; k++) {
    height = Math.ceil(height / 2);
    width = Math.ceil(width / 2);
  }
  if (height * width !== hw) throw new Error(`unet: cannot infer the grid of attention output ${name} (${half} values per batch)`);
  return { layer, height, width, tokens, ...(meanOver ? { meanOver } : {}), data: data.subarray(data.length - half) };
}
