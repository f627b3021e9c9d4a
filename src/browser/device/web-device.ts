/**
 * One device worker as the page sees it: request/reply over postMessage, and the dispatcher's device interface
 * (src/core/dispatch/tasks.ts ExecDevice) for UNet units. A worker that dies fails its pending requests with an
 * error naming the device.
 */
import { AsgdError } from '../../core/errors.ts';
import type { ExecDevice, TaskOutput, UnitTask } from '../../core/dispatch/tasks.ts';
import type { DeviceReply, DeviceRequest, DeviceResult, PageExternalFile, WireBytes } from './protocol.ts';
import { fromWire } from './wire-error.ts';
import { pageTurns } from '../page-turns.ts';

/** A load request as the page makes it: the model's bytes and its external files whole (or stored, as Blobs). */
export type LoadRequest = Omit<Extract<DeviceRequest, { type: 'load' }>, 'bytes' | 'external'> & { bytes: Uint8Array | Blob; external?: PageExternalFile[] };

/**
 * Byte arrays larger than this go to the worker in STAGE_PIECE pieces, the page taking its turns between them: posted
 * whole, the 1.7 GB weights of an SD 1.5 UNet in float16 held the page's main thread for 6 s while they were copied
 * (bench/web-large-unet.ts).
 */
const STAGE_OVER = 64 << 20;
const STAGE_PIECE = 16 << 20;

interface Pending {
  resolve(result: DeviceResult): void;
  reject(error: unknown): void;
  what: string;
}

export class WebDevice implements ExecDevice {
  /** Set once this device holds the attention-probe graph (before the dispatcher is made). */
  hasProbe = false;
  private nextId = 1;
  private nextStage = 1;
  private readonly pending = new Map<number, Pending>();
  private ended = false;

  constructor(
    private readonly worker: Worker,
    readonly label: string,
  ) {
    worker.onmessage = (e: MessageEvent<DeviceReply>) => {
      const reply = e.data;
      const p = this.pending.get(reply.id);
      if (!p) return;
      this.pending.delete(reply.id);
      if (reply.ok) p.resolve(reply.result);
      else p.reject(fromWire(reply.error));
    };
    worker.onerror = (e: ErrorEvent) => {
      e.preventDefault();
      this.fail(new AsgdError(`Device ${label} stopped: ${e.message || 'the worker failed to start or crashed'}`, {
        kind: 'device', parameter: 'workers', hint: 'Reload the page; if it persists, use fewer workers or the wasm provider',
      }));
    };
  }

  get alive(): boolean {
    return !this.ended;
  }

  request<T extends DeviceResult['type']>(req: DeviceRequest, what: string, transfer: Transferable[] = []): Promise<Extract<DeviceResult, { type: T }>> {
    if (this.ended) return Promise.reject(new AsgdError(`Device ${this.label} is closed`, { kind: 'device', parameter: 'pipeline', hint: 'Load the pipeline again' }));
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (r: DeviceResult) => void, reject, what });
      try {
        this.worker.postMessage({ id, req }, transfer);
      } catch (err) {
        // Structured cloning copies what is posted: a model file of gigabytes can exceed what the browser copies.
        this.pending.delete(id);
        reject(this.cannotHand(what, err, false));
      }
    });
  }

  /** The error for data the browser could not copy to the worker (`large`: a file sent in pieces, STAGE_OVER). */
  private cannotHand(what: string, err: unknown, large: boolean): AsgdError {
    const msg = err instanceof Error ? err.message : String(err);
    return new AsgdError(`Cannot hand ${what} to device ${this.label}: ${msg}`, {
      kind: 'device', parameter: 'model', expected: 'data this browser can copy to a worker', received: msg,
      hint: large || /out of memory/i.test(msg) ? "The model's files are larger than this browser can copy: use a float16 export (a float32 UNet: load with unetPrecision: 'float16'), or the Node API" : undefined,
      cause: err,
    });
  }

  /** Opens a model's session on the device; large files are sent in pieces (STAGE_OVER). */
  async load(req: LoadRequest, what: string): Promise<Extract<DeviceResult, { type: 'loaded' }>> {
    const bytes = await this.stage(req.bytes, what);
    const external: { path: string; data: WireBytes }[] = [];
    for (const f of req.external ?? []) external.push({ path: f.path, data: await this.stage(f.data, what) });
    return this.request<'loaded'>({ ...req, bytes, ...(req.external ? { external } : {}) }, what);
  }

  /**
   * `data` as a request carries it: a Blob as it is (the worker reads it), bytes whole where small, else sent before in
   * pieces (a copy of each, transferred).
   */
  private async stage(data: Uint8Array | Blob, what: string): Promise<WireBytes> {
    if (data instanceof Blob || data.length <= STAGE_OVER) return data;
    const key = this.nextStage++;
    const turn = pageTurns();
    const sent: Promise<unknown>[] = [];
    try {
      for (let offset = 0; offset < data.length; offset += STAGE_PIECE) {
        const piece = data.slice(offset, offset + STAGE_PIECE);
        const posted = this.request<'ok'>({ type: 'stage', key, length: data.length, offset, piece }, what, [piece.buffer]);
        posted.catch(() => undefined); // awaited below; not an unhandled rejection meanwhile
        sent.push(posted);
        await turn();
      }
      await Promise.all(sent);
    } catch (err) {
      // A worker that could not allocate the buffer, or a piece the page could not copy.
      await Promise.allSettled(sent);
      throw err instanceof AsgdError ? err : this.cannotHand(what, err, true);
    }
    return { staged: key };
  }

  async run(task: UnitTask, guidanceScale: number): Promise<TaskOutput> {
    const u = task.unit;
    // Cloned on posting: a view would clone its whole buffer, so a view is cut out first.
    const whole = u.sample.byteOffset === 0 && u.sample.byteLength === u.sample.buffer.byteLength;
    const r = await this.request<'unet'>(
      {
        type: 'unet', sample: whole ? u.sample : u.sample.slice(), part: task.part, channels: u.sample.length / (u.height * u.width), height: u.height, width: u.width,
        timestep: u.timestep, guidanceScale, wantAttention: u.wantAttention,
        maskTokens: u.maskTokens ? [...u.maskTokens] : undefined, timeIds: u.timeIds ? [...u.timeIds] : undefined,
      },
      `unit ${task.id}`,
    );
    return { output: r.output, attention: r.attention, attentionUnsupported: r.attentionUnsupported };
  }

  /** Ends the worker at once; pending requests fail. */
  terminate(): void {
    if (this.ended) return;
    this.worker.terminate();
    this.fail(new AsgdError(`Device ${this.label} was closed`, { kind: 'cancelled', parameter: 'pipeline' }));
  }

  private fail(error: AsgdError): void {
    this.ended = true;
    for (const p of this.pending.values()) p.reject(error);
    this.pending.clear();
  }
}
