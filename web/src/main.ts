/**
 * The page of `asgd serve`: a generate form built from the API's OpenAPI document (itself built from the
 * library's option registry), live progress over Server-Sent Events with a preview, the queue, and the gallery.
 * Plain TypeScript and the DOM: the page is small enough that a framework would not pay for itself.
 */
type Schema = {
  type?: string | string[];
  enum?: string[];
  minimum?: number;
  maximum?: number;
  exclusiveMinimum?: number;
  pattern?: string;
  default?: unknown;
  description?: string;
  properties?: Record<string, Schema>;
  required?: string[];
  items?: Schema;
};

interface Progress {
  phase: string;
  stage: number;
  step: number;
  totalSteps: number;
  unitsDone: number;
  unitsTotal: number;
  tilesDone?: number;
  tilesTotal?: number;
  etaSeconds?: number;
  previewRevision: number;
  /** What each device of the engine is doing (GET /api/v1/openapi.json: progress.devices). */
  devices?: { id: string; busy: boolean; calls: number; lost?: boolean }[];
}

interface Job {
  id: string;
  state: 'queued' | 'running' | 'completed' | 'failed' | 'cancelled';
  spec: { kind: string; model?: string; settings: Record<string, unknown> };
  progress?: Progress;
  output?: string;
  error?: { message: string };
  /** What the run warned of, once completed (GET /api/v1/openapi.json: job.warnings). */
  warnings?: string[];
}

interface Metadata {
  prompt: string;
  negativePrompt: string;
  width: number;
  height: number;
  steps: number;
  guidanceScale: number;
  seed: string;
  scheduler: string;
  method: string;
  methodOptions: Record<string, unknown>;
  maskWords?: string[];
  vae: Record<string, unknown>;
  model: { name: string };
}

interface Output {
  name: string;
  modified: string;
  metadata?: Metadata;
}

import { readDroppedParameters, UnsupportedImage, type ParameterFormat } from './parameters.ts';

const $ = <T extends HTMLElement>(sel: string): T => {
  const el = document.querySelector<T>(sel);
  if (!el) throw new Error(`missing ${sel}`);
  return el;
};

/** Fire and forget: a request that fails while the server is away is retried by the next poll. */
function quietly(p: Promise<unknown>): void {
  p.catch(() => $('#devices').classList.add('offline'));
}

const token = new URLSearchParams(location.search).get('token');
function apiUrl(path: string): string {
  const url = `/api/v1${path}`;
  return token ? `${url}${url.includes('?') ? '&' : '?'}token=${encodeURIComponent(token)}` : url;
}
async function api<T>(path: string, init: RequestInit = {}): Promise<{ status: number; body: T }> {
  const res = await fetch(apiUrl(path), { ...init, headers: { ...(init.body ? { 'content-type': 'application/json' } : {}), ...init.headers } });
  const text = await res.text();
  return { status: res.status, body: (text ? JSON.parse(text) : undefined) as T };
}

// ---------- the form ----------

const TOP_FIELDS = ['prompt', 'negativePrompt', 'model', 'size', 'width', 'height', 'method', 'steps', 'guidanceScale', 'scheduler', 'seed'];
const STORAGE_KEY = 'asgd.form';
let schema: Schema = {};
let models: { name: string; nativeWidth?: number; nativeHeight?: number }[] = [];
let lastSeed: string | undefined;
const fieldSchemas = new Map<string, Schema>();

function label(key: string): string {
  const leaf = key.split('.').at(-1)!;
  const words = leaf.replace(/([A-Z])/g, ' $1').toLowerCase();
  return words.charAt(0).toUpperCase() + words.slice(1);
}

function typeOf(s: Schema): string {
  return Array.isArray(s.type) ? s.type.find((t) => t !== 'null')! : s.type ?? 'string';
}

function control(name: string, s: Schema): HTMLElement {
  const t = typeOf(s);
  let el: HTMLInputElement | HTMLSelectElement | HTMLTextAreaElement;
  if (s.enum) {
    const sel = document.createElement('select');
    if (s.default === undefined) sel.append(new Option(name === 'scheduler' ? "the model's" : '(default)', ''));
    for (const v of s.enum) sel.append(new Option(v, v));
    if (s.default !== undefined) sel.value = String(s.default);
    el = sel;
  } else if (t === 'boolean') {
    const cb = document.createElement('input');
    cb.type = 'checkbox';
    cb.checked = s.default === true;
    el = cb;
  } else if (name === 'prompt' || name === 'negativePrompt') {
    el = document.createElement('textarea');
    el.rows = name === 'prompt' ? 3 : 2;
  } else {
    const input = document.createElement('input');
    if (t === 'integer' || t === 'number') {
      input.type = 'number';
      input.step = name === 'width' || name === 'height' ? '8' : t === 'integer' ? '1' : 'any';
      if (s.minimum !== undefined) input.min = String(s.minimum);
      if (s.maximum !== undefined) input.max = String(s.maximum);
      if (typeof s.default === 'number') input.placeholder = String(s.default);
    } else {
      input.type = 'text';
      if (Array.isArray(s.default) && s.default.length === 0) input.placeholder = '(all)';
      if (name === 'seed') input.placeholder = 'random';
    }
    if (name === 'seed') input.inputMode = 'numeric';
    el = input;
  }
  el.name = name;
  el.id = `f-${name.replace('.', '-')}`;
  return el;
}

function fieldRow(name: string, s: Schema, extra?: HTMLElement): HTMLElement {
  fieldSchemas.set(name, s);
  const row = document.createElement('div');
  row.className = 'field';
  row.dataset['field'] = name;
  const lab = document.createElement('label');
  const input = control(name, s);
  lab.htmlFor = input.id;
  lab.textContent = label(name);
  lab.title = s.description ?? '';
  const err = document.createElement('small');
  err.className = 'field-error';
  row.append(lab, input);
  if (extra) row.append(extra);
  row.append(err);
  return row;
}

