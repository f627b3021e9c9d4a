/**
 * Image analysis for the shapes toy model (training/data.py): how many objects of the asked colour an image
 * holds, what shape each one is, and how sharp their edges are. The repetition benchmark uses it to score
 * high-resolution methods. Portable: no Node APIs.
 *
 * Pipeline, for an interleaved 8-bit RGB image and the asked colour/shape:
 * 1. Colour labels: each pixel takes its nearest palette colour (Euclidean distance in unit RGB), or none when
 *    it lies farther than `maxColourDistance` (0.3) from every palette colour. The nearest-colour rule absorbs
 *    the training data's jitter (+-0.04 per channel) and background gradient (+-12 %), and puts the blended
 *    pixels of a soft edge on whichever side they are closer to.
 * 2. Objects: the mask of the asked colour is closed (dilated then eroded by a 5x5 square: joins the speckles
 *    of a textured object) and its holes are filled; objects are its 8-connected components with at least
 *    `minArea` pixels (see minObjectArea). Areas are those of the filled components.
 * 3. Shape: how the component's convex hull fills its tightest bounding box over all orientations (circle
 *    pi/4 = 0.785, square 1, equilateral triangle 0.5). The axis-aligned fill is reported as `fill` too, but it
 *    cannot decide: a square rotated by 10 degrees fills its axis-aligned box to 0.75, like a disc. A component
 *    far from convex (solidity < 0.7: ragged) or elongated (box aspect > 1.35: e.g. two objects merged) is
 *    'irregular' instead.
 * 4. Sharpness of the object outlines (edgeSharpness) and texture noise away from them (textureNoise).
 */

/** Every shape twice, with object/background pairs of high and low contrast (captions as in training/data.py). */
export const SHAPE_PROMPTS = [
  'a red circle on a blue background',
  'a blue square on a yellow background',
  'a white triangle on a green background',
  'a yellow circle on a purple background',
  'a green square on a orange background',
  'a black triangle on a white background',
];
import { invalidArgument } from '../../src/core/errors.ts';

export const SHAPES = ['circle', 'square', 'triangle'] as const;
export type ShapeName = (typeof SHAPES)[number];

/** The palette of training/data.py in unit RGB. Objects use only the first six colours. */
export const PALETTE = {
  red: [0.88, 0.1, 0.1],
  green: [0.1, 0.72, 0.18],
  blue: [0.12, 0.22, 0.9],
  yellow: [0.96, 0.88, 0.1],
  white: [0.95, 0.95, 0.95],
  black: [0.06, 0.06, 0.06],
  gray: [0.5, 0.5, 0.5],
  orange: [0.98, 0.52, 0.05],
  purple: [0.52, 0.14, 0.68],
} as const satisfies Record<string, readonly [number, number, number]>;
export type ColourName = keyof typeof PALETTE;
export const COLOURS = Object.keys(PALETTE) as ColourName[];
export const OBJECT_COLOURS: readonly ColourName[] = COLOURS.slice(0, 6);

/** Native image side of the shapes model, and the smallest object extent as a fraction of it (data.py). */
export const NATIVE_SIZE = 128;
export const MIN_EXTENT_FRACTION = 0.35;
/** Smallest object of the training data: a triangle of side 0.35 * 128 px, sqrt(3)/4 * 44.8^2 = 869 px. */
export const NATIVE_MIN_OBJECT_AREA = (Math.sqrt(3) / 4) * (MIN_EXTENT_FRACTION * NATIVE_SIZE) ** 2;
/** Components below this fraction of NATIVE_MIN_OBJECT_AREA (at native scale) are specks, not objects. */
export const MIN_AREA_FRACTION = 0.2;
export const MAX_COLOUR_DISTANCE = 0.3;
/** Below this solidity (area / convex hull area) a component is 'irregular' rather than a circle, square or triangle. */
export const MIN_SOLIDITY = 0.7;
/** Above this aspect ratio of the tightest box a component is 'irregular' (the triangle's is 2 / sqrt(3) = 1.15). */
export const MAX_ASPECT = 1.35;
/** Radius of the square closing applied to the colour mask (2: a 5x5 square). */
export const CLOSING_RADIUS = 2;

