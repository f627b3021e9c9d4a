/**
 * The in-process JobQueue: FIFO with reorder and remove, one running job per lane (device set), and the whole
 * queue persisted to one JSON file after every change, written atomically (temp file, fsync, rename), so a
 * restart loses nothing. A job that was running when the process died is queued again at the front; the
 * processor makes that safe by naming the output after the job and not running a job whose output exists. A job
 * the process died under more than MAX_INTERRUPTIONS times fails instead: it is probably what kills it (out of
 * memory), and would otherwise take the server down at every start.
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { JobContext, JobEvent, JobProcessor, JobProgress, JobQueue, JobRecord, JobSpec } from './queue.ts';

const FILE_VERSION = 1;
/** Events kept per job for Last-Event-ID resume. */
const EVENTS_KEPT = 4096;
/**
 * Events kept once a job has finished: the last few, for a client resuming just before the end; one resuming from
 * earlier gets a snapshot of the finished job. Without this, every finished job held up to EVENTS_KEPT events.
 */
const FINISHED_EVENTS_KEPT = 16;
/** Finished jobs kept (the history GET /api/v1/jobs lists); the oldest are forgotten, their outputs stay. As the fleet's. */
const FINISHED_KEPT = 1000;
/** Deaths of the process under one job after which it fails rather than runs again (the fleet's MAX_STALLED_COUNT). */
const MAX_INTERRUPTIONS = 2;

interface StateFile {
  version: number;
  /** Incremented at every start: event ids of an earlier run do not resume into this one. */
  epoch: number;
  /** Queued job ids in the order they run. */
  order: string[];
  jobs: JobRecord[];
  /** Per job id, how many times the process died while the job ran (absent: never). */
  interrupted?: Record<string, number>;
}

interface Running {
  controller: AbortController;
  settled: Promise<void>;
}

export interface LocalQueueOptions {
  /** Folder of the state file (queue.json); created when missing. */
  dir: string;
  /** The lane of jobs added without one. */
  defaultLane?: string;
  /** Finished jobs kept in the history (default 1000); the oldest are forgotten as new ones finish. */
  finishedKept?: number;
}

const FINAL = new Set(['completed', 'failed', 'cancelled']);

export class LocalJobQueue implements JobQueue {
  private readonly file: string;
  private readonly jobs = new Map<string, JobRecord>();
  private order: string[] = [];
  private readonly epoch: number;
  private seq = 0;
  private readonly events = new Map<string, JobEvent[]>();
  /** The last event id (seq) no longer kept, per job. */
  private readonly dropped = new Map<string, number>();
  /** How many times the process died while each job ran (persisted; see MAX_INTERRUPTIONS). */
  private readonly interrupted = new Map<string, number>();
  private readonly listeners = new Map<string, Set<(e: JobEvent) => void>>();
  private readonly running = new Map<string, Running>();
  private readonly busyLanes = new Set<string>();
  private processor?: JobProcessor;
  private closing = false;
  private readonly defaultLane: string;
  private readonly finishedKept: number;

  constructor(options: LocalQueueOptions) {
    this.defaultLane = options.defaultLane ?? 'default';
    this.finishedKept = options.finishedKept ?? FINISHED_KEPT;
    fs.mkdirSync(options.dir, { recursive: true });
    this.file = path.join(options.dir, 'queue.json');
    const saved = readState(this.file);
    this.epoch = (saved?.epoch ?? 0) + 1;
    if (saved) {
      for (const j of saved.jobs) this.jobs.set(j.id, j);
      for (const [id, n] of Object.entries(saved.interrupted ?? {})) if (this.jobs.has(id)) this.interrupted.set(id, n);
      const interrupted: string[] = [];
      for (const j of saved.jobs.filter((j) => j.state === 'running')) {
        const times = (this.interrupted.get(j.id) ?? 0) + 1;
        this.interrupted.set(j.id, times);
        delete j.progress;
        if (times > MAX_INTERRUPTIONS) {
          j.error = { message: `The server stopped without finishing this job ${times} times (it may need more memory than this machine has); it is not run again. Queue it again to retry`, kind: 'interrupted' };
          j.state = 'failed';
          j.finishedAt = new Date().toISOString();
          this.interrupted.delete(j.id);
        } else {
          j.state = 'queued';
          interrupted.push(j.id);
        }
      }
      this.order = [...interrupted, ...saved.order.filter((id) => this.jobs.get(id)?.state === 'queued' && !interrupted.includes(id))];
    }
    this.persist();
  }

  async add(spec: JobSpec, lane?: string): Promise<JobRecord> {
    const job: JobRecord = {
      id: randomBytes(8).toString('hex'),
      spec,
      state: 'queued',
      lane: lane ?? this.defaultLane,
      createdAt: new Date().toISOString(),
      attempts: 0,
    };
    this.jobs.set(job.id, job);
    this.order.push(job.id);
    this.persist();
    this.emitState(job);
    this.pump();
    return clone(job);
  }

