/**
 * A device Web Worker: owns one device's ONNX Runtime Web sessions (WebGPU or WebAssembly) and runs the same
 * component adapters as the Node worker threads (src/onnx/), one request at a time. Holds the generation's text
 * conditioning so that it crosses the worker boundary once.
 */
import { AsgdError } from '../../core/errors.ts';
import { stateBuffers } from '../../core/vae/tiled.ts';
import type { TextConditioning } from '../../core/conditioning.ts';
import { TextEncoderAdapter } from '../../onnx/text-encoder.ts';
import type { AttentionForm, FlashCheck } from '../../graph/attention-check.ts';
import { bindOrt, floatTensor, ioList, readFloat, type OpenSession } from '../../onnx/tensors.ts';
import { MASK_WEIGHTS_INPUT, PROBE_OUTPUT_PREFIX } from '../../graph/attention-probe.ts';
import type { UnetAdapter } from '../../onnx/unet.ts';
import { denoiserAdapter } from '../../onnx/transformer.ts';
import { DeviceConditioning, IdentityUploader } from '../../onnx/device-conditioning.ts';
import type { DeviceConditioningCounts } from '../../onnx/io.ts';
import { VaeDecoderAdapter, VaeEncoderAdapter } from '../../onnx/vae.ts';
import type { DeviceInit, DeviceReply, DeviceRequest, DeviceResult, ExternalFile, VaeHalf, WebComponent, WireBytes } from './protocol.ts';
import type { VaeHalfGraphs } from './vae-graphs.ts';
import type { DerivedUnet } from './probe-graph.ts';
import { outOfMemory, toWire } from './wire-error.ts';
import type { ExternalPieces } from '../../graph/external-pieces.ts';


const LABELS: Record<WebComponent, string> = {
  textEncoder: 'text_encoder',
  textEncoder2: 'text_encoder_2',
  textEncoder3: 'text_encoder_3',
  unet: 'unet',
  unetProbe: 'unet (attention probe)',
  vaeDecoder: 'vae_decoder',
  vaeEncoder: 'vae_encoder',
};

/**
 * A loaded VAE half: its bytes and external-data files, kept for the graphs tiled decoding or encoding derives from it
 * later (no other component's are kept: an SD UNet's are gigabytes, and ONNX Runtime Web holds its own copy once the
 * session is open), and those graphs, made from its bytes on first use.
 */
interface LoadedHalf {
  bytes: Uint8Array;
  external: ExternalFile[];
  graphs?: Promise<VaeHalfGraphs>;
}

interface State {
  init?: DeviceInit;
  sessions: Partial<Record<WebComponent, OpenSession>>;
  text?: TextEncoderAdapter;
  text2?: TextEncoderAdapter;
  /** SD3's T5. */
  text3?: TextEncoderAdapter;
  unet?: UnetAdapter;
  probe?: UnetAdapter;
  decoder?: VaeDecoderAdapter;
  encoder?: VaeEncoderAdapter;
  vae: Partial<Record<VaeHalf, LoadedHalf>>;
  cond?: TextConditioning;
  /** On WebGPU: puts the text conditioning on the device once per generation (the adapters' DeviceConditioning). */
  uploader?: IdentityUploader;
  /** Buffers the page sends in pieces ('stage'), until the load that names them. */
  staged: Map<number, { data: Uint8Array; received: number }>;
}

const state: State = { sessions: {}, vae: {}, staged: new Map() };

/**
 * A Blob's bytes: whole, or where Chromium refuses that (a stored 3.4 GB file: "NotReadableError"; 1.7 GB read whole in
 * 5.7 s), chunk by chunk into one buffer (3.4 GB in 24 s).
 */
async function readBlob(blob: Blob): Promise<Uint8Array> {
  try {
    return new Uint8Array(await blob.arrayBuffer());
  } catch {
    const out = new Uint8Array(blob.size);
    const reader = blob.stream().getReader();
    let at = 0;
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      if (at + value.length > out.length) throw new Error(`more than its ${blob.size} bytes`);
      out.set(value, at);
      at += value.length;
    }
    if (at !== out.length) throw new Error(`${at} of its ${blob.size} bytes`);
    return out;
  }
}

