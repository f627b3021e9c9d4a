/**
 * The one registry of names and defaults: every option of a generation, of the methods, of VAE decoding, of
 * loading a pipeline, and of the `asgd generate` command. Validation (params.ts, methods/options.ts), the CLI's
 * flags and help (cli/options.ts) and the README's option table (scripts/options-table.ts) come from here.
 * Portable.
 */
import type { OptionSpec } from './spec.ts';

/** The high-resolution methods, the default first. */
export const METHOD_NAMES = ['asg', 'cutdiffusion', 'multidiffusion', 'direct'] as const;
export type MethodName = (typeof METHOD_NAMES)[number];
export const DEFAULT_METHOD: MethodName = 'asg';

/** Scheduler names (diffusers' classes in schedulers/config.ts). */
export const SCHEDULER_NAMES = ['euler', 'euler-ancestral', 'ddim', 'pndm', 'dpmpp-2m', 'lms', 'flow-euler'] as const;
export type SchedulerName = (typeof SCHEDULER_NAMES)[number];

export const MIN_SIZE = 64;
export const MAX_SIZE = 8192;

const PATCH_METHODS = ['asg', 'cutdiffusion', 'multidiffusion'] as const;

/** Options of GenerateParams (the generation settings), in the order the help lists them. */
export const PARAM_OPTIONS = [
  { key: 'prompt', scope: 'params', kind: 'string', help: 'what to draw', cli: { flag: '--prompt', short: '-p', arg: '<text>' } },
  { key: 'negativePrompt', scope: 'params', kind: 'string', default: '', defaultText: 'empty', help: 'what to avoid', cli: { flag: '--negative-prompt', short: '-n', arg: '<text>' } },
  { key: 'width', scope: 'params', kind: 'integer', min: MIN_SIZE, max: MAX_SIZE, multipleOf: 8, defaultText: 'the native width', help: 'image width in pixels, a multiple of 8', cli: { flag: '--width', short: '-W', arg: '<px>' } },
  { key: 'height', scope: 'params', kind: 'integer', min: MIN_SIZE, max: MAX_SIZE, multipleOf: 8, defaultText: 'the native height', help: 'image height in pixels, a multiple of 8', cli: { flag: '--height', short: '-H', arg: '<px>' } },
  { key: 'steps', scope: 'params', kind: 'integer', default: 30, min: 1, max: 1000, help: 'denoising steps', cli: { flag: '--steps', short: '-s', arg: '<n>' } },
  { key: 'guidanceScale', scope: 'params', kind: 'number', default: 7.5, min: 0, max: 100, help: 'classifier-free guidance scale, 0 to 100 (typically 1 to 15)', cli: { flag: '--guidance-scale', short: '-g', arg: '<x>' } },
  { key: 'seed', scope: 'params', kind: 'string', defaultText: 'random (recorded in the image)', help: 'seed, 0 .. 2^64-1', cli: { flag: '--seed', arg: '<n>' } },
  { key: 'scheduler', scope: 'params', kind: 'choice', choices: SCHEDULER_NAMES, defaultText: "the model's; euler instead of pndm/lms for patch methods above the native size", help: 'scheduler', cli: { flag: '--scheduler', arg: '<name>' } },
  { key: 'method', scope: 'params', kind: 'choice', choices: METHOD_NAMES, default: DEFAULT_METHOD, help: 'high-resolution method', cli: { flag: '--method', arg: '<name>' } },
  { key: 'maskWords', scope: 'params', kind: 'list', defaultText: 'all content tokens', methods: ['asg'], help: 'prompt words whose cross-attention forms the mask (comma/space separated)', cli: { flag: '--mask-words', arg: '<words>' } },
  { key: 'originalSize', scope: 'params', kind: 'string', defaultText: 'the output size', help: 'SDXL: original_size micro-conditioning, WIDTHxHEIGHT', cli: { flag: '--original-size', arg: '<WxH>' } },
] as const satisfies readonly OptionSpec[];

