/**
 * Labelled side-by-side comparison images (e.g. `direct` next to `asg` for the same prompt and seed), drawn on
 * 8-bit RGB with a small built-in bitmap font, so labels need no font files or text-rendering library.
 * No Node APIs: the result is an RgbImage for saveImage (write.ts).
 */
import { AsgdError } from '../../core/errors.ts';
import type { RgbImage } from '../../core/image.ts';

export type Rgb = readonly [number, number, number];

/**
 * Glyph cell of the font (at scale 1): 5 px wide, 9 px high, of which 7 rows stand on the baseline and 2 hold
 * descenders (g, j, p, q, y, comma). Text advances 6 px per character; lines are 11 px apart.
 */
export const GLYPH_WIDTH = 5;
export const GLYPH_HEIGHT = 9;
const ADVANCE = GLYPH_WIDTH + 1;
const LINE_HEIGHT = GLYPH_HEIGHT + 2;

/**
 * Lowercase letters, digits and common punctuation, one string per row, '#' = ink; 7 rows, or 9 with a
 * descender. Uppercase letters are drawn with the lowercase glyphs; any other character as a hollow box.
 */
const GLYPHS: Record<string, readonly string[]> = {
  ' ': ['.....', '.....', '.....', '.....', '.....', '.....', '.....'],
  a: ['.....', '.....', '.###.', '....#', '.####', '#...#', '.####'],
  b: ['#....', '#....', '####.', '#...#', '#...#', '#...#', '####.'],
  c: ['.....', '.....', '.####', '#....', '#....', '#....', '.####'],
  d: ['....#', '....#', '.####', '#...#', '#...#', '#...#', '.####'],
  e: ['.....', '.....', '.###.', '#...#', '#####', '#....', '.###.'],
  f: ['..##.', '.#...', '####.', '.#...', '.#...', '.#...', '.#...'],
  g: ['.....', '.....', '.####', '#...#', '#...#', '#...#', '.####', '....#', '.###.'],
  h: ['#....', '#....', '####.', '#...#', '#...#', '#...#', '#...#'],
  i: ['..#..', '.....', '.##..', '..#..', '..#..', '..#..', '.###.'],
  j: ['...#.', '.....', '..##.', '...#.', '...#.', '...#.', '...#.', '#..#.', '.##..'],
  k: ['#....', '#....', '#..#.', '#.#..', '##...', '#.#..', '#..#.'],
  l: ['.##..', '..#..', '..#..', '..#..', '..#..', '..#..', '.###.'],
  m: ['.....', '.....', '##.#.', '#.#.#', '#.#.#', '#.#.#', '#.#.#'],
  n: ['.....', '.....', '####.', '#...#', '#...#', '#...#', '#...#'],
  o: ['.....', '.....', '.###.', '#...#', '#...#', '#...#', '.###.'],
  p: ['.....', '.....', '####.', '#...#', '#...#', '#...#', '####.', '#....', '#....'],
  q: ['.....', '.....', '.####', '#...#', '#...#', '#...#', '.####', '....#', '....#'],
  r: ['.....', '.....', '#.##.', '##..#', '#....', '#....', '#....'],
  s: ['.....', '.....', '.####', '#....', '.###.', '....#', '####.'],
  t: ['.#...', '.#...', '####.', '.#...', '.#...', '.#..#', '..##.'],
  u: ['.....', '.....', '#...#', '#...#', '#...#', '#..##', '.##.#'],
  v: ['.....', '.....', '#...#', '#...#', '#...#', '.#.#.', '..#..'],
  w: ['.....', '.....', '#...#', '#...#', '#.#.#', '#.#.#', '.#.#.'],
  x: ['.....', '.....', '#...#', '.#.#.', '..#..', '.#.#.', '#...#'],
  y: ['.....', '.....', '#...#', '#...#', '#...#', '#...#', '.####', '....#', '.###.'],
  z: ['.....', '.....', '#####', '...#.', '..#..', '.#...', '#####'],
  '0': ['.###.', '#...#', '#..##', '#.#.#', '##..#', '#...#', '.###.'],
  '1': ['..#..', '.##..', '..#..', '..#..', '..#..', '..#..', '.###.'],
  '2': ['.###.', '#...#', '....#', '...#.', '..#..', '.#...', '#####'],
  '3': ['#####', '...#.', '..#..', '...#.', '....#', '#...#', '.###.'],
  '4': ['...#.', '..##.', '.#.#.', '#..#.', '#####', '...#.', '...#.'],
  '5': ['#####', '#....', '####.', '....#', '....#', '#...#', '.###.'],
  '6': ['..##.', '.#...', '#....', '####.', '#...#', '#...#', '.###.'],
  '7': ['#####', '....#', '...#.', '..#..', '.#...', '.#...', '.#...'],
  '8': ['.###.', '#...#', '#...#', '.###.', '#...#', '#...#', '.###.'],
  '9': ['.###.', '#...#', '#...#', '.####', '....#', '...#.', '.##..'],
  '.': ['.....', '.....', '.....', '.....', '.....', '.##..', '.##..'],
  ',': ['.....', '.....', '.....', '.....', '.....', '.##..', '.##..', '..#..', '.#...'],
  ':': ['.....', '.##..', '.##..', '.....', '.##..', '.##..', '.....'],
  ';': ['.....', '.....', '.##..', '.##..', '.....', '.##..', '.##..', '..#..', '.#...'],
  '-': ['.....', '.....', '.....', '#####', '.....', '.....', '.....'],
  '_': ['.....', '.....', '.....', '.....', '.....', '.....', '#####'],
  '+': ['.....', '..#..', '..#..', '#####', '..#..', '..#..', '.....'],
  '=': ['.....', '.....', '#####', '.....', '#####', '.....', '.....'],
  '/': ['.....', '....#', '...#.', '..#..', '.#...', '#....', '.....'],
  '(': ['...#.', '..#..', '.#...', '.#...', '.#...', '..#..', '...#.'],
  ')': ['.#...', '..#..', '...#.', '...#.', '...#.', '..#..', '.#...'],
  '%': ['##...', '##..#', '...#.', '..#..', '.#...', '#..##', '...##'],
  "'": ['..#..', '..#..', '.#...', '.....', '.....', '.....', '.....'],
  '"': ['.#.#.', '.#.#.', '.#.#.', '.....', '.....', '.....', '.....'],
  '!': ['..#..', '..#..', '..#..', '..#..', '..#..', '.....', '..#..'],
  '?': ['.###.', '#...#', '....#', '...#.', '..#..', '.....', '..#..'],
  '#': ['.#.#.', '.#.#.', '#####', '.#.#.', '#####', '.#.#.', '.#.#.'],
};
const BOX: readonly string[] = ['#####', '#...#', '#...#', '#...#', '#...#', '#...#', '#####'];

