/** The gallery, the viewer (pan and zoom, the metadata, the actions) and the side-by-side comparison. */
import { $, api, apiUrl, quietly, type Job, type Output } from './api.ts';
import { setForm } from './form.ts';
import { cancelUpscaleEstimate, resetUpscaleForm, scheduleUpscaleEstimate, submitUpscale } from './upscale.ts';
import { jobs } from './work.ts';

let outputs: Output[] = [];
export let viewing: Output | undefined;

export async function refreshGallery(): Promise<void> {
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
export async function uploadPicture(file: File): Promise<void> {
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

export function setupViewer(): void {
  $('#compare-slider').addEventListener('input', applySplit);
  $('#close-compare').addEventListener('click', () => $<HTMLDialogElement>('#comparer').close());
  $('#compare').addEventListener('click', () => {
    const current = viewing;
    const partner = current && partnerOf(current);
    if (!current || !partner) return;
    $<HTMLDialogElement>('#viewer').close();
    openCompare(current, partner);
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
  // However it closes (a button, Escape): nothing viewed, no estimate pending for what was (it may be deleted).
  $('#viewer').addEventListener('close', () => {
    viewing = undefined;
    cancelUpscaleEstimate();
  });
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
