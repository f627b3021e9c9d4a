/**
 * Scoring of the compositional scenes of training/scenes.py (and the single objects of training/data.py): reads a
 * caption into what it asks (objects by colour, their shapes, a relation, a count, sizes, the background), finds
 * the objects of each asked colour with bench/analysis/shapes.ts, and says whether the image holds what was asked:
 * the right number of objects of each colour (extra and missing ones counted), the right shapes, the relation
 * between the two objects' centres, the size order. layoutAgainst compares a high-resolution image, box-downscaled,
 * with the native image of the same seed (per-colour mask IoU and centre distance). Portable: no Node APIs.
 */
import { analyseImage, cleanMask, COLOURS, labelColours, OBJECT_COLOURS, SHAPES, type ColourName, type ShapeName } from './shapes.ts';
import { centreDistance, downscaleBox, maskCentre, maskIoU, type Rgb } from './fidelity-metrics.ts';

export type Relation = 'left of' | 'right of' | 'above' | 'below';
export const RELATIONS: readonly Relation[] = ['left of', 'right of', 'above', 'below'];

export interface AskedObject {
  colour: ColourName;
  shape: ShapeName;
  size?: 'large' | 'small';
}

export interface SceneSpec {
  kind: 'single' | 'relation' | 'count';
  /** single: one; relation: the two in caption order; count: one entry per object (all alike). */
  objects: AskedObject[];
  relation?: Relation;
  background: ColourName[];
  striped: boolean;
}

const PLURAL: Record<string, ShapeName> = { circles: 'circle', squares: 'square', triangles: 'triangle' };
const COUNT_WORD: Record<string, number> = { two: 2, three: 3 };

function colour(word: string | undefined, objects: boolean): ColourName {
  const list: readonly string[] = objects ? OBJECT_COLOURS : COLOURS;
  if (!word || !list.includes(word)) throw new Error(`not a${objects ? 'n object' : ''} colour: ${word}`);
  return word as ColourName;
}

function shape(word: string | undefined): ShapeName {
  if (!word || !(SHAPES as readonly string[]).includes(word)) throw new Error(`not a shape: ${word}`);
  return word as ShapeName;
}

/** Reads a caption of training/scenes.py (or data.py); throws on anything else. */
export function parseScene(prompt: string): SceneSpec {
  const text = prompt.trim().toLowerCase().replace(/\s+/g, ' ');
  const m = /^(.*) on a (?:(striped) (\w+) and (\w+)|(\w+)) background$/.exec(text);
  if (!m) throw new Error(`not a scenes caption (no background): ${prompt}`);
  const striped = m[2] === 'striped';
  const background = striped ? [colour(m[3], false), colour(m[4], false)] : [colour(m[5], false)];
  const head = m[1]!;
  const obj = '(?:(large|small) )?(\\w+) (\\w+)';
  const rel = new RegExp(`^a ${obj} (left of|right of|above|below) a ${obj}$`).exec(head);
  if (rel) {
    const a: AskedObject = { colour: colour(rel[2], true), shape: shape(rel[3]), ...(rel[1] ? { size: rel[1] as 'large' | 'small' } : {}) };
    const b: AskedObject = { colour: colour(rel[6], true), shape: shape(rel[7]), ...(rel[5] ? { size: rel[5] as 'large' | 'small' } : {}) };
    if (a.colour === b.colour) throw new Error(`relation scenes need two colours: ${prompt}`);
    return { kind: 'relation', objects: [a, b], relation: rel[4] as Relation, background, striped };
  }
  const count = /^(two|three) (\w+) (\w+)$/.exec(head);
  if (count) {
    const s = PLURAL[count[3]!];
    if (!s) throw new Error(`not a plural shape: ${count[3]}`);
    const o = { colour: colour(count[2], true), shape: s };
    return { kind: 'count', objects: Array.from({ length: COUNT_WORD[count[1]!]! }, () => ({ ...o })), background, striped };
  }
  const single = new RegExp(`^an? ${obj}$`).exec(head);
  if (single) {
    return { kind: 'single', objects: [{ colour: colour(single[2], true), shape: shape(single[3]) }], background, striped };
  }
  throw new Error(`not a scenes caption: ${prompt}`);
}

/** Objects asked per colour, in first-mention order. */
export function askedByColour(spec: SceneSpec): Map<ColourName, { count: number; shape: ShapeName }> {
  const out = new Map<ColourName, { count: number; shape: ShapeName }>();
  for (const o of spec.objects) {
    const e = out.get(o.colour);
    if (e) e.count++;
    else out.set(o.colour, { count: 1, shape: o.shape });
  }
  return out;
}

/** Whether point b relative to point a (a is `relation` b) holds: the displacement has the right sign and is larger along the relation's axis than across it. */
export function relationHolds(a: { x: number; y: number }, b: { x: number; y: number }, relation: Relation): boolean {
  const dx = b.x - a.x;
  const dy = b.y - a.y;
  switch (relation) {
    case 'left of': return dx > 0 && Math.abs(dx) > Math.abs(dy);
    case 'right of': return dx < 0 && Math.abs(dx) > Math.abs(dy);
    case 'above': return dy > 0 && Math.abs(dy) > Math.abs(dx);
    case 'below': return dy < 0 && Math.abs(dy) > Math.abs(dx);
  }
}

