/** The fleet panel (asgd serve --queue): the live workers and each model's queue. */
import { $, api } from './api.ts';

interface FleetStatus {
  workers: { id: string; host: string; devices: { name: string }[]; models: { name: string; hash: string }[]; running: { jobId: string }[]; completed: number }[];
  queues: { queue: string; model?: string; counts: Record<string, number> }[];
}

/** The live workers (devices, models, what each runs) and each model's queue depth; built with text, not HTML. */
export async function refreshFleet(): Promise<void> {
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