/** The model the form has selected (the first one until the form exists). */
function selectedModel(): (typeof models)[number] | undefined {
  const name = document.querySelector<HTMLSelectElement>('[name="model"]')?.value;
  return models.find((m) => m.name === name) ?? models[0];
}

function sizePresets(): [string, number, number][] {
  const model = selectedModel();
  const native = model?.nativeWidth ?? 512;
  const snap = (v: number) => Math.max(64, Math.round(v / 8) * 8);
  const out: [string, number, number][] = [[`native (${native})`, native, model?.nativeHeight ?? native]];
  for (const n of [2048, 3072, 4096]) out.push([`${n} x ${n}`, n, n]);
  for (const [name, w, h] of [['16:9', 16, 9], ['3:2', 3, 2], ['4:3', 4, 3], ['9:16', 9, 16], ['2:3', 2, 3]] as const) {
    const long = 2048;
    out.push([`${name} (${w > h ? long : snap((long * w) / h)} x ${w > h ? snap((long * h) / w) : long})`, w > h ? long : snap((long * w) / h), w > h ? snap((long * h) / w) : long]);
  }
  return out;
}

/**
 * The size preset list and the width and height placeholders follow the selected model: an empty width or height
 * means its native size, so the placeholder shows that number.
 */
function showModelSizes(): void {
  const model = selectedModel();
  const sel = document.querySelector<HTMLSelectElement>('#f-size');
  if (sel) {
    const keep = sel.value;
    sel.replaceChildren(new Option('(custom)', ''), ...sizePresets().map(([name, w, h]) => new Option(name, `${w}x${h}`)));
    sel.value = [...sel.options].some((o) => o.value === keep) ? keep : '';
  }
  for (const [name, value] of [['width', model?.nativeWidth], ['height', model?.nativeHeight]] as const) {
    const el = document.querySelector<HTMLInputElement>(`[name="${name}"]`);
    if (el) el.placeholder = value === undefined ? '' : String(value);
  }
}

function buildForm(): void {
  const props = schema.properties ?? {};
  const top = $('#fields');
  const adv = $('#advanced-fields');
  for (const key of TOP_FIELDS) {
    if (key === 'model') {
      const row = fieldRow('model', { type: 'string', enum: models.map((m) => m.name), default: models[0]?.name, description: 'model' });
      top.append(row);
      continue;
    }
    if (key === 'size') {
      const row = document.createElement('div');
      row.className = 'field';
      const lab = document.createElement('label');
      lab.textContent = 'Size preset';
      lab.htmlFor = 'f-size';
      const sel = document.createElement('select');
      sel.id = 'f-size';
      sel.append(new Option('(custom)', ''));
      sel.addEventListener('change', () => {
        if (!sel.value) return;
        const [w, h] = sel.value.split('x');
        input('width').value = w!;
        input('height').value = h!;
        saveForm();
      });
      row.append(lab, sel);
      top.append(row);
      continue;
    }
    const s = props[key];
    if (!s) continue;
    let extra: HTMLElement | undefined;
    if (key === 'seed') {
      extra = document.createElement('span');
      extra.className = 'seed-buttons';
      const random = button('Random', 'seed-random', () => {
        input('seed').value = randomSeed();
        saveForm();
      });
      const reuse = button('Reuse last', 'seed-reuse', () => {
        if (lastSeed) input('seed').value = lastSeed;
        saveForm();
      });
      extra.append(random, reuse);
    }
    top.append(fieldRow(key, s, extra));
  }
  for (const [key, s] of Object.entries(props)) {
    if (TOP_FIELDS.includes(key) || key === 'model') continue;
    if (s.properties) {
      const group = document.createElement('fieldset');
      const legend = document.createElement('legend');
      legend.textContent = key === 'methodOptions' ? 'Method' : key === 'vae' ? 'VAE decoding' : label(key);
      group.append(legend);
      for (const [sub, ss] of Object.entries(s.properties)) group.append(fieldRow(`${key}.${sub}`, ss));
      adv.append(group);
    } else {
      adv.append(fieldRow(key, s));
    }
  }
}

function button(text: string, id: string, onClick: () => void | Promise<void>): HTMLButtonElement {
  const b = document.createElement('button');
  b.type = 'button';
  b.textContent = text;
  b.id = id;
  b.addEventListener('click', () => {
    const r = onClick();
    if (r) quietly(r);
  });
  return b;
}

function input(name: string): HTMLInputElement {
  return document.querySelector<HTMLInputElement>(`[name="${name}"]`)!;
}

function randomSeed(): string {
  const a = new BigUint64Array(1);
  crypto.getRandomValues(a);
  return a[0]!.toString();
}