/** Takes a staged buffer (once: the load that names it owns it), reads a Blob, or takes the bytes themselves. */
async function takeBytes(b: WireBytes, what: string): Promise<Uint8Array> {
  if (b instanceof Uint8Array) return b;
  if (b instanceof Blob) {
    try {
      return await readBlob(b);
    } catch (err) {
      // A model error: the page's retry removes the stored copy and downloads the file again.
      throw new AsgdError(`Cannot read ${what} from this browser's storage`, {
        kind: 'model', parameter: what, expected: `its ${b.size} stored bytes`, received: err instanceof Error ? err.message : String(err), hint: 'Load again', cause: err,
      });
    }
  }
  const s = state.staged.get(b.staged);
  state.staged.delete(b.staged);
  if (!s || s.received !== s.data.length) throw new Error(`device worker: ${what} was not received whole (${s ? `${s.received} of ${s.data.length} bytes` : 'nothing staged'})`);
  return s.data;
}

type OrtWeb = typeof import('onnxruntime-web/wasm');
let ort: OrtWeb;

/**
 * ONNX Runtime Web for the provider: the WebGPU build (WebGPU and WebAssembly kernels, the larger .wasm) only when
 * WebGPU runs; the plain WebAssembly build (about half the download and compile time) otherwise.
 */
async function runtimeFor(provider: DeviceInit['provider']): Promise<OrtWeb> {
  return provider === 'webgpu' ? await import('onnxruntime-web/webgpu') : await import('onnxruntime-web/wasm');
}

/**
 * A session, the external-data files cut into pieces to open it (none where every file was small enough), and the
 * weights of a model file read in place as external data (inline-weights.ts).
 */
type Opened = OpenSession & { cut: ExternalPieces['cut']; inline?: { tensors: number; bytes: number } };

/** A model file this large with its weights inline opens with them read in place (src/graph/inline-weights.ts). */
const INLINE_OVER = 64 << 20;

