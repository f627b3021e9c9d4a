/**
 * The page of `asgd serve`: a generate form built from the API's OpenAPI document (itself built from the
 * library's option registry), live progress over Server-Sent Events with a preview, the queue, and the gallery.
 * Plain TypeScript and the DOM: the page is small enough that a framework would not pay for itself.
 */
import { $, api, apiTokenGiven, quietly, type ModelEntry, type Schema } from './api.ts';
import { refreshFleet } from './fleet.ts';
import { buildForm, onDrop, restoreForm, saveForm, scheduleEstimate, setFormSchema, showModelSizes, submit, submitCompare } from './form.ts';
import { refreshGallery, setupViewer, uploadPicture } from './gallery.ts';
import { setUpscaleSchema } from './upscale.ts';
import { cancelRunning, refreshJobs } from './work.ts';

type OpenApi = { paths: Record<string, Record<string, { requestBody?: { content: Record<string, { schema: Schema }> } }>> };

/**
 * What the form is built from: the API's document, the models and the device set. Until they come the form says
 * why: loading; a server that needs its token (asks for it: the address `asgd serve` prints carries it); a server
 * that cannot be reached or fails (tried again every 2 s). The queue buttons wait for the form.
 */
async function startData(): Promise<[{ body: OpenApi }, { body: { models: ModelEntry[] } }, { body: { deviceSet: string } }]> {
  const message = $('#start-message');
  const buttons = [$<HTMLButtonElement>('#queue-button'), $<HTMLButtonElement>('#compare-button')];
  buttons.forEach((b) => (b.disabled = true));
  for (;;) {
    let failure: string;
    try {
      const got = await Promise.all([api<OpenApi>('/openapi.json'), api<{ models: ModelEntry[] }>('/models'), api<{ deviceSet: string }>('/devices')]);
      const bad = got.find((r) => r.status !== 200);
      if (!bad) {
        $('#start-status').remove();
        $('#advanced').hidden = false;
        buttons.forEach((b) => (b.disabled = false));
        return got as [{ body: OpenApi }, { body: { models: ModelEntry[] } }, { body: { deviceSet: string } }];
      }
      if (bad.status === 401) {
        askToken(apiTokenGiven());
        return new Promise(() => undefined);
      }
      const why = (bad.body as { message?: string } | undefined)?.message;
      failure = `The server answered ${bad.status}${why ? ` (${why})` : ''}`;
    } catch (err) {
      failure = `The server at ${location.host} cannot be reached (${err instanceof Error ? err.message : String(err)}); is \`asgd serve\` running?`;
    }
    message.textContent = `${failure}. Trying again...`;
    message.className = 'error';
    await new Promise((r) => setTimeout(r, 2000));
  }
}

/** The server requires a token: the page asks for it and opens itself again with it in the address. */
function askToken(given: boolean): void {
  const message = $('#start-message');
  message.className = 'error';
  message.textContent = given
    ? 'This token is not the server\'s. Enter the token `asgd serve` printed (the address it printed ends in ?token=...).'
    : 'This server needs its token: open the address `asgd serve` printed (it ends in ?token=...), or enter the token here.';
  $('#token-entry').hidden = false;
  const input = $<HTMLInputElement>('#token-input');
  const open = () => {
    const value = input.value.trim();
    if (!value) return;
    const url = new URL(location.href);
    url.searchParams.set('token', value);
    location.assign(url.toString());
  };
  $('#token-open').addEventListener('click', open);
  input.addEventListener('keydown', (e) => {
    if (e.key === 'Enter') {
      e.preventDefault();
      open();
    }
  });
  input.focus();
}

async function main(): Promise<void> {
  const [doc, m, d] = await startData();
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