/** Reads the form into a request body; returns the errors by field instead when a value is invalid. */
function readForm(): { body: Record<string, unknown>; errors: Record<string, string> } {
  const body: Record<string, unknown> = {};
  const errors: Record<string, string> = {};
  for (const [name, s] of fieldSchemas) {
    const el = document.querySelector<HTMLInputElement | HTMLSelectElement | HTMLTextAreaElement>(`[name="${name}"]`)!;
    const t = typeOf(s);
    let value: unknown;
    if (el instanceof HTMLInputElement && el.type === 'checkbox') {
      if (el.checked === (s.default === true)) continue;
      value = el.checked;
    } else {
      const raw = el.value.trim();
      if (raw === '') {
        if (schema.required?.includes(name)) errors[name] = 'Required';
        continue;
      }
      // A choice left at its default is not sent: the server applies the default that fits the job (an upscale's
      // can differ from a generation's, e.g. methodOptions.structureSchedule).
      if (el instanceof HTMLSelectElement && s.default !== undefined && raw === String(s.default) && name !== 'model') continue;
      if (t === 'integer' || t === 'number') {
        const n = Number(raw);
        if (!Number.isFinite(n)) errors[name] = 'Not a number';
        else if (t === 'integer' && !Number.isInteger(n)) errors[name] = 'A whole number';
        else if (s.minimum !== undefined && n < s.minimum) errors[name] = `At least ${s.minimum}`;
        else if (s.exclusiveMinimum !== undefined && n <= s.exclusiveMinimum) errors[name] = `Above ${s.exclusiveMinimum}`;
        else if (s.maximum !== undefined && n > s.maximum) errors[name] = `At most ${s.maximum}`;
        else if ((name === 'width' || name === 'height') && n % 8 !== 0) errors[name] = 'A multiple of 8';
        value = n;
      } else if (t === 'array') {
        value = raw.split(/[,\s]+/).filter(Boolean);
      } else {
        if (s.pattern && !new RegExp(s.pattern).test(raw)) errors[name] = name === 'seed' ? 'Digits only, 0 .. 2^64-1' : 'Invalid format';
        else if (name === 'seed' && BigInt(raw) >= 2n ** 64n) errors[name] = 'At most 2^64-1';
        value = raw;
      }
      if (name === 'model' && value === models[0]?.name) continue;
    }
    const [head, sub] = name.split('.');
    if (sub) ((body[head!] ??= {}) as Record<string, unknown>)[sub] = value;
    else body[name] = value;
  }
  return { body, errors };
}

function showErrors(errors: Record<string, string>, general = ''): void {
  for (const row of document.querySelectorAll<HTMLElement>('.field')) {
    const e = errors[row.dataset['field'] ?? ''];
    row.classList.toggle('invalid', Boolean(e));
    const small = row.querySelector('.field-error');
    if (small) small.textContent = e ?? '';
    if (e && row.closest('details')) (row.closest('details') as HTMLDetailsElement).open = true;
  }
  $('#form-error').textContent = general;
}

/** The most images one click queues. */
const MAX_COUNT = 16;

/** In the one-column layout (a phone) the progress is below the form: bring it into view once a job is queued. */
function showWork(): void {
  if (window.matchMedia('(max-width: 720px)').matches) $('#work').scrollIntoView({ behavior: 'smooth', block: 'start' });
}

/** Queues the form's settings twice, with direct and with asg, on one seed: the gallery then compares them. */
async function submitCompare(): Promise<void> {
  const { body, errors } = readForm();
  if (Object.keys(errors).length) {
    showErrors(errors, 'Fix the marked fields; nothing was queued.');
    return;
  }
  body['seed'] ??= randomSeed();
  for (const method of ['direct', 'asg']) {
    const r = await api<{ field?: string; message?: string }>('/jobs', { method: 'POST', body: JSON.stringify({ ...body, method }) });
    if (r.status !== 202) {
      const field = r.body?.field;
      showErrors(field && fieldSchemas.has(field) ? { [field]: r.body?.message ?? 'Invalid' } : {}, r.body?.message ?? `Error ${r.status}`);
      return;
    }
  }
  lastSeed = String(body['seed']);
  showErrors({});
  await refreshJobs();
  showWork();
}

async function submit(): Promise<void> {
  const { body, errors } = readForm();
  if (Object.keys(errors).length) {
    showErrors(errors, 'Fix the marked fields; nothing was queued.');
    return;
  }
  const count = Number($<HTMLInputElement>('#count').value || '1');
  if (!Number.isInteger(count) || count < 1 || count > MAX_COUNT) {
    showErrors({}, `Images: a whole number from 1 to ${MAX_COUNT}; nothing was queued.`);
    return;
  }
  // A random seed is drawn here so it can be reused before the image is done; more images take the next seeds.
  const first = BigInt(String(body['seed'] ??= randomSeed()));
  for (let i = 0; i < count; i++) {
    const seed = ((first + BigInt(i)) % 2n ** 64n).toString();
    const r = await api<{ id?: string; field?: string; message?: string }>('/jobs', { method: 'POST', body: JSON.stringify({ ...body, seed }) });
    if (r.status !== 202) {
      const field = r.body?.field;
      const queued = i ? ` (${i} of ${count} queued)` : '';
      showErrors(field && fieldSchemas.has(field) ? { [field]: r.body?.message ?? 'Invalid' } : {}, `${r.body?.message ?? `Error ${r.status}`}${queued}`);
      if (i) await refreshJobs();
      return;
    }
  }
  lastSeed = String(body['seed']);
  showErrors({});
  await refreshJobs();
  showWork();
}

let estimateTimer: ReturnType<typeof setTimeout> | undefined;
/** Shows the UNet evaluations (and the time, once measured on this machine) the form's settings take. */
function scheduleEstimate(): void {
  clearTimeout(estimateTimer);
  estimateTimer = setTimeout(() => quietly(estimate()), 200);
}

async function estimate(): Promise<void> {
  const { body, errors } = readForm();
  const out = $('#estimate');
  if (Object.keys(errors).length) {
    out.textContent = '';
    return;
  }
  const r = await api<{ unetEvaluations?: number; seconds?: number }>('/estimate', { method: 'POST', body: JSON.stringify(body) });
  const e = r.body;
  const count = Number($<HTMLInputElement>('#count').value || '1');
  const each = Number.isInteger(count) && count > 1 ? ` each, ${count} images` : '';
  out.textContent = r.status === 200 && e?.unetEvaluations !== undefined ? `${describeCost(e.unetEvaluations, e.seconds)}${each}` : '';
  out.dataset['units'] = String(e?.unetEvaluations ?? '');
  out.dataset['for'] = JSON.stringify(body);
}