/** Ideal fill ratios of the tightest bounding box, and the class boundaries halfway between them. */
export const IDEAL_FILL: Readonly<Record<ShapeName, number>> = { circle: Math.PI / 4, square: 1, triangle: 0.5 };
const TRIANGLE_CIRCLE_SPLIT = (IDEAL_FILL.triangle + IDEAL_FILL.circle) / 2; // 0.643
const CIRCLE_SQUARE_SPLIT = (IDEAL_FILL.circle + IDEAL_FILL.square) / 2; // 0.893

export interface PromptSubject {
  colour: ColourName;
  shape: ShapeName;
  background?: ColourName;
}

/** Reads "a red circle on a blue background" (the training captions) into colour, shape and background. */
export function parsePrompt(prompt: string): PromptSubject {
  const m = /^\s*an?\s+(\w+)\s+(\w+)(?:\s+on\s+an?\s+(\w+)\s+background)?\s*$/i.exec(prompt);
  const colour = m?.[1]?.toLowerCase();
  const shape = m?.[2]?.toLowerCase();
  const background = m?.[3]?.toLowerCase();
  if (!m || !OBJECT_COLOURS.includes(colour as ColourName) || !(SHAPES as readonly string[]).includes(shape!) ||
    (background !== undefined && !COLOURS.includes(background as ColourName))) {
    throw invalidArgument(
      'prompt',
      `"a <colour> <shape> on a <colour> background" with an object colour among ${OBJECT_COLOURS.join(', ')}, a shape among ${SHAPES.join(', ')} and a background among ${COLOURS.join(', ')}`,
      prompt,
      'Use a caption of the shapes training data, e.g. "a red circle on a blue background"',
    );
  }
  return { colour: colour as ColourName, shape: shape as ShapeName, ...(background ? { background: background as ColourName } : {}) };
}

/**
 * Smallest component counted as an object: MIN_AREA_FRACTION (0.2) of the smallest native object (869 px at
 * 128 px), scaled by the linear size factor sqrt(width * height) / nativeSize: 174 px at 128x128, 348 px at
 * 256x256, 695 px at 512x512. Linear rather than area scaling on purpose: a repeated object at high resolution
 * keeps roughly its native pixel size, and area scaling would make the threshold (3480 px at 512x512) exceed the
 * smallest native object, hiding exactly the repetitions the benchmark counts.
 */
export function minObjectArea(width: number, height: number, nativeSize = NATIVE_SIZE): number {
  return MIN_AREA_FRACTION * NATIVE_MIN_OBJECT_AREA * (Math.sqrt(width * height) / nativeSize);
}

/** Nearest palette colour index per pixel (COLOURS order), -1 where none is within maxDistance. */
export function labelColours(rgb: Uint8Array, width: number, height: number, maxDistance = MAX_COLOUR_DISTANCE): Int8Array {
  const n = width * height;
  const labels = new Int8Array(n);
  const pal = COLOURS.map((c) => PALETTE[c].map((v) => v * 255));
  const max2 = (maxDistance * 255) ** 2;
  for (let i = 0; i < n; i++) {
    const r = rgb[3 * i]!;
    const g = rgb[3 * i + 1]!;
    const b = rgb[3 * i + 2]!;
    let best = -1;
    let bestD = Infinity;
    for (let k = 0; k < pal.length; k++) {
      const p = pal[k]!;
      const d = (r - p[0]!) ** 2 + (g - p[1]!) ** 2 + (b - p[2]!) ** 2;
      if (d < bestD) {
        bestD = d;
        best = k;
      }
    }
    labels[i] = bestD <= max2 ? best : -1;
  }
  return labels;
}

/** One connected component: its pixel indices (y * width + x) in scan order. */
export interface PixelComponent {
  pixels: Int32Array;
}

/** 8-connected components of the set pixels of `mask`, in scan order of their first pixel. */
export function connectedComponents(mask: Uint8Array, width: number, height: number): PixelComponent[] {
  const seen = new Uint8Array(width * height);
  const stack = new Int32Array(width * height);
  const out: PixelComponent[] = [];
  const buffer = new Int32Array(width * height);
  for (let start = 0; start < mask.length; start++) {
    if (!mask[start] || seen[start]) continue;
    let top = 0;
    let count = 0;
    stack[top++] = start;
    seen[start] = 1;
    while (top > 0) {
      const p = stack[--top]!;
      buffer[count++] = p;
      const x = p % width;
      const y = (p - x) / width;
      for (let dy = -1; dy <= 1; dy++) {
        const yy = y + dy;
        if (yy < 0 || yy >= height) continue;
        for (let dx = -1; dx <= 1; dx++) {
          const xx = x + dx;
          if (xx < 0 || xx >= width) continue;
          const q = yy * width + xx;
          if (mask[q] && !seen[q]) {
            seen[q] = 1;
            stack[top++] = q;
          }
        }
      }
    }
    const pixels = buffer.slice(0, count).sort();
    out.push({ pixels });
  }
  return out;
}