async function open(bytes: Uint8Array, label: string, outputLocation?: Record<string, 'gpu-buffer' | 'cpu'>, external: ExternalFile[] = []): Promise<Opened> {
  const init = state.init;
  if (!init) throw new Error('device worker: load before init');
  let inline: Opened['inline'];
  try {
    // A large file's inline weights: read in place as external data (held once in WebAssembly's memory, not twice).
    let model = bytes;
    if (external.length === 0 && bytes.length > INLINE_OVER) {
      const r = (await import('../../graph/inline-weights.ts')).inlineWeightsAsExternal(bytes);
      if (r) {
        model = r.model;
        external = [r.file];
        inline = { tensors: r.tensors, bytes: r.bytes };
      }
    }
    // ONNX Runtime Web reads no offset past 4 GiB of one file: large files go as pieces, views of their bytes (the
    // protobuf code loaded only for a model with external data, as the worker's other graph code is).
    const pieces: ExternalPieces = external.length > 0
      ? (await import('../../graph/external-pieces.ts')).externalPieces(model, external, init.externalPieceBytes)
      : { model, files: [], cut: [] };
    // Severity 3 (errors): a session's own level defaults to warnings whatever ort.env.logLevel says, and WebGPU
    // sessions warn on the console's error channel that shape ops run on the CPU.
    const session = await ort.InferenceSession.create(pieces.model, {
      executionProviders: [init.provider], graphOptimizationLevel: 'all', logSeverityLevel: 3, ...(outputLocation ? { preferredOutputLocation: outputLocation } : {}),
      ...(pieces.files.length > 0 ? { externalData: pieces.files.map((f) => ({ path: f.path, data: f.data })) } : {}),
    });
    // The model file's own bytes, mounted for its weights, are no external-data file of the export: not noted as one.
    const cut = inline ? pieces.cut.filter((c) => c.path !== external[0]!.path) : pieces.cut;
    return { session, file: label, inputs: ioList(session.inputMetadata), outputs: ioList(session.outputMetadata), cut, ...(inline ? { inline } : {}) };
  } catch (err) {
    const msg = err instanceof Error ? err.message : String(err);
    // ONNX Runtime Web fetches its own .mjs and .wasm when the first session is created.
    if (/no available backend found|failed to fetch|dynamically imported module|importScripts|failed to (asynchronously prepare|load) wasm|wasm streaming compile failed/i.test(msg)) {
      const where = init.wasmPaths ?? 'next to the bundle (the default)';
      throw new AsgdError(`ONNX Runtime Web could not load its runtime files: ${msg}`, {
        kind: 'device', parameter: 'wasmPaths', expected: `ONNX Runtime Web's .mjs and .wasm files in ${where}`, received: 'a failed request',
        hint: 'Set wasmPaths to the folder URL (ending in "/") that serves the ort-wasm-*.mjs and ort-wasm-*.wasm files of onnxruntime-web/dist, in the installed version',
        cause: err,
      });
    }
    if (init.provider === 'webgpu' && /webgpu|adapter|device|gpu/i.test(msg)) {
      throw new AsgdError(`The webgpu provider could not load ${label}: ${msg}`, {
        kind: 'device', parameter: 'provider', expected: 'a browser with WebGPU', received: 'webgpu failed', hint: 'Use provider "wasm"', cause: err,
      });
    }
    const oom = outOfMemory(err, init.provider, `loading ${label}`);
    if (oom !== err) throw oom;
    const held = inline ? bytes.length : external.reduce((n, f) => n + f.data.length, bytes.length);
    // On WebAssembly, ONNX Runtime Web holds a session's weights in its memory (4 GB at most); on WebGPU it uploads
    // those the GPU runs from the files' bytes to the GPU (bench/web-external-offsets.ts opened 4.5 GiB of them).
    const where = init.provider === 'webgpu' ? 'more than this browser or its GPU could hold' : "more than ONNX Runtime Web's WebAssembly memory holds";
    const hint = held > 2 ** 31
      ? `It holds ${(held / 2 ** 30).toFixed(1)} GiB of weights, ${where}: use a float16 export${label === 'unet' ? ", or load with unetPrecision: 'float16'" : ''}${init.provider === 'webgpu' ? '' : ", or provider 'webgpu'"}, or the Node API`
      : 'The file is damaged or not an ONNX model';
    throw new AsgdError(`ONNX Runtime Web cannot load ${label}: ${msg}`, { kind: 'model', parameter: label, hint, cause: err });
  }
}

/** Reads external tensors from the files held in memory, for a conversion that needs their values. */
function externalReader(files: ExternalFile[]): (e: { location: string; offset: number; length?: number }) => Uint8Array {
  return (e) => {
    const f = files.find((x) => x.path === e.location);
    if (!f) throw new Error(`external-data file ${e.location} was not loaded`);
    const end = e.length === undefined ? f.data.length : e.offset + e.length;
    if (end > f.data.length) throw new Error(`external-data file ${e.location} holds ${f.data.length} bytes, fewer than a tensor at ${e.offset} needs (${end})`);
    return f.data.subarray(e.offset, end);
  };
}

let flashCheck: Promise<FlashCheck> | undefined;

/**
 * How the fused attention is written on this device: on WebGPU the flash form where ONNX Runtime Web's
 * flash-attention kernel passes the check (src/graph/attention-check.ts, once per worker), else padded.
 */
