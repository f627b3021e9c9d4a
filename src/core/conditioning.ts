/** Text conditioning as the UNet takes it: what the prompt-encoding stage produces. Portable. */
export interface TextConditioning {
  /** Shape `[2, tokens, dim]`: unconditional then conditional hidden states. */
  hidden: Float32Array;
  tokens: number;
  dim: number;
  /** SDXL pooled embeddings [2, pooledDim]. */
  textEmbeds?: Float32Array;
  pooledDim?: number;
}
