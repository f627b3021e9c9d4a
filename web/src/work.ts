/** What runs now (progress over Server-Sent Events, the devices), the queue, and the last finished job. */
import { $, api, apiUrl, button, quietly, type Job, type Progress } from './api.ts';
import { scheduleEstimate, setLastSeed } from './form.ts';
import { refreshGallery } from './gallery.ts';

let watching: { id: string; source: EventSource; revision: number } | undefined;
export let jobs: Job[] = [];

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
  // The same job: keep its stream, unless the browser gave it up (an error answer, e.g. a 503 while the server closed).
  if (watching && watching.id === job?.id && watching.source.readyState !== EventSource.CLOSED) return;
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
      if (j.state === 'completed' && j.spec.settings['seed'] !== undefined) setLastSeed(String(j.spec.settings['seed']));
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
  for (const j of queued) {
    // A job moves among those of its own lane (a fleet has one per model; lanes run side by side).
    const lane = queued.filter((q) => q.lane === j.lane);
    const i = lane.indexOf(j);
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
    down.disabled = i === lane.length - 1;
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
export async function refreshJobs(): Promise<void> {
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

/** Cancels the job whose progress is shown, if any. */
export async function cancelRunning(): Promise<void> {
  if (watching) await api(`/jobs/${watching.id}`, { method: 'DELETE' });
  await refreshJobs();
}