/** "N UNet evaluations · about T" (the time once the server has measured a job). */
function describeCost(units: number, seconds: number | undefined): string {
  const time = seconds === undefined ? '' : ` · about ${seconds < 60 ? `${Math.ceil(seconds)} s` : `${Math.round(seconds / 60)} min`}`;
  return `${units} UNet evaluations${time}`;
}

function saveForm(): void {
  const values: Record<string, string | boolean> = {};
  for (const name of fieldSchemas.keys()) {
    const el = document.querySelector<HTMLInputElement>(`[name="${name}"]`)!;
    values[name] = el.type === 'checkbox' ? el.checked : el.value;
  }
  localStorage.setItem(STORAGE_KEY, JSON.stringify({ values, lastSeed }));
}

function restoreForm(): void {
  const saved = localStorage.getItem(STORAGE_KEY);
  if (!saved) return;
  try {
    const { values, lastSeed: seed } = JSON.parse(saved) as { values: Record<string, string | boolean>; lastSeed?: string };
    lastSeed = seed;
    for (const [name, v] of Object.entries(values)) {
      const el = document.querySelector<HTMLInputElement>(`[name="${name}"]`);
      if (!el) continue;
      if (el.type === 'checkbox') el.checked = v === true;
      else el.value = String(v);
    }
  } catch {
    localStorage.removeItem(STORAGE_KEY);
  }
}

/** Puts settings (library names; methodOptions and vae nested) into the form; fields not given are left as they are. */
function applySettings(settings: Record<string, unknown>): void {
  const set = (name: string, v: unknown) => {
    const el = document.querySelector<HTMLInputElement>(`[name="${name}"]`);
    if (!el || v === undefined || v === null) return;
    if (el.type === 'checkbox') el.checked = v === true;
    else el.value = Array.isArray(v) ? v.join(', ') : String(v);
  };
  for (const [k, v] of Object.entries(settings)) {
    if ((k === 'methodOptions' || k === 'vae') && v && typeof v === 'object') {
      for (const [sub, sv] of Object.entries(v)) set(`${k}.${sub}`, sv);
    } else if (k !== 'model') {
      set(k, v);
    }
  }
  ($('#f-size') as HTMLSelectElement).value = '';
  saveForm();
  scheduleEstimate();
}

function setForm(m: Metadata, seedOnly: boolean): void {
  if (seedOnly) {
    applySettings({ seed: m.seed });
    return;
  }
  applySettings({
    prompt: m.prompt, negativePrompt: m.negativePrompt, width: m.width, height: m.height, steps: m.steps, guidanceScale: m.guidanceScale,
    seed: m.seed, scheduler: m.scheduler, method: m.method, maskWords: m.maskWords, methodOptions: m.methodOptions, vae: m.vae,
  });
  if (models.some((x) => x.name === m.model?.name)) (document.querySelector('[name="model"]') as HTMLSelectElement).value = m.model.name;
  showModelSizes();
  saveForm();
}

const FORMAT_NAMES: Record<ParameterFormat, string> = {
  asgdiffusion: 'asgdiffusion', a1111: 'AUTOMATIC1111', comfyui: 'ComfyUI', invokeai: 'InvokeAI', fooocus: 'Fooocus',
};

/** A dropped PNG, JPEG or WebP: its generation settings go into the form, and it can be added to upscale it. */
async function onDrop(file: File): Promise<void> {
  const note = $('#drop-message');
  note.classList.remove('error');
  try {
    const found = await readDroppedParameters(new Uint8Array(await file.arrayBuffer()));
    if (found) applySettings(found.settings);
    note.textContent = found
      ? `Loaded ${Object.keys(found.settings).length} settings from ${file.name} (${FORMAT_NAMES[found.format]}). `
      : `${file.name} has no generation settings this page can read. `;
    const add = document.createElement('button');
    add.type = 'button';
    add.id = 'drop-upscale';
    add.textContent = 'Add it to the gallery to upscale';
    add.addEventListener('click', () => quietly(uploadPicture(file)));
    note.append(add);
  } catch (err) {
    note.textContent = err instanceof UnsupportedImage ? `${file.name} is not a PNG, JPEG or WebP image.` : `Could not read ${file.name}.`;
  }
}

// ---------- progress and queue ----------

let watching: { id: string; source: EventSource; revision: number } | undefined;
let jobs: Job[] = [];

function describeProgress(p: Progress | undefined): string {
  if (!p) return '';
  const parts = [p.phase];
  if (p.phase === 'denoise' || p.phase === 'decode') parts.push(`stage ${p.stage}`);
  if (p.totalSteps) parts.push(`step ${p.step}/${p.totalSteps}`);
  if (p.tilesTotal) parts.push(`tile ${p.tilesDone}/${p.tilesTotal}`);
  if (p.etaSeconds !== undefined) parts.push(`ETA ${p.etaSeconds < 60 ? `${Math.ceil(p.etaSeconds)} s` : `${Math.floor(p.etaSeconds / 60)} min ${Math.round(p.etaSeconds % 60)} s`}`);
  return parts.join(' · ');
}

/** One chip per device: its label, busy / idle / lost, and the UNet calls it has done in this job. */
function showDevices(p: Progress | undefined): void {
  const list = $('#progress-devices');
  const devices = p?.devices ?? [];
  list.hidden = devices.length === 0;
  list.replaceChildren(...devices.map((d) => {
    const li = document.createElement('li');
    const state = d.lost ? 'lost' : d.busy ? 'busy' : 'idle';
    li.className = `device ${state}`;
    li.dataset['device'] = d.id;
    li.dataset['state'] = state;
    li.textContent = `${d.id} ${state}`;
    const calls = document.createElement('span');
    calls.className = 'calls';
    calls.textContent = ` · ${d.calls} call${d.calls === 1 ? '' : 's'}`;
    li.append(calls);
    return li;
  }));
}

