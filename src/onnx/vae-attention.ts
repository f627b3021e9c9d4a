/**
 * Runs the head of a VAE decoder split after its attention (src/graph/vae-attention-split.ts) on a whole latent:
 * either the head graph at once, or the pre graph, the attention core over chunks of query rows (all keys and
 * values; each chunk's scores within a byte budget, src/core/vae/attention-chunks.ts), then the post graph. Sessions
 * are opened one at a time and released after use (the head runs once per decode).
 */
import { attentionChunkRows, placeRows, sliceRows, type FloatWords } from '../core/vae/attention-chunks.ts';
import type { SessionOptions } from './io.ts';
import { openSession, releaseSession, type ModelLoad } from './session.ts';
import { floatTensor, makeTensor, readFloat, type OpenSession, type OrtTensor } from './tensors.ts';

/** The head's graph files: the whole head, and (when the core runs in chunks) pre, core and post. */
export interface AttentionHeadFiles {
  head: string;
  chunked?: { pre: string; core: string; post: string };
}

export interface AttentionHeadResult {
  data: Float32Array;
  channels: number;
  height: number;
  width: number;
  /** Query chunks the core ran in (1: unchunked; 0: the whole head graph ran). */
  chunks: number;
}

async function withSession<T>(file: string, label: string, session: SessionOptions, load: ModelLoad, f: (s: OpenSession) => Promise<T>): Promise<T> {
  const s = await openSession(file, label, session, load);
  try {
    return await f(s);
  } finally {
    await releaseSession(s);
  }
}

function toResult(t: OrtTensor, chunks: number): AttentionHeadResult {
  return { data: readFloat(t, 'vae_decoder head output'), channels: Number(t.dims[1]), height: Number(t.dims[2]), width: Number(t.dims[3]), chunks };
}

/**
 * The head on a latent [1, C, h, w]: the tensor after the attention. With `files.chunked`, the core runs in query
 * chunks whose float32 scores stay within `budgetBytes`; without it the head graph runs at once.
 */
export async function runAttentionHead(
  files: AttentionHeadFiles, session: SessionOptions, load: ModelLoad, latent: Float32Array, channels: number, h: number, w: number, budgetBytes: number,
): Promise<AttentionHeadResult> {
  if (!files.chunked) {
    return withSession(files.head, 'vae_decoder (attention head)', session, load, async (s) => {
      const input = s.inputs[0]!;
      const out = await s.session.run({ [input.name]: floatTensor(input.type, latent, [1, channels, h, w], 'vae_decoder latent_sample') });
      return toResult(out[s.outputs[0]!.name]!, 0);
    });
  }
  const { pre, core, post } = files.chunked;
  const mid = await withSession(pre, 'vae_decoder (before the attention core)', session, load, async (s) => {
    const input = s.inputs[0]!;
    return s.session.run({ [input.name]: floatTensor(input.type, latent, [1, channels, h, w], 'vae_decoder latent_sample') });
  });
  let chunks = 0;
  const attended = await withSession(core, 'vae_decoder (attention core)', session, load, async (s) => {
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
    for (let r0 = 0; r0 < rows; r0 += step) {
      const r1 = Math.min(rows, r0 + step);
      const part = r0 === 0 && r1 === rows ? q : makeTensor(q.type as 'float32', sliceRows(q.data as FloatWords, qDims, r0, r1) as Float32Array, [...qDims.slice(0, -2), r1 - r0, qDims[qDims.length - 1]!]);
      const o = (await s.session.run({ [qName]: part, [kName]: k, [vName]: v }))[outName]!;
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
  return withSession(post, 'vae_decoder (after the attention core)', session, load, async (s) => {
    const feeds: Record<string, OrtTensor> = {};
    for (const input of s.inputs) feeds[input.name] = mid[input.name] ?? attended;
    const out = await s.session.run(feeds);
    return toResult(out[s.outputs[0]!.name]!, chunks);
  });
}
