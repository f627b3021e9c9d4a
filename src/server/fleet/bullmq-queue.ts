/**
 * The JobQueue of `asgd serve --queue redis://...`: jobs live in BullMQ (one queue per model, by content hash),
 * workers on any machine run them (worker.ts), and this side adds, lists, reorders, cancels and relays events.
 * Nothing is kept only in this process: a restarted server finds the queue and the history in Redis.
 */
import { Queue, QueueEvents, type Job } from 'bullmq';
import type { Redis, RedisOptions } from 'ioredis';
import { DEFAULT_METHOD } from '../../core/options/registry.ts';
import { randomSeed } from '../../core/params.ts';
import { QueueError } from '../local-queue.ts';
import type { JobEvent, JobQueue, JobRecord, JobSpec } from '../queue.ts';
import { bullConnection } from './connection.ts';
import type { FleetEngine } from './fleet-engine.ts';
import { jobIdFor, toRecord, type FleetJobData, type FleetJobResult } from './job-data.ts';
import { CANCELLED_REASON, JOB_OPTIONS, NEW_JOB_PRIORITY, REORDERED_BASE, fleetKeys, queueNameFor } from './settings.ts';

type BullJob = Job<FleetJobData, FleetJobResult>;

export interface BullQueueOptions {
  connection: RedisOptions;
  /** A client for the fleet's own keys. */
  redis: Redis;
  prefix: string;
  engine: FleetEngine;
}

interface Listener {
  fn: (e: JobEvent) => void;
  ready: boolean;
}

/** Events kept per watched job, for Last-Event-ID resume. */
const EVENTS_KEPT = 1024;
/** Finished jobs listed per queue and state. */
const FINISHED_LISTED = 1000;
/** How long a job's events are still kept after its last listener left. */
const WATCH_AFTER_DROP_MS = 5 * 60_000;
const QUEUED_STATES = ['wait', 'prioritized', 'delayed', 'waiting-children', 'waiting'];
const RELAYED = ['added', 'waiting', 'active', 'progress', 'completed', 'failed', 'removed', 'stalled', 'delayed', 'priority'] as const;

export class BullJobQueue implements JobQueue {
  private readonly queues = new Map<string, { queue: Queue<FleetJobData, FleetJobResult>; events: QueueEvents }>();
  private readonly keys: ReturnType<typeof fleetKeys>;
  private readonly listeners = new Map<string, Set<Listener>>();
  private readonly kept = new Map<string, JobEvent[]>();
  private readonly chains = new Map<string, Promise<void>>();
  /** Jobs whose events are kept although nobody listens now (a client dropped and may resume). */
  private readonly watchedUntil = new Map<string, number>();
  private closed = false;

  constructor(private readonly o: BullQueueOptions) {
    this.keys = fleetKeys(o.prefix);
  }

  /** Opens the queues that already hold jobs (their events start flowing). */
  async start(): Promise<void> {
    for (const name of await this.o.redis.smembers(this.keys.queues)) this.open(name);
    await Promise.all([...this.queues.values()].map((q) => q.events.waitUntilReady()));
  }

  private open(name: string): { queue: Queue<FleetJobData, FleetJobResult>; events: QueueEvents } {
    const had = this.queues.get(name);
    if (had) return had;
    const queue = new Queue<FleetJobData, FleetJobResult, string, FleetJobData, FleetJobResult, string>(name, { connection: bullConnection(this.o.connection), prefix: this.o.prefix });
    // Reading events blocks: that connection waits out an outage (BullMQ requires it), the queue's own fails fast.
    const events = new QueueEvents(name, { connection: bullConnection({ ...this.o.connection, maxRetriesPerRequest: null }), prefix: this.o.prefix });
    queue.on('error', () => undefined);
    events.on('error', () => undefined);
    for (const type of RELAYED) {
      events.on(type as 'progress', (args: { jobId: string; data?: unknown }, id: string) => this.relay(name, type, args.jobId, args.data, id));
    }
    const q = { queue, events };
    this.queues.set(name, q);
    return q;
  }

  /**
   * The job and its state. The state is read first: states only move forward, so the job's fields read after it
   * are at least as new (a 'failed' state always comes with its reason, 'completed' with its return value).
   */
  private async find(id: string): Promise<{ job: BullJob; state: string } | undefined> {
    for (const { queue } of this.queues.values()) {
      const state = await queue.getJobState(id);
      if (state === 'unknown') continue;
      const job = (await queue.getJob(id)) as BullJob | undefined;
      if (job) return { job, state };
    }
    return undefined;
  }

  private async record(id: string): Promise<JobRecord | undefined> {
    const found = await this.find(id);
    if (found) return toRecord(found.job, found.state);
    const cancelled = await this.o.redis.hget(this.keys.cancelled, id);
    return cancelled ? (JSON.parse(cancelled) as JobRecord) : undefined;
  }