function showProgress(id: string, p: Progress | undefined): void {
  $('#progress-text').textContent = describeProgress(p);
  showDevices(p);
  const bar = $<HTMLProgressElement>('#progress-bar');
  bar.value = p && p.unitsTotal ? p.unitsDone / p.unitsTotal : 0;
  if (p && watching?.id === id && p.previewRevision > watching.revision) {
    watching.revision = p.previewRevision;
    $<HTMLImageElement>('#preview').src = apiUrl(`/jobs/${id}/preview?rev=${p.previewRevision}`);
  }
}

function watch(job: Job | undefined): void {
  if (watching && watching.id === job?.id) return;
  watching?.source.close();
  watching = undefined;
  $('#running').hidden = !job;
  $('#idle').hidden = Boolean(job);
  $('#busy').textContent = job ? 'busy' : 'idle';
  if (!job) return;
  $('#running-prompt').textContent = String(job.spec.settings['prompt'] ?? '');
  $<HTMLImageElement>('#preview').removeAttribute('src');
  const source = new EventSource(apiUrl(`/jobs/${job.id}/events`));
  watching = { id: job.id, source, revision: 0 };
  showProgress(job.id, job.progress);
  source.addEventListener('progress', (e) => showProgress(job.id, JSON.parse((e as MessageEvent<string>).data) as Progress));
  source.addEventListener('state', (e) => {
    const j = JSON.parse((e as MessageEvent<string>).data) as Job;
    if (j.state === 'running') showProgress(j.id, j.progress);
    if (['completed', 'failed', 'cancelled'].includes(j.state)) {
      source.close();
      if (watching?.source === source) watching = undefined;
      if (j.state === 'completed') lastSeed = String(j.spec.settings['seed'] ?? lastSeed);
      quietly(refreshJobs());
      quietly(refreshGallery());
      scheduleEstimate();
    }
  });
}

function renderQueue(): void {
  const list = $('#queue');
  list.replaceChildren();
  const queued = jobs.filter((j) => j.state === 'queued');
  for (const [i, j] of queued.entries()) {
    const li = document.createElement('li');
    li.dataset['id'] = j.id;
    const text = document.createElement('span');
    text.className = 'prompt';
    text.textContent = String(j.spec.settings['prompt'] ?? '');
    li.append(text);
    const move = (to: number) => async () => {
      await api(`/jobs/${j.id}`, { method: 'PATCH', body: JSON.stringify({ position: to }) });
      await refreshJobs();
    };
    const up = button('↑', '', move(i - 1));
    up.title = 'Move up';
    up.className = 'move-up';
    up.disabled = i === 0;
    const down = button('↓', '', move(i + 1));
    down.title = 'Move down';
    down.className = 'move-down';
    down.disabled = i === queued.length - 1;
    const remove = button('✕', '', async () => {
      await api(`/jobs/${j.id}`, { method: 'DELETE' });
      await api(`/jobs/${j.id}`, { method: 'DELETE' });
      await refreshJobs();
    });
    remove.title = 'Remove';
    remove.className = 'remove';
    li.append(up, down, remove);
    list.append(li);
  }
  if (!queued.length) {
    const li = document.createElement('li');
    li.className = 'muted empty';
    li.textContent = 'Empty.';
    list.append(li);
  }
  showLastJob(jobs.find((j) => ['completed', 'failed', 'cancelled'].includes(j.state)));
}

/** Under "Now": why the last finished job failed, or what its run warned of (nothing when it went well). */
function showLastJob(job: Job | undefined): void {
  const failed = job?.state === 'failed';
  const notes = job?.state === 'completed' ? job.warnings ?? [] : [];
  $('#last-job').hidden = !failed && !notes.length;
  const title = $('#last-job-title');
  title.className = failed ? 'error' : 'muted';
  title.textContent = failed ? `The last job failed: ${job?.error?.message ?? 'no reason given'}` : 'Notes on the last image:';
  const list = $('#last-job-notes');
  list.replaceChildren(...notes.map((n) => Object.assign(document.createElement('li'), { textContent: n })));
}

/** Finished jobs the page asks for: enough for "the last job"; the viewer asks for an older image's own job. */
const FINISHED_SHOWN = 20;

/** The newest completed job and the number listed: when either changes, the gallery is read again. */
let completedSeen = '';
async function refreshJobs(): Promise<void> {
  // Polled every second: the running and queued jobs, and the newest finished ones only (the server keeps 1000).
  const r = await api<{ jobs: Job[] }>(`/jobs?finished=${FINISHED_SHOWN}`);
  if (r.status !== 200) return;
  jobs = r.body.jobs;
  watch(jobs.find((j) => j.state === 'running'));
  renderQueue();
  // Not the count alone: the server keeps a bounded history, so at its limit the count stays while jobs complete.
  const completed = jobs.filter((j) => j.state === 'completed');
  const seen = `${completed[0]?.id ?? ''}:${completed.length}`;
  if (seen !== completedSeen) {
    completedSeen = seen;
    await refreshGallery();
  }
}

// ---------- gallery and viewer ----------

let outputs: Output[] = [];
let viewing: Output | undefined;

async function refreshGallery(): Promise<void> {
  const r = await api<{ outputs: Output[] }>('/outputs');
  if (r.status !== 200) return;
  outputs = r.body.outputs;
  const g = $('#gallery');
  g.replaceChildren();
  for (const o of outputs) {
    const fig = document.createElement('figure');
    fig.dataset['name'] = o.name;
    fig.tabIndex = 0;
    const img = document.createElement('img');
    img.src = apiUrl(`/outputs/${encodeURIComponent(o.name)}/thumbnail`);
    img.alt = o.metadata?.prompt ?? o.name;
    img.loading = 'lazy';
    const cap = document.createElement('figcaption');
    cap.textContent = o.metadata ? `${o.metadata.width}x${o.metadata.height} · seed ${o.metadata.seed}` : o.name;
    fig.append(img, cap);
    fig.addEventListener('click', () => openViewer(o));
    fig.addEventListener('keydown', (e) => e.key === 'Enter' && openViewer(o));
    g.append(fig);
  }
  if (!outputs.length) g.textContent = 'No images yet.';
}

