/**
 * The demo page: the shipped model, or any export folder the visitor names (the Model folder field), in the visitor's
 * browser through asgdiffusion/web. Query parameters (for links and tests): model (folder URL), provider (auto | webgpu | wasm), workers, threads (per worker), steps, size
 * (WxH), store=0 (no Cache Storage), probe=0 (no attention-probe UNet: asg runs without its mask), split (auto | balance
 * | always | never: CFG halves across the workers). Upscaling takes an image file from the form, or the last result.
 */
import { AsgdError, FAMILY_NAMES, METHOD_NAMES, MODEL_CACHE, clearStoredModel, loadWebPipeline, optionSpec, UPSCALE_OPTIONS, type GenerationProgress, type LoadProgress, type WebGenerateResult, type WebPipeline } from 'asgdiffusion/web';

const query = new URLSearchParams(location.search);
const SHIPPED_MODEL = new URL('models/shapes-128/', location.href).href;

/** The split query parameter as loadWebPipeline's splitCfg (absent: its default); a wrong value is its to refuse. */
function splitOption(): { splitCfg?: 'auto' | 'balance' | 'always' | 'never' } {
  const split = query.get('split');
  return split === null ? {} : { splitCfg: split as 'auto' };
}

const $ = <T extends Element>(sel: string) => document.querySelector(sel) as T;
const form = $<HTMLFormElement>('#form');
const field = <T extends HTMLInputElement | HTMLSelectElement | HTMLTextAreaElement>(name: string) => form.elements.namedItem(name) as T;
const statusText = $<HTMLParagraphElement>('#status');
const progress = $<HTMLProgressElement>('#progress');
const preview = $<HTMLCanvasElement>('#preview');
const result = $<HTMLImageElement>('#result');
const download = $<HTMLAnchorElement>('#download');
const timing = $<HTMLSpanElement>('#timing');
const generateButton = $<HTMLButtonElement>('#generate');
const cancelButton = $<HTMLButtonElement>('#cancel');
const loadButton = $<HTMLButtonElement>('#load-model');
const upscaleButton = $<HTMLButtonElement>('#upscale');
const upscaleResultButton = $<HTMLButtonElement>('#upscale-result');
const formError = $<HTMLParagraphElement>('#form-error');
const warnings = $<HTMLUListElement>('#warnings');

type State = 'loading' | 'ready' | 'running' | 'done' | 'cancelled' | 'error';
function setState(s: State, text?: string): void {
  document.body.dataset.state = s;
  if (text !== undefined) statusText.textContent = text;
  generateButton.disabled = s === 'loading' || s === 'running';
  upscaleButton.disabled = generateButton.disabled || !pipe?.info.canUpscale;
  upscaleResultButton.disabled = upscaleButton.disabled || !exposed.result;
  cancelButton.disabled = s !== 'running';
  loadButton.disabled = generateButton.disabled;
}

/** What tests and curious visitors can read: the pipeline, the last result, and the library's entry points. */
const exposed: {
  pipeline?: WebPipeline; result?: WebGenerateResult; error?: string;
  web: { loadWebPipeline: typeof loadWebPipeline; clearStoredModel: typeof clearStoredModel; AsgdError: typeof AsgdError; MODEL_CACHE: string };
} = { web: { loadWebPipeline, clearStoredModel, AsgdError, MODEL_CACHE } };
(window as unknown as { asgdDemo: typeof exposed }).asgdDemo = exposed;

for (const m of METHOD_NAMES) field<HTMLSelectElement>('method').add(new Option(m, m));
field<HTMLInputElement>('model').value = query.get('model') ?? SHIPPED_MODEL;
if (query.get('provider')) field<HTMLSelectElement>('provider').value = query.get('provider')!;
if (query.get('workers')) field<HTMLInputElement>('workers').value = query.get('workers')!;
if (query.get('steps')) field<HTMLInputElement>('steps').value = query.get('steps')!;
// The strength field's default from the library's option (one place for it).
const strength = optionSpec(UPSCALE_OPTIONS, 'strength');
field<HTMLInputElement>('strength').value = String(strength.default);

function mb(n: number): string {
  return `${(n / 1e6).toFixed(1)} MB`;
}