/** Options of MethodOptions. */
export const METHOD_OPTIONS = [
  { key: 'stageSplit', scope: 'method', kind: 'number', default: 0.8, min: 0, max: 1, methods: ['asg', 'cutdiffusion'], help: 'fraction of the steps in stage 1 (patches), the rest in stage 2 (windows)', hint: 'It is the fraction of steps spent in stage 1, e.g. 0.8.', cli: { flag: '--stage-split', arg: '<f>' } },
  { key: 'pixelInteraction', scope: 'method', kind: 'boolean', default: true, methods: ['asg', 'cutdiffusion'], help: 'shuffle latent pixels between patches every stage-1 step', offHelp: 'no pixel shuffling between patches', cli: { flag: '--pixel-interaction' } },
  { key: 'interactionEvery', scope: 'method', kind: 'integer', default: 1, min: 1, methods: ['asg', 'cutdiffusion'], help: 'pixel interaction at every m-th stage-1 step (1: every step); between them the patches run ahead of each other on several devices (faster there; softer images on the shipped model: docs/fidelity.md)', hint: 'Use 1 to shuffle every step.', cli: { flag: '--interaction-every', arg: '<m>' } },
  { key: 'interactionTail', scope: 'method', kind: 'number', default: 0, min: 0, max: 1, methods: ['asg', 'cutdiffusion'], help: 'fraction of stage 1, at its end, with pixel interaction at every step whatever --interaction-every says (0: none); halves what a sparse --interaction-every costs in images on the shipped model, without removing it (docs/fidelity.md)', hint: 'Use 0 for none, e.g. 0.25 for the last quarter of stage 1.', cli: { flag: '--interaction-tail', arg: '<f>' } },
  { key: 'interactionGroups', scope: 'method', kind: 'choice', choices: ['all', 'lines'], default: 'all', methods: ['asg', 'cutdiffusion'], help: 'which patches a pixel-interaction step shuffles together: all (CutDiffusion), or lines (the rows of the patch grid, then its columns, alternating every --lines-period interacting steps; with a period of 2 or more the lines run ahead of each other on several devices: 6.68x instead of 5.50x on 8 at 3072 px in the latency model, docs/benchmarks.md; images: docs/fidelity.md)', cli: { flag: '--interaction-groups', arg: '<mode>' } },
  { key: 'linesPeriod', scope: 'method', kind: 'integer', default: 2, min: 1, methods: ['asg', 'cutdiffusion'], help: 'interacting steps the lines of --interaction-groups lines hold before rows and columns swap (1: every step, which on several devices is a barrier each step like all)', hint: 'Use 2 or more, e.g. 2', cli: { flag: '--lines-period', arg: '<n>' } },
  { key: 'structureWeight', scope: 'method', kind: 'number', default: 1, min: 0, max: 1, methods: ['asg'], help: 'structure guidance weight w_max (0: no guidance)', hint: 'Use 0 to turn guidance off, at most 1.', cli: { flag: '--structure-weight', arg: '<w>' } },
  { key: 'structureSchedule', scope: 'method', kind: 'choice', choices: ['cosine', 'constant'], default: 'cosine', upscaleDefault: 'constant', defaultText: 'cosine; constant when upscaling (the input is the target)', methods: ['asg'], help: 'w_t schedule over the steps', cli: { flag: '--structure-schedule', arg: '<s>' } },
  { key: 'structureGamma', scope: 'method', kind: 'number', default: 1, min: 0, exclusiveMin: true, methods: ['asg'], help: 'exponent of the cosine schedule', hint: 'Use 1 for the plain cosine decay.', cli: { flag: '--structure-gamma', arg: '<g>' } },
  { key: 'structureSpace', scope: 'method', kind: 'choice', choices: ['x0', 'eps'], default: 'x0', methods: ['asg'], help: 'align denoised estimates (x0) or noise predictions (eps, the paper\'s Eq. 3)', cli: { flag: '--structure-space', arg: '<s>' } },
  { key: 'guidanceSync', scope: 'method', kind: 'boolean', default: false, methods: ['asg'], help: 'synchronous structure guidance (default: asynchronous, one step stale)', cli: { flag: '--guidance-sync' } },
  { key: 'mask', scope: 'method', kind: 'boolean', default: true, methods: ['asg'], help: 'weight the guidance by the cross-attention mask', offHelp: 'uniform structure guidance, no cross-attention mask', cli: { flag: '--mask' } },
  { key: 'maskEvery', scope: 'method', kind: 'integer', default: 1, min: 1, methods: ['asg'], help: 'recompute the mask every n guided steps', hint: 'Use 1 to recompute the mask every step.', cli: { flag: '--mask-every', arg: '<n>' } },
  { key: 'maskLayers', scope: 'method', kind: 'list', default: [], methods: ['asg'], help: 'attention layers to use (name substrings, comma separated)', hint: 'Use [] for all up-block layers.', cli: { flag: '--mask-layers', arg: '<list>' } },
  { key: 'maskGamma', scope: 'method', kind: 'number', default: 1, min: 0, exclusiveMin: true, methods: ['asg'], help: 'mask exponent after min-max normalisation', hint: 'Use 1 for the plain normalised map.', cli: { flag: '--mask-gamma', arg: '<g>' } },
  { key: 'maskThreshold', scope: 'method', kind: 'number', default: 0, min: 0, max: 1, methods: ['asg'], help: 'mask values below this become 0', hint: 'Use 0 to keep the whole mask.', cli: { flag: '--mask-threshold', arg: '<t>' } },
  { key: 'windowStride', scope: 'method', kind: 'integer', default: null, nullable: true, min: 1, defaultText: 'half the native latent size', methods: PATCH_METHODS, help: 'stage-2 window stride in latent pixels', hint: 'Use a stride of at most the native latent size, or omit it for half of it.', cli: { flag: '--window-stride', arg: '<n>' } },
  { key: 'stage2Windows', scope: 'method', kind: 'integer', default: 0, min: 0, defaultText: '0 (one grid of stride half the window)', methods: PATCH_METHODS, help: 'stage-2 windows per step a multiple of K (e.g. the device count): the fewest that cover with overlap, alternating row/column layouts step to step so seams move; the image depends on K, never on the devices (fewer windows: faster, but more seams and extra objects on the shipped model: docs/fidelity.md)', hint: 'Use 0 for the fixed-stride grid, or e.g. 4 or 8.', cli: { flag: '--stage2-windows', arg: '<k>' } },
  { key: 'windowJitter', scope: 'method', kind: 'boolean', default: true, methods: PATCH_METHODS, help: 'redraw the stage-2 window offsets every step', offHelp: 'stage-2 windows at fixed positions (no per-step jitter)', cli: { flag: '--window-jitter' } },
] as const satisfies readonly OptionSpec[];

