/**
 * The page of `asgd serve`: a generate form built from the API's OpenAPI document (itself built from the
 * library's option registry), live progress over Server-Sent Events with a preview, the queue, and the gallery.
 * Plain TypeScript and the DOM: the page is small enough that a framework would not pay for itself.
 */
import { $, api, quietly, type ModelEntry, type Schema } from './api.ts';
import { refreshFleet } from './fleet.ts';
import { buildForm, onDrop, restoreForm, saveForm, scheduleEstimate, setFormSchema, showModelSizes, submit, submitCompare } from './form.ts';
import { refreshGallery, setupViewer, uploadPicture } from './gallery.ts';
import { setUpscaleSchema } from './upscale.ts';
import { cancelRunning, refreshJobs } from './work.ts';

async function main(): Promise<void> {
  const [doc, m, d] = await Promise.all([
    api<{ paths: Record<string, Record<string, { requestBody?: { content: Record<string, { schema: Schema }> } }>> }>('/openapi.json'),
    api<{ models: ModelEntry[] }>('/models'),
    api<{ deviceSet: string }>('/devices'),
  ]);
  setFormSchema(doc.body.paths['/api/v1/jobs']!['post']!.requestBody!.content['application/json']!.schema, m.body.models);
  const upscalePath = Object.keys(doc.body.paths).find((p) => p.endsWith('/upscale'));
  setUpscaleSchema((upscalePath && doc.body.paths[upscalePath]!['post']?.requestBody?.content['application/json']?.schema) || {});
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
  $('#cancel').addEventListener('click', () => quietly(cancelRunning()));
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