  async get(id: string): Promise<JobRecord | undefined> {
    const j = this.jobs.get(id);
    return j && clone(j);
  }

  async list(options: { finished?: number } = {}): Promise<JobRecord[]> {
    const all = [...this.jobs.values()];
    const running = all.filter((j) => j.state === 'running');
    const queued = this.order.map((id) => this.jobs.get(id)!);
    const done = this.finishedNewestFirst();
    return [...running, ...queued, ...done.slice(0, options.finished ?? done.length)].map(clone);
  }

  private finishedNewestFirst(): JobRecord[] {
    return [...this.jobs.values()].filter((j) => FINAL.has(j.state)).sort((a, b) => (b.finishedAt ?? '').localeCompare(a.finishedAt ?? ''));
  }

  async move(id: string, index: number): Promise<JobRecord[]> {
    const from = this.order.indexOf(id);
    if (from < 0) throw new QueueError(this.jobs.has(id) ? 'The job is not queued' : 'No such job', this.jobs.has(id) ? 409 : 404);
    const lane = this.jobs.get(id)!.lane;
    this.order.splice(from, 1);
    const others = this.order.filter((i) => this.jobs.get(i)!.lane === lane);
    const before = others[Math.max(0, Math.min(index, others.length))];
    this.order.splice(before === undefined ? this.order.length : this.order.indexOf(before), 0, id);
    this.persist();
    return this.order.filter((i) => this.jobs.get(i)!.lane === lane).map((i) => clone(this.jobs.get(i)!));
  }

  async cancel(id: string): Promise<JobRecord | undefined> {
    const j = this.jobs.get(id);
    if (!j) return undefined;
    if (j.state === 'queued') {
      this.order = this.order.filter((i) => i !== id);
      this.finish(j, 'cancelled');
    } else if (j.state === 'running') {
      const r = this.running.get(id)!;
      r.controller.abort('cancel');
      await r.settled;
    }
    return clone(j);
  }

  async remove(id: string): Promise<boolean> {
    const j = this.jobs.get(id);
    if (!j) return false;
    if (!FINAL.has(j.state)) await this.cancel(id);
    this.forget(id);
    this.persist();
    return true;
  }

  private forget(id: string): void {
    this.jobs.delete(id);
    this.interrupted.delete(id);
    this.events.delete(id);
    this.dropped.delete(id);
  }

  subscribe(id: string, afterId: string | undefined, listener: (e: JobEvent) => void): () => void {
    const job = this.jobs.get(id);
    if (!job) throw new QueueError('No such job', 404);
    const kept = this.events.get(id) ?? [];
    const after = parseEventId(afterId);
    const resumable = after && after.epoch === this.epoch && after.seq >= (this.dropped.get(id) ?? 0);
    const replayed = resumable ? kept.filter((e) => parseEventId(e.id)!.seq > after.seq) : [];
    for (const e of replayed) listener(e);
    // Nothing to replay of a finished job (a client reconnecting after its final event): that final state again, so
    // the stream ends instead of staying open for events that never come.
    if (!resumable || (replayed.length === 0 && FINAL.has(job.state))) {
      // A fresh subscriber (or one from before a restart) starts from a snapshot of the job, then what follows.
      const lastId = kept.at(-1)?.id ?? `${this.epoch}-0`;
      listener({ id: lastId, type: 'state', job: clone(job) });
    }
    let set = this.listeners.get(id);
    if (!set) this.listeners.set(id, (set = new Set()));
    set.add(listener);
    return () => {
      set.delete(listener);
    };
  }

  process(processor: JobProcessor): void {
    this.processor = processor;
    this.pump();
  }

  async close(): Promise<void> {
    this.closing = true;
    for (const r of this.running.values()) r.controller.abort('shutdown');
    await Promise.all([...this.running.values()].map((r) => r.settled));
    this.persist();
  }

  private pump(): void {
    if (!this.processor || this.closing) return;
    for (const id of [...this.order]) {
      const j = this.jobs.get(id)!;
      if (this.busyLanes.has(j.lane)) continue;
      this.start(j, this.processor);
    }
  }

