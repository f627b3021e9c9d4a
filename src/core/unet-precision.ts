/**
 * What a pipeline (Node's or the browser's) reports of `unetPrecision` 'float16': a float32 UNet export converted to
 * float16 (src/graph/float16-downcast.ts), a float16 export run as it is, or why no conversion was made. Portable.
 */
import type { Float16Counts } from '../graph/float16-downcast.ts';

/** What unetPrecision 'float16' did to the UNet (ModelInfo.unetFloat16, WebModelInfo.unetFloat16). */
export interface UnetFloat16Info {
  applied: boolean;
  reason?: string;
  tensors?: number;
  float32Nodes?: number;
  casts?: number;
  attentionScoresFloat32?: boolean;
}

/** The note of a converted UNet, now `file`. */
export function float16UnetNote(file: string, r: Float16Counts & { attentionScoresFloat32: boolean }): string {
  const scores = r.attentionScoresFloat32 ? ', the attention scores among them (upcast_attention)' : '';
  return `UNet converted to float16 (${file}): ${r.tensors} tensors; ${r.float32Nodes} nodes kept in float32 (timestep embedding${scores})`;
}

/** The note where the export (`file`) is float16 already. */
export function float16AlreadyNote(file: string): string {
  return `unetPrecision float16: the UNet export is float16 already (${file}), and runs as it is`;
}

/** The warning every run repeats where the conversion failed. */
export function float16FailedWarning(reason: string): string {
  return `unetPrecision float16 was not applied: the UNet could not be converted (${reason}); it runs as exported`;
}

/** The info of an applied conversion. */
export function float16UnetInfo(r: Float16Counts & { attentionScoresFloat32: boolean }): UnetFloat16Info {
  return { applied: true, tensors: r.tensors, float32Nodes: r.float32Nodes, casts: r.casts, attentionScoresFloat32: r.attentionScoresFloat32 };
}