/** The GLYPH_HEIGHT rows of GLYPH_WIDTH characters drawn for a character ('#' = ink). */
export function glyphFor(ch: string): readonly string[] {
  const rows = GLYPHS[ch] ?? GLYPHS[ch.toLowerCase()] ?? BOX;
  return rows.length === GLYPH_HEIGHT ? rows : [...rows, ...Array<string>(GLYPH_HEIGHT - rows.length).fill('.'.repeat(GLYPH_WIDTH))];
}

function checkScale(scale: number): void {
  if (!Number.isInteger(scale) || scale < 1) {
    throw new AsgdError('Invalid text scale', { kind: 'invalid-argument', parameter: 'textScale', expected: 'a positive integer', received: String(scale) });
  }
}

/** Width in pixels of one line of text at an integer scale (no trailing spacing). */
export function textWidth(text: string, scale = 1): number {
  checkScale(scale);
  const n = [...text].length;
  return n === 0 ? 0 : (n * ADVANCE - 1) * scale;
}

/** Height in pixels of one line of text at an integer scale. */
export function textHeight(scale = 1): number {
  checkScale(scale);
  return GLYPH_HEIGHT * scale;
}

/** Draws one line of text with its top-left corner at (x, y); pixels outside the image are clipped. */
export function drawText(img: RgbImage, text: string, x: number, y: number, colour: Rgb, scale = 1): void {
  checkScale(scale);
  let left = x;
  for (const ch of text) {
    const rows = glyphFor(ch);
    for (let gy = 0; gy < GLYPH_HEIGHT; gy++) {
      for (let gx = 0; gx < GLYPH_WIDTH; gx++) {
        if (rows[gy]![gx] === '#') fillRect(img, left + gx * scale, y + gy * scale, scale, scale, colour);
      }
    }
    left += ADVANCE * scale;
  }
}

