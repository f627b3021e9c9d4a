/** Messages between a fleet worker and its engine process (engine-process.ts <-> engine-child.ts). */
import type { GenerateParams } from '../../core/params.ts';
import type { DeviceEntry, EngineProgress, ModelEntry } from '../engine.ts';

/** How the child makes its engine: the library's (model folders and pipeline options), or a module's export (tests). */
export interface EngineSpec {
  modelDirs: string[];
  pipeline: Record<string, unknown>;
  /** A module path and export name of an Engine class, constructed with `options` (tests' fake engine). */
  module?: string;
  exportName?: string;
  options?: unknown;
}

export interface RunRequest {
  type: 'run';
  runId: number;
  kind: 'generate' | 'upscale';
  params: GenerateParams | Record<string, unknown>;
  model: string;
  /** Upscale: the source image file. */
  source?: string;
  file: string;
  /** Where previews go (written atomically); the parent is told each time. */
  previewFile: string;
}

export type ToChild = RunRequest | { type: 'abort'; runId: number };

export type FromChild =
  | { type: 'ready'; models: ModelEntry[]; devices: DeviceEntry[]; deviceSet: string }
  | { type: 'progress'; runId: number; progress: EngineProgress }
  | { type: 'preview'; runId: number }
  | { type: 'done'; runId: number; warnings: string[] }
  | { type: 'error'; runId: number; error: { message: string; kind?: string; parameter?: string } }
  | { type: 'fatal'; message: string };
