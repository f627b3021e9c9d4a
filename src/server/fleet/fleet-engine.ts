/**
 * The server's view of the fleet's engines: `asgd serve --queue` runs no model itself. Models are the ones workers
 * have advertised, devices are the live workers' devices; both are refreshed from Redis every second, so the
 * synchronous Engine calls the routes make answer from memory.
 */
import type { Redis } from 'ioredis';
import type { DeviceEntry, Engine, ModelEntry } from '../engine.ts';
import { checkPrompt } from '../../core/generation/check.ts';
import { ClipTokenizer } from '../../core/text/clip-tokenizer.ts';
import { canRun, jobDemand, knownModels, liveWorkers, sharedTokenizer, type FleetModel, type WorkerBeat } from './directory.ts';
import { QueueError } from '../local-queue.ts';

export const REFRESH_MS = 1000;

export class FleetEngine implements Engine {
  readonly deviceSet = 'fleet';
  private known: FleetModel[] = [];
  private live: WorkerBeat[] = [];
  private timer?: NodeJS.Timeout;
  private refreshedAt = 0;
  /** Each model's CLIP tokenizer by content hash, as a worker shared it (directory.ts shareTokenizer). */
  private readonly tokenizers = new Map<string, ClipTokenizer>();

  constructor(private readonly redis: Redis, private readonly prefix: string) {}

  /** Reads the directory now (and then every second). */
  async start(): Promise<void> {
    await this.refresh();
    this.timer = setInterval(() => void this.refresh().catch(() => undefined), REFRESH_MS);
    this.timer.unref();
  }

  async refresh(): Promise<WorkerBeat[]> {
    const [known, live] = await Promise.all([knownModels(this.redis, this.prefix), liveWorkers(this.redis, this.prefix)]);
    // Tokenizers first: a worker shares its model's before it advertises the model, so a model known here has its
    // tokenizer here too, when its worker had one.
    for (const m of known) {
      if (this.tokenizers.has(m.hash)) continue;
      const files = await sharedTokenizer(this.redis, this.prefix, m.hash);
      // Not shared (a worker without a tokenizer folder): looked for again at the next refresh.
      if (files) this.tokenizers.set(m.hash, new ClipTokenizer(files, 'tokenizer'));
    }
    this.known = known;
    this.live = live;
    this.refreshedAt = Date.now();
    return live;
  }

  /**
   * The library's mask-word check with the tokenizer a worker shared for the model; without one the worker checks
   * (the job then fails there, naming the field).
   */
  checkMaskWords(model: string | undefined, prompt: string, maskWords: string[]): void {
    const hash = this.known.find((m) => m.name === model)?.hash;
    const tokenizer = hash === undefined ? undefined : this.tokenizers.get(hash);
    if (tokenizer) checkPrompt({ prompt, negativePrompt: '', maskWords }, tokenizer);
  }

  models(): ModelEntry[] {
    return this.known.map((m) => ({
      name: m.name,
      ...(m.nativeWidth ? { nativeWidth: m.nativeWidth, nativeHeight: m.nativeHeight } : {}),
      ...(m.schedulerConfig ? { schedulerConfig: m.schedulerConfig } : {}),
      // A worker from before these facts were advertised leaves them out: its jobs' settings are then checked
      // against the model where they run (the server checks what needs no model).
      ...(m.family ? { family: m.family } : {}),
      ...(m.latentChannels ? { latentChannels: m.latentChannels } : {}),
      ...(m.patchSize ? { patchSize: m.patchSize } : {}),
      ...(m.posEmbedMaxSize ? { posEmbedMaxSize: m.posEmbedMaxSize } : {}),
    }));
  }

  async devices(): Promise<DeviceEntry[]> {
    return this.live.flatMap((w) => w.devices.map((d) => ({ name: `${w.id}/${d.name}`, available: d.available, note: d.note })));
  }

  workers(): WorkerBeat[] {
    return this.live;
  }

  /**
   * The model a job goes to: the named one (or the first a live worker serves), and a live worker that can run
   * it at its size with its method. Throws a 409 naming what is missing when no live worker can.
   */
  async route(model: string | undefined, method: string, size: { width?: number; height?: number } | undefined): Promise<FleetModel> {
    // The directory as read within the last refresh period (heartbeats expire after 6 s anyway); read again
    // before refusing, so a worker that just joined is found.
    if (Date.now() - this.refreshedAt < REFRESH_MS) {
      try {
        return this.pick(this.live, model, method, size);
      } catch {
        // fall through to a fresh read
      }
    }
    return this.pick(await this.refresh(), model, method, size);
  }

  private pick(live: WorkerBeat[], model: string | undefined, method: string, size: { width?: number; height?: number } | undefined): FleetModel {
    const served = live.flatMap((w) => w.models);
    if (live.length === 0) throw new QueueError('No live worker: start one with `asgd worker --queue ...` (jobs are not queued while none can run them)', 409);
    const entry = model === undefined ? [...served].sort((a, b) => a.name.localeCompare(b.name))[0] : served.find((m) => m.name === model);
    if (!entry) {
      throw new QueueError(`No live worker serves model ${model}: expected one of ${[...new Set(served.map((m) => m.name))].join(', ')}`, 409);
    }
    // Two workers that started at once can both serve a name with other content (a later worker refuses to).
    const hashes = [...new Set(served.filter((m) => m.name === entry.name).map((m) => m.hash))];
    if (hashes.length > 1) {
      const who = hashes.map((h) => `${h.slice(0, 12)} on ${live.filter((w) => w.models.some((m) => m.hash === h)).map((w) => w.id).join(', ')}`);
      throw new QueueError(`Live workers serve different models named ${entry.name} (${who.join('; ')}): stop one side, or start it with the folder renamed`, 409);
    }
    const { width, height } = jobDemand({ ...size }, entry);
    if (!live.some((w) => canRun(w, entry.hash, method, width * height))) {
      const limits = live.filter((w) => w.models.some((m) => m.hash === entry.hash)).map((w) => `${w.id}: ${w.maxPixels[method] ?? 'no limit'}`);
      throw new QueueError(`No live worker can run ${method} at ${width}x${height} (${width * height} pixels) on ${entry.name}: largest per worker ${limits.join(', ')}`, 409);
    }
    return entry;
  }

  async generate(): Promise<never> {
    throw new Error('The fleet server runs no job itself: workers do');
  }

  async upscale(): Promise<never> {
    throw new Error('The fleet server runs no job itself: workers do');
  }

  async close(): Promise<void> {
    clearInterval(this.timer);
  }
}
