/**
 * The UNet adapter: one classifier-free-guided evaluation of one latent ([1,C,h,w]) per call, with the batch
 * [uncond, cond]. Reads the session's metadata for the timestep's dtype and rank, float16 inputs, static batch
 * and the SDXL extra inputs. When the session is the attention-probe graph, also returns the conditional branch's
 * attn2 probabilities.
 */
import ort from 'onnxruntime-node';
import { AsgdError } from '../core/errors.ts';
import type { AttentionMap } from '../core/methods/types.ts';
import { findIo, floatTensor, readFloat, type IoInfo, type OpenSession } from './session.ts';

/** Graph outputs added by the attention probe are named with this prefix followed by the layer name. */
export const PROBE_OUTPUT_PREFIX = 'attn2_probs:';

export interface TextConditioning {
  /** [2, 77, D]: uncond then cond. */
  hidden: Float32Array;
  tokens: number;
  dim: number;
  /** SDXL pooled embeddings [2, P]. */
  textEmbeds?: Float32Array;
  pooledDim?: number;
}

export interface UnetCall {
  sample: Float32Array;
  channels: number;
  height: number;
  width: number;
  timestep: number;
  guidanceScale: number;
  /** SDXL [orig_h, orig_w, crop_top, crop_left, target_h, target_w]. */
  timeIds?: readonly number[];
}

