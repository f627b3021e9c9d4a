/**
 * SD3's prompt encoding, as diffusers' StableDiffusion3Pipeline.encode_prompt does it, for the negative and the
 * positive prompt (rows 0 and 1):
 * - CLIP-L and CLIP-G: 77 tokens each, the penultimate hidden states (hidden_states[-2]) concatenated on the feature
 *   axis (768 + 1280 = 2048 in SD3), then zero-padded on the feature axis to the T5 width (joint_attention_dim);
 * - T5: max_sequence_length tokens, last_hidden_state; without text_encoder_3, zeros of [77, joint_attention_dim];
 * - the sequence: [CLIP part (77), T5 part] along the token axis;
 * - pooled projections: the two CLIPs' text_embeds concatenated (768 + 1280).
 * The encoders themselves are callbacks (ONNX sessions elsewhere). Portable.
 */
import { AsgdError } from '../errors.ts';
import type { TextConditioning } from '../conditioning.ts';
import type { ClipTokenizer } from '../text/clip-tokenizer.ts';
import { encodePrompt, type EncodeText, type EncodedText, type PromptEncoders, type PromptInput } from './prompt.ts';
import type { ModelFamily } from '../model-family.ts';
import { T5_MAX_LENGTH, type T5Tokenizer } from '../text/t5-tokenizer.ts';

export interface Sd3Encoders {
  tokenizer2: ClipTokenizer;
  /** The T5 tokenizer and its sequence length; absent without text_encoder_3. */
  t5?: { tokenizer: T5Tokenizer; maxLength: number };
  /** The transformer's encoder_hidden_states width (joint_attention_dim, 4096 in SD3). */
  jointDim: number;
  /** Warnings for the user (T5 truncation). */
  onWarning?(message: string): void;
}

function pooledOf(r: EncodedText, label: string): { data: Float32Array; dim: number } {
  if (!r.pooled || !r.pooledDim) {
    throw new AsgdError(`The SD3 ${label} has no text_embeds output`, {
      kind: 'model', parameter: label, expected: 'a CLIPTextModelWithProjection export (text_embeds output)', received: 'no pooled output',
      hint: 'Re-export the SD3 model with optimum-cli',
    });
  }
  return { data: r.pooled, dim: r.pooledDim };
}

export async function encodeSd3Prompt(input: PromptInput, enc: Sd3Encoders, encode: EncodeText): Promise<TextConditioning> {
  const rows1 = [input.negativeTokens.ids, input.tokens.ids];
  const rows2 = [enc.tokenizer2.encode(input.negativePrompt).ids, enc.tokenizer2.encode(input.prompt).ids];
  const a = await encode('textEncoder', rows1, 'penultimate');
  const b = await encode('textEncoder2', rows2, 'penultimate');
  if (a.tokens !== b.tokens) {
    throw new AsgdError('The two CLIP text encoders disagree on the token count', { kind: 'model', parameter: 'text_encoder_2', expected: String(a.tokens), received: String(b.tokens) });
  }
  const D = enc.jointDim;
  if (a.dim + b.dim > D) {
    throw new AsgdError('The CLIP text widths do not fit the transformer\'s text width', {
      kind: 'model', parameter: 'transformer', expected: `encoder_hidden_states width >= ${a.dim} + ${b.dim} (CLIP-L + CLIP-G)`, received: String(D),
      hint: 'The text encoders and the transformer come from different models; re-export the SD3 model as a whole',
    });
  }
  let t5: EncodedText | undefined;
  if (enc.t5) {
    const neg = enc.t5.tokenizer.encode(input.negativePrompt, enc.t5.maxLength);
    const pos = enc.t5.tokenizer.encode(input.prompt, enc.t5.maxLength);
    if (pos.truncated > 0) enc.onWarning?.(`The prompt is too long for T5: ${pos.truncated} piece(s) beyond its ${enc.t5.maxLength - 1} were dropped`);
    if (neg.truncated > 0) enc.onWarning?.(`The negative prompt is too long for T5: ${neg.truncated} piece(s) were dropped`);
    t5 = await encode('textEncoder3', [neg.ids, pos.ids], 'last');
    if (t5.dim !== D) {
      throw new AsgdError('The T5 encoder\'s width does not match the transformer\'s text width', {
        kind: 'model', parameter: 'text_encoder_3', expected: `${D} (joint_attention_dim)`, received: String(t5.dim),
        hint: 'The text encoders and the transformer come from different models; re-export the SD3 model as a whole',
      });
    }
  }
  const clipT = a.tokens;
  const t5T = t5 ? t5.tokens : clipT; // diffusers' zeros have the CLIP tokenizer's length
  const tokens = clipT + t5T;
  const hidden = new Float32Array(2 * tokens * D);
  for (let r = 0; r < 2; r++) {
    const base = r * tokens * D;
    for (let i = 0; i < clipT; i++) {
      const row = r * clipT + i;
      hidden.set(a.hidden.subarray(row * a.dim, (row + 1) * a.dim), base + i * D);
      hidden.set(b.hidden.subarray(row * b.dim, (row + 1) * b.dim), base + i * D + a.dim);
    }
    if (t5) hidden.set(t5.hidden.subarray(r * t5T * D, (r + 1) * t5T * D), base + clipT * D);
  }
  const pa = pooledOf(a, 'text_encoder');
  const pb = pooledOf(b, 'text_encoder_2');
  const pooledDim = pa.dim + pb.dim;
  const textEmbeds = new Float32Array(2 * pooledDim);
  for (let r = 0; r < 2; r++) {
    textEmbeds.set(pa.data.subarray(r * pa.dim, (r + 1) * pa.dim), r * pooledDim);
    textEmbeds.set(pb.data.subarray(r * pb.dim, (r + 1) * pb.dim), r * pooledDim + pa.dim);
  }
  return { hidden, tokens, dim: D, textEmbeds, pooledDim };
}

