/**
 * Tables of the fidelity benchmark (bench/fidelity.ts) from its per-image records: per size and method, rates with
 * Wilson 95 % intervals and means with bootstrap 95 % intervals; per kind of scene; and every method paired with
 * cutdiffusion on the same prompts and seeds (difference of means, bootstrap 95 % interval over the pairs).
 */
import { bootstrapMean, pairedDifference, wilson } from './analysis/fidelity-metrics.ts';

export interface FidelityRecord {
  label: string;
  size: number;
  promptIndex: number;
  seed: number;
  method: string;
  methodOptions: Record<string, unknown>;
  prompt: string;
  steps: number;
  ms: number;
  unetEvaluations: number;
  image: string;
  kind: 'single' | 'relation' | 'count';
  correct: boolean;
  countCorrect: boolean;
  shapesCorrect: boolean;
  relationKept: boolean | null;
  sizeKept: boolean | null;
  extra: number;
  missing: number;
  found: Record<string, number>;
  shapes: Record<string, string[]>;
  sharpness: number | null;
  flatEnergy: number | null;
  seamRatio: number | null;
  seamBorder: number | null;
  seamElsewhere: number | null;
  layoutIoU: number | null;
  centreDistance: number | null;
}

type Rate = { k: number; n: number; rate: number; low: number; high: number };
type Mean = { n: number; mean: number; low: number; high: number } | null;

function rate(flags: boolean[]): Rate {
  const k = flags.filter(Boolean).length;
  return { k, n: flags.length, ...wilson(k, flags.length) };
}

function mean(values: (number | null)[]): Mean {
  const v = values.filter((x): x is number => x !== null && Number.isFinite(x));
  return v.length === 0 ? null : { n: v.length, ...bootstrapMean(v) };
}

export interface Cell {
  size: number;
  label: string;
  images: number;
  correct: Rate;
  countCorrect: Rate;
  /** Relation scenes whose two objects stand in the asked relation (missing objects count as not kept). */
  relationKept: Rate;
  extra: Mean;
  missing: Mean;
  layoutIoU: Mean;
  centreDistance: Mean;
  sharpness: Mean;
  flatEnergy: Mean;
  seamRatio: Mean;
  seconds: Mean;
  byKind: Record<string, Rate>;
}

export interface Comparison {
  size: number;
  label: string;
  against: string;
  pairs: number;
  /** mean(label - against) of 0/1 or values, with a bootstrap 95 % interval over the pairs. */
  correct: Mean;
  countCorrect: Mean;
  relationKept: Mean;
  layoutIoU: Mean;
  flatEnergy: Mean;
  seamRatio: Mean;
  sharpness: Mean;
}

function paired(a: FidelityRecord[], b: FidelityRecord[], f: (r: FidelityRecord) => number | null): Mean {
  const byKey = new Map(b.map((r) => [`${r.promptIndex}|${r.seed}`, r]));
  const xs: number[] = [];
  const ys: number[] = [];
  for (const r of a) {
    const s = byKey.get(`${r.promptIndex}|${r.seed}`);
    if (!s) continue;
    const x = f(r);
    const y = f(s);
    if (x === null || y === null || !Number.isFinite(x) || !Number.isFinite(y)) continue;
    xs.push(x);
    ys.push(y);
  }
  return xs.length === 0 ? null : { n: xs.length, ...pairedDifference(xs, ys) };
}

const KINDS = ['single', 'relation', 'count'] as const;
const ORDER = ['native', 'direct', 'multidiffusion', 'cutdiffusion', 'asg', 'asg-sync', 'asg-w4', 'asg-m4', 'asg-m8'];

