/**
 * asgdiffusion: high-resolution images from pretrained Stable Diffusion ONNX models with ASGDiffusion.
 *
 *   import { loadPipeline, saveImage } from 'asgdiffusion';
 *   const pipe = await loadPipeline('models/shapes-128');
 *   const r = await pipe.generate({ prompt: 'a red circle on a blue background', width: 512, height: 512, seed: 1 });
 *   await saveImage('out.png', r.image, r.metadata);
 *   await pipe.close();
 */
export { loadPipeline, Pipeline, type PipelineOptions, type GenerateResult, type GenerateRunOptions, type GenerationProgress, type GenerationTimings, type ModelInfo } from './node/pipeline.ts';
export { saveImage, readImageMetadata, encodeImage } from './node/image/write.ts';
export { readModelFolder, type ModelSpec } from './node/model/folder.ts';
export { parseDevices, describeAvailableDevices, type DeviceSpec } from './node/runner/devices.ts';
export { AsgdError, type ErrorKind } from './core/errors.ts';
export type { GenerateParams, VaeDecodeOptions } from './core/params.ts';
export type { GenerationMetadata } from './core/metadata.ts';
export type { RgbImage } from './core/image.ts';
export { randn, TorchGenerator, createRandom } from './core/random/index.ts';
export { createScheduler, SCHEDULER_NAMES } from './core/schedulers/index.ts';
export { createMethod, DEFAULT_METHOD_OPTIONS, METHOD_NAMES, type MethodOptions } from './core/methods/index.ts';
export { ClipTokenizer } from './core/text/clip-tokenizer.ts';