/**
 * The text-key columns the SD3 mask averages: the CLIP part's selected tokens (content tokens, or the mask words),
 * plus, when T5 is present and no mask words were given, the T5 part's prompt pieces (columns clipLength + 0 ..
 * clipLength + eosIndex - 1; `</s>` and padding excluded). With mask words only the CLIP columns are used.
 */
export function sd3MaskTokens(clipTokens: readonly number[], clipLength: number, t5Eos: number | undefined, maskWords: boolean): number[] {
  if (t5Eos === undefined || maskWords) return [...clipTokens];
  return [...clipTokens, ...Array.from({ length: t5Eos }, (_, i) => clipLength + i)];
}

/**
 * A model's prompt encoding by its family, as both pipelines run it: SD3's (CLIP-L, CLIP-G, T5 where the model has its
 * tokenizer; `jointDim` the transformer's text width) or encodePrompt's (SD 1.x/2.x, SDXL).
 */
export function encodeFamilyPrompt(
  family: ModelFamily,
  input: PromptInput,
  encoders: PromptEncoders & { tokenizer3?: T5Tokenizer; jointDim?: number; onWarning?(message: string): void },
  encode: EncodeText,
): Promise<TextConditioning> {
  if (family !== 'sd3') return encodePrompt(input, encoders, encode);
  const t5 = encoders.tokenizer3 ? { tokenizer: encoders.tokenizer3, maxLength: T5_MAX_LENGTH } : undefined;
  return encodeSd3Prompt(input, { tokenizer2: encoders.tokenizer2!, t5, jointDim: encoders.jointDim!, onWarning: encoders.onWarning }, encode);
}

/**
 * The token columns the mask reads, where the family's differ from the plan's: SD3's add T5's (sd3MaskTokens);
 * undefined for the other families (the plan's CLIP columns).
 */
export function familyMaskTokens(
  family: ModelFamily, plan: { maskTokens: readonly number[]; params: { prompt: string; maskWords?: readonly string[] } }, clipLength: number, tokenizer3?: T5Tokenizer,
): number[] | undefined {
  if (family !== 'sd3') return undefined;
  return sd3MaskTokens(plan.maskTokens, clipLength, tokenizer3?.encode(plan.params.prompt, T5_MAX_LENGTH).eosIndex, plan.params.maskWords !== undefined);
}