/** A picture of the visitor's own joins the gallery (POST /uploads) and opens in the viewer, ready to upscale. */
async function uploadPicture(file: File): Promise<void> {
  const note = $('#upload-message');
  note.classList.remove('error');
  note.textContent = `Uploading ${file.name}…`;
  const res = await fetch(apiUrl('/uploads'), { method: 'POST', body: file, headers: { 'content-type': file.type || 'application/octet-stream' } });
  const body = (await res.json().catch(() => ({}))) as { name?: string; message?: string };
  if (!res.ok || !body.name) {
    note.classList.add('error');
    note.textContent = `${file.name}: ${body.message ?? `the server answered ${res.status}`}`;
    return;
  }
  await refreshGallery();
  const added = outputs.find((o) => o.name === body.name);
  if (added) openViewer(added);
  note.textContent = `${file.name} is in the gallery as ${body.name}.`;
}

const view = { scale: 1, x: 0, y: 0 };
function applyView(): void {
  $('#viewer-image').style.transform = `translate(${view.x}px, ${view.y}px) scale(${view.scale})`;
}

/** The whole image in the viewer, centred: on opening, and on a double click. */
function fitView(): void {
  const img = $<HTMLImageElement>('#viewer-image');
  const port = $('#viewport').getBoundingClientRect();
  if (!img.naturalWidth || !img.naturalHeight || !port.width || !port.height) return;
  const scale = Math.min(port.width / img.naturalWidth, port.height / img.naturalHeight);
  Object.assign(view, { scale, x: (port.width - img.naturalWidth * scale) / 2, y: (port.height - img.naturalHeight * scale) / 2 });
  applyView();
}

function openViewer(o: Output): void {
  viewing = o;
  const img = $<HTMLImageElement>('#viewer-image');
  img.src = apiUrl(`/outputs/${encodeURIComponent(o.name)}`);
  Object.assign(view, { scale: 1, x: 0, y: 0 });
  applyView();
  const dl = $('#viewer-meta');
  dl.replaceChildren();
  const m = o.metadata;
  const rows: [string, string][] = m
    ? [
        ['Prompt', m.prompt], ['Negative', m.negativePrompt || '—'], ['Size', `${m.width} x ${m.height}`], ['Seed', m.seed],
        ['Steps', String(m.steps)], ['Guidance', String(m.guidanceScale)], ['Method', m.method], ['Scheduler', m.scheduler], ['Model', m.model?.name ?? ''],
      ]
    : [['File', o.name]];
  const addRow = (k: string, v: string) => {
    const dt = document.createElement('dt');
    dt.textContent = k;
    const dd = document.createElement('dd');
    dd.textContent = v;
    dd.dataset['meta'] = k.toLowerCase();
    dl.append(dt, dd);
  };
  for (const [k, v] of rows) addRow(k, v);
  // What the run that made it warned of, while the server still keeps that job (an older one is asked for).
  const listed = jobs.find((j) => j.output === o.name);
  const id = /^asgd-\d{8}-\d{6}-([A-Za-z0-9]+)\.png$/.exec(o.name)?.[1];
  if (listed) for (const w of listed.warnings ?? []) addRow('Note', w);
  else if (id) {
    quietly(api<Job>(`/jobs/${id}`).then((r) => {
      if (r.status === 200 && viewing === o) for (const w of r.body.warnings ?? []) addRow('Note', w);
    }));
  }
  const a = $<HTMLAnchorElement>('#download');
  a.href = apiUrl(`/outputs/${encodeURIComponent(o.name)}`);
  a.download = o.name;
  $<HTMLButtonElement>('#use-settings').disabled = !m;
  $<HTMLButtonElement>('#reuse-seed').disabled = !m;
  const partner = partnerOf(o);
  $<HTMLButtonElement>('#compare').disabled = !partner;
  $('#compare').title = partner ? `Side by side with ${partner.metadata?.method}` : 'No image with the same settings and seed and the other method yet';
  resetUpscaleForm(o);
  const dialog = $<HTMLDialogElement>('#viewer');
  if (!dialog.open) dialog.showModal();
  if (img.complete) fitView(); // the same file again: no new load event (otherwise 'load' fits it)
}

// ---------- upscaling from the viewer ----------

let upscaleSchema: Schema = {};

/** The viewer's upscale form for `o`: scale and strength at the API's defaults, the image's own prompt as the hint. */
function resetUpscaleForm(o: Output): void {
  const props = upscaleSchema.properties ?? {};
  for (const name of ['scale', 'strength']) {
    const s = props[name] ?? {};
    const el = $<HTMLInputElement>(`#upscale-${name}`);
    el.value = s.default === undefined ? '' : String(s.default);
    if (s.maximum !== undefined) el.max = String(s.maximum);
    el.min = String(s.minimum ?? s.exclusiveMinimum ?? '');
  }
  const prompt = $<HTMLInputElement>('#upscale-prompt');
  prompt.value = '';
  prompt.placeholder = o.metadata?.prompt ? `the image's own: ${o.metadata.prompt}` : 'none embedded in the image';
  $('#upscale-size').textContent = '';
  $('#upscale-error').textContent = '';
  scheduleUpscaleEstimate();
}

/** The upscale form's body: the settings given (the server applies its defaults to the rest). */
function upscaleBody(): Record<string, unknown> {
  const body: Record<string, unknown> = {};
  for (const name of ['scale', 'strength']) {
    const v = $<HTMLInputElement>(`#upscale-${name}`).value.trim();
    if (v !== '') body[name] = Number(v);
  }
  const prompt = $<HTMLInputElement>('#upscale-prompt').value.trim();
  if (prompt) body['prompt'] = prompt;
  return body;
}

