/**
 * CLIP tokenizer on @huggingface/tokenizers (pure JS). Built from the export's vocab.json + merges.txt, or from a
 * tokenizer.json when that is all the folder has. Produces the 77 ids the text encoder takes: BOS, up to 75 tokens,
 * EOS, then the model's own pad token. Portable: takes parsed file contents, no I/O.
 */
import { Tokenizer } from '@huggingface/tokenizers';
import { AsgdError } from '../errors.ts';

export const CLIP_MAX_LENGTH = 77;
/** CLIP keeps only the first 49152 - 256 - 2 merges of its merges.txt. */
const CLIP_MERGE_LIMIT = 49152 - 256 - 2;

export interface TokenizerFiles {
  /** vocab.json parsed, token -> id. */
  vocab?: Record<string, number>;
  /** merges.txt text. */
  merges?: string;
  /** tokenizer.json parsed. */
  tokenizerJson?: Record<string, unknown>;
  /** tokenizer_config.json parsed (optional). */
  tokenizerConfig?: Record<string, unknown>;
  /** special_tokens_map.json parsed (optional). */
  specialTokensMap?: Record<string, unknown>;
}

export interface TokenizedPrompt {
  ids: Int32Array;
  /** Index of the EOS token in `ids`. */
  eosIndex: number;
  /** Tokens between BOS and EOS, as strings (for mask word selection). */
  tokens: string[];
  /** Number of prompt tokens dropped by truncation (0 if none). */
  truncated: number;
}

function tokenName(value: unknown): string | undefined {
  if (typeof value === 'string') return value;
  if (value && typeof value === 'object' && typeof (value as { content?: unknown }).content === 'string') {
    return (value as { content: string }).content;
  }
  return undefined;
}

export class ClipTokenizer {
  readonly bosId: number;
  readonly eosId: number;
  readonly padId: number;
  readonly maxLength: number;
  private readonly tokenizer: Tokenizer;

  constructor(files: TokenizerFiles, label = 'tokenizer') {
    const json = files.tokenizerJson ?? buildTokenizerJson(files, label);
    const model = (json as { model?: { vocab?: Record<string, number> } }).model;
    const vocab = model?.vocab;
    if (!vocab || typeof vocab !== 'object') {
      throw new AsgdError(`The ${label} has no BPE vocabulary`, {
        kind: 'model',
        parameter: label,
        hint: 'Expected vocab.json + merges.txt or a tokenizer.json with a BPE model',
      });
    }
    const config = { ...(files.specialTokensMap ?? {}), ...(files.tokenizerConfig ?? {}) };
    const bos = tokenName(config['bos_token']) ?? '<|startoftext|>';
    const eos = tokenName(config['eos_token']) ?? '<|endoftext|>';
    const pad = tokenName(config['pad_token']) ?? eos;
    const lookup = (tok: string, what: string): number => {
      const id = vocab[tok];
      if (id === undefined) {
        throw new AsgdError(`The ${label}'s ${what} token ${JSON.stringify(tok)} is not in its vocabulary`, {
          kind: 'model',
          parameter: label,
          hint: 'Check tokenizer_config.json / special_tokens_map.json against vocab.json',
        });
      }
      return id;
    };
    this.bosId = lookup(bos, 'bos');
    this.eosId = lookup(eos, 'eos');
    this.padId = lookup(pad, 'pad');
    const maxLen = Number(config['model_max_length']);
    this.maxLength = Number.isInteger(maxLen) && maxLen > 2 && maxLen <= CLIP_MAX_LENGTH ? maxLen : CLIP_MAX_LENGTH;
    this.tokenizer = new Tokenizer(json, { ...config, clean_up_tokenization_spaces: false });
  }

  encode(text: string): TokenizedPrompt {
    const enc = this.tokenizer.encode(text, { add_special_tokens: false });
    const room = this.maxLength - 2;
    const body = enc.ids.slice(0, room).map(Number);
    const ids = new Int32Array(this.maxLength).fill(this.padId);
    ids[0] = this.bosId;
    ids.set(body, 1);
    ids[body.length + 1] = this.eosId;
    return {
      ids,
      eosIndex: body.length + 1,
      tokens: enc.tokens.slice(0, room),
      truncated: Math.max(0, enc.ids.length - room),
    };
  }
}

/** CLIP's text pipeline in HF tokenizers' serialisation: normalizer, pre-tokenizer, decoder. */
export const CLIP_TOKENIZER_PIPELINE = {
  normalizer: {
    type: 'Sequence',
    normalizers: [
      { type: 'NFC' },
      { type: 'Replace', pattern: { Regex: '\\s+' }, content: ' ' },
      { type: 'Lowercase' },
    ],
  },
  pre_tokenizer: {
    type: 'Sequence',
    pretokenizers: [
      {
        type: 'Split',
        pattern: {
          Regex: "<\\|startoftext\\|>|<\\|endoftext\\|>|'s|'t|'re|'ve|'m|'ll|'d|[\\p{L}]+|[\\p{N}]|[^\\s\\p{L}\\p{N}]+",
        },
        behavior: 'Removed',
        invert: true,
      },
      { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: false },
    ],
  },
  decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
} as const;

/** A tokenizer.json equivalent to CLIP's, built in memory from vocab.json + merges.txt. */
export function buildTokenizerJson(files: TokenizerFiles, label = 'tokenizer'): Record<string, unknown> {
  if (!files.vocab || files.merges === undefined) {
    throw new AsgdError(`The ${label} folder has neither vocab.json + merges.txt nor tokenizer.json`, {
      kind: 'model',
      parameter: label,
      hint: 'Re-export the model with optimum-cli, which writes the tokenizer files',
    });
  }
  const lines = files.merges.split(/\r?\n/);
  const merges: string[] = [];
  for (const line of lines) {
    if (line.startsWith('#version') || line.trim() === '') continue;
    merges.push(line);
    if (merges.length >= CLIP_MERGE_LIMIT) break;
  }
  const vocab = files.vocab;
  const special = ['<|startoftext|>', '<|endoftext|>']
    .filter((t) => vocab[t] !== undefined)
    .map((t) => ({ id: vocab[t], content: t, single_word: false, lstrip: false, rstrip: false, normalized: true, special: true }));
  return {
    version: '1.0',
    added_tokens: special,
    normalizer: CLIP_TOKENIZER_PIPELINE.normalizer,
    pre_tokenizer: CLIP_TOKENIZER_PIPELINE.pre_tokenizer,
    post_processor: null,
    decoder: CLIP_TOKENIZER_PIPELINE.decoder,
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: '<|endoftext|>',
      continuing_subword_prefix: '',
      end_of_word_suffix: '</w>',
      fuse_unk: false,
      byte_fallback: false,
      vocab,
      merges,
    },
  };
}