function fillRect(img: RgbImage, x: number, y: number, w: number, h: number, colour: Rgb): void {
  const x0 = Math.max(0, x);
  const y0 = Math.max(0, y);
  const x1 = Math.min(img.width, x + w);
  const y1 = Math.min(img.height, y + h);
  for (let yy = y0; yy < y1; yy++) {
    for (let xx = x0; xx < x1; xx++) {
      const i = (yy * img.width + xx) * 3;
      img.data[i] = colour[0];
      img.data[i + 1] = colour[1];
      img.data[i + 2] = colour[2];
    }
  }
}

function blit(dst: RgbImage, src: RgbImage, x: number, y: number): void {
  for (let row = 0; row < src.height; row++) {
    const from = row * src.width * 3;
    dst.data.set(src.data.subarray(from, from + src.width * 3), ((y + row) * dst.width + x) * 3);
  }
}

export interface LabelledImage {
  image: RgbImage;
  /** Drawn centred above the image. */
  label: string;
}

export interface SideBySideOptions {
  /** Lines drawn centred under the images (e.g. the prompt, then size and seed). */
  caption?: readonly string[];
  /** Integer scale of the labels' font (default 3: letters 15 px wide, 21 px above the baseline). */
  labelScale?: number;
  /** Integer scale of the caption font (default 2). */
  captionScale?: number;
  /** Space between and around the images, in px (default 16). */
  gap?: number;
  background?: Rgb;
  foreground?: Rgb;
}

/**
 * The images in one row, left to right, each under its label, with the caption lines below: the canvas is as
 * wide as the images (or the widest caption line) plus the gaps. Images keep their pixels exactly (no
 * scaling); shorter images are top-aligned.
 */
export function sideBySide(panels: readonly LabelledImage[], options: SideBySideOptions = {}): RgbImage {
  if (panels.length === 0) {
    throw new AsgdError('Nothing to compare', { kind: 'invalid-argument', parameter: 'panels', expected: 'at least one image', received: '0' });
  }
  for (const [i, p] of panels.entries()) {
    const { width: w, height: h, data } = p.image;
    if (!Number.isInteger(w) || !Number.isInteger(h) || w < 1 || h < 1 || data.length !== w * h * 3) {
      throw new AsgdError('Invalid image to compare', {
        kind: 'invalid-argument', parameter: `panels[${i}]`, expected: 'an RGB image with width x height x 3 bytes', received: `${w}x${h} with ${data.length} bytes`,
      });
    }
  }
  const gap = options.gap ?? 16;
  if (!Number.isInteger(gap) || gap < 0) {
    throw new AsgdError('Invalid gap', { kind: 'invalid-argument', parameter: 'gap', expected: 'an integer >= 0', received: String(gap) });
  }
  const labelScale = options.labelScale ?? 3;
  const captionScale = options.captionScale ?? 2;
  const caption = options.caption ?? [];
  const bg = options.background ?? [24, 24, 24];
  const fg = options.foreground ?? [240, 240, 240];

  const columns = panels.map((p) => Math.max(p.image.width, textWidth(p.label, labelScale)));
  const rowWidth = columns.reduce((a, b) => a + b, 0) + gap * (panels.length - 1);
  const captionWidth = Math.max(0, ...caption.map((line) => textWidth(line, captionScale)));
  const width = Math.max(rowWidth, captionWidth) + 2 * gap;
  const labelTop = gap;
  const imageTop = labelTop + textHeight(labelScale) + Math.ceil(gap / 2);
  const imageHeight = Math.max(...panels.map((p) => p.image.height));
  const captionTop = imageTop + imageHeight + gap;
  const captionLine = LINE_HEIGHT * captionScale;
  const height = caption.length > 0 ? captionTop + caption.length * captionLine - (LINE_HEIGHT - GLYPH_HEIGHT) * captionScale + gap : imageTop + imageHeight + gap;

  const out: RgbImage = { data: new Uint8Array(width * height * 3), width, height };
  fillRect(out, 0, 0, width, height, bg);
  let x = gap + Math.floor((width - 2 * gap - rowWidth) / 2);
  for (const [i, p] of panels.entries()) {
    const col = columns[i]!;
    drawText(out, p.label, x + Math.floor((col - textWidth(p.label, labelScale)) / 2), labelTop, fg, labelScale);
    blit(out, p.image, x + Math.floor((col - p.image.width) / 2), imageTop);
    x += col + gap;
  }
  for (const [i, line] of caption.entries()) {
    drawText(out, line, Math.floor((width - textWidth(line, captionScale)) / 2), captionTop + i * captionLine, fg, captionScale);
  }
  return out;
}
