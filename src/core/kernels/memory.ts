/**
 * The WebAssembly kernels (kernels.wat) and a memory for them to work in. The module is compiled once per thread
 * (about 4 KB: Chromium compiles modules up to 8 MB synchronously on a page's main thread too); each KernelMemory
 * is an instance with its own memory, which its owner lays out for a task and reuses. Where WebAssembly is missing
 * or refused (a page whose Content-Security-Policy lacks 'wasm-unsafe-eval'), create() gives null and callers keep
 * their TypeScript loops, which compute the same bits.
 * Portable: WebAssembly is a JavaScript global in Node and in browsers; no Node APIs.
 */
import { KERNEL_BYTES_BASE64 } from './kernel-bytes.ts';

/** The kernels' exports (kernels.wat says what each computes); addresses are byte offsets into the memory. */
export interface KernelExports {
  eulerRange(into: number, m: number, s: number, len: number, kind: number, sigma: number, dt: number, cOut: number, s2p1: number): void;
  unitStep(
    out: number, lat: number, eps: number, nxt: number, key: number, wts: number, base: number, off: number, perm: number, j: number, n: number, from: number, to: number, mode: number, alpha: number, gs: number, maskKey: number,
    keep: number, keyStride: number, kind: number, sigma: number, dt: number, cOut: number, s2p1: number, hin: number, hout: number, c1: number, invR0: number,
  ): void;
  fillBelow(s: number, next: number, out: number, count: number, n: number, limit: number): number;
  fillNormal(s: number, next: number, out: number, count: number): number;
  boxMuller(data: number, blocks: number): void;
  fuseTile(part: number, cov: number, desc: number, count: number, channels: number, th: number, tw: number): number;
  placeTile(
    part: number, fused: number, lat: number, nxt: number, step: number, channels: number, y0: number, x0: number, th: number, tw: number,
    h: number, w: number, H: number, W: number, kind: number, sigma: number, dt: number, cOut: number, s2p1: number,
  ): void;
  extractWindow(src: number, dst: number, channels: number, srcH: number, srcW: number, top: number, left: number, winH: number, winW: number, scale: number): void;
  composePermutations(draws: number, out: number, head: number, tail: number, count: number, n: number, headRange: number): void;
  gatherPatch(src: number, dst: number, base: number, off: number, size: number): void;
  shuffleUnits(lat: number, units: number, base: number, off: number, perm: number, permBytes: number, n: number, size: number, scale: number): void;
}

/** The part of the WebAssembly API used here (the core compiles without DOM or Node types). */
interface WasmMemory {
  readonly buffer: ArrayBuffer;
  grow(pages: number): number;
}
interface WasmApi {
  Module: new (bytes: Uint8Array) => object;
  Instance: new (module: object, imports: Record<string, Record<string, unknown>>) => { readonly exports: object };
  Memory: new (descriptor: { initial: number; maximum?: number }) => WasmMemory;
}

const PAGE_BYTES = 65536;
/** Region starts are multiples of this (float64 weights among float32 and int32 arrays). */
const ALIGN = 16;

/** `bytes` rounded up to a region boundary. */
export function alignUp(bytes: number): number {
  return Math.ceil(bytes / ALIGN) * ALIGN;
}

/** The compiled module: undefined until first asked for, null where WebAssembly is unavailable. */
let compiled: object | null | undefined;

function wasmApi(): WasmApi | undefined {
  return (globalThis as { WebAssembly?: WasmApi }).WebAssembly;
}

function kernelModule(): object | null {
  if (compiled === undefined) {
    const api = wasmApi();
    try {
      compiled = api ? new api.Module(decodeBase64(KERNEL_BYTES_BASE64)) : null;
    } catch {
      compiled = null;
    }
  }
  return compiled;
}

const BASE64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';