  async add(spec: JobSpec): Promise<JobRecord> {
    const settings = { ...spec.settings };
    if (settings['seed'] === undefined) settings['seed'] = randomSeed().toString();
    const size = spec.kind === 'generate' ? { width: settings['width'] as number | undefined, height: settings['height'] as number | undefined } : spec.size;
    const model = await this.o.engine.route(spec.model, String(settings['method'] ?? DEFAULT_METHOD), size);
    const full: JobSpec = { kind: spec.kind, model: model.name, settings, ...(spec.size ? { size: spec.size } : {}) };
    const id = jobIdFor(full, model.hash, { width: model.nativeWidth ?? 512, height: model.nativeHeight ?? 512 });
    const name = queueNameFor(model.hash);
    const { queue } = this.open(name);
    await this.o.redis.sadd(this.keys.queues, name);
    const existing = await this.find(id);
    if (existing) {
      // The same job again: its record (and output, once it has one). A failed or cancelled one runs again.
      if (existing.state !== 'failed') return toRecord(existing.job, existing.state);
      await this.o.redis.del(`${this.keys.cancelChannel}:${id}`);
      await existing.job.retry('failed');
      const again = await this.find(id);
      return toRecord(again!.job, again!.state);
    }
    await this.o.redis.multi().hdel(this.keys.cancelled, id).del(`${this.keys.cancelChannel}:${id}`).exec();
    const data: FleetJobData = { spec: full, modelHash: model.hash, createdAt: new Date().toISOString() };
    // BullMQ adds nothing when a job with this id exists (a race with another submission of the same settings).
    const job = (await queue.add(spec.kind, data, { ...JOB_OPTIONS, jobId: id, priority: NEW_JOB_PRIORITY })) as BullJob;
    return toRecord(job, await job.getState());
  }

  async get(id: string): Promise<JobRecord | undefined> {
    return this.record(id);
  }

  /** The queued jobs of one queue in the order they will run. */
  private async queued(queue: Queue<FleetJobData, FleetJobResult>): Promise<BullJob[]> {
    const [wait, prioritized, delayed] = await Promise.all([
      queue.getJobs(['wait'], 0, -1, true), queue.getJobs(['prioritized'], 0, -1, true), queue.getJobs(['delayed'], 0, -1, true),
    ]);
    return [...wait, ...prioritized, ...delayed] as BullJob[];
  }

  async list(options: { finished?: number } = {}): Promise<JobRecord[]> {
    const running: JobRecord[] = [];
    const queued: JobRecord[] = [];
    const done: JobRecord[] = [];
    // Each queue's newest n of each kind hold the newest n overall.
    const n = Math.min(options.finished ?? FINISHED_LISTED, FINISHED_LISTED);
    for (const { queue } of this.queues.values()) {
      const [active, q, completed, failed] = await Promise.all([
        queue.getJobs(['active'], 0, -1, true), this.queued(queue),
        n > 0 ? queue.getJobs(['completed'], 0, n - 1, false) : [], n > 0 ? queue.getJobs(['failed'], 0, n - 1, false) : [],
      ]);
      running.push(...active.map((j) => toRecord(j as BullJob, 'active')));
      queued.push(...q.map((j) => toRecord(j, 'waiting')));
      done.push(...completed.map((j) => toRecord(j as BullJob, 'completed')), ...failed.map((j) => toRecord(j as BullJob, 'failed')));
    }
    const cancelled = Object.values(await this.o.redis.hgetall(this.keys.cancelled)).map((v) => JSON.parse(v) as JobRecord);
    done.push(...cancelled);
    done.sort((a, b) => (b.finishedAt ?? '').localeCompare(a.finishedAt ?? ''));
    return [...running, ...queued, ...done.slice(0, options.finished ?? done.length)];
  }

  async move(id: string, index: number): Promise<JobRecord[]> {
    const found = await this.find(id);
    if (!found) throw new QueueError('No such job', 404);
    if (!QUEUED_STATES.includes(found.state)) throw new QueueError(`The job is not queued (it is ${toRecord(found.job, found.state).state})`, 409);
    const { queue } = this.open(found.job.queueName);
    const order = (await this.queued(queue)).filter((j) => j.id !== id);
    order.splice(Math.max(0, Math.min(index, order.length)), 0, found.job);
    // Each queued job gets its position as its priority; a job taken meanwhile by a worker is skipped.
    for (const [i, j] of order.entries()) await j.changePriority({ priority: REORDERED_BASE + i }).catch(() => undefined);
    return (await this.queued(queue)).map((j) => toRecord(j, 'waiting'));
  }

  async cancel(id: string): Promise<JobRecord | undefined> {
    const found = await this.find(id);
    if (!found) return this.record(id);
    if (QUEUED_STATES.includes(found.state)) {
      try {
        await found.job.remove();
        const r = toRecord(found.job, 'waiting');
        const rec: JobRecord = { ...r, state: 'cancelled', finishedAt: new Date().toISOString() };
        await this.o.redis.hset(this.keys.cancelled, id, JSON.stringify(rec));
        this.relay(found.job.queueName, 'removed', id, undefined, undefined, rec);
        return rec;
      } catch {
        // Taken by a worker meanwhile: cancel it as a running job.
      }
    }
    if ((await found.job.getState()) !== 'active') return this.record(id);
    // The worker running it learns at once (pub/sub) or at its next progress update (the key), and stops within
    // one model call; the job fails as cancelled, with no retry.
    await this.o.redis.multi().set(`${this.keys.cancelChannel}:${id}`, '1', 'EX', 24 * 3600).publish(this.keys.cancelChannel, id).exec();
    const t0 = Date.now();
    for (;;) {
      const r = await this.record(id);
      if (!r || r.state !== 'running' || Date.now() - t0 > 30_000) return r;
      await new Promise((res) => setTimeout(res, 20));
    }
  }

