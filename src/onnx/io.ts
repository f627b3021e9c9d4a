/**
 * Plain types of the ONNX Runtime boundary, with no import of ONNX Runtime itself: what the rest of the project
 * (and the public API) may name without loading or type-referencing the native binding.
 */
export type ProviderName = 'cpu' | 'webgpu' | 'cuda';

/** How one device's sessions are created. */
export interface SessionOptions {
  provider: ProviderName;
  deviceId?: number;
  /** Intra-op threads for the CPU provider (0 or undefined: ORT's default). */
  threads?: number;
}

/** Memory-related ONNX Runtime settings of one session (see docs/vae-tiling.md, "Memory", for measurements). */
export interface SessionMemory {
  /** Graph optimisation level (default 'all'). */
  optimization?: 'basic' | 'extended' | 'all';
  /** ORT's CPU memory arena (default on). */
  cpuArena?: boolean;
  /** ORT's memory pattern planning (default on). */
  memPattern?: boolean;
}

/** One input or output of a model, as the session reports it. */
export interface IoInfo {
  name: string;
  type: string;
  shape: ReadonlyArray<number | string>;
}

/** Counts an observer can read (tests, the benchmark): tensors uploaded and disposed since the cache was made. */
export interface DeviceConditioningCounts {
  uploads: number;
  disposed: number;
  live: number;
}

/** What a store of tile states held on the device (src/onnx/tile-states.ts) has held and freed, for tests and benchmarks. */
export interface TileStateCounts {
  /** States taken in (one per tile and kept cut). */
  held: number;
  /** States freed (released by the tiling, or cleared). */
  released: number;
  /** States held now, and their bytes. */
  live: number;
  liveBytes: number;
}
