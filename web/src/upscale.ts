/** The viewer's upscale form: the settings, the server's estimate as they are typed, and queueing. */
import { $, api, describeCost, label, quietly, type Output, type Schema } from './api.ts';
import { viewing } from './gallery.ts';
import { refreshJobs } from './work.ts';

let upscaleSchema: Schema = {};

/** The upscale request's schema, from the API: its defaults and limits fill the form. */
export function setUpscaleSchema(s: Schema): void {
  upscaleSchema = s;
}

/** The viewer's upscale form for `o`: scale and strength at the API's defaults, the image's own prompt as the hint. */
export function resetUpscaleForm(o: Output): void {
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
export function cancelUpscaleEstimate(): void {
  clearTimeout(upscaleTimer);
}

export function scheduleUpscaleEstimate(): void {
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
export async function submitUpscale(closeViewer: () => void): Promise<void> {
  if (!viewing) return;
  const r = await api<{ message?: string; field?: string }>(`/outputs/${encodeURIComponent(viewing.name)}/upscale`, { method: 'POST', body: JSON.stringify(upscaleBody()) });
  if (r.status !== 202) {
    $('#upscale-error').textContent = refusal(r);
    return;
  }
  closeViewer();
  await refreshJobs();
}
