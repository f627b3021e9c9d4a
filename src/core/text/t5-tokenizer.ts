/**
 * T5 tokenizer (SD3's tokenizer_3) on @huggingface/tokenizers, from the export's tokenizer.json (SentencePiece
 * Unigram). Produces what diffusers' SD3 pipeline feeds text_encoder_3: the prompt's pieces, `</s>`, then the pad
 * id up to `maxLength` (max_sequence_length, 256 by default); longer prompts are cut to maxLength - 1 pieces
 * before `</s>`, as the tokenizer's truncation does. Portable: takes parsed file contents, no I/O.
 */
import { Tokenizer } from '@huggingface/tokenizers';
import { AsgdError, invalidArgument } from '../errors.ts';
import type { TokenizerFiles } from './clip-tokenizer.ts';

/** diffusers' StableDiffusion3Pipeline max_sequence_length default. */
export const T5_MAX_LENGTH = 256;

export interface T5TokenizedPrompt {
  ids: Int32Array;
  /** Index of `</s>` in `ids` (= the number of prompt pieces kept). */
  eosIndex: number;
  /** Pieces dropped by truncation (0 if none). */
  truncated: number;
}

function tokenName(value: unknown): string | undefined {
  if (typeof value === 'string') return value;
  if (value && typeof value === 'object' && typeof (value as { content?: unknown }).content === 'string') return (value as { content: string }).content;
  return undefined;
}

export class T5Tokenizer {
  readonly eosId: number;
  readonly padId: number;
  private readonly tokenizer: Tokenizer;

  constructor(files: TokenizerFiles, readonly label = 'tokenizer_3') {
    const json = files.tokenizerJson;
    const model = (json as { model?: { type?: string; vocab?: unknown } } | undefined)?.model;
    if (!json || !model || !Array.isArray(model.vocab)) {
      throw new AsgdError(`The ${label} has no SentencePiece (Unigram) tokenizer.json`, {
        kind: 'model', parameter: label, expected: 'tokenizer.json with a Unigram model (T5)', received: model?.type ?? 'none',
        hint: 'Re-export the SD3 model with optimum-cli, which writes tokenizer_3/tokenizer.json',
      });
    }
    const pieces = (model.vocab as unknown[]).map((entry) => (Array.isArray(entry) ? String(entry[0]) : ''));
    const config = { ...(files.specialTokensMap ?? {}), ...(files.tokenizerConfig ?? {}) };
    const find = (token: string, what: string) => {
      const id = pieces.indexOf(token);
      if (id < 0) throw new AsgdError(`The ${label}'s ${what} token ${JSON.stringify(token)} is not in its vocabulary`, { kind: 'model', parameter: label });
      return id;
    };
    this.eosId = find(tokenName(config['eos_token']) ?? '</s>', 'eos');
    this.padId = find(tokenName(config['pad_token']) ?? '<pad>', 'pad');
    this.tokenizer = new Tokenizer(json, { ...config, clean_up_tokenization_spaces: false });
  }

  encode(text: string, maxLength = T5_MAX_LENGTH): T5TokenizedPrompt {
    if (!Number.isInteger(maxLength) || maxLength < 2) throw invalidArgument('maxLength', 'an integer >= 2', maxLength);
    const enc = this.tokenizer.encode(text, { add_special_tokens: false });
    const room = maxLength - 1;
    const body = enc.ids.slice(0, room).map(Number);
    const ids = new Int32Array(maxLength).fill(this.padId);
    ids.set(body, 0);
    ids[body.length] = this.eosId;
    return { ids, eosIndex: body.length, truncated: Math.max(0, enc.ids.length - room) };
  }
}
