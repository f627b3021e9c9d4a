/**
 * The prompt-encoding stage: token ids to the UNet's text conditioning, the unconditional (negative) row first.
 * SD 1.x/2.x: the text encoder's last hidden states. SDXL: both encoders' penultimate hidden states concatenated
 * on the feature axis, pooled `text_embeds` from the second, and the unconditional half zeroed when no negative
 * prompt is given and the model asks for it. The encoder itself is a callback (an ONNX session elsewhere). Portable.
 */
import { AsgdError } from '../errors.ts';
import type { TextConditioning } from '../conditioning.ts';
import type { ClipTokenizer, TokenizedPrompt } from '../text/clip-tokenizer.ts';

export type TextEncoderName = 'textEncoder' | 'textEncoder2' | 'textEncoder3';

/** What one text encoder returns for a batch of token rows. */
export interface EncodedText {
  /** [B, T, D] hidden states of the requested layer. */
  hidden: Float32Array;
  tokens: number;
  dim: number;
  /** [B, P] pooled output (pooler_output or text_embeds), if the model has one. */
  pooled?: Float32Array;
  pooledDim?: number;
}

export type EncodeText = (which: TextEncoderName, rows: Int32Array[], layer: 'last' | 'penultimate') => Promise<EncodedText>;

export interface PromptInput {
  prompt: string;
  negativePrompt: string;
  /** Tokenised by the check stage with the first tokenizer. */
  tokens: TokenizedPrompt;
  negativeTokens: TokenizedPrompt;
}

export interface PromptEncoders {
  /** SDXL's second tokenizer; absent for SD 1.x/2.x. */
  tokenizer2?: ClipTokenizer;
  /** SDXL config `force_zeros_for_empty_prompt`. */
  forceZerosForEmptyPrompt: boolean;
}

export async function encodePrompt(input: PromptInput, encoders: PromptEncoders, encode: EncodeText): Promise<TextConditioning> {
  const rows = [input.negativeTokens.ids, input.tokens.ids];
  if (!encoders.tokenizer2) {
    const r = await encode('textEncoder', rows, 'last');
    return { hidden: r.hidden, tokens: r.tokens, dim: r.dim };
  }
  const rows2 = [encoders.tokenizer2.encode(input.negativePrompt).ids, encoders.tokenizer2.encode(input.prompt).ids];
  const a = await encode('textEncoder', rows, 'penultimate');
  const b = await encode('textEncoder2', rows2, 'penultimate');
  if (!b.pooled || !b.pooledDim) {
    throw new AsgdError('The second text encoder has no pooled output', { kind: 'model', parameter: 'text_encoder_2', expected: 'a text_embeds output', received: 'none', hint: 'Re-export the SDXL model with optimum-cli' });
  }
  if (a.tokens !== b.tokens) throw new AsgdError('The two text encoders disagree on the token count', { kind: 'model', parameter: 'text_encoder_2', expected: String(a.tokens), received: String(b.tokens) });
  const t = a.tokens;
  const dim = a.dim + b.dim;
  const hidden = new Float32Array(2 * t * dim);
  for (let r = 0; r < 2 * t; r++) {
    hidden.set(a.hidden.subarray(r * a.dim, (r + 1) * a.dim), r * dim);
    hidden.set(b.hidden.subarray(r * b.dim, (r + 1) * b.dim), r * dim + a.dim);
  }
  const textEmbeds = b.pooled.slice();
  if (input.negativePrompt === '' && encoders.forceZerosForEmptyPrompt) {
    hidden.fill(0, 0, t * dim);
    textEmbeds.fill(0, 0, b.pooledDim);
  }
  return { hidden, tokens: t, dim, textEmbeds, pooledDim: b.pooledDim };
}
