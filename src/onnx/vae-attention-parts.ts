/**
 * Runs the part of a VAE decoder or encoder split at its attention (src/graph/vae-attention-split.ts) that holds the
 * attention, on the whole latent grid (a decoder's head, an encoder's tail): either its graph at once, or the pre
 * graph, the attention core over chunks of query rows (all keys and values; each chunk's scores within a byte budget,
 * src/core/vae/attention-chunks.ts), then the post graph. The sessions come from the caller (Node: files, see
 * vae-attention.ts; the browser: in-memory graphs), opened one at a time and released after use. No Node APIs.
 */
import { attentionChunkRows, placeRows, sliceRows, type FloatWords } from '../core/vae/attention-chunks.ts';
import { floatTensor, makeTensor, readFloat, type OpenSession, type OrtTensor } from './tensors.ts';

export interface AttentionHeadResult {
  data: Float32Array;
  channels: number;
  height: number;
  width: number;
  /** Query chunks the core ran in (1: unchunked; 0: the whole graph ran). */
  chunks: number;
}

/** The component the part belongs to: an encoder's latent_parameters output keeps only the mean (as VaeNormAdapter). */
export type AttentionHalf = 'vae_decoder' | 'vae_encoder';

export type AttentionPart = 'global' | 'pre' | 'core' | 'post';

/** Opens the sessions of the part's graphs: it whole ('global'), or, when `chunked`, its pre, core and post graphs. */
export interface AttentionPartSessions {
  chunked: boolean;
  open(part: AttentionPart, label: string): Promise<OpenSession>;
  release(s: OpenSession): Promise<void>;
}

async function withPart<T>(parts: AttentionPartSessions, part: AttentionPart, label: string, f: (s: OpenSession) => Promise<T>): Promise<T> {
  const s = await parts.open(part, label);
  try {
    return await f(s);
  } finally {
    await parts.release(s);
  }
}

function toResult(t: OrtTensor, name: string, chunks: number): AttentionHeadResult {
  let data = readFloat(t, `${name} output`);
  let channels = Number(t.dims[1]);
  const height = Number(t.dims[2]);
  const width = Number(t.dims[3]);
  if (name === 'latent_parameters') {
    channels /= 2;
    data = data.slice(0, channels * height * width);
  }
  return { data, channels, height, width, chunks };
}

/**
 * The part on an input [1, C, h, w] (a decoder's latent, or the tensor before an encoder's attention). With
 * `parts.chunked`, the core runs in query chunks whose float32 scores stay within `budgetBytes`; without it the whole
 * graph runs at once. An encoder's latent_parameters output is cut to its mean.
 */
export async function runAttentionParts(
  parts: AttentionPartSessions, latent: Float32Array, channels: number, h: number, w: number, budgetBytes: number,
  half: AttentionHalf = 'vae_decoder',
  /** Memory benchmarks: run the core for the first `modelChunks` chunks only, later chunks repeat the last output (every buffer is allocated as in a full run). */
  bench: { modelChunks?: number } = {},
): Promise<AttentionHeadResult> {
  const label = (what: string) => `${half} (${what})`;
  if (!parts.chunked) {
    return withPart(parts, 'global', label('the part with the attention'), async (s) => {
      const input = s.inputs[0]!;
      const out = await s.session.run({ [input.name]: floatTensor(input.type, latent, [1, channels, h, w], label(input.name)) });
      return toResult(out[s.outputs[0]!.name]!, s.outputs[0]!.name, 0);
    });
  }
  const mid = await withPart(parts, 'pre', label('before the attention core'), async (s) => {
    const input = s.inputs[0]!;
    return s.session.run({ [input.name]: floatTensor(input.type, latent, [1, channels, h, w], label(input.name)) });
  });
  let chunks = 0;
  const attended = await withPart(parts, 'core', label('attention core'), async (s) => {
    const [qName, kName, vName] = s.inputs.map((i) => i.name) as [string, string, string];
    const q = mid[qName]!;
    const k = mid[kName]!;
    const v = mid[vName]!;
    const qDims = q.dims.map(Number);
    const rows = qDims[qDims.length - 2]!;
    const outer = qDims.slice(0, -2).reduce((a, b) => a * b, 1);
    const keys = Number(k.dims[k.dims.length - 1]);
    const step = attentionChunkRows(outer, rows, keys, budgetBytes);
    const outName = s.outputs[0]!.name;
    let whole: FloatWords | undefined;
    let outDims: number[] = [];
    let outType = '';
    let last: OrtTensor | undefined;
    for (let r0 = 0; r0 < rows; r0 += step) {
      const r1 = Math.min(rows, r0 + step);
      const part = r0 === 0 && r1 === rows ? q : makeTensor(q.type as 'float32', sliceRows(q.data as FloatWords, qDims, r0, r1) as Float32Array, [...qDims.slice(0, -2), r1 - r0, qDims[qDims.length - 1]!]);
      const reuse = bench.modelChunks !== undefined && chunks >= bench.modelChunks && last && Number(last.dims[last.dims.length - 2]) === r1 - r0;
      const o = reuse ? last! : (await s.session.run({ [qName]: part, [kName]: k, [vName]: v }))[outName]!;
      last = o;
      chunks++;
      if (r0 === 0 && r1 === rows) return o;
      const od = o.dims.map(Number);
      if (!whole) {
        outType = o.type;
        outDims = [...od.slice(0, -2), rows, od[od.length - 1]!];
        const data = o.data as FloatWords;
        whole = new (data.constructor as new (n: number) => FloatWords)(outDims.reduce((a, b) => a * b, 1));
      }
      placeRows(whole, outDims, o.data as FloatWords, r0, r1);
    }
    return makeTensor(outType as 'float32', whole as Float32Array, outDims);
  });
  return withPart(parts, 'post', label('after the attention core'), async (s) => {
    const feeds: Record<string, OrtTensor> = {};
    for (const input of s.inputs) feeds[input.name] = mid[input.name] ?? attended;
    const out = await s.session.run(feeds);
    return toResult(out[s.outputs[0]!.name]!, s.outputs[0]!.name, chunks);
  });
}