/** A refused request's message, with the field named as the form names it. */
function refusal(r: { status: number; body: { message?: string; field?: string } }): string {
  return r.body?.field ? `${label(r.body.field)}: ${r.body.message ?? ''}` : r.body?.message ?? `Error ${r.status}`;
}

let upscaleTimer: ReturnType<typeof setTimeout> | undefined;
function scheduleUpscaleEstimate(): void {
  clearTimeout(upscaleTimer);
  upscaleTimer = setTimeout(() => quietly(upscaleEstimate()), 150);
}

/** The size the upscale makes and what it costs, as the server plans it; or why the settings are refused. */
async function upscaleEstimate(): Promise<void> {
  const o = viewing;
  if (!o) return;
  const body = upscaleBody();
  const r = await api<{ width?: number; height?: number; unetEvaluations?: number; seconds?: number; message?: string; field?: string }>(
    `/outputs/${encodeURIComponent(o.name)}/upscale/estimate`, { method: 'POST', body: JSON.stringify(body) },
  );
  if (viewing !== o || JSON.stringify(upscaleBody()) !== JSON.stringify(body)) return; // the form moved on meanwhile
  const e = r.body;
  const ok = r.status === 200 && e?.width !== undefined && e.unetEvaluations !== undefined;
  const img = $<HTMLImageElement>('#viewer-image');
  const from = img.naturalWidth ? `${img.naturalWidth} x ${img.naturalHeight} → ` : '';
  $('#upscale-size').textContent = ok ? `${from}${e.width} x ${e.height} · ${describeCost(e.unetEvaluations!, e.seconds)}` : '';
  $('#upscale-error').textContent = ok ? '' : refusal(r);
}

/** Queues the upscale of the viewed image; the viewer closes once it is queued, and shows why not otherwise. */
async function submitUpscale(closeViewer: () => void): Promise<void> {
  if (!viewing) return;
  const r = await api<{ message?: string; field?: string }>(`/outputs/${encodeURIComponent(viewing.name)}/upscale`, { method: 'POST', body: JSON.stringify(upscaleBody()) });
  if (r.status !== 202) {
    $('#upscale-error').textContent = refusal(r);
    return;
  }
  closeViewer();
  await refreshJobs();
}

/** The output with the same prompt, size, steps and seed but another method (direct vs the others). */
function partnerOf(o: Output): Output | undefined {
  const m = o.metadata;
  if (!m) return undefined;
  return outputs.find((x) => {
    const n = x.metadata;
    return x !== o && n && n.seed === m.seed && n.prompt === m.prompt && n.width === m.width && n.height === m.height && n.steps === m.steps && n.method !== m.method && (n.method === 'direct') !== (m.method === 'direct');
  });
}

function openCompare(a: Output, b: Output): void {
  // direct on the left, the high-resolution method on the right.
  const [left, right] = a.metadata?.method === 'direct' ? [a, b] : [b, a];
  $<HTMLImageElement>('#compare-left').src = apiUrl(`/outputs/${encodeURIComponent(left.name)}`);
  $<HTMLImageElement>('#compare-right').src = apiUrl(`/outputs/${encodeURIComponent(right.name)}`);
  $('#compare-left-label').textContent = left.metadata?.method ?? '';
  $('#compare-right-label').textContent = right.metadata?.method ?? '';
  const slider = $<HTMLInputElement>('#compare-slider');
  slider.value = '50';
  applySplit();
  $<HTMLDialogElement>('#comparer').showModal();
}

function applySplit(): void {
  const v = Number($<HTMLInputElement>('#compare-slider').value);
  $('#compare-left').style.clipPath = `inset(0 ${100 - v}% 0 0)`;
}

function setupViewer(): void {
  $('#compare-slider').addEventListener('input', applySplit);
  $('#close-compare').addEventListener('click', () => $<HTMLDialogElement>('#comparer').close());
  $('#compare').addEventListener('click', () => {
    const partner = viewing && partnerOf(viewing);
    if (!viewing || !partner) return;
    $<HTMLDialogElement>('#viewer').close();
    openCompare(viewing, partner);
  });
  const port = $('#viewport');
  $('#viewer-image').addEventListener('load', fitView);
  // A double click fits the image, or shows it pixel for pixel around the point clicked when it is fitted.
  port.addEventListener('dblclick', (e) => {
    const fitted = view.scale;
    fitView();
    if (Math.abs(view.scale - fitted) > 1e-6 || view.scale === 1) return;
    const rect = port.getBoundingClientRect();
    const f = 1 / view.scale;
    view.x = e.clientX - rect.left - (e.clientX - rect.left - view.x) * f;
    view.y = e.clientY - rect.top - (e.clientY - rect.top - view.y) * f;
    view.scale = 1;
    applyView();
  });
  port.addEventListener('wheel', (e) => {
    e.preventDefault();
    const rect = port.getBoundingClientRect();
    const cx = e.clientX - rect.left - view.x;
    const cy = e.clientY - rect.top - view.y;
    const k = Math.exp(-e.deltaY / 400);
    const scale = Math.min(32, Math.max(0.05, view.scale * k));
    const f = scale / view.scale;
    view.x -= cx * (f - 1);
    view.y -= cy * (f - 1);
    view.scale = scale;
    applyView();
  }, { passive: false });
  let drag: { x: number; y: number } | undefined;
  port.addEventListener('pointerdown', (e) => {
    drag = { x: e.clientX - view.x, y: e.clientY - view.y };
    port.setPointerCapture(e.pointerId);
  });
  port.addEventListener('pointermove', (e) => {
    if (!drag) return;
    view.x = e.clientX - drag.x;
    view.y = e.clientY - drag.y;
    applyView();
  });
  port.addEventListener('pointerup', () => (drag = undefined));
  const close = () => $<HTMLDialogElement>('#viewer').close();
  $('#close-viewer').addEventListener('click', close);
  $('#use-settings').addEventListener('click', () => {
    if (viewing?.metadata) setForm(viewing.metadata, false);
    close();
  });
  $('#reuse-seed').addEventListener('click', () => {
    if (viewing?.metadata) setForm(viewing.metadata, true);
    close();
  });
  $('#upscale-form').addEventListener('submit', (e) => {
    e.preventDefault();
    quietly(submitUpscale(close));
  });
  $('#upscale-form').addEventListener('input', scheduleUpscaleEstimate);
  $('#viewer-image').addEventListener('load', scheduleUpscaleEstimate);
  $('#delete-output').addEventListener('click', () => {
    if (!viewing) return;
    const name = viewing.name;
    // The file itself goes: there is no undo.
    if (!window.confirm(`Delete ${name}? The file is removed from the outputs folder.`)) return;
    close();
    quietly(api(`/outputs/${encodeURIComponent(name)}`, { method: 'DELETE' }).then(refreshGallery));
  });
}