async function attentionForm(): Promise<AttentionForm> {
  const { attentionFormFor, runFlashCheck, NO_WEBGPU_FORM } = await import('../../graph/attention-check.ts');
  if (state.init?.provider !== 'webgpu') return NO_WEBGPU_FORM;
  flashCheck ??= runFlashCheck(async (c, x) => {
    const s = await open(x.model, 'attention check');
    try {
      const r = await s.session.run({ q: floatTensor(c.type, x.q, x.qDims, 'q'), k: floatTensor(c.type, x.k, x.kvDims, 'k'), v: floatTensor(c.type, x.v, x.kvDims, 'v') });
      return readFloat(r['o']!, 'o');
    } finally {
      await s.session.release();
    }
  }, () => performance.now());
  return attentionFormFor(await flashCheck);
}

async function load(component: WebComponent, bytes: Uint8Array, external: ExternalFile[], fuse: boolean, float32: boolean, probe = false): Promise<DeviceResult> {
  if (component === 'unet' && probe) {
    const served = await loadUnetAsProbe(bytes, external, fuse);
    if (!('probeReason' in served)) return served;
    return { ...(await load('unet', bytes, external, fuse, float32)), ...served } as DeviceResult;
  }
  let derived: Partial<Omit<DerivedUnet, 'bytes'>> & Partial<AttentionForm> & { float32Tensors?: number; float32Reason?: string } = {};
  if (float32) {
    const { ALREADY_FLOAT32, float32ModelBytes } = await import('../../graph/float32-upcast.ts');
    const r = float32ModelBytes(bytes, external.length > 0 ? externalReader(external) : undefined);
    if ('bytes' in r) ({ bytes, tensors: derived.float32Tensors } = r);
    else if (r.reason !== ALREADY_FLOAT32) derived.float32Reason = r.reason;
  }
  if (component === 'unetProbe' || (component === 'unet' && fuse)) {
    const { derivedUnetBytes } = await import('./probe-graph.ts');
    const form = fuse ? await attentionForm() : undefined;
    const webgpu = state.init?.provider === 'webgpu';
    const d = derivedUnetBytes(bytes, { probe: component === 'unetProbe', fuse, flashForm: form?.form === 'flash', biasSplitGelu: webgpu });
    if ('reason' in d) return { type: 'loaded', io: { inputs: [], outputs: [] }, reason: d.reason };
    ({ bytes, ...derived } = d);
    if (form && d.fused) derived = { ...derived, ...form };
  }
  const s = await open(bytes, LABELS[component], undefined, external);
  const old = state.sessions[component];
  state.sessions[component] = s;
  // Released unless another component still runs on it (the UNet and the probe as one session).
  if (old && !Object.values(state.sessions).includes(old)) await old.session.release();
  if (component === 'textEncoder') state.text = new TextEncoderAdapter(s, 'text_encoder');
  if (component === 'textEncoder2') state.text2 = new TextEncoderAdapter(s, 'text_encoder_2');
  if (component === 'textEncoder3') state.text3 = new TextEncoderAdapter(s, 'text_encoder_3');
  // A replaced adapter's conditioning leaves the device with it.
  if (component === 'unet') {
    state.unet?.device?.clear();
    state.unet = unetAdapter(s);
  }
  if (component === 'unetProbe') {
    state.probe?.device?.clear();
    state.probe = unetAdapter(s);
  }
  if (component === 'vaeDecoder' || component === 'vaeEncoder') {
    const half: VaeHalf = component === 'vaeDecoder' ? 'decoder' : 'encoder';
    if (half === 'decoder') state.decoder = new VaeDecoderAdapter(s);
    else state.encoder = new VaeEncoderAdapter(s);
    await (await state.vae[half]?.graphs)?.release(true);
    state.vae[half] = { bytes, external };
  }
  return { type: 'loaded', io: { inputs: s.inputs, outputs: s.outputs }, ...derived, ...(s.cut.length > 0 ? { externalPieces: s.cut } : {}), ...(s.inline ? { inlineWeights: s.inline } : {}) };
}

/**
 * The attention-probe graph opened as the UNet and the probe at once (Node: pipeline.ts, probeServesUnet): written out,
 * its noise prediction is the UNet's bit for bit; fused, too, where every attention is fused (the probed layers keep
 * their scores for the maps beside the fused node). An ONNX Attention node the probe reads stays unfused, and then
 * the UNet is opened as asked (two sessions, as before): `probeReason` says why.
 */
