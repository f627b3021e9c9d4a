/** Runs the part of a VAE split at its attention from graph files (src/onnx/vae-attention-parts.ts does the running). */
import type { SessionOptions } from './io.ts';
import { openSession, releaseSession, type ModelLoad } from './session.ts';
import { runAttentionParts, type AttentionHalf, type AttentionHeadResult } from './vae-attention-parts.ts';

export type { AttentionHalf, AttentionHeadResult } from './vae-attention-parts.ts';

/** The graph files of the part with the attention: it whole, and (when the core runs in chunks) pre, core and post. */
export interface AttentionHeadFiles {
  global: string;
  chunked?: { pre: string; core: string; post: string };
}

/**
 * The part on an input [1, C, h, w] from its files (see runAttentionParts): with `files.chunked`, the core runs in
 * query chunks whose float32 scores stay within `budgetBytes`.
 */
export function runAttentionHead(
  files: AttentionHeadFiles, session: SessionOptions, load: ModelLoad, latent: Float32Array, channels: number, h: number, w: number, budgetBytes: number,
  half: AttentionHalf = 'vae_decoder',
  bench: { modelChunks?: number } = {},
): Promise<AttentionHeadResult> {
  const chunked = files.chunked;
  const parts = {
    chunked: chunked !== undefined,
    open: (part: 'global' | 'pre' | 'core' | 'post', label: string) => openSession(part === 'global' ? files.global : chunked![part], label, session, load),
    release: releaseSession,
  };
  return runAttentionParts(parts, latent, channels, h, w, budgetBytes, half, bench);
}