/** Options of VaeDecodeOptions (GenerateParams.vae). */
export const VAE_OPTIONS = [
  { key: 'tiling', scope: 'vae', kind: 'choice', choices: ['auto', 'on', 'off'], default: 'auto', help: 'tiled VAE decoding and encoding (auto: when the latent exceeds the tile)', cli: { flag: '--vae-tiling', arg: '<mode>' } },
  { key: 'tileSize', scope: 'vae', kind: 'integer', default: 64, min: 8, help: 'VAE tile size in latent pixels', hint: "Use a tile size in latent pixels (an eighth of the image's), e.g. 64; smaller tiles use less memory", cli: { flag: '--vae-tile-size', arg: '<n>' } },
  { key: 'overlap', scope: 'vae', kind: 'integer', default: 16, min: 0, help: 'VAE tile overlap in latent pixels (at most half the tile)', hint: 'Use an overlap in latent pixels, e.g. 16, at most half the tile size', cli: { flag: '--vae-tile-overlap', arg: '<n>' } },
  { key: 'stats', scope: 'vae', kind: 'choice', choices: ['exact', 'estimate', 'off'], default: 'exact', help: "GroupNorm statistics of the tiles: the whole image's, exact (the tiles decoded layer by layer up to each norm layer, then the rest: see --vae-stats-memory) or estimated from a downscaled decode (one pass); off: each tile its own (colours shift between tiles)", cli: { flag: '--vae-tile-stats', arg: '<mode>' } },
  { key: 'statsMemory', scope: 'vae', kind: 'integer', default: 1024, min: 0, max: 1048576, help: "MiB of tile activations exact statistics may keep between norm layers, so that each layer resumes the tiles where the last one left them instead of recomputing the decoder from the latent (all kept: about one pass; 0: a pass of the decoder's prefix per layer, 28-31 on SD's)", hint: 'Use MiB of memory, e.g. 1024, or 0 for the least memory', cli: { flag: '--vae-stats-memory', arg: '<MiB>' } },
  { key: 'attention', scope: 'vae', kind: 'choice', choices: ['auto', 'global', 'tile'], default: 'auto', help: "where the VAE's self-attention runs when tiling: global (once over the whole latent, in query chunks when large; the rest tiled), tile (each tile's attention sees only the tile: less memory), or auto (global up to a 256x256 latent, 2048 px; tile above)", cli: { flag: '--vae-attention', arg: '<mode>' } },
] as const satisfies readonly OptionSpec[];