async function loadUnetAsProbe(bytes: Uint8Array, external: ExternalFile[], fuse: boolean): Promise<DeviceResult | { probeReason: string; probeFailed?: true }> {
  const { derivedUnetBytes } = await import('./probe-graph.ts');
  const form = fuse ? await attentionForm() : undefined;
  const d = derivedUnetBytes(bytes, { probe: true, fuse, flashForm: form?.form === 'flash', biasSplitGelu: state.init?.provider === 'webgpu' });
  if ('reason' in d) return { probeReason: d.reason, probeFailed: true };
  if (d.fused !== undefined && d.onnxAttention > 0) return { probeReason: `${d.onnxAttention} ONNX Attention nodes stay unfused in the probe graph` };
  const { bytes: graph, ...derived } = d;
  const s = await open(graph, LABELS.unet, undefined, external);
  for (const a of new Set([state.unet, state.probe])) a?.device?.clear();
  for (const old of new Set([state.sessions.unet, state.sessions.unetProbe])) await old?.session.release();
  state.sessions.unet = s;
  state.sessions.unetProbe = s;
  state.unet = unetAdapter(s);
  state.probe = state.unet;
  // The UNet described without the probe's input and outputs, as Node's worker describes it.
  const io = { inputs: s.inputs.filter((i) => i.name !== MASK_WEIGHTS_INPUT), outputs: s.outputs.filter((o) => !o.name.startsWith(PROBE_OUTPUT_PREFIX)) };
  return { type: 'loaded', io, probeIo: { inputs: s.inputs, outputs: s.outputs }, servesProbe: true, ...derived, ...(form && d.fused ? form : {}), ...(s.cut.length > 0 ? { externalPieces: s.cut } : {}), ...(s.inline ? { inlineWeights: s.inline } : {}) };
}

/**
 * The denoiser's adapter (a UNet's, or an SD3 transformer's tensor names: src/onnx/transformer.ts); on WebGPU its text
 * conditioning is uploaded once per generation and fed from the device on every call (as Node's WebGPU workers do:
 * src/onnx/device-conditioning.ts), the same bits as fed from the host.
 */
function unetAdapter(s: OpenSession): UnetAdapter {
  if (state.init?.provider !== 'webgpu') return denoiserAdapter(s);
  state.uploader ??= new IdentityUploader((model, label) => open(model, label, { y: 'gpu-buffer' }));
  return denoiserAdapter(s, { device: new DeviceConditioning(state.uploader) });
}

/**
 * A loaded VAE half's derived graphs; the graph surgery loads on first use. One derived session is open at a time in
 * the worker, as in Node's: the other half's (an upscale's encoder's, when the decode starts) is released first.
 */
async function vaeGraphs(half: VaeHalf): Promise<VaeHalfGraphs> {
  const loaded = state.vae[half];
  if (!loaded) throw new Error(`device worker: vae_${half} not loaded`);
  for (const [other, h] of Object.entries(state.vae)) if (other !== half && h.graphs) await (await h.graphs).release();
  loaded.graphs ??= (async () => {
    const { VaeHalfGraphs } = await import('./vae-graphs.ts');
    const states = state.init?.provider === 'webgpu' ? new (await import('../../onnx/tile-states.ts')).DeviceTileStates() : undefined;
    return new VaeHalfGraphs(half, loaded.bytes, (b, label, location) => open(b, label, location, loaded.external), states);
  })();
  return loaded.graphs;
}

/** Every loaded VAE half's graphs that were derived. */
async function derivedVaeGraphs(): Promise<VaeHalfGraphs[]> {
  return Promise.all(Object.values(state.vae).flatMap((h) => (h.graphs ? [h.graphs] : [])));
}