export function summarise(records: FidelityRecord[]): { cells: Cell[]; comparisons: Comparison[]; markdown: string } {
  const sizes = [...new Set(records.map((r) => r.size))].sort((a, b) => a - b);
  const labels = [...new Set(records.map((r) => r.label))].sort((a, b) => (ORDER.indexOf(a) + 99 * +(ORDER.indexOf(a) < 0)) - (ORDER.indexOf(b) + 99 * +(ORDER.indexOf(b) < 0)));
  const cells: Cell[] = [];
  const comparisons: Comparison[] = [];
  for (const size of sizes) {
    for (const label of labels) {
      const rs = records.filter((r) => r.size === size && r.label === label);
      if (rs.length === 0) continue;
      const rel = rs.filter((r) => r.kind === 'relation');
      cells.push({
        size,
        label,
        images: rs.length,
        correct: rate(rs.map((r) => r.correct)),
        countCorrect: rate(rs.map((r) => r.countCorrect)),
        relationKept: rate(rel.map((r) => r.relationKept === true)),
        extra: mean(rs.map((r) => r.extra)),
        missing: mean(rs.map((r) => r.missing)),
        layoutIoU: mean(rs.map((r) => r.layoutIoU)),
        centreDistance: mean(rs.map((r) => r.centreDistance)),
        sharpness: mean(rs.map((r) => r.sharpness)),
        flatEnergy: mean(rs.map((r) => (r.flatEnergy === null ? null : 1000 * r.flatEnergy))),
        seamRatio: mean(rs.map((r) => r.seamRatio)),
        seconds: mean(rs.map((r) => r.ms / 1000)),
        byKind: Object.fromEntries(KINDS.filter((k) => rs.some((r) => r.kind === k)).map((k) => [k, rate(rs.filter((r) => r.kind === k).map((r) => r.correct))])),
      });
      // Every method against cutdiffusion; asg variants (asg-*) also against asg with today's settings.
      for (const against of ['cutdiffusion', ...(label.startsWith('asg-') ? ['asg'] : [])]) {
        const base = records.filter((r) => r.size === size && r.label === against);
        if (label !== against && label !== 'native' && base.length > 0) {
          const relA = rs.filter((r) => r.kind === 'relation');
          comparisons.push({
            size,
            label,
            against,
            pairs: paired(rs, base, () => 0)?.n ?? 0,
            correct: paired(rs, base, (r) => +r.correct),
            countCorrect: paired(rs, base, (r) => +r.countCorrect),
            relationKept: paired(relA, base, (r) => +(r.relationKept === true)),
            layoutIoU: paired(rs, base, (r) => r.layoutIoU),
            flatEnergy: paired(rs, base, (r) => (r.flatEnergy === null ? null : 1000 * r.flatEnergy)),
            seamRatio: paired(rs, base, (r) => r.seamRatio),
            sharpness: paired(rs, base, (r) => r.sharpness),
          });
        }
      }
    }
  }
  return { cells, comparisons, markdown: markdown(cells, comparisons) };
}

const pct = (r: Rate) => (r.n === 0 ? '-' : `${(100 * r.rate).toFixed(0)} % [${(100 * r.low).toFixed(0)}, ${(100 * r.high).toFixed(0)}]`);
const num = (m: Mean, d = 2) => (m === null ? '-' : `${m.mean.toFixed(d)} [${m.low.toFixed(d)}, ${m.high.toFixed(d)}]`);
const diff = (m: Mean, scale = 1, d = 0) => {
  if (m === null) return '-';
  const f = (v: number) => `${v * scale >= 0 ? '+' : ''}${(v * scale).toFixed(d)}`;
  const sig = m.low > 0 || m.high < 0 ? ' *' : '';
  return `${f(m.mean)} [${f(m.low)}, ${f(m.high)}]${sig}`;
};

function markdown(cells: Cell[], comparisons: Comparison[]): string {
  const out: string[] = [
    'Rates: share of images, Wilson 95 % interval. Means: bootstrap 95 % interval. "correct": every asked object',
    'present exactly once with its shape, relation and size order kept. Layout: the image box-downscaled to the native',
    'size against the native image of the same seed (IoU of the asked colours\' masks; centre distance / side).',
    'Flat energy: squared Laplacian inside flat regions x 1000. Seam ratio: colour step across the lines every',
    'native/2 px (window edges) / elsewhere (1 = no seam).',
    '',
    '| size | method | images | correct | count right | relation kept | extra | missing | layout IoU | centre dist. | sharpness | flat energy | seam ratio | s / image |',
    '| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
  ];
  for (const c of cells) {
    out.push(`| ${c.size} | ${c.label} | ${c.images} | ${pct(c.correct)} | ${pct(c.countCorrect)} | ${pct(c.relationKept)} | ${num(c.extra)} | ${num(c.missing)} | ${num(c.layoutIoU)} | ${num(c.centreDistance, 3)} | ${num(c.sharpness)} | ${num(c.flatEnergy)} | ${num(c.seamRatio)} | ${c.seconds?.mean.toFixed(1) ?? '-'} |`);
  }
  const kinds = [...new Set(cells.flatMap((c) => Object.keys(c.byKind)))];
  if (kinds.length > 1) {
    out.push('', `| size | method | ${kinds.map((k) => `correct: ${k}`).join(' | ')} |`, `| --- | --- | ${kinds.map(() => '---:').join(' | ')} |`);
    for (const c of cells) out.push(`| ${c.size} | ${c.label} | ${kinds.map((k) => (c.byKind[k] ? `${pct(c.byKind[k]!)} (${c.byKind[k]!.n})` : '-')).join(' | ')} |`);
  }
  for (const against of [...new Set(comparisons.map((c) => c.against))]) {
    out.push('', `Paired with ${against} on the same prompts and seeds: mean difference (method - ${against}), bootstrap 95 % interval; * = the interval excludes 0.`, '',
      '| size | method | pairs | correct (points) | count right (points) | relation kept (points) | layout IoU (x100) | flat energy | seam ratio | sharpness |',
      '| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |');
    for (const c of comparisons.filter((x) => x.against === against)) {
      out.push(`| ${c.size} | ${c.label} | ${c.pairs} | ${diff(c.correct, 100)} | ${diff(c.countCorrect, 100)} | ${diff(c.relationKept, 100)} | ${diff(c.layoutIoU, 100)} | ${diff(c.flatEnergy, 1, 2)} | ${diff(c.seamRatio, 1, 2)} | ${diff(c.sharpness, 1, 3)} |`);
    }
  }
  return out.join('\n');
}