/** Max (dilate) or min (erode) of a 0/1 mask over a (2r+1) square, separably; outside the image counts as 0. */
function morph(mask: Uint8Array, width: number, height: number, r: number, dilate: boolean): Uint8Array {
  const pass = (src: Uint8Array, horizontal: boolean) => {
    const dst = new Uint8Array(src.length);
    const [len, lines] = horizontal ? [width, height] : [height, width];
    const at = (line: number, i: number) => (horizontal ? line * width + i : i * width + line);
    for (let line = 0; line < lines; line++) {
      for (let i = 0; i < len; i++) {
        let v = dilate ? 0 : 1;
        for (let k = i - r; k <= i + r; k++) {
          const m = k < 0 || k >= len ? 0 : src[at(line, k)]!;
          if (dilate ? m : !m) {
            v = dilate ? 1 : 0;
            break;
          }
        }
        dst[at(line, i)] = v;
      }
    }
    return dst;
  };
  return pass(pass(mask, true), false);
}

/**
 * Closing (dilate then erode by a (2r+1) square) followed by hole filling: cleans a speckled object mask into a
 * solid region. Holes are the unset pixels that no 4-connected path of unset pixels joins to the image border.
 */
export function cleanMask(mask: Uint8Array, width: number, height: number, r = CLOSING_RADIUS): Uint8Array {
  const out = r > 0 ? morph(morph(mask, width, height, r, true), width, height, r, false) : mask.slice();
  // Erosion treats outside as unset, so closing never grows a region across the border: keep the original there.
  for (let i = 0; i < out.length; i++) if (mask[i]) out[i] = 1;
  const outside = new Uint8Array(width * height);
  const stack: number[] = [];
  const push = (p: number) => {
    if (!out[p] && !outside[p]) {
      outside[p] = 1;
      stack.push(p);
    }
  };
  for (let x = 0; x < width; x++) {
    push(x);
    push((height - 1) * width + x);
  }
  for (let y = 0; y < height; y++) {
    push(y * width);
    push(y * width + width - 1);
  }
  while (stack.length > 0) {
    const p = stack.pop()!;
    const x = p % width;
    if (x > 0) push(p - 1);
    if (x < width - 1) push(p + 1);
    if (p >= width) push(p - width);
    if (p < (height - 1) * width) push(p + width);
  }
  for (let i = 0; i < out.length; i++) if (!outside[i]) out[i] = 1;
  return out;
}

/** Pixels of a component with at least one 4-neighbour outside it (or on the image border). */
function boundaryOf(pixels: Int32Array, inside: Uint8Array, width: number, height: number): Int32Array {
  const out: number[] = [];
  for (const p of pixels) {
    const x = p % width;
    const y = (p - x) / width;
    if (x === 0 || y === 0 || x === width - 1 || y === height - 1 ||
      !inside[p - 1] || !inside[p + 1] || !inside[p - width] || !inside[p + width]) out.push(p);
  }
  return Int32Array.from(out);
}

type Point = [number, number];

/** Convex hull (counter-clockwise in image coordinates) of the corners of the given pixels' unit squares. */
export function pixelHull(boundary: Int32Array, width: number): Point[] {
  const pts: Point[] = [];
  for (const p of boundary) {
    const x = p % width;
    const y = (p - x) / width;
    pts.push([x, y], [x + 1, y], [x, y + 1], [x + 1, y + 1]);
  }
  pts.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  const cross = (o: Point, a: Point, b: Point) => (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0]);
  // Andrew's monotone chain: lower then upper hull.
  const hull: Point[] = [];
  for (const pass of [pts, [...pts].reverse()]) {
    const start = hull.length;
    for (const q of pass) {
      while (hull.length >= start + 2 && cross(hull[hull.length - 2]!, hull[hull.length - 1]!, q) <= 0) hull.pop();
      hull.push(q);
    }
    hull.pop();
  }
  return hull;
}