/** Options of PipelineOptions (loading). */
export const PIPELINE_OPTIONS = [
  { key: 'devices', scope: 'pipeline', kind: 'string', default: 'cpu', help: 'devices, e.g. cpu | cpu,cpu | webgpu:0 | cuda:0,cuda:1 | auto (a worker on each GPU the CUDA provider can use where it is installed, else WebGPU where its adapter beats the CPU on a dense test, else the CPU; `asgd devices` says what it picks)', cli: { flag: '--devices', arg: '<list>' } },
  { key: 'threads', scope: 'pipeline', kind: 'integer', default: 0, min: 0, max: 1024, hint: 'Use 0 (ONNX Runtime decides) or at most the cores a worker should use, e.g. 4.', defaultText: '0 (ONNX Runtime default; the cores divided among several CPU workers)', help: 'threads per CPU worker', cli: { flag: '--threads', arg: '<n>' } },
  { key: 'splitCfg', scope: 'pipeline', kind: 'choice', choices: ['auto', 'balance', 'always', 'never'], default: 'auto', help: 'run units as two CFG halves to balance devices (auto: on CPU workers, where it is bit-exact)', cli: { flag: '--split-cfg', arg: '<mode>' } },
  { key: 'fuseAttention', scope: 'pipeline', kind: 'boolean', default: false, help: "run the UNet's attention as fused MultiHeadAttention nodes, each transformer block's residual Add and norm as one SkipLayerNormalization, and where every device is a WebGPU one each GEGLU as one BiasSplitGelu (same images up to float rounding; its speed on a GPU: docs/benchmarks.md)", cli: { flag: '--fuse-attention' } },
  { key: 'unetPrecision', scope: 'pipeline', kind: 'choice', choices: ['native', 'float16'], default: 'native', help: "float16: run a float32 UNet export as a float16 graph, converted once and stored beside it like the other derived graphs (half the weights' bytes; the timestep embedding, squares and Resize scales stay float32, and the attention scores where the UNet's config sets upcast_attention, as SD 2.1's does); native: as exported. A float16 export runs as it is either way", cli: { flag: '--unet-precision', arg: '<p>' } },
  { key: 'probeSession', scope: 'pipeline', kind: 'choice', choices: ['shared', 'separate'], default: 'shared', help: "shared: units run on the attention-probe graph where it gives the UNet's bits, so the device holding the probe keeps one copy of the UNet (every call also computes the maps); separate: the UNet and the probe graph in two sessions there (twice the UNet's memory; units not probed skip the maps' work)", cli: { flag: '--probe-session', arg: '<mode>' } },
  { key: 'workerIsolation', scope: 'pipeline', kind: 'choice', choices: ['auto', 'thread', 'process'], default: 'auto', help: 'run each device worker as a thread of this process or as a process of its own (process: a crash in a device ends only its worker; auto: processes for WebGPU workers when this process would otherwise hold several WebGPU worker threads (of this pipeline or another), which share one WebGPU device there and ran slower than processes; threads otherwise)', cli: { flag: '--worker-isolation', arg: '<mode>' } },
  { key: 'retryOnOtherDevice', scope: 'pipeline', kind: 'boolean', default: false, help: "re-run a failed device's units on the other devices instead of stopping", cli: { flag: '--retry' } },
  { key: 'vae', scope: 'pipeline', kind: 'string', help: "a separate VAE folder replacing the model's", cli: { flag: '--vae', arg: '<dir>' } },
] as const satisfies readonly OptionSpec[];