export interface ColourFinding {
  colour: ColourName;
  asked: number;
  found: number;
  /** Shapes of the found objects, largest first. */
  shapes: (ShapeName | 'irregular')[];
  /** Centres and areas of the found objects, largest first. */
  objects: { x: number; y: number; area: number }[];
  sharpness: number | null;
}

export interface SceneScore {
  kind: SceneSpec['kind'];
  colours: ColourFinding[];
  /** Objects beyond the asked number, summed over the asked colours. */
  extra: number;
  /** Asked objects not found, summed over the asked colours. */
  missing: number;
  /** Every asked colour has exactly the asked number of objects. */
  countCorrect: boolean;
  /** countCorrect and every object has its asked shape. */
  shapesCorrect: boolean;
  /** Relation scenes: the largest objects of the two colours stand in the asked relation (null for other kinds or when one is missing). */
  relationKept: boolean | null;
  /** Scenes with sizes: the object called large is the larger one (null otherwise or when one is missing). */
  sizeKept: boolean | null;
  /** shapesCorrect, and relationKept and sizeKept where they apply. */
  correct: boolean;
  /** Mean edge sharpness over the asked colours that have objects. */
  sharpness: number | null;
}

/** Finds and checks the asked objects in one image. `nativeSize` scales the minimum object area (shapes.ts). */
export function scoreScene(image: Rgb, spec: SceneSpec, nativeSize: number): SceneScore {
  const colours: ColourFinding[] = [];
  for (const [c, want] of askedByColour(spec)) {
    const a = analyseImage(image.data, image.width, image.height, { colour: c, shape: want.shape, nativeSize });
    colours.push({
      colour: c,
      asked: want.count,
      found: a.count,
      shapes: a.components.map((k) => k.shape),
      objects: a.components.map((k) => ({ x: k.centre.x, y: k.centre.y, area: k.area })),
      sharpness: a.sharpness,
    });
  }
  const extra = colours.reduce((s, f) => s + Math.max(0, f.found - f.asked), 0);
  const missing = colours.reduce((s, f) => s + Math.max(0, f.asked - f.found), 0);
  const countCorrect = colours.every((f) => f.found === f.asked);
  const wantShape = askedByColour(spec);
  const shapesCorrect = countCorrect && colours.every((f) => f.shapes.every((s) => s === wantShape.get(f.colour)!.shape));
  let relationKept: boolean | null = null;
  let sizeKept: boolean | null = null;
  if (spec.kind === 'relation') {
    const [fa, fb] = [colours.find((f) => f.colour === spec.objects[0]!.colour)!, colours.find((f) => f.colour === spec.objects[1]!.colour)!];
    const a = fa.objects[0];
    const b = fb.objects[0];
    if (a && b) {
      relationKept = relationHolds(a, b, spec.relation!);
      const [sa, sb] = [spec.objects[0]!.size, spec.objects[1]!.size];
      if (sa && sb && sa !== sb) sizeKept = sa === 'large' ? a.area > b.area : b.area > a.area;
    }
  }
  const sharp = colours.map((f) => f.sharpness).filter((s): s is number => s !== null);
  return {
    kind: spec.kind,
    colours,
    extra,
    missing,
    countCorrect,
    shapesCorrect,
    relationKept,
    sizeKept,
    correct: shapesCorrect && relationKept !== false && sizeKept !== false,
    sharpness: sharp.length ? sharp.reduce((s, v) => s + v, 0) / sharp.length : null,
  };
}

/** Cleaned mask (closing + hole filling, as shapes.ts does for objects) of the pixels nearest to `colour`. */
export function colourMask(image: Rgb, colour: ColourName): Uint8Array {
  const labels = labelColours(image.data, image.width, image.height);
  const target = COLOURS.indexOf(colour);
  const mask = new Uint8Array(labels.length);
  for (let i = 0; i < labels.length; i++) if (labels[i] === target) mask[i] = 1;
  return cleanMask(mask, image.width, image.height);
}

export interface LayoutFidelity {
  /** Per asked colour: IoU of its masks (null when neither image has the colour) and centre distance / side. */
  perColour: { colour: ColourName; iou: number | null; centreDistance: number | null }[];
  /** Mean of the non-null IoUs (null when none). */
  meanIoU: number | null;
  /** Mean of the non-null centre distances (null when none). */
  meanCentreDistance: number | null;
}

/**
 * The high-resolution image box-downscaled to the native image's size (an integer factor), against the native image
 * of the same seed, for the given colours.
 */
export function layoutAgainst(native: Rgb, high: Rgb, colours: readonly ColourName[]): LayoutFidelity {
  const factor = high.width / native.width;
  if (high.height / native.height !== factor) throw new Error('layoutAgainst: the images must have the same aspect');
  const small = factor === 1 ? high : downscaleBox(high, factor);
  const perColour = colours.map((c) => {
    const a = colourMask(native, c);
    const b = colourMask(small, c);
    return { colour: c, iou: maskIoU(a, b), centreDistance: centreDistance(maskCentre(a, native.width), maskCentre(b, native.width), native.width) };
  });
  const mean = (xs: (number | null)[]) => {
    const v = xs.filter((x): x is number => x !== null);
    return v.length ? v.reduce((s, x) => s + x, 0) / v.length : null;
  };
  return { perColour, meanIoU: mean(perColour.map((p) => p.iou)), meanCentreDistance: mean(perColour.map((p) => p.centreDistance)) };
}
