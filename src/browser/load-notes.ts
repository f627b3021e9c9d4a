/** What loading a model file tells the page's notes (ModelInfo.notes): weights read in place or cut, VAEs in float32. */
import { float32VaeFailedNote, float32VaeNote } from '../core/vae/upcast-note.ts';
import type { DeviceResult } from './device/protocol.ts';
import { folderOf } from './model/external-data.ts';

/** Where a weights file went to ONNX Runtime Web in pieces (src/graph/external-pieces.ts). */
function externalPiecesNote(file: string, bytes: number, pieces: number): string {
  return `${file} (${(bytes / 1e9).toFixed(2)} GB) handed to ONNX Runtime Web in ${pieces} piece${pieces === 1 ? '' : 's'}: it reads no offset past 4 GiB of one file`;
}

/** Where a model file's inline weights were read in place as external data (src/graph/inline-weights.ts). */
function inlineWeightsNote(file: string, tensors: number, bytes: number): string {
  return `${file}: its ${tensors} inline weights (${(bytes / 1e9).toFixed(2)} GB) handed to ONNX Runtime Web as external data read in place, so its memory holds them once`;
}

type Loaded = Extract<DeviceResult, { type: 'loaded' }>;

/** What a model file's load tells the page's notes, each once: its VAE run in float32, its weights read in place or cut. */
export function noteLoad(notes: string[], file: string, r: Loaded): void {
  const vae = file.startsWith('vae_encoder') ? 'vae_encoder' : 'vae_decoder';
  const add = (note: string) => void (notes.includes(note) || notes.push(note));
  if (r.float32Tensors !== undefined) add(float32VaeNote(vae, r.float32Tensors));
  if (r.inlineWeights) add(inlineWeightsNote(file, r.inlineWeights.tensors, r.inlineWeights.bytes));
  for (const p of r.externalPieces ?? []) add(externalPiecesNote(folderOf(file) + p.path, p.bytes, p.pieces));
  if (r.float32Reason !== undefined) add(float32VaeFailedNote(vae, r.float32Reason));
}