let pipe: WebPipeline | undefined;
let pipeKey = '';
async function ensurePipeline(): Promise<WebPipeline> {
  const provider = field<HTMLSelectElement>('provider').value as 'auto' | 'webgpu' | 'wasm';
  const workers = Number(field<HTMLInputElement>('workers').value);
  const model = modelUrl();
  const key = `${model} ${provider}/${workers}`;
  if (pipe && key === pipeKey) return pipe;
  setState('loading', 'Loading the model…');
  await pipe?.close();
  pipe = undefined;
  exposed.pipeline = undefined;
  const onProgress = (p: LoadProgress) => {
    if (p.phase === 'download') {
      statusText.textContent = p.fromStore ? `Read ${p.file} from this browser's storage` : `Downloading ${p.file}: ${mb(p.loaded)}${p.total ? ` of ${mb(p.total)}` : ''}`;
      progress.value = p.total ? p.loaded / p.total : 0;
    } else {
      statusText.textContent = `Opening ${p.component} on ${p.device}…`;
    }
  };
  const threads = query.get('threads') ? Number(query.get('threads')) : undefined;
  pipe = await loadWebPipeline(model, { provider, workers, threads, store: query.get('store') !== '0', attentionProbe: query.get('probe') !== '0', probeSession: query.get('probeSession') === 'separate' ? 'separate' : 'shared', fuseAttention: query.get('fuse') === '1', unetPrecision: query.get('precision') === 'float16' ? 'float16' : 'native', ...splitOption(), onProgress });
  pipeKey = key;
  exposed.pipeline = pipe;
  fillSizes(pipe.nativeSize.width, pipe.nativeSize.height);
  return pipe;
}

/** The Model folder field as an absolute URL (a relative one is read against the page's address). */
function modelUrl(): string {
  const given = field<HTMLInputElement>('model').value.trim();
  if (!given) throw new AsgdError('No model folder', { kind: 'invalid-argument', parameter: 'model', expected: 'the URL of an optimum ONNX export folder', received: 'nothing', hint: `The shipped model is at ${SHIPPED_MODEL}` });
  try {
    return new URL(given, location.href).href;
  } catch {
    throw new AsgdError('The model folder is not a URL', { kind: 'invalid-argument', parameter: 'model', expected: 'the URL of an optimum ONNX export folder', received: given });
  }
}

/** Says which model is loaded, its family and native size, on which runtime. */
function readyText(p: WebPipeline): string {
  const i = p.info;
  return `Ready: ${i.name} (${FAMILY_NAMES[i.family]}, ${i.nativeWidth} px native) on ${i.provider} × ${i.workers}${crossOriginIsolated ? '' : ' (single-threaded: the page is not cross-origin isolated)'}`;
}

let sizeNoticeShown = false;
/** Sizes from the native size up to 16 times its area; a size in the address that is not one of them is refused with a notice. */
function fillSizes(w: number, h: number): void {
  const select = field<HTMLSelectElement>('size');
  const keep = select.value;
  select.length = 0;
  const sizes: [number, number][] = [[1, 1], [1.5, 1.5], [2, 2], [2, 1], [1, 2], [3, 3], [4, 2], [2, 4], [4, 4]];
  for (const [a, b] of sizes) {
    const sw = Math.round((w * a) / 8) * 8;
    const sh = Math.round((h * b) / 8) * 8;
    select.add(new Option(`${sw} × ${sh}${a * b === 1 ? ' (native)' : ` (${a * b}× area)`}`, `${sw}x${sh}`));
  }
  const offered = (v: string | null) => v !== null && [...select.options].some((o) => o.value === v);
  select.value = offered(keep) ? keep : `${w * 2}x${h * 2}`;
  const asked = query.get('size');
  if (offered(asked)) select.value = asked!;
  else if (asked !== null && !sizeNoticeShown) {
    sizeNoticeShown = true;
    formError.textContent = `Size ${asked} (from the address) is not one of the sizes offered for this model; using ${select.value.replace('x', ' × ')}.`;
  }
}

function drawPreview(img: { data: Uint8Array; width: number; height: number }): void {
  preview.width = img.width;
  preview.height = img.height;
  const rgba = new ImageData(img.width, img.height);
  for (let i = 0, j = 0; i < img.data.length; i += 3, j += 4) {
    rgba.data[j] = img.data[i]!;
    rgba.data[j + 1] = img.data[i + 1]!;
    rgba.data[j + 2] = img.data[i + 2]!;
    rgba.data[j + 3] = 255;
  }
  preview.getContext('2d')!.putImageData(rgba, 0, 0);
}

let controller: AbortController | undefined;
let lastUrl: string | undefined;

/** A run's callbacks: the preview, the warnings list and the status line. */
function runOptions(signal: AbortSignal) {
  return {
    signal,
    previewEvery: 2,
    onPreview: drawPreview,
    onWarning: (m: string) => {
      const li = document.createElement('li');
      li.textContent = m;
      warnings.append(li);
    },
    onProgress: (e: GenerationProgress) => {
      if (e.phase === 'denoise') {
        progress.value = e.unitsTotal ? e.unitsDone / e.unitsTotal : 0;
        statusText.textContent = `Step ${e.step}/${e.totalSteps}${e.stage > 1 || e.unitsTotal > e.totalSteps ? ` · stage ${e.stage}` : ''} · ${e.unitsDone}/${e.unitsTotal} UNet calls`;
      } else if (e.phase === 'encode') {
        statusText.textContent = `Encoding the image${e.tilesTotal && e.tilesTotal > 1 ? ` (tile ${e.tilesDone}/${e.tilesTotal})` : ''}…`;
      } else if (e.phase === 'decode') {
        statusText.textContent = 'Decoding the image…';
      }
    },
  };
}

