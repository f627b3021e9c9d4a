/**
 * Stage-1 patch plan: how the HR latent splits into N native-size polyphase patches.
 *
 * Per axis: n = max(1, round(size / native)), patch = ceil(size / n) rounded up to `latentMultiple` (the
 * UNet's size granularity), padded size = n * patch >= size. Sizes that do not divide evenly are handled by
 * padding the HR latent at the bottom/right by edge replication (the last real row/column is repeated) before
 * the patches or windows are taken, and cropping the fused output back to h x w afterwards, so the scheduler
 * only ever sees the requested h x w latent. Edge replication keeps the padding statistically like its
 * neighbours (zeros would be out of distribution for the UNet at high noise). Portable: no Node APIs.
 */
import { invalidArgument } from '../errors.ts';

export interface GeometryInput {
  /** HR latent height and width (image pixels / VAE factor). */
  height: number;
  width: number;
  /** Native latent size of the model (64 for SD 1.5, 96 for SD 2 at 768, 128 for SDXL). */
  nativeHeight: number;
  nativeWidth: number;
  /** UNet size granularity in latent pixels (8 for SD; 4 for small models). Default 8. */
  latentMultiple?: number;
  /** Latent channels. Default 4. */
  channels?: number;
}

export interface PatchGeometry {
  channels: number;
  /** Requested HR latent size (what the scheduler steps and what predict returns). */
  height: number;
  width: number;
  nativeHeight: number;
  nativeWidth: number;
  latentMultiple: number;
  /** n_h and n_w. */
  rows: number;
  cols: number;
  /** N = rows * cols. */
  count: number;
  /** p_h and p_w, multiples of latentMultiple. */
  patchHeight: number;
  patchWidth: number;
  /** rows * patchHeight and cols * patchWidth (>= height, width). */
  paddedHeight: number;
  paddedWidth: number;
}

export const DEFAULT_LATENT_MULTIPLE = 8;
export const DEFAULT_CHANNELS = 4;

function positiveInteger(parameter: string, value: unknown, hint: string): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 1) {
    throw invalidArgument(parameter, 'a positive integer', value, hint);
  }
  return value;
}

export function roundUp(value: number, multiple: number): number {
  return Math.ceil(value / multiple) * multiple;
}

export function planGeometry(input: GeometryInput): PatchGeometry {
  const height = positiveInteger('height', input.height, 'Give the HR latent height (image height / 8).');
  const width = positiveInteger('width', input.width, 'Give the HR latent width (image width / 8).');
  const latentMultiple = positiveInteger(
    'latentMultiple',
    input.latentMultiple ?? DEFAULT_LATENT_MULTIPLE,
    'Use the UNet size granularity in latent pixels (8 for Stable Diffusion).',
  );
  const nativeHeight = positiveInteger('nativeHeight', input.nativeHeight, 'Use the model native latent height.');
  const nativeWidth = positiveInteger('nativeWidth', input.nativeWidth, 'Use the model native latent width.');
  if (nativeHeight % latentMultiple !== 0 || nativeWidth % latentMultiple !== 0) {
    throw invalidArgument(
      'nativeHeight/nativeWidth',
      `multiples of latentMultiple (${latentMultiple})`,
      `${nativeHeight}x${nativeWidth}`,
      'The native size must be a size the UNet accepts.',
    );
  }
  const channels = positiveInteger('channels', input.channels ?? DEFAULT_CHANNELS, 'Use the latent channel count (4).');
  const rows = Math.max(1, Math.round(height / nativeHeight));
  const cols = Math.max(1, Math.round(width / nativeWidth));
  const patchHeight = roundUp(Math.ceil(height / rows), latentMultiple);
  const patchWidth = roundUp(Math.ceil(width / cols), latentMultiple);
  return {
    channels,
    height,
    width,
    nativeHeight,
    nativeWidth,
    latentMultiple,
    rows,
    cols,
    count: rows * cols,
    patchHeight,
    patchWidth,
    paddedHeight: rows * patchHeight,
    paddedWidth: cols * patchWidth,
  };
}

/** Size of one patch in elements (C * p_h * p_w). */
export function patchSize(geo: PatchGeometry): number {
  return geo.channels * geo.patchHeight * geo.patchWidth;
}

export function latentSize(geo: PatchGeometry): number {
  return geo.channels * geo.height * geo.width;
}

export function isPadded(geo: PatchGeometry): boolean {
  return geo.paddedHeight !== geo.height || geo.paddedWidth !== geo.width;
}