export interface UnetOutput {
  output: Float32Array;
  attention?: AttentionMap[];
}

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

  constructor(readonly s: OpenSession) {
    const comp = 'unet';
    this.sample = findIo(s.inputs, ['sample'], 'sample input', comp, 0);
    this.timestep = findIo(s.inputs, ['timestep', 'timesteps', 't'], 'timestep input', comp);
    this.hidden = findIo(s.inputs, ['encoder_hidden_states'], 'encoder_hidden_states input', comp);
    this.textEmbeds = s.inputs.find((io) => io.name === 'text_embeds');
    this.timeIds = s.inputs.find((io) => io.name === 'time_ids');
    this.out = findIo(s.outputs, ['out_sample'], 'output', comp, 0);
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

  private timestepTensor(t: number, batch: number): ort.Tensor {
    const io = this.timestep;
    const rank0 = io.shape.length === 0;
    const dims = rank0 ? [] : [batch];
    const n = rank0 ? 1 : batch;
    switch (io.type) {
      case 'int64':
        // optimum's pipelines cast the scheduler's timestep to the input's dtype (numpy truncation).
        return new ort.Tensor('int64', new BigInt64Array(n).fill(BigInt(Math.trunc(t))), dims);
      case 'int32':
        return new ort.Tensor('int32', new Int32Array(n).fill(Math.trunc(t)), dims);
      default:
        return floatTensor(io.type, new Float32Array(n).fill(t), dims, 'unet timestep');
    }
  }

  async run(call: UnetCall, cond: TextConditioning): Promise<UnetOutput> {
    const { channels: c, height: h, width: w } = call;
    const n = c * h * w;
    if (call.sample.length !== n) throw new Error(`unet: sample has ${call.sample.length} elements, expected ${n}`);
    const batch2 = new Float32Array(2 * n);
    batch2.set(call.sample, 0);
    batch2.set(call.sample, n);
    const feeds: Record<string, ort.Tensor> = {
      [this.sample.name]: floatTensor(this.sample.type, batch2, [2, c, h, w], 'unet sample'),
      [this.timestep.name]: this.timestepTensor(call.timestep, 2),
      [this.hidden.name]: floatTensor(this.hidden.type, cond.hidden, [2, cond.tokens, cond.dim], 'unet encoder_hidden_states'),
    };
    if (this.textEmbeds) {
      if (!cond.textEmbeds || !cond.pooledDim) throw new Error('unet: SDXL model needs pooled text embeddings');
      feeds[this.textEmbeds.name] = floatTensor(this.textEmbeds.type, cond.textEmbeds, [2, cond.pooledDim], 'unet text_embeds');
    }
    if (this.timeIds) {
      if (!call.timeIds || call.timeIds.length !== 6) throw new Error('unet: SDXL model needs 6 time ids');
      const ids = new Float32Array(12);
      ids.set(call.timeIds, 0);
      ids.set(call.timeIds, 6);
      feeds[this.timeIds.name] = floatTensor(this.timeIds.type, ids, [2, 6], 'unet time_ids');
    }
    let results: ort.InferenceSession.ReturnType;
    if (this.staticBatch === 1) {
      // Static batch-1 exports: two calls, one per CFG half.
      results = await this.runSplit(feeds, c, h, w, cond);
    } else {
      results = await this.s.session.run(feeds);
    }
    const raw = readFloat(results[this.out.name]!, 'unet output');
    const s = call.guidanceScale;
    const output = new Float32Array(n);
    for (let i = 0; i < n; i++) {
      const u = raw[i]!;
      output[i] = u + s * (raw[n + i]! - u);
    }
    let attention: AttentionMap[] | undefined;
    if (this.probeOutputs.length > 0) {
      attention = this.probeOutputs.map((name) => condAttention(name, readFloat(results[name]!, name), h, w, cond.tokens));
    }
    return { output, attention };
  }

  private async runSplit(
    feeds: Record<string, ort.Tensor>, c: number, h: number, w: number, cond: TextConditioning,
  ): Promise<ort.InferenceSession.ReturnType> {
    const halves: ort.InferenceSession.ReturnType[] = [];
    for (let b = 0; b < 2; b++) {
      const part: Record<string, ort.Tensor> = {};
      part[this.sample.name] = sliceBatch(feeds[this.sample.name]!, b, [1, c, h, w]);
      part[this.timestep.name] = this.timestepTensor(Number(readScalar(feeds[this.timestep.name]!)), 1);
      part[this.hidden.name] = sliceBatch(feeds[this.hidden.name]!, b, [1, cond.tokens, cond.dim]);
      if (this.textEmbeds) part[this.textEmbeds.name] = sliceBatch(feeds[this.textEmbeds.name]!, b, [1, cond.pooledDim!]);
      if (this.timeIds) part[this.timeIds.name] = sliceBatch(feeds[this.timeIds.name]!, b, [1, 6]);
      halves.push(await this.s.session.run(part));
    }
    const merged: Record<string, ort.Tensor> = {};
    for (const name of Object.keys(halves[0]!)) {
      const a = readFloat(halves[0]![name]!, name);
      const bb = readFloat(halves[1]![name]!, name);
      const data = new Float32Array(a.length + bb.length);
      data.set(a, 0);
      data.set(bb, a.length);
      const dims = [...halves[0]![name]!.dims];
      dims[0] = 2;
      merged[name] = new ort.Tensor('float32', data, dims);
    }
    return merged as ort.InferenceSession.ReturnType;
  }
}

function readScalar(t: ort.Tensor): number | bigint {
  return (t.data as ArrayLike<number | bigint>)[0]!;
}

function sliceBatch(t: ort.Tensor, b: number, dims: number[]): ort.Tensor {
  const per = dims.reduce((a, d) => a * d, 1);
  const data = t.data as Float32Array | Uint16Array;
  return new ort.Tensor(t.type as 'float32', data.slice(b * per, (b + 1) * per) as Float32Array, dims);
}

/** The conditional half of a probe output [2, HW, T], with its grid found among latent / 2^k. */
function condAttention(name: string, data: Float32Array, latentH: number, latentW: number, tokens: number): AttentionMap {
  const layer = name.slice(PROBE_OUTPUT_PREFIX.length);
  const half = data.length / 2;
  const hw = half / tokens;
  let height = latentH;
  let width = latentW;
  for (let k = 0; k < 8 && height * width !== hw; k++) {
    height = Math.ceil(height / 2);
    width = Math.ceil(width / 2);
  }
  if (height * width !== hw) throw new Error(`unet: cannot infer the grid of attention output ${name} (${half} values per batch)`);
  return { layer, height, width, tokens, data: data.subarray(half) };
}