export function polygonArea(poly: readonly Point[]): number {
  let twice = 0;
  for (let i = 0; i < poly.length; i++) {
    const a = poly[i]!;
    const b = poly[(i + 1) % poly.length]!;
    twice += a[0] * b[1] - b[0] * a[1];
  }
  return Math.abs(twice) / 2;
}

/** Smallest-area box around a polygon over orientations 0..89 degrees, 1 degree apart. */
export function tightestBox(poly: readonly Point[]): { area: number; angle: number; aspect: number } {
  let best = { area: Infinity, angle: 0, aspect: 1 };
  for (let deg = 0; deg < 90; deg++) {
    const t = (deg * Math.PI) / 180;
    const c = Math.cos(t);
    const s = Math.sin(t);
    let uMin = Infinity;
    let uMax = -Infinity;
    let vMin = Infinity;
    let vMax = -Infinity;
    for (const [x, y] of poly) {
      const u = c * x + s * y;
      const v = -s * x + c * y;
      if (u < uMin) uMin = u;
      if (u > uMax) uMax = u;
      if (v < vMin) vMin = v;
      if (v > vMax) vMax = v;
    }
    const a = uMax - uMin;
    const b = vMax - vMin;
    if (a * b < best.area) best = { area: a * b, angle: deg, aspect: Math.max(a, b) / Math.max(1e-9, Math.min(a, b)) };
  }
  return best;
}

/** Shape class from a fill ratio of the tightest box: below 0.643 triangle, below 0.893 circle, else square. */
export function classifyFill(fill: number): ShapeName {
  return fill < TRIANGLE_CIRCLE_SPLIT ? 'triangle' : fill < CIRCLE_SQUARE_SPLIT ? 'circle' : 'square';
}

export interface ShapeComponent {
  /** Pixels of the component after closing and hole filling. */
  area: number;
  /** Axis-aligned bounding box in pixels (inclusive x0/y0, exclusive x1/y1). */
  bbox: { x0: number; y0: number; x1: number; y1: number };
  /** area / axis-aligned box area. */
  fill: number;
  /** area / area of the tightest box over all orientations. */
  orientedFill: number;
  /**
   * Convex hull area / the same box area: what `shape` is decided from. The hull ignores the notches and
   * speckle holes of a textured object's outline, which lower orientedFill (a notched square reads as a disc).
   */
  hullFill: number;
  /** Orientation of that box in degrees (0..89). */
  angle: number;
  /** area / convex hull area: about 0.95-1 for the three shapes (pixel staircases cost a little), lower for ragged blobs. */
  solidity: number;
  /** Long / short side of the tightest box (1 for circle and square, 1.15 for the triangle). */
  aspect: number;
  /**
   * From hullFill; 'irregular' when solidity < MIN_SOLIDITY or aspect > MAX_ASPECT (a ragged blob, or objects
   * merged: two touching discs fill their box like one disc, 0.79, but their box is twice as long as wide).
   */
  shape: ShapeName | 'irregular';
  /** Centroid in pixels. */
  centre: { x: number; y: number };
}

export interface ShapeAnalysis {
  /** Number of objects of the asked colour (components of at least minArea pixels). */
  count: number;
  /** The objects, largest first. */
  components: ShapeComponent[];
  /** Exactly one object of the asked colour, and it has the asked shape. */
  correct: boolean;
  /** Edge sharpness of the objects, ~1 / edge width in px (see edgeSharpness); null when there is no object. */
  sharpness: number | null;
  /** Texture noise away from the object outlines, unit RGB (see textureNoise). */
  noise: number;
  /** Most frequent palette colour among the other pixels, null when none is near a palette colour. */
  background: ColourName | null;
  /** The minimum component area used, in pixels. */
  minArea: number;
}

export interface AnalyseOptions {
  colour: string;
  shape: string;
  /** Override of minObjectArea(width, height). */
  minArea?: number;
  maxColourDistance?: number;
  /** Native size the min area scales from (default 128). */
  nativeSize?: number;
}

/**
 * Sharpness of the edges of the given components: for every boundary pixel, the steepest colour step in its
 * 3x3 neighbourhood, max(|I(x+1,y) - I(x,y)|, |I(x,y+1) - I(x,y)|) with |.| the RGB distance, averaged over all
 * boundary pixels and divided by the contrast |object mean - background mean|. Dividing by the contrast makes it
 * measure edge width, not colour: a hard edge gives 1 whatever the colours or edge orientation, a linear ramp w
 * px wide gives about 1/w.
 */
