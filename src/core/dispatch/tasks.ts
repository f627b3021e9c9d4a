/**
 * What the dispatcher hands to devices: a task is one unit (a CFG-guided UNet evaluation) or one of its two CFG
 * halves, and a device is anything that runs tasks (a worker thread owning ONNX Runtime sessions, or the latency
 * model of the benchmark). Portable: no Node APIs.
 */
import type { AttentionMap, UnetUnit } from '../methods/types.ts';

/** 'both': batch [uncond, cond] in one call, CFG applied by the device; a half: batch 1, raw model output. */
export type CfgPart = 'both' | 'uncond' | 'cond';

export interface UnitTask {
  /** The unit's id, with "/uncond" or "/cond" appended for a half. */
  id: string;
  unit: UnetUnit;
  part: CfgPart;
  /** Runs the attention-probe graph: the unit wants attention and this task computes its conditional branch. */
  probe: boolean;
}

export interface TaskOutput {
  /** part 'both': the CFG-combined output; a half: that branch's raw model output. Same length as the sample. */
  output: Float32Array;
  /** Conditional-branch attention maps (probe tasks on a device holding the probe graph). */
  attention?: AttentionMap[];
  /** The task asked for attention and the device has no probe graph. */
  attentionUnsupported?: boolean;
}

export interface ExecDevice {
  /** Display name used in error messages, e.g. "cpu#1" or "cuda:0". */
  readonly label: string;
  /** Holds the attention-probe graph. */
  readonly hasProbe: boolean;
  /** Evaluates one task; `guidanceScale` applies to part 'both'. The task's sample must not be modified. */
  run(task: UnitTask, guidanceScale: number): Promise<TaskOutput>;
}

/** How units may be split into their CFG halves. */
export type SplitMode =
  /** Never: one batch-2 call per unit. */
  | 'never'
  /** When it shortens the predicted step (depends on the device count: use only on batch-invariant providers). */
  | 'balance'
  /** Every unit as two batch-1 calls, on any number of devices (identical results everywhere, on any provider). */
  | 'always';

/**
 * Resolves 'auto' CFG splitting: 'balance' where every device runs ONNX Runtime's CPU kernels (Node's cpu provider,
 * the browser's WebAssembly), there are two devices or more, and the model gives a split unit the same bits as a whole
 * one (`splitIsExact`, asked only then), so results do not depend on the device count; else 'never'. A UNet whose batch
 * is fixed above 1 (its `sample` input's first dimension, in `unetInputs`) runs no halves, whatever was asked (a static
 * batch of 1 already runs two calls per unit).
 */
export async function resolveSplitMode(
  mode: 'auto' | SplitMode,
  setting: { devices: number; cpuKernels: boolean; unetInputs: readonly { name: string; shape: ReadonlyArray<number | string> }[] | undefined },
  splitIsExact: () => Promise<boolean>,
): Promise<SplitMode> {
  const inputs = setting.unetInputs;
  const batch = (inputs?.find((i) => i.name === 'sample') ?? inputs?.[0])?.shape[0];
  if (typeof batch === 'number' && batch > 1) return 'never';
  if (mode !== 'auto') return mode;
  if (setting.devices < 2 || !setting.cpuKernels) return 'never';
  return (await splitIsExact()) ? 'balance' : 'never';
}

export function taskId(unit: UnetUnit, part: CfgPart): string {
  return part === 'both' ? unit.id : `${unit.id}/${part}`;
}

export function taskOf(unit: UnetUnit, part: CfgPart): UnitTask {
  return { id: taskId(unit, part), unit, part, probe: unit.wantAttention && part !== 'uncond' };
}