  async remove(id: string): Promise<boolean> {
    const r = await this.record(id);
    if (!r) return false;
    if (r.state === 'queued' || r.state === 'running') await this.cancel(id);
    const found = await this.find(id);
    if (found) await found.job.remove().catch(() => undefined);
    await this.o.redis.multi().hdel(this.keys.cancelled, id).del(`${this.keys.cancelChannel}:${id}`).exec();
    this.kept.delete(id);
    return true;
  }

  subscribe(id: string, afterId: string | undefined, fn: (e: JobEvent) => void): () => void {
    const l: Listener = { fn, ready: false };
    let set = this.listeners.get(id);
    if (!set) this.listeners.set(id, (set = new Set()));
    set.add(l);
    this.chain(id, async () => {
      const kept = this.kept.get(id) ?? [];
      const first = kept[0];
      if (afterId && first && compareIds(afterId, first.id) >= 0 && compareIds(afterId, kept.at(-1)!.id) <= 0) {
        for (const e of kept) if (compareIds(e.id, afterId) > 0) l.fn(e);
      } else {
        const job = await this.record(id);
        if (job) l.fn({ id: kept.at(-1)?.id ?? '0-0', type: 'state', job });
      }
      l.ready = true;
    });
    return () => {
      set.delete(l);
      // A client that drops may come back with Last-Event-ID: the job's events are kept a while for it.
      this.watchedUntil.set(id, Date.now() + WATCH_AFTER_DROP_MS);
    };
  }

  /** Runs `step` after the job's earlier event steps: a job's events reach listeners in the order Redis sent them. */
  private chain(id: string, step: () => Promise<void>): void {
    const next = (this.chains.get(id) ?? Promise.resolve()).then(step).catch(() => undefined);
    this.chains.set(id, next);
    void next.then(() => {
      if (this.chains.get(id) === next) this.chains.delete(id);
    });
  }

  private relay(_queue: string, type: string, jobId: string, data: unknown, streamId: string | undefined, known?: JobRecord): void {
    if (this.closed) return;
    if (!this.listeners.get(jobId)?.size) {
      const until = this.watchedUntil.get(jobId);
      if (until === undefined) return;
      if (until < Date.now()) {
        this.watchedUntil.delete(jobId);
        this.kept.delete(jobId);
        return;
      }
    }
    this.chain(jobId, async () => {
      let e: JobEvent;
      const id = streamId ?? `${Date.now()}-0`;
      if (type === 'progress') {
        e = { id, type: 'progress', jobId, progress: data as JobRecord['progress'] & object };
      } else {
        const job = known ?? (await this.record(jobId));
        if (!job) return;
        e = { id, type: 'state', job };
      }
      let kept = this.kept.get(jobId);
      if (!kept) this.kept.set(jobId, (kept = []));
      kept.push(e);
      if (kept.length > EVENTS_KEPT) kept.splice(0, kept.length - EVENTS_KEPT);
      for (const l of this.listeners.get(jobId) ?? []) {
        if (!l.ready) continue;
        try {
          l.fn(e);
        } catch {
          this.listeners.get(jobId)?.delete(l);
        }
      }
      if (e.type === 'state' && ['completed', 'failed', 'cancelled'].includes(e.job.state)) {
        // A finished job's events are kept a minute for late resumes, then dropped.
        setTimeout(() => {
          if (!this.listeners.get(jobId)?.size) {
            this.kept.delete(jobId);
            this.watchedUntil.delete(jobId);
          }
        }, 60_000).unref();
      }
    });
  }

  /** The server runs no jobs: workers do (`asgd worker`). */
  process(): void {}

  /** How many jobs wait, run and are done, per queue (model). */
  async depths(): Promise<{ queue: string; counts: Record<string, number> }[]> {
    return Promise.all([...this.queues.entries()].map(async ([name, { queue }]) => ({
      queue: name,
      counts: await queue.getJobCounts('wait', 'prioritized', 'delayed', 'active', 'completed', 'failed'),
    })));
  }

  async close(): Promise<void> {
    this.closed = true;
    await Promise.all([...this.queues.values()].map(async (q) => {
      await q.events.close();
      await q.queue.close();
    }));
  }
}

/** Orders Redis stream ids (`ms-seq`). */
function compareIds(a: string, b: string): number {
  const [am = 0, as = 0] = a.split('-').map(Number);
  const [bm = 0, bs = 0] = b.split('-').map(Number);
  return am - bm || as - bs;
}

export { CANCELLED_REASON };
