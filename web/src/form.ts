/** The generate form: built from the API's schema, read and checked, queued, estimated, saved, and filled from images. */
import { $, api, button, describeCost, label, quietly, type Metadata, type ModelEntry, type Schema } from './api.ts';
import { uploadPicture } from './gallery.ts';
import { readDroppedParameters, UnsupportedImage, type ParameterFormat } from './parameters.ts';
import { refreshJobs } from './work.ts';

const TOP_FIELDS = ['prompt', 'negativePrompt', 'model', 'size', 'width', 'height', 'method', 'steps', 'guidanceScale', 'scheduler', 'seed'];
const STORAGE_KEY = 'asgd.form';
let schema: Schema = {};
let models: ModelEntry[] = [];
let lastSeed: string | undefined;

/** The generation request's schema and the models, from the API: set before the form is built. */
export function setFormSchema(s: Schema, m: ModelEntry[]): void {
  schema = s;
  models = m;
}

/** The seed of the last image, for "Reuse last" (a job that completed). */
export function setLastSeed(seed: string): void {
  lastSeed = seed;
}
const fieldSchemas = new Map<string, Schema>();

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
export function showModelSizes(): void {
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

export function buildForm(): void {
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
export async function submitCompare(): Promise<void> {
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

export async function submit(): Promise<void> {
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
export function scheduleEstimate(): void {
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

export function saveForm(): void {
  const values: Record<string, string | boolean> = {};
  for (const name of fieldSchemas.keys()) {
    const el = document.querySelector<HTMLInputElement>(`[name="${name}"]`)!;
    values[name] = el.type === 'checkbox' ? el.checked : el.value;
  }
  localStorage.setItem(STORAGE_KEY, JSON.stringify({ values, lastSeed }));
}

export function restoreForm(): void {
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

export function setForm(m: Metadata, seedOnly: boolean): void {
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
export async function onDrop(file: File): Promise<void> {
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
