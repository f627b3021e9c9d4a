/**
 * Tiled VAE decoding, planned apart from running: tiles over the latent with overlap, and separable linear blend
 * weights normalised per axis so they sum to exactly 1 at every pixel: overlaps blend without seams and no
 * weight canvas is needed. Peak model memory is bounded by the tile. Portable: no Node APIs.
 */
import { invalidArgument } from '../errors.ts';
import { VAE_OPTIONS, optionSpec } from '../options/registry.ts';
import { checkOption } from '../options/spec.ts';

export interface TileOptions {
  /** Tile size in latent pixels (default 64, i.e. 512 px). */
  tileSize: number;
  /** Overlap between neighbouring tiles in latent pixels (default 16). */
  overlap: number;
}

export const DEFAULT_TILE_OPTIONS: TileOptions = { tileSize: 64, overlap: 16 };

export interface AxisTile {
  start: number;
  end: number;
}

export interface Tile {
  y: AxisTile;
  x: AxisTile;
}

/** Refuses an overlap above half the tile (the ramps of two neighbours would cross), naming both ways out. */
export function checkOverlapFits(o: TileOptions, name: string): void {
  if (o.overlap * 2 <= o.tileSize) return;
  const most = Math.floor(o.tileSize / 2);
  throw invalidArgument(name, `an integer in [0, ${most}] (at most half the tile size, ${o.tileSize})`, o.overlap, `Use an overlap of at most ${most}, or a tile size of at least ${o.overlap * 2}`);
}

/** Checks tile size and overlap against the registry, naming them as TileOptions does. */
export function validateTileOptions(o: TileOptions): void {
  checkOption(optionSpec(VAE_OPTIONS, 'tileSize'), o.tileSize, 'tileSize');
  checkOption(optionSpec(VAE_OPTIONS, 'overlap'), o.overlap, 'overlap');
  checkOverlapFits(o, 'overlap');
}

/** Tile positions along one axis: stride tileSize - overlap, the last aligned to the end. */
export function planAxis(size: number, tileSize: number, overlap: number): AxisTile[] {
  if (size <= tileSize) return [{ start: 0, end: size }];
  const stride = tileSize - overlap;
  const tiles: AxisTile[] = [];
  for (let s = 0; ; s += stride) {
    if (s + tileSize >= size) {
      tiles.push({ start: size - tileSize, end: size });
      break;
    }
    tiles.push({ start: s, end: s + tileSize });
  }
  return tiles;
}

export function planTiles(height: number, width: number, o: TileOptions): Tile[] {
  validateTileOptions(o);
  const ys = planAxis(height, o.tileSize, o.overlap);
  const xs = planAxis(width, o.tileSize, o.overlap);
  const tiles: Tile[] = [];
  for (const y of ys) for (const x of xs) tiles.push({ y, x });
  return tiles;
}

/**
 * Blend weights of every tile along one axis, in output pixels (scale = output px per latent px). At each inner
 * edge a tile's weight is 0 over a margin of overlap/4 latent px (where zero padding corrupts the decoder's
 * output), then ramps linearly to 1 over the middle half of the overlap; the weights are then divided by their
 * sum at each position, so they sum to exactly 1 however the tiles overlap.
 */
export function axisWeights(tiles: AxisTile[], size: number, overlap: number, scale: number): Float32Array[] {
  const margin = Math.floor(overlap / 4) * scale;
  const ramp = Math.max(1, overlap * scale - 2 * margin);
  const total = new Float64Array(size * scale);
  const rise = (d: number) => Math.min(1, Math.max(0, (d - margin + 0.5) / ramp));
  const raw = tiles.map((t) => {
    const a = t.start * scale;
    const b = t.end * scale;
    const w = new Float32Array(b - a);
    for (let p = a; p < b; p++) {
      let v = 1;
      if (t.start > 0) v = Math.min(v, rise(p - a));
      if (t.end < size) v = Math.min(v, rise(b - 1 - p));
      w[p - a] = v;
      total[p] += v;
    }
    return w;
  });
  raw.forEach((w, i) => {
    const a = tiles[i]!.start * scale;
    for (let k = 0; k < w.length; k++) w[k] = total[a + k]! > 0 ? w[k]! / total[a + k]! : 0;
  });
  return raw;
}

/** Accumulates a decoded tile [C, th, tw] into the canvas [C, H, W] with its blend weights (C = 3 unless given). */
export function blendTile(
  canvas: Float32Array, height: number, width: number,
  tileData: Float32Array, tile: Tile, wy: Float32Array, wx: Float32Array, scale: number, channels = 3,
): void {
  const y0 = tile.y.start * scale;
  const x0 = tile.x.start * scale;
  const th = wy.length;
  const tw = wx.length;
  for (let c = 0; c < channels; c++) {
    for (let y = 0; y < th; y++) {
      const wyv = wy[y]!;
      const src = (c * th + y) * tw;
      const dst = (c * height + y0 + y) * width + x0;
      for (let x = 0; x < tw; x++) canvas[dst + x]! += tileData[src + x]! * wyv * wx[x]!;
    }
  }
}
