/** The text encoder adapter: input_ids (int32 or int64, per metadata) to hidden states and pooled output. */
import type { IoInfo } from './io.ts';
import { findIo, makeTensor, readFloat, type OpenSession } from './tensors.ts';

export type { EncodedText } from '../core/generation/prompt.ts';
import type { EncodedText } from '../core/generation/prompt.ts';

export class TextEncoderAdapter {
  readonly ids: IoInfo;
  constructor(readonly s: OpenSession, readonly label = 'text_encoder') {
    this.ids = findIo(s.inputs, ['input_ids'], 'input_ids input', label, 0);
  }

  /**
   * Encode a batch of 77-token rows. `layer`: 'last' for last_hidden_state (SD 1.x/2.x), or 'penultimate' for
   * hidden_states.{N-2} (SDXL: the second to last of hidden_states.0..N-1... as diffusers' hidden_states[-2]).
   */
  async encode(rows: Int32Array[], layer: 'last' | 'penultimate' = 'last'): Promise<EncodedText> {
    const b = rows.length;
    const t = rows[0]!.length;
    const flat = new Int32Array(b * t);
    rows.forEach((r, i) => flat.set(r, i * t));
    const input =
      this.ids.type === 'int64'
        ? makeTensor('int64', BigInt64Array.from(flat, (v) => BigInt(v)), [b, t])
        : makeTensor('int32', flat, [b, t]);
    const out = await this.s.session.run({ [this.ids.name]: input });
    let hiddenName: string;
    if (layer === 'penultimate') {
      const hs = this.s.outputs.map((o) => /^hidden_states\.(\d+)$/.exec(o.name)).filter((m) => m !== null) as RegExpExecArray[];
      if (hs.length < 2) throw new Error(`${this.label}: no hidden_states.N outputs for the penultimate layer`);
      const max = Math.max(...hs.map((m) => Number(m[1])));
      hiddenName = `hidden_states.${max - 1}`;
    } else {
      hiddenName = findIo(this.s.outputs, ['last_hidden_state'], 'last_hidden_state output', this.label, 0).name;
    }
    const ht = out[hiddenName]!;
    const hidden = readFloat(ht, `${this.label} ${hiddenName}`);
    const dim = Number(ht.dims[2]);
    const pooledIo = this.s.outputs.find((o) => o.name === 'text_embeds') ?? this.s.outputs.find((o) => o.name === 'pooler_output');
    let pooled: Float32Array | undefined;
    let pooledDim: number | undefined;
    if (pooledIo && out[pooledIo.name]) {
      pooled = readFloat(out[pooledIo.name]!, `${this.label} ${pooledIo.name}`);
      pooledDim = Number(out[pooledIo.name]!.dims[1]);
    }
    return { hidden, tokens: t, dim, pooled, pooledDim };
  }
}
