/**
 * What a pipeline (Node's or the browser's) notes when a VAE config's `force_upcast` meets a float16 export: the
 * export runs as a float32 graph (src/graph/float32-upcast.ts), or why it could not. Portable.
 */

/** `component` (vae_decoder, vae_encoder) runs in float32: `tensors` converted, stored as `file` where it is one. */
export function float32VaeNote(component: string, tensors: number, file?: string): string {
  return `${component} is a float16 export and the VAE config sets force_upcast: it runs in float32 (${tensors} tensors converted${file ? `, ${file}` : ''})`;
}

/** The float32 graph of `component` could not be made: it runs as exported, and a float16 decode may overflow. */
export function float32VaeFailedNote(component: string, reason: string): string {
  return `${component}: the VAE config sets force_upcast, but its float32 graph could not be made (${reason}); it runs as exported`;
}
