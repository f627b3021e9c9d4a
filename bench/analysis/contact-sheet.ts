/**
 * Contact sheets of the benchmarks: thumbnails in rows and columns, each with a strip under it (green: the image
 * is correct by the benchmark's measure; red: not).
 */
import type { RgbImage } from '../../src/core/image.ts';
import { resizeLanczos } from '../../src/node/image/read.ts';

export async function contactSheet(rows: { image: RgbImage; ok: boolean }[][], cell: number): Promise<RgbImage> {
  const gap = 4;
  const strip = 6;
  const cols = Math.max(...rows.map((r) => r.length));
  const width = gap + cols * (cell + gap);
  const height = gap + rows.length * (cell + strip + gap);
  const data = new Uint8Array(width * height * 3).fill(40);
  for (const [r, row] of rows.entries()) {
    for (const [c, { image, ok }] of row.entries()) {
      const thumb = (await resizeLanczos(image, cell, cell)).data;
      const x0 = gap + c * (cell + gap);
      const y0 = gap + r * (cell + strip + gap);
      for (let y = 0; y < cell; y++) data.set(thumb.subarray(y * cell * 3, (y + 1) * cell * 3), ((y0 + y) * width + x0) * 3);
      const colour = ok ? [40, 200, 60] : [220, 40, 40];
      for (let y = y0 + cell + 1; y < y0 + cell + strip; y++) for (let x = x0; x < x0 + cell; x++) data.set(colour, (y * width + x) * 3);
    }
  }
  return { data, width, height };
}