/** asg's structure sources when upscaling (core/generation/img2img.ts), the default first. */
export const STRUCTURE_SOURCES = ['polyphase', 'input', 'input-skip', 'skip', 'key'] as const;
export type StructureSource = (typeof STRUCTURE_SOURCES)[number];

/** Options of UpscaleSettings (`asgd upscale`, `pipe.upscale`, and `asgd generate --upscale`). */
export const UPSCALE_OPTIONS = [
  { key: 'scale', scope: 'upscale', kind: 'number', default: 2, min: 1, max: 8, help: 'output size = input size x scale (or give -W/-H)', hint: 'Use a scale from 1 to 8, e.g. 2 (or give -W/-H).', cli: { flag: '--scale', arg: '<x>' } },
  { key: 'strength', scope: 'upscale', kind: 'number', default: 0.5, min: 0, exclusiveMin: true, max: 1, help: 'fraction of the steps re-run from the noised input (near 0 keeps it, 1 redraws it)', hint: 'Use a strength above 0 and at most 1, e.g. 0.5.', cli: { flag: '--strength', arg: '<s>' } },
  { key: 'structureSource', scope: 'upscale', kind: 'choice', choices: STRUCTURE_SOURCES, default: 'polyphase', methods: ['asg'], help: 'structure the patches follow: each patch its own polyphase part of the encoded input (polyphase; measured: docs/upscale.md), the input at native size for every patch (input), input plus a skip residual (input-skip), the skip residual with the key patch (skip), or the key patch alone (key)', cli: { flag: '--structure-source', arg: '<s>' } },
  { key: 'maxPixels', scope: 'upscale', kind: 'integer', default: 4096 * 4096, min: 1, help: 'refuse upscaled outputs above this many pixels', hint: 'Use a positive pixel count, e.g. 16777216.', cli: { flag: '--max-pixels', arg: '<n>' } },
] as const satisfies readonly OptionSpec[];

