/**
 * asgdiffusion/core: the portable part of the library. No Node built-in, no ONNX Runtime, no sharp is loaded by
 * importing it (tsconfig.core.json compiles it with no Node types), so it runs in browsers and workers too.
 *
 *   import { createScheduler, randn, planMethod } from 'asgdiffusion/core';
 */
export { AsgdError, invalidArgument, type AsgdErrorDetails, type ErrorKind } from './errors.ts';
export type { AbortSignalLike } from './platform.ts';
export type { TextConditioning } from './conditioning.ts';
export {
  DEFAULT_GUIDANCE, DEFAULT_STEPS, DEFAULT_VAE, MAX_SIZE, MIN_SIZE, parseSeed, resolveParams, validateParams,
  type GenerateParams, type ResolvedParams, type VaeDecodeOptions,
} from './params.ts';
export {
  buildMetadata, formatParametersText, parseMetadataJson, promptFromParametersText, JSON_KEY, METADATA_VERSION, TEXT_KEY,
  type EmbeddedParameters, type GenerationMetadata, type UpscaleRecord,
} from './metadata.ts';
export { chwToRgb8, cropRgb, padEdgesRgb, rgb8ToChw, type RgbImage } from './image.ts';
export { resizeLanczos3 } from './resize.ts';
export { float16ToFloat32, float32ToFloat16, fromFloat16Bits, toFloat16Bits } from './float16.ts';
export { addPngTextChunks, compressedTextChunks, readPngTextChunks, readPngTexts, type AnyInflate, type CompressedTextChunk, type Inflate } from './png-chunks.ts';
export { embeddedFromTexts, imageTexts, textImageFormat, xmpValue, type TextImageFormat } from './image-texts.ts';
export { sizeOf, tensor, zeros, type Tensor } from './tensor.ts';
export { createRandom, randn, Mt19937, TorchGenerator, type RandomSource, type RandomStream } from './random/index.ts';
export {
  createScheduler, CLASS_NAMES, SCHEDULER_NAMES, type FlowMatchOptions,
  type LatentPart, type PredictionType, type Scheduler, type SchedulerConfig, type SchedulerName, type SchedulerState, type StepResult,
} from './schedulers/index.ts';
export {
  createMethod, DEFAULT_METHOD, DEFAULT_METHOD_OPTIONS, METHOD_NAMES, planGeometry, planMethod, planWindows,
  placeWindows, resolveMethodOptions,
  type GeometryInput, type MethodOptions, type MethodPlan, type MethodSetup, type PatchGeometry, type WindowGrid,
  type WindowPlacement,
} from './methods/index.ts';
export type {
  AttentionMap, EvaluateHint, HighResMethod, MethodContext, MethodName, MethodPreview, ProgressEvent, UnetUnit, UnitKind, UnitResult,
} from './methods/types.ts';
export type { StructureSchedule, StructureSpace } from './methods/guidance.ts';
export type { EulerCoefficients } from './kernels/euler-range.ts';
export type { AncestralCoefficients, DpmCoefficients, StatefulCoefficients, StatefulKernelStep } from './kernels/stateful-coefficients.ts';
export type { WindowAxis } from './methods/windows.ts';
export { FAMILY_NAMES, type ModelFamily } from './model-family.ts';
export { ClipTokenizer, CLIP_MAX_LENGTH, type TokenizedPrompt, type TokenizerFiles } from './text/clip-tokenizer.ts';
export { axisWeights, blendTile, planAxis, planTiles, type AxisTile, type Tile, type TileOptions } from './vae/tiling.ts';
export {
  ALL_OPTIONS, CLI_OPTIONS, METHOD_OPTIONS, PARAM_OPTIONS, PIPELINE_OPTIONS, STRUCTURE_SOURCES, UPSCALE_COMMAND_OPTIONS, UPSCALE_OPTIONS,
  VAE_OPTIONS, optionSpec,
} from './options/registry.ts';
export { checkOption, defaultText, expectedText, flagText, type OptionKind, type OptionScope, type OptionSpec } from './options/spec.ts';
export { recommendSettings, type CallRatios, type FusedCallTimes, type TuneAdvice, type TuneMeasurement, type UnetCallTimes, type WorkerLayoutTimes } from './tune-advice.ts';
export { checkGeneration, type GenerationPlan, type ModelFacts } from './generation/check.ts';
export { encodePrompt, type EncodedText, type EncodeText, type PromptEncoders, type PromptInput, type TextEncoderName } from './generation/prompt.ts';
export { denoise, type DenoiseInput, type DenoiseResult } from './generation/denoise.ts';
export {
  attentionModeFor, AUTO_GLOBAL_MAX_LATENT_AREA, decodeTiled, encodeTiled, TILE_STATS_MODES, VAE_ATTENTION_MODES, type DecodedImage, type GlobalAttentionBackend, type TiledDecodeOptions,
  type StateTensor, type TiledDecodeResult, type TiledVaeBackend, type TileState, type TileStatsMode, type VaeAttentionMode,
} from './vae/tiled.ts';
export type { NormLayer } from './vae/norm-stats.ts';
export {
  applySkipResidual, checkUpscale, img2imgScheduler, noiseTo, schedulerFrom, skipWeight, startStep, DEFAULT_MAX_PIXELS, DEFAULT_SCALE,
  DEFAULT_STRENGTH, DEFAULT_STRUCTURE_SOURCE, MIN_SOURCE_SIZE,
  type Img2ImgInit, type StructureSource, type UpscalePlan, type UpscaleSettings,
} from './generation/img2img.ts';