  private start(job: JobRecord, processor: JobProcessor): void {
    this.order = this.order.filter((i) => i !== job.id);
    this.busyLanes.add(job.lane);
    job.state = 'running';
    job.startedAt = new Date().toISOString();
    job.attempts += 1;
    job.progress = { phase: 'load', stage: 1, step: 0, totalSteps: 0, unitsDone: 0, unitsTotal: 0, previewRevision: 0 };
    this.persist();
    this.emitState(job);
    const controller = new AbortController();
    let firstUnits: { t: number; units: number } | undefined;
    const ctx: JobContext = {
      signal: controller.signal,
      progress: (p) => {
        if (job.state !== 'running') return;
        const now = performance.now();
        let eta = p.etaSeconds;
        if (eta === undefined && p.unitsDone > 0) {
          firstUnits ??= { t: now, units: p.unitsDone };
          const done = p.unitsDone - firstUnits.units;
          const elapsed = (now - firstUnits.t) / 1000;
          if (done > 0) eta = ((p.unitsTotal - p.unitsDone) * elapsed) / done;
        }
        job.progress = { ...p, etaSeconds: eta === undefined ? undefined : Math.round(eta * 10) / 10, previewRevision: job.progress?.previewRevision ?? 0 };
        this.emit(job.id, { id: this.nextId(), type: 'progress', jobId: job.id, progress: { ...job.progress } });
      },
      preview: () => {
        if (job.state !== 'running' || !job.progress) return;
        job.progress = { ...job.progress, previewRevision: job.progress.previewRevision + 1 };
        this.emit(job.id, { id: this.nextId(), type: 'progress', jobId: job.id, progress: { ...job.progress } });
      },
    };
    const settled = (async () => {
      try {
        const r = await processor(clone(job), ctx);
        job.output = r.output;
        if (r.warnings?.length) job.warnings = r.warnings;
        this.finish(job, 'completed');
      } catch (err) {
        const reason: unknown = controller.signal.reason;
        if (controller.signal.aborted && reason === 'shutdown') {
          // Interrupted by a shutdown: queued again at the front, to run when the server is back.
          job.state = 'queued';
          delete job.progress;
          this.order.unshift(job.id);
          this.persist();
          this.emitState(job);
        } else if (controller.signal.aborted) {
          this.finish(job, 'cancelled');
        } else {
          const e = err as { message?: string; kind?: string; parameter?: string };
          job.error = { message: e?.message ?? String(err), ...(e?.kind ? { kind: e.kind } : {}), ...(e?.parameter ? { parameter: e.parameter } : {}) };
          this.finish(job, 'failed');
        }
      } finally {
        this.running.delete(job.id);
        this.busyLanes.delete(job.lane);
        this.pump();
      }
    })();
    this.running.set(job.id, { controller, settled });
  }

  private finish(job: JobRecord, state: 'completed' | 'failed' | 'cancelled'): void {
    job.state = state;
    this.interrupted.delete(job.id);
    job.finishedAt = new Date().toISOString();
    const earlier = this.finishedNewestFirst().filter((j) => j !== job);
    for (const old of earlier.slice(Math.max(0, this.finishedKept - 1))) this.forget(old.id);
    this.persist();
    this.emitState(job);
    this.trimEvents(job.id, FINISHED_EVENTS_KEPT);
  }

  /** Keeps the last `keep` events of a job; a subscriber resuming from an earlier one gets a snapshot instead. */
  private trimEvents(jobId: string, keep: number): void {
    const kept = this.events.get(jobId);
    if (!kept || kept.length <= keep) return;
    const gone = kept.splice(0, kept.length - keep);
    this.dropped.set(jobId, parseEventId(gone.at(-1)!.id)!.seq);
  }

  private nextId(): string {
    this.seq += 1;
    return `${this.epoch}-${this.seq}`;
  }

  private emitState(job: JobRecord): void {
    this.emit(job.id, { id: this.nextId(), type: 'state', job: clone(job) });
  }

  private emit(jobId: string, e: JobEvent): void {
    let kept = this.events.get(jobId);
    if (!kept) this.events.set(jobId, (kept = []));
    kept.push(e);
    this.trimEvents(jobId, EVENTS_KEPT);
    for (const l of this.listeners.get(jobId) ?? []) {
      // A listener's failure (a client gone) must not reach the job.
      try {
        l(e);
      } catch {
        this.listeners.get(jobId)?.delete(l);
      }
    }
  }

  /** Writes the state file atomically: a reader (or a restart) sees the old file or the new one, never a mix. */
  private persist(): void {
    const state: StateFile = {
      version: FILE_VERSION, epoch: this.epoch, order: this.order, jobs: [...this.jobs.values()].map((j) => ({ ...j, progress: undefined })),
      ...(this.interrupted.size ? { interrupted: Object.fromEntries(this.interrupted) } : {}),
    };
    const tmp = `${this.file}.${process.pid}.tmp`;
    const fd = fs.openSync(tmp, 'w');
    try {
      fs.writeSync(fd, JSON.stringify(state));
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    fs.renameSync(tmp, this.file);
  }
}

export class QueueError extends Error {
  constructor(message: string, readonly status: number) {
    super(message);
  }
}

function readState(file: string): StateFile | undefined {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
  const s = JSON.parse(text) as StateFile;
  if (s.version !== FILE_VERSION || !Array.isArray(s.jobs) || !Array.isArray(s.order)) {
    throw new Error(`${file} is not a queue state file of version ${FILE_VERSION}`);
  }
  return s;
}

function parseEventId(id: string | undefined): { epoch: number; seq: number } | undefined {
  const m = id ? /^(\d+)-(\d+)$/.exec(id) : null;
  return m ? { epoch: Number(m[1]), seq: Number(m[2]) } : undefined;
}

function clone(j: JobRecord): JobRecord {
  return structuredClone(j);
}

export type { JobProgress };