function start(text: string): AbortController {
  formError.textContent = '';
  controller = new AbortController();
  setState('running', text);
  warnings.replaceChildren();
  progress.value = 0;
  return controller;
}

function show(p: WebPipeline, r: WebGenerateResult): void {
  exposed.result = r;
  if (lastUrl) URL.revokeObjectURL(lastUrl);
  lastUrl = URL.createObjectURL(new Blob([r.png], { type: 'image/png' }));
  result.src = lastUrl;
  result.width = r.image.width;
  result.hidden = false;
  download.href = lastUrl;
  download.download = `asgdiffusion-${r.metadata.upscale ? 'upscale-' : ''}${r.metadata.method}-${r.metadata.width}x${r.metadata.height}-seed${r.metadata.seed}.png`;
  download.hidden = false;
  progress.value = 1;
  timing.textContent = `${(r.timings.totalMs / 1000).toFixed(1)} s on ${p.info.provider} × ${p.info.workers}`;
  setState('done', `Done: ${r.metadata.width} × ${r.metadata.height}, seed ${r.metadata.seed}${r.metadata.upscale ? `, upscaled from ${r.metadata.upscale.source.width} × ${r.metadata.upscale.source.height}` : ''}`);
}

async function generate(): Promise<void> {
  const p = await ensurePipeline();
  const [width, height] = field<HTMLSelectElement>('size').value.split('x').map(Number) as [number, number];
  const c = start('Encoding the prompt…');
  const r = await p.generate(
    {
      prompt: field<HTMLTextAreaElement>('prompt').value,
      width, height,
      method: field<HTMLSelectElement>('method').value as (typeof METHOD_NAMES)[number],
      steps: Number(field<HTMLInputElement>('steps').value),
      seed: field<HTMLInputElement>('seed').value.trim() || undefined,
    },
    runOptions(c.signal),
  );
  show(p, r);
}

/** Upscales the chosen file, or the last result (`fromResult`), with the form's settings. */
async function upscale(fromResult: boolean): Promise<void> {
  const p = await ensurePipeline();
  const file = field<HTMLInputElement>('source').files?.[0];
  const image = fromResult ? (exposed.result ? new Blob([exposed.result.png], { type: 'image/png' }) : undefined) : file;
  if (!image) throw new AsgdError('Choose an image to upscale', { kind: 'invalid-argument', parameter: 'image', hint: 'Pick a PNG, JPEG or WebP file' });
  const prompt = field<HTMLTextAreaElement>('prompt').value.trim();
  const c = start('Reading the image…');
  const r = await p.upscale(
    {
      image,
      ...(prompt ? { prompt } : {}),
      scale: Number(field<HTMLSelectElement>('scale').value),
      strength: Number(field<HTMLInputElement>('strength').value),
      method: field<HTMLSelectElement>('method').value as (typeof METHOD_NAMES)[number],
      steps: Number(field<HTMLInputElement>('steps').value),
      seed: field<HTMLInputElement>('seed').value.trim() || undefined,
    },
    runOptions(c.signal),
  );
  show(p, r);
}

/** Runs a generation or an upscale, and says how it ended. */
function runReported(task: () => Promise<void>): void {
  task().catch((err: unknown) => {
    if (err instanceof AsgdError && err.kind === 'cancelled') {
      setState('cancelled', 'Cancelled');
      return;
    }
    const msg = err instanceof Error ? err.message : String(err);
    exposed.error = msg;
    if (err instanceof AsgdError && err.kind === 'invalid-argument') {
      formError.textContent = msg;
      setState(pipe ? 'ready' : 'error', `Not generated: ${msg}`);
    } else {
      setState('error', msg);
    }
  });
}

form.addEventListener('submit', (e) => {
  e.preventDefault();
  runReported(generate);
});
upscaleButton.addEventListener('click', () => runReported(() => upscale(false)));
upscaleResultButton.addEventListener('click', () => runReported(() => upscale(true)));
form.addEventListener('keydown', (e) => {
  if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) form.requestSubmit();
});
cancelButton.addEventListener('click', () => controller?.abort());

/** Loads the pipeline the form names (the first visit's, or another folder, runtime or worker count). */
function loadNamed(): void {
  formError.textContent = '';
  ensurePipeline().then(
    (p) => setState('ready', readyText(p)),
    (err: unknown) => {
      exposed.error = err instanceof Error ? err.message : String(err);
      if (err instanceof AsgdError && err.kind === 'invalid-argument') formError.textContent = exposed.error;
      setState('error', `The model could not be loaded: ${exposed.error}`);
    },
  );
}
loadButton.addEventListener('click', loadNamed);
field<HTMLInputElement>('model').addEventListener('keydown', (e) => {
  if (e.key === 'Enter') {
    e.preventDefault();
    loadNamed();
  }
});
loadNamed();