/** Standard base64 (with or without padding) to bytes. */
export function decodeBase64(text: string): Uint8Array {
  const clean = text.replace(/=+$/, '');
  const out = new Uint8Array(Math.floor((clean.length * 3) / 4));
  let bits = 0;
  let held = 0;
  let o = 0;
  for (let i = 0; i < clean.length; i++) {
    const v = BASE64.indexOf(clean[i]!);
    if (v < 0) throw new Error(`decodeBase64: '${clean[i]}' at ${i} is not a base64 character`);
    bits = (bits << 6) | v;
    held += 6;
    if (held >= 8) {
      held -= 8;
      out[o++] = (bits >> held) & 0xff;
    }
  }
  return out;
}

/**
 * A kernels instance and its memory. Views into the memory (f32, i32, ...) stay valid until the next reserve() that
 * grows it (growing a WebAssembly memory detaches its old buffer), so an owner reserves first, then takes views.
 */
export class KernelMemory {
  readonly kernels: KernelExports;
  /** Who laid the memory out last and still works in it (a check against two users interleaving), or null. */
  owner: object | null = null;
  private readonly memory: WasmMemory;

  private constructor(api: WasmApi, module: object, maximumPages?: number) {
    this.memory = new api.Memory({ initial: 1, ...(maximumPages === undefined ? {} : { maximum: maximumPages }) });
    this.kernels = new api.Instance(module, { env: { memory: this.memory } }).exports as KernelExports;
  }

  /** A new instance, or null where WebAssembly is unavailable; `maximumBytes` caps its memory (tests). */
  static create(maximumBytes?: number): KernelMemory | null {
    const module = kernelModule();
    const api = wasmApi();
    return module && api ? new KernelMemory(api, module, maximumBytes === undefined ? undefined : Math.max(1, Math.floor(maximumBytes / PAGE_BYTES))) : null;
  }

  /**
   * Lays out regions of the given byte lengths one after another (aligned) and makes room for them: their offsets,
   * or null where the memory cannot grow that far (the caller then keeps its TypeScript loop).
   */
  layout<const T extends readonly number[]>(byteLengths: T): { [K in keyof T]: number } | null {
    const offsets: number[] = [];
    let top = 0;
    for (const len of byteLengths) {
      offsets.push(top);
      top += alignUp(len);
    }
    return this.reserve(top) ? (offsets as { [K in keyof T]: number }) : null;
  }

  /** Makes the memory at least `bytes` long; false where it cannot grow that far. */
  reserve(bytes: number): boolean {
    const have = this.memory.buffer.byteLength;
    if (bytes <= have) return true;
    try {
      this.memory.grow(Math.ceil((bytes - have) / PAGE_BYTES));
      return true;
    } catch {
      return false; // past the memory's maximum, or the address space (4 GiB) or the machine's memory
    }
  }

  f32(offset: number, length: number): Float32Array {
    return new Float32Array(this.memory.buffer, offset, length);
  }

  f64(offset: number, length: number): Float64Array {
    return new Float64Array(this.memory.buffer, offset, length);
  }

  i32(offset: number, length: number): Int32Array {
    return new Int32Array(this.memory.buffer, offset, length);
  }

  u32(offset: number, length: number): Uint32Array {
    return new Uint32Array(this.memory.buffer, offset, length);
  }

  u8(offset: number, length: number): Uint8Array {
    return new Uint8Array(this.memory.buffer, offset, length);
  }

  /** A view of the same type as `like` (a byte or 16-bit permutation table). */
  same<T extends Uint8Array | Uint16Array>(like: T, offset: number): T {
    return (like instanceof Uint8Array ? new Uint8Array(this.memory.buffer, offset, like.length) : new Uint16Array(this.memory.buffer, offset, like.length)) as T;
  }
}

/** One KernelMemory per thread for work done within one synchronous call (copied in, computed, copied out). */
let scratch: KernelMemory | null | undefined;

export function scratchKernels(): KernelMemory | null {
  if (scratch === undefined) scratch = KernelMemory.create();
  return scratch;
}