/** Options of the `asgd generate` command alone. */
export const CLI_OPTIONS = [
  { key: 'model', scope: 'cli', kind: 'string', defaultText: 'the model shipped in the package', help: 'model folder (optimum ONNX export)', cli: { flag: '--model', short: '-m', arg: '<dir>' } },
  { key: 'output', scope: 'cli', kind: 'string', default: 'out.png', help: 'output image (.png, .jpg, .webp)', cli: { flag: '--output', short: '-o', arg: '<file>' } },
  { key: 'overwrite', scope: 'cli', kind: 'boolean', default: false, help: 'replace an existing output file', cli: { flag: '--overwrite' } },
  { key: 'preview', scope: 'cli', kind: 'string', help: 'write a low-resolution preview image every --preview-every steps', cli: { flag: '--preview', arg: '<file>' } },
  { key: 'previewEvery', scope: 'cli', kind: 'integer', default: 5, min: 1, help: 'preview interval in steps', cli: { flag: '--preview-every', arg: '<n>' } },
  { key: 'from', scope: 'cli', kind: 'string', help: 're-run the generation embedded in an image (flags given override it; a method\'s on/off flag has its opposite for that, e.g. --mask over a recorded --no-mask)', cli: { flag: '--from', arg: '<image>' } },
  { key: 'upscale', scope: 'cli', kind: 'number', min: 1, max: 8, help: 'generate: then upscale by this factor in the same run (one file; settings from the upscale options)', hint: 'Use a factor from 1 to 8, e.g. 2.', cli: { flag: '--upscale', arg: '<x>' } },
  { key: 'json', scope: 'cli', kind: 'boolean', default: false, help: 'print a machine-readable result on stdout, warnings included (stderr: errors only)', cli: { flag: '--json' } },
  { key: 'quiet', scope: 'cli', kind: 'boolean', default: false, help: 'no progress bar or summary (warnings are still shown)', cli: { flag: '--quiet', short: '-q' } },
  { key: 'verbose', scope: 'cli', kind: 'boolean', default: false, help: "also show ONNX Runtime's and the GPU driver's warnings (hidden otherwise; the environment variable ASGD_RUNTIME_LOG=warning|info|verbose does the same for the library)", cli: { flag: '--verbose' } },
] as const satisfies readonly OptionSpec[];

/** Every option, in the order `asgd generate --help` and the README list them. */
export const ALL_OPTIONS: readonly OptionSpec[] = [...CLI_OPTIONS.slice(0, 1), ...PARAM_OPTIONS, ...METHOD_OPTIONS, ...VAE_OPTIONS, ...PIPELINE_OPTIONS, ...CLI_OPTIONS.slice(1), ...UPSCALE_OPTIONS.slice(1)];

/**
 * Where an upscale (`asgd upscale`, the API's upscale route) reads one of generate's options differently: the size it
 * makes, the prompts' and the scheduler's defaults.
 */
export const UPSCALE_COMMAND_DIFFERENCES: Record<string, Partial<OptionSpec>> = {
  prompt: { defaultText: 'the one embedded in the input, else empty' },
  negativePrompt: { default: undefined, defaultText: 'the one embedded in the input when -p is not given, else empty' },
  scheduler: { defaultText: "the model's; euler instead of pndm/lms, which cannot start from a noised image" },
  width: { min: 1, multipleOf: undefined, defaultText: "the input's x --scale", help: 'output width in pixels, any (denoised padded to a multiple of 8, then cropped); with only -W or -H the other follows the input\'s aspect ratio', hint: 'Use a positive width, e.g. 2048.' },
  height: { min: 1, multipleOf: undefined, defaultText: "the input's x --scale", help: 'output height in pixels, any (denoised padded to a multiple of 8, then cropped); with only -W or -H the other follows the input\'s aspect ratio', hint: 'Use a positive height, e.g. 2048.' },
};

/** The options of `asgd upscale`: generate's, without --upscale, and the upscale options with --scale. */
export const UPSCALE_COMMAND_OPTIONS: readonly OptionSpec[] = [
  ...ALL_OPTIONS.filter((s) => s.key !== 'upscale' && !UPSCALE_OPTIONS.some((u) => u === s)).map((s) => (UPSCALE_COMMAND_DIFFERENCES[s.key] ? { ...s, ...UPSCALE_COMMAND_DIFFERENCES[s.key] } : s)),
  ...UPSCALE_OPTIONS,
];

/** The spec of `key` in a group (a typo in a key is a compile error). */
export function optionSpec<G extends readonly OptionSpec[]>(group: G, key: G[number]['key']): OptionSpec {
  const s = group.find((o) => o.key === key);
  if (!s) throw new Error(`no option ${String(key)}`);
  return s;
}
