/**
 * Large typed arrays between the coordinator and a worker process through files in a folder in memory (/dev/shm)
 * instead of Node's IPC channel, which moves them through a pipe in small pieces: here a round trip of 0.25 MiB (an SDXL
 * 128x128 sample) took 6.7 ms through the channel and 3.2 ms through files, of 50 MiB (a 2048 px decoded image) 1.27 s
 * against 0.40 s (`npm run bench:worker-transport`, docs/benchmarks.md).
 *
 * The sender writes each typed array of at least STOW_MIN_BYTES to a file of its own and sends a small marker in its
 * place; the receiver reads the file into a new array and deletes it. Where no such folder exists (not Linux), or a
 * file cannot be written (a full /dev/shm: containers often get 64 MiB), the array travels through the channel as
 * before. Worker threads do not need this: they share memory with the coordinator.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

/** Arrays smaller than this go through the channel (a file costs more than it saves there). */
export const STOW_MIN_BYTES = 64 * 1024;

/** The environment variable that hands the folder to the worker process. */
export const STOW_DIR_ENV = 'ASGD_WORKER_STOW_DIR';

const KINDS = {
  Float32Array, Float64Array, Int8Array, Int16Array, Int32Array, Uint8Array, Uint16Array, Uint32Array, BigInt64Array, BigUint64Array,
} as const;
type KindName = keyof typeof KINDS;
type Typed = InstanceType<(typeof KINDS)[KindName]>;

/** What travels through the channel in place of a stowed array. */
interface StowedMarker {
  asgdStowed: KindName;
  file: string;
  length: number;
}

function isMarker(v: unknown): v is StowedMarker {
  return typeof v === 'object' && v !== null && typeof (v as StowedMarker).asgdStowed === 'string' && typeof (v as StowedMarker).file === 'string';
}

function kindOf(v: ArrayBufferView): KindName | undefined {
  const name = v.constructor.name;
  return name in KINDS && v instanceof KINDS[name as KindName] ? (name as KindName) : undefined;
}

const isPlainObject = (v: object): boolean => {
  const proto = Object.getPrototypeOf(v);
  return proto === Object.prototype || proto === null;
};

/** A new folder for one worker's files in /dev/shm; undefined where there is none to write to. */
export function makeStowFolder(): string | undefined {
  if (os.platform() !== 'linux') return undefined;
  try {
    return fs.mkdtempSync(path.join('/dev/shm', 'asgd-worker-'));
  } catch {
    return undefined;
  }
}

/** Counts, for tests and benchmarks: arrays sent and received through files, arrays sent through the channel for lack of room. */
export interface StowCounts {
  sent: number;
  sentBytes: number;
  received: number;
  receivedBytes: number;
  fellBack: number;
}

export class ArrayStow {
  private next = 0;
  readonly counts: StowCounts = { sent: 0, sentBytes: 0, received: 0, receivedBytes: 0, fellBack: 0 };

  /** `folder`: where to write (undefined: nothing is stowed); `prefix` keeps the two sides' file names apart. */
  constructor(readonly folder: string | undefined, private readonly prefix: string) {}

  /**
   * `message` with its large typed arrays written to files and replaced by markers (plain objects and arrays are
   * copied on the way; everything else is left for the channel to serialise). Views are written as the view, not
   * the buffer under them.
   */
  stow<T>(message: T): T {
    if (this.folder === undefined) return message;
    return this.walk(message) as T;
  }

  private walk(v: unknown): unknown {
    if (typeof v !== 'object' || v === null) return v;
    if (ArrayBuffer.isView(v)) {
      const kind = kindOf(v);
      if (!kind) return v;
      if (v.byteLength >= STOW_MIN_BYTES) return this.write(v as Typed, kind);
      return v.byteLength === v.buffer.byteLength ? v : (v as Typed).slice(); // the channel would send the whole buffer
    }
    if (Array.isArray(v)) return v.map((x) => this.walk(x));
    if (!isPlainObject(v)) return v;
    const out: Record<string, unknown> = {};
    for (const [k, x] of Object.entries(v)) out[k] = this.walk(x);
    return out;
  }

  private write(v: Typed, kind: KindName): StowedMarker | Typed {
    const file = path.join(this.folder!, `${this.prefix}-${process.pid}-${this.next++}`);
    try {
      fs.writeFileSync(file, new Uint8Array(v.buffer, v.byteOffset, v.byteLength));
    } catch {
      fs.rmSync(file, { force: true });
      this.counts.fellBack++;
      // Through the channel, which serialises the whole buffer under a view: send only the view's part.
      return v.byteLength === v.buffer.byteLength ? v : (v.slice() as Typed);
    }
    this.counts.sent++;
    this.counts.sentBytes += v.byteLength;
    return { asgdStowed: kind, file, length: v.length };
  }

  /** `message` with every stowed array read back from its file (which is deleted). Throws if a file is missing. */
  unstow<T>(message: T): T {
    return this.walkBack(message) as T;
  }

  private walkBack(v: unknown): unknown {
    if (typeof v !== 'object' || v === null || ArrayBuffer.isView(v)) return v;
    if (isMarker(v)) {
      const out = readStowed(v);
      this.counts.received++;
      this.counts.receivedBytes += out.byteLength;
      return out;
    }
    if (Array.isArray(v)) return v.map((x) => this.walkBack(x));
    if (!isPlainObject(v)) return v;
    const out: Record<string, unknown> = {};
    for (const [k, x] of Object.entries(v)) out[k] = this.walkBack(x);
    return out;
  }
}

function readStowed(m: StowedMarker): Typed {
  const Kind = KINDS[m.asgdStowed];
  if (!Kind) throw new Error(`worker transport: unknown array type ${m.asgdStowed}`);
  const out = new Kind(m.length);
  const bytes = new Uint8Array(out.buffer);
  let fd: number;
  try {
    fd = fs.openSync(m.file, 'r');
  } catch (err) {
    throw new Error(`worker transport: the array file ${m.file} is gone (${(err as Error).message})`);
  }
  try {
    let done = 0;
    while (done < bytes.byteLength) {
      const n = fs.readSync(fd, bytes, done, bytes.byteLength - done, done);
      if (n === 0) throw new Error(`worker transport: ${m.file} holds ${done} bytes, expected ${bytes.byteLength}`);
      done += n;
    }
  } finally {
    fs.closeSync(fd);
    fs.rmSync(m.file, { force: true });
  }
  return out;
}