async function handle(req: DeviceRequest): Promise<{ result: DeviceResult; transfer: Transferable[] }> {
  switch (req.type) {
    case 'init': {
      state.init = req.init;
      ort = await runtimeFor(req.init.provider);
      // ONNX Runtime prints its warnings (e.g. shape ops placed on the CPU) on the console's error channel.
      ort.env.logLevel = 'error';
      if (req.init.threads > 0) ort.env.wasm.numThreads = req.init.threads;
      if (req.init.wasmPaths) ort.env.wasm.wasmPaths = req.init.wasmPaths;
      bindOrt(ort);
      return { result: { type: 'ok' }, transfer: [] };
    }
    case 'stage': {
      let s = state.staged.get(req.key);
      if (!s) {
        s = { data: new Uint8Array(req.length), received: 0 };
        state.staged.set(req.key, s);
      }
      s.data.set(req.piece, req.offset);
      s.received += req.piece.length;
      return { result: { type: 'ok' }, transfer: [] };
    }
    case 'load': {
      const bytes = await takeBytes(req.bytes, LABELS[req.component]);
      const external: ExternalFile[] = [];
      for (const f of req.external ?? []) external.push({ path: f.path, data: await takeBytes(f.data, f.path) });
      return { result: await load(req.component, bytes, external, req.fuse ?? false, req.float32 ?? false, req.probe ?? false), transfer: [] };
    }
    case 'describe': {
      const components: Partial<Record<WebComponent, { inputs: OpenSession['inputs']; outputs: OpenSession['outputs'] }>> = {};
      for (const [name, s] of Object.entries(state.sessions) as [WebComponent, OpenSession][]) components[name] = { inputs: s.inputs, outputs: s.outputs };
      // Every VAE half's (the decoder's and an upscale's encoder's), added up.
      const counts = (await derivedVaeGraphs()).flatMap((g) => (g.tileStates ? [g.tileStates] : []));
      const tileStates = counts.length === 0 ? undefined : counts.reduce((a, c) => ({ held: a.held + c.held, released: a.released + c.released, live: a.live + c.live, liveBytes: a.liveBytes + c.liveBytes }));
      // The probe's own counts only where it is an adapter of its own (not the UNet's, as when one session serves both).
      const unet = state.unet?.device?.counts;
      const probe = state.probe !== state.unet ? state.probe?.device?.counts : undefined;
      const deviceConditioning: { unet?: DeviceConditioningCounts; probe?: DeviceConditioningCounts } = { ...(unet ? { unet } : {}), ...(probe ? { probe } : {}) };
      return {
        result: { type: 'describe', components, sessions: new Set(Object.values(state.sessions)).size, ...(tileStates ? { tileStates } : {}), deviceConditioning },
        transfer: [],
      };
    }
    case 'encodeText': {
      const enc = req.which === 'textEncoder3' ? state.text3 : req.which === 'textEncoder2' ? state.text2 : state.text;
      if (!enc) throw new Error(`device worker: ${req.which} not loaded`);
      const r = await enc.encode(req.rows, req.layer);
      return { result: { type: 'encodeText', hidden: r.hidden.slice(), tokens: r.tokens, dim: r.dim, pooled: r.pooled?.slice(), pooledDim: r.pooledDim }, transfer: [] };
    }
    case 'setConditioning':
      state.cond = req.cond;
      return { result: { type: 'ok' }, transfer: [] };
    case 'unet': {
      if (!state.unet || !state.cond) throw new Error('device worker: unet or conditioning not ready');
      // The probe graph serves the conditional branch of a unit that wants attention; its uncond half runs the plain graph.
      const probe = req.wantAttention && req.part !== 'uncond' ? state.probe : undefined;
      const r = await (probe ?? state.unet).run(
        {
          sample: req.sample, part: req.part, channels: req.channels, height: req.height, width: req.width, timestep: req.timestep, guidanceScale: req.guidanceScale,
          timeIds: req.timeIds, maskTokens: req.maskTokens, maps: probe !== undefined,
        },
        state.cond,
      );
      const output = r.output.byteOffset === 0 && r.output.buffer.byteLength === r.output.byteLength ? r.output : r.output.slice();
      const attention = r.attention?.map((a) => ({ ...a, data: a.data.slice() }));
      const transfer: Transferable[] = [output.buffer as ArrayBuffer, ...(attention ?? []).map((a) => a.data.buffer as ArrayBuffer)];
      return {
        result: { type: 'unet', output, attention, attentionUnsupported: req.wantAttention && req.part !== 'uncond' && !state.probe },
        transfer,
      };
    }
    case 'checkCfgSplit': {
      if (!state.unet) throw new Error('device worker: unet not loaded');
      return { result: { type: 'checkCfgSplit', ...(await state.unet.checkCfgSplit(req.height, req.width)) }, transfer: [] };
    }
    case 'vaeDecode': {
      if (!state.decoder) throw new Error('device worker: vae_decoder not loaded');
      const r = await state.decoder.decode(req.latent, req.channels, req.height, req.width);
      const data = r.data.slice();
      return { result: { type: 'vaeDecode', data, height: r.height, width: r.width }, transfer: [data.buffer] };
    }
    case 'vaeEncode': {
      if (!state.encoder) throw new Error('device worker: vae_encoder not loaded');
      const r = await state.encoder.encodeMean(req.image, req.height, req.width);
      const data = r.data.byteOffset === 0 && r.data.buffer.byteLength === r.data.byteLength ? r.data : r.data.slice();
      return { result: { type: 'vaeEncode', data, channels: r.channels, height: r.height, width: r.width }, transfer: [data.buffer as ArrayBuffer] };
    }
    case 'vaeNorms':
      return { result: (await vaeGraphs(req.half)).prepareNorms(req.of), transfer: [] };
    case 'vaeSplit':
      return { result: (await vaeGraphs(req.half)).prepareSplit(), transfer: [] };
    case 'vaeGraph': {
      const r = await (await vaeGraphs(req.half)).run(req);
      return { result: r, transfer: [r.data.buffer as ArrayBuffer, r.stats.buffer as ArrayBuffer, ...stateBuffers(r.state)] };
    }
    case 'vaeHead': {
      const r = await (await vaeGraphs(req.half)).runHead(req.input, req.channels, req.height, req.width, req.chunkBytes);
      return { result: r, transfer: [r.data.buffer as ArrayBuffer] };
    }
    case 'vaeReleaseStates':
      await (await state.vae[req.half]?.graphs)?.releaseStates(req.held);
      return { result: { type: 'ok' }, transfer: [] };
    case 'close':
      for (const g of await derivedVaeGraphs()) await g.release(true);
      // The conditioning held on the device, then the upload sessions.
      for (const a of new Set([state.unet, state.probe])) a?.device?.clear();
      await state.uploader?.release();
      state.uploader = undefined;
      // Once each: the UNet and the probe may be one session.
      for (const s of new Set(Object.values(state.sessions))) await s.session.release();
      state.sessions = {};
      state.vae = {};
      state.staged.clear();
      return { result: { type: 'ok' }, transfer: [] };
  }
}

const scope = globalThis as unknown as {
  onmessage: ((e: MessageEvent<{ id: number; req: DeviceRequest }>) => void) | null;
  postMessage(message: DeviceReply, transfer: Transferable[]): void;
};

// Requests run one at a time, in arrival order (a session is not run concurrently).
let chain: Promise<void> = Promise.resolve();
scope.onmessage = (e) => {
  const { id, req } = e.data;
  chain = chain.then(() =>
    handle(req).then(
      ({ result, transfer }) => scope.postMessage({ id, ok: true, result }, transfer),
      (err: unknown) => scope.postMessage({ id, ok: false, error: toWire(outOfMemory(err, state.init?.provider, 'component' in req ? `loading ${req.component}` : req.type)) }, []),
    ),
  );
};