// ---------- the fleet (asgd serve --queue) ----------

interface FleetStatus {
  workers: { id: string; host: string; devices: { name: string }[]; models: { name: string; hash: string }[]; running: { jobId: string }[]; completed: number }[];
  queues: { queue: string; model?: string; counts: Record<string, number> }[];
}

/** The live workers (devices, models, what each runs) and each model's queue depth; built with text, not HTML. */
async function refreshFleet(): Promise<void> {
  const r = await api<FleetStatus>('/fleet');
  if (r.status !== 200) return;
  $('#fleet').hidden = false;
  const rows = r.body.workers.map((w) => {
    const tr = document.createElement('tr');
    for (const text of [w.id, w.devices.map((d) => d.name).join(', '), w.models.map((m) => `${m.name} (${m.hash.slice(0, 8)})`).join(', '), w.running.map((j) => j.jobId.slice(0, 9)).join(', ') || 'idle', String(w.completed)]) {
      const td = document.createElement('td');
      td.textContent = text;
      tr.append(td);
    }
    return tr;
  });
  $('#fleet-workers tbody').replaceChildren(...rows);
  $('#fleet-queues').textContent = r.body.workers.length === 0
    ? 'No live worker: start one with asgd worker --queue ...'
    : r.body.queues.map((q) => `${q.model ?? q.queue}: ${(q.counts['wait'] ?? 0) + (q.counts['prioritized'] ?? 0) + (q.counts['delayed'] ?? 0)} waiting, ${q.counts['active'] ?? 0} running, ${q.counts['completed'] ?? 0} done`).join(' · ');
}

// ---------- start ----------

async function main(): Promise<void> {
  const [doc, m, d] = await Promise.all([
    api<{ paths: Record<string, Record<string, { requestBody?: { content: Record<string, { schema: Schema }> } }>> }>('/openapi.json'),
    api<{ models: typeof models }>('/models'),
    api<{ deviceSet: string }>('/devices'),
  ]);
  schema = doc.body.paths['/api/v1/jobs']!['post']!.requestBody!.content['application/json']!.schema;
  const upscalePath = Object.keys(doc.body.paths).find((p) => p.endsWith('/upscale'));
  upscaleSchema = (upscalePath && doc.body.paths[upscalePath]!['post']?.requestBody?.content['application/json']?.schema) || {};
  models = m.body.models;
  $('#devices').innerHTML = `devices: <b>${d.body.deviceSet.replace(/</g, '&lt;')}</b> · <span id="busy">idle</span>`;
  buildForm();
  restoreForm();
  showModelSizes();
  const form = $<HTMLFormElement>('#form');
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    quietly(submit());
  });
  form.addEventListener('input', () => {
    saveForm();
    scheduleEstimate();
  });
  form.addEventListener('change', (e) => {
    if ((e.target as HTMLElement).id === 'f-model') showModelSizes();
    if ((e.target as HTMLElement).id !== 'f-size' && ['width', 'height'].includes((e.target as HTMLInputElement).name)) ($('#f-size') as HTMLSelectElement).value = '';
  });
  document.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) {
      e.preventDefault();
      quietly(submit());
    }
  });
  $('#compare-button').addEventListener('click', () => quietly(submitCompare()));
  $('#cancel').addEventListener('click', () => {
    const id = watching?.id;
    quietly((id ? api(`/jobs/${id}`, { method: 'DELETE' }) : Promise.resolve()).then(refreshJobs));
  });
  setupViewer();
  $<HTMLInputElement>('#upload').addEventListener('change', (e) => {
    const input = e.target as HTMLInputElement;
    const file = input.files?.[0];
    input.value = '';
    if (file) quietly(uploadPicture(file));
  });
  document.addEventListener('dragover', (e) => {
    e.preventDefault();
    document.body.classList.add('dragging');
  });
  document.addEventListener('dragleave', () => document.body.classList.remove('dragging'));
  document.addEventListener('drop', (e) => {
    e.preventDefault();
    document.body.classList.remove('dragging');
    const file = e.dataTransfer?.files[0];
    if (file) quietly(onDrop(file));
  });
  scheduleEstimate();
  await refreshJobs();
  await refreshGallery();
  if (doc.body.paths['/api/v1/fleet']) {
    await refreshFleet().catch(() => undefined);
    setInterval(() => quietly(refreshFleet()), 2000);
  }
  document.body.dataset['ready'] = 'true';
  // The server may restart: polling goes on, and the header says when it cannot be reached.
  setInterval(() => {
    refreshJobs().then(
      () => $('#devices').classList.remove('offline'),
      () => $('#devices').classList.add('offline'),
    );
  }, 1000);
}

void main();