export function edgeSharpness(
  rgb: Uint8Array, width: number, height: number, boundaries: Int32Array[], contrast: number,
): number | null {
  let sum = 0;
  let n = 0;
  const step = (p: number, q: number) => {
    const dr = rgb[3 * q]! - rgb[3 * p]!;
    const dg = rgb[3 * q + 1]! - rgb[3 * p + 1]!;
    const db = rgb[3 * q + 2]! - rgb[3 * p + 2]!;
    return Math.sqrt(dr * dr + dg * dg + db * db);
  };
  for (const boundary of boundaries) {
    for (const p of boundary) {
      const x = p % width;
      const y = (p - x) / width;
      // Where an object is cut by the image border there is no edge to measure.
      if (x === 0 || y === 0 || x === width - 1 || y === height - 1) continue;
      let best = 0;
      for (let yy = Math.max(0, y - 1); yy <= Math.min(height - 1, y + 1); yy++) {
        for (let xx = Math.max(0, x - 1); xx <= Math.min(width - 1, x + 1); xx++) {
          const q = yy * width + xx;
          if (xx + 1 < width) best = Math.max(best, step(q, q + 1));
          if (yy + 1 < height) best = Math.max(best, step(q, q + width));
        }
      }
      sum += best;
      n++;
    }
  }
  if (n === 0) return null;
  // Contrast floor (in 0..255 units) so that a washed-out image cannot divide by ~0.
  return sum / n / Math.max(contrast, 12);
}

/**
 * Texture noise: RMS of the RGB distance between each pixel and the mean of its 5x5 neighbourhood, in unit RGB
 * (0 for flat colours, a smooth gradient or a clean edge's far side), over the pixels that are not within 3 px
 * of an object outline (`exclude`). It catches the speckle some methods leave inside objects and backgrounds,
 * which edge sharpness does not see.
 */
export function textureNoise(rgb: Uint8Array, width: number, height: number, exclude?: Uint8Array): number {
  const r = 2;
  const w1 = width + 1;
  let sum = 0;
  let n = 0;
  const sq = new Float64Array(width * height);
  for (let c = 0; c < 3; c++) {
    // Integral image of channel c for O(1) box means.
    const integral = new Float64Array(w1 * (height + 1));
    for (let y = 0; y < height; y++) {
      let row = 0;
      for (let x = 0; x < width; x++) {
        row += rgb[3 * (y * width + x) + c]!;
        integral[(y + 1) * w1 + x + 1] = integral[y * w1 + x + 1]! + row;
      }
    }
    for (let y = 0; y < height; y++) {
      const y0 = Math.max(0, y - r);
      const y1 = Math.min(height, y + r + 1);
      for (let x = 0; x < width; x++) {
        const x0 = Math.max(0, x - r);
        const x1 = Math.min(width, x + r + 1);
        const box = integral[y1 * w1 + x1]! - integral[y0 * w1 + x1]! - integral[y1 * w1 + x0]! + integral[y0 * w1 + x0]!;
        const d = rgb[3 * (y * width + x) + c]! - box / ((y1 - y0) * (x1 - x0));
        sq[y * width + x]! += d * d;
      }
    }
  }
  for (let i = 0; i < sq.length; i++) {
    if (exclude?.[i]) continue;
    sum += sq[i]!;
    n++;
  }
  return n === 0 ? 0 : Math.sqrt(sum / n) / 255;
}

function checkImage(rgb: Uint8Array, width: number, height: number): void {
  if (!Number.isInteger(width) || width < 1) throw invalidArgument('width', 'a positive integer', width);
  if (!Number.isInteger(height) || height < 1) throw invalidArgument('height', 'a positive integer', height);
  if (!(rgb instanceof Uint8Array) || rgb.length !== width * height * 3) {
    throw invalidArgument('rgb', `interleaved 8-bit RGB of ${width * height * 3} bytes (${width}x${height}x3)`,
      rgb instanceof Uint8Array ? `${rgb.length} bytes` : typeof rgb, 'Pass the image data of a generation result (image.data)');
  }
}

