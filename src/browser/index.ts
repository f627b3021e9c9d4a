/**
 * asgdiffusion/web: the engine in the browser. The portable core (everything `asgdiffusion/core` has) with
 * ONNX Runtime Web (WebGPU where the browser has it, WebAssembly otherwise) in Web Workers, model files fetched by
 * URL and kept in the browser's storage, and PNG output with the same metadata as in Node.
 *
 *   import { loadWebPipeline } from 'asgdiffusion/web';
 *   const pipe = await loadWebPipeline('https://example.org/models/shapes-128/');
 *   const { png } = await pipe.generate({ prompt: 'a red circle on a blue background', width: 512, height: 512, seed: 1 });
 *   const up = await pipe.upscale({ image: new Blob([png]), scale: 2, strength: 0.5 }); // the prompt read from the file
 */
export * from '../core/index.ts';
export type { DeviceActivity, GenerationCallbacks, GenerationPhase, GenerationProgress, GenerationTimings } from '../core/generation/progress.ts';
export {
  loadWebPipeline, WebPipeline,
  type WebGenerateResult, type WebGenerateRunOptions, type WebGenerationTimings, type WebModelInfo, type WebUpscaleParams,
} from './pipeline.ts';
export type { RgbaPixels, WebImageInput } from './source-image.ts';
export type { GenerateUpscaleSettings } from '../core/generation/upscale.ts';
export type { FileProgress, LoadProgress, WebComponent, WebPipelineOptions, WebProvider } from './options.ts';
export { clearStoredModel, MODEL_CACHE } from './model/model-files.ts';
export type { WebModelSpec } from './model/web-model.ts';
export type { UnetFloat16Info } from '../core/unet-precision.ts';
export { encodePng } from './png.ts';
export { TOOL_VERSION } from './version.ts';
export type { IoInfo } from '../onnx/io.ts';
export type { ComponentIo } from './device/protocol.ts';
export type { DeviceStats } from '../core/dispatch/dispatcher.ts';
export type { SplitMode } from '../core/dispatch/tasks.ts';
