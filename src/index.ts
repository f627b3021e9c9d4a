/**
 * asgdiffusion: high-resolution images from pretrained Stable Diffusion ONNX models with ASGDiffusion, on Node.
 * Everything portable is also here (it is `asgdiffusion/core`, re-exported), so one import serves Node users.
 *
 *   import { loadPipeline, saveImage } from 'asgdiffusion';
 *   await using pipe = await loadPipeline('models/shapes-128');
 *   const r = await pipe.generate({ prompt: 'a red circle on a blue background', width: 512, height: 512, seed: 1 });
 *   await saveImage('out.png', r.image, r.metadata);
 */
export * from './core/index.ts';
export {
  loadPipeline, Pipeline,
  type DeviceActivity, type GenerateResult, type GenerateRunOptions, type GenerateUpscaleSettings, type GenerationPhase, type GenerationProgress,
  type GenerationCallbacks, type GenerationTimings, type ModelInfo, type PipelineOptions, type UpscaleParams,
} from './node/pipeline.ts';
export { tuneDevice, type TuneOptions, type TuneReport } from './node/tune.ts';
export { TOOL_VERSION, PACKAGE_VERSION } from './node/version.ts';
export { encodeImage, formatFromPath, readImageMetadata, readImageMetadataFromBytes, saveImage, type EmbeddedParameters, type ImageFormat } from './node/image/write.ts';
export { readSourceImage, resizeLanczos, type ImageInput, type SourceImage } from './node/image/read.ts';
export { readModelFolder, type ComponentPaths, type ModelFamily, type ModelLayout, type ModelSpec } from './node/model/folder.ts';
export {
  autoDevices, checkAvailableDevices, cudaGpus, describeAvailableDevices, parseDevices, type AutoDevices, type CudaGpus, type DeviceAvailability, type DeviceSpec, type WorkerIsolation,
} from './node/runner/devices.ts';
export type { IoInfo, ProviderName } from './onnx/io.ts';
export type { SplitMode } from './core/dispatch/tasks.ts';
export type { ComponentName } from './node/runner/protocol.ts';
export type { UnetFloat16Info } from './core/unet-precision.ts';