/** Counts, classifies and measures the objects of the asked colour; `correct` when exactly one has the asked shape. */
export function analyseImage(rgb: Uint8Array, width: number, height: number, options: AnalyseOptions): ShapeAnalysis {
  checkImage(rgb, width, height);
  if (!OBJECT_COLOURS.includes(options.colour as ColourName)) {
    throw invalidArgument('colour', `one of ${OBJECT_COLOURS.join(', ')}`, options.colour, 'Objects of the shapes model use only these colours');
  }
  if (!(SHAPES as readonly string[]).includes(options.shape)) {
    throw invalidArgument('shape', `one of ${SHAPES.join(', ')}`, options.shape);
  }
  const minArea = options.minArea ?? minObjectArea(width, height, options.nativeSize ?? NATIVE_SIZE);
  const labels = labelColours(rgb, width, height, options.maxColourDistance ?? MAX_COLOUR_DISTANCE);
  const target = COLOURS.indexOf(options.colour as ColourName);

  const mask = new Uint8Array(width * height);
  const counts = new Array<number>(COLOURS.length).fill(0);
  for (let i = 0; i < labels.length; i++) {
    const l = labels[i]!;
    if (l === target) mask[i] = 1;
    else if (l >= 0) counts[l]!++;
  }
  const bgIndex = counts.reduce((best, c, i) => (c > counts[best]! ? i : best), 0);
  const background = counts[bgIndex]! > 0 ? COLOURS[bgIndex]! : null;

  const objects = connectedComponents(cleanMask(mask, width, height), width, height).filter((c) => c.pixels.length >= minArea);
  const inside = new Uint8Array(width * height);
  for (const o of objects) for (const p of o.pixels) inside[p] = 1;

  const components: (ShapeComponent & { boundary: Int32Array })[] = objects.map(({ pixels }) => {
    let x0 = width, y0 = height, x1 = 0, y1 = 0, sx = 0, sy = 0;
    for (const p of pixels) {
      const x = p % width;
      const y = (p - x) / width;
      if (x < x0) x0 = x;
      if (y < y0) y0 = y;
      if (x + 1 > x1) x1 = x + 1;
      if (y + 1 > y1) y1 = y + 1;
      sx += x + 0.5;
      sy += y + 0.5;
    }
    const area = pixels.length;
    const boundary = boundaryOf(pixels, inside, width, height);
    const hull = pixelHull(boundary, width);
    const hullArea = polygonArea(hull);
    const box = tightestBox(hull);
    const solid = Math.min(1, area / hullArea);
    return {
      area,
      bbox: { x0, y0, x1, y1 },
      fill: area / ((x1 - x0) * (y1 - y0)),
      orientedFill: area / box.area,
      hullFill: hullArea / box.area,
      angle: box.angle,
      solidity: solid,
      aspect: box.aspect,
      shape: solid < MIN_SOLIDITY || box.aspect > MAX_ASPECT ? 'irregular' as const : classifyFill(hullArea / box.area),
      centre: { x: sx / area, y: sy / area },
      boundary,
    };
  });
  components.sort((a, b) => b.area - a.area);

  let sharpness: number | null = null;
  if (components.length > 0) {
    const objMean = [0, 0, 0];
    let objN = 0;
    const bgMean = [0, 0, 0];
    let bgN = 0;
    for (let i = 0; i < labels.length; i++) {
      // Object colour from the pixels of the asked colour only (a textured object's speckles would dilute it).
      const isObj = inside[i] === 1 && labels[i] === target;
      const acc = isObj ? objMean : !inside[i] && labels[i] === bgIndex && background !== null ? bgMean : null;
      if (!acc) continue;
      for (let c = 0; c < 3; c++) acc[c]! += rgb[3 * i + c]!;
      if (isObj) objN++;
      else bgN++;
    }
    const contrast = bgN === 0 ? 0 : Math.hypot(...[0, 1, 2].map((c) => objMean[c]! / objN - bgMean[c]! / bgN));
    sharpness = edgeSharpness(rgb, width, height, components.map((c) => c.boundary), contrast);
  }
  const band = morph(inside, width, height, 3, true);
  const core = morph(inside, width, height, 3, false);
  for (let i = 0; i < band.length; i++) band[i] = band[i]! & (1 - core[i]!);
  const noise = textureNoise(rgb, width, height, band);
  const count = components.length;
  return {
    count,
    components: components.map(({ boundary: _, ...c }) => c),
    correct: count === 1 && components[0]!.shape === options.shape,
    sharpness,
    noise,
    background,
    minArea,
  };
}
