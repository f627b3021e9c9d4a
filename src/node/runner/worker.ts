/**
 * A device worker: owns the ONNX Runtime sessions of one device and evaluates requests one at a time, off the
 * coordinator's thread. Holds the generation's text conditioning so it is sent once.
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { parentPort } from 'node:worker_threads';
import { errorToWire } from '../../core/errors.ts';
import { openSession, releaseSession, type OpenSession, type SessionOptions } from '../../onnx/session.ts';
import { TextEncoderAdapter } from '../../onnx/text-encoder.ts';
import type { UnetAdapter, TextConditioning } from '../../onnx/unet.ts';
import { denoiserAdapter } from '../../onnx/transformer.ts';
import { DeviceConditioning } from '../../onnx/device-conditioning.ts';
import { DeviceUploader } from '../../onnx/device-upload.ts';
import { VAE_GRAPH_MEMORY, VaeDecoderAdapter, VaeEncoderAdapter, VaeNormAdapter } from '../../onnx/vae.ts';
import { statesOnDevice, type DeviceTileStates } from '../../onnx/tile-states.ts';
import { deviceTileStates } from '../device-tile-states.ts';
import { fusedLoadOptions, isFusedAttentionFile } from '../fused-attention.ts';
import { isProbeFile, probeLoadOptions } from '../probe.ts';
import { MASK_WEIGHTS_INPUT, PROBE_OUTPUT_PREFIX } from '../../graph/attention-probe.ts';
import { runAttentionHead } from '../../onnx/vae-attention.ts';
import { ArrayStow, STOW_DIR_ENV } from './array-stow.ts';
import type { ComponentName, FailMode, VaeGraphName, VaeNormRequest, WorkerReply, WorkerRequest, WorkerResult } from './protocol.ts';
import { segmentName, type SegmentSpan } from '../../core/vae/pipeline-decode.ts';
import { stateBuffers } from '../../core/vae/tiled.ts';

const LABELS: Record<ComponentName, string> = {
  textEncoder: 'text_encoder',
  textEncoder2: 'text_encoder_2',
  textEncoder3: 'text_encoder_3',
  unet: 'unet',
  unetProbe: 'unet (attention probe)',
  vaeDecoder: 'vae_decoder',
  vaeEncoder: 'vae_encoder',
};

interface State {
  sessions: Partial<Record<ComponentName, OpenSession>>;
  /** The file each session was opened from. */
  files: Partial<Record<ComponentName, string>>;
  text?: TextEncoderAdapter;
  text2?: TextEncoderAdapter;
  text3?: TextEncoderAdapter;
  unet?: UnetAdapter;
  probe?: UnetAdapter;
  decoder?: VaeDecoderAdapter;
  encoder?: VaeEncoderAdapter;
  cond?: TextConditioning;
  /** Puts the text conditioning on the device (webgpu), shared by the UNet and probe adapters. */
  uploader?: DeviceUploader;
  unetCalls: number;
  failAfter?: number;
  failMode?: FailMode;
  options?: SessionOptions;
  /** Derived VAE graphs, opened on first use (by file). */
  vaeNorm: Partial<Record<VaeGraphName, { file: string; adapter: VaeNormAdapter }>>;
  /** Plain VAE sessions released while their derived graphs run (file to reopen on the next plain request). */
  released: Partial<Record<'vaeDecoder' | 'vaeEncoder', string>>;
  /** Tile states held on the device between segments (webgpu). */
  tileStates?: DeviceTileStates;
}

const state: State = { sessions: {}, files: {}, unetCalls: 0, vaeNorm: {}, released: {} };

async function handle(req: WorkerRequest): Promise<{ result: WorkerResult; transfer: ArrayBuffer[] }> {
  switch (req.type) {
    case 'init': {
      state.options = req.session;
      state.failAfter = req.failAfterUnetCalls;
      state.failMode = req.failMode;
      await load(req.paths);
      return { result: { type: 'ok' }, transfer: [] };
    }
    case 'load':
      await load(req.paths);
      return { result: { type: 'ok' }, transfer: [] };
    case 'describe': {
      const components: Record<string, { inputs: unknown; outputs: unknown }> = {};
      for (const [name, s] of Object.entries(state.sessions)) components[name] = { inputs: s!.inputs, outputs: s!.outputs };
      // A UNet served by the probe graph (pipeline.ts, probeServesUnet) is described as the UNet: without the probe's
      // input and outputs.
      if (state.sessions.unet) {
        const s = state.sessions.unet;
        components['unet'] = {
          inputs: s.inputs.filter((i) => i.name !== MASK_WEIGHTS_INPUT),
          outputs: s.outputs.filter((o) => !o.name.startsWith(PROBE_OUTPUT_PREFIX)),
        };
      }
      const deviceConditioning = { unet: state.unet?.device?.counts, probe: state.probe?.device?.counts };
      const transport = stow ? { ...stow.counts, folder: stow.folder } : undefined;
      const sessions = new Set(Object.values(state.sessions)).size;
      return { result: { type: 'describe', components, sessions, deviceConditioning, tileStates: state.tileStates?.counts, pid: process.pid, transport } as WorkerResult, transfer: [] };
    }
    case 'checkCfgSplit': {
      if (!state.unet) throw new Error('worker: unet not loaded');
      return { result: { type: 'checkCfgSplit', ...(await state.unet.checkCfgSplit(req.height, req.width)) }, transfer: [] };
    }
    case 'encodeText': {
      const enc = req.which === 'textEncoder3' ? state.text3 : req.which === 'textEncoder2' ? state.text2 : state.text;
      if (!enc) throw new Error(`worker: ${req.which} not loaded`);
      const r = await enc.encode(req.rows, req.layer);
      // Sent once per generation: copied, not transferred (ORT may own the buffers).
      return { result: { type: 'encodeText', hidden: r.hidden, tokens: r.tokens, dim: r.dim, pooled: r.pooled, pooledDim: r.pooledDim }, transfer: [] };
    }
    case 'setConditioning':
      state.cond = req.cond;
      return { result: { type: 'ok' }, transfer: [] };
    case 'unet': {
      if (!state.unet || !state.cond) throw new Error('worker: unet or conditioning not ready');
      state.unetCalls++;
      if (state.failAfter !== undefined && state.unetCalls > state.failAfter) {
        // Test hook: 'exit' ends this thread (or process) at once, as a crash in the execution provider would; 'kill'
        // ends the process by a signal, as a crash in native code does (in a worker thread: the whole process).
        if (state.failMode === 'exit') process.exit(70);
        if (state.failMode === 'kill') process.kill(process.pid, 'SIGKILL');
        throw new Error(`injected failure after ${state.failAfter} UNet calls`);
      }
      // The probe graph serves the conditional branch of the key unit; its uncond half runs the plain graph.
      const probe = req.wantAttention && req.part !== 'uncond' ? state.probe : undefined;
      const adapter = probe ?? state.unet;
      const r = await adapter.run(
        {
          sample: req.sample, part: req.part, channels: req.channels, height: req.height, width: req.width,
          timestep: req.timestep, guidanceScale: req.guidanceScale, timeIds: req.timeIds, maskTokens: req.maskTokens,
          maps: probe !== undefined,
        },
        state.cond,
      );
      const transfer = [r.output.buffer as ArrayBuffer];
      const attention = probe ? r.attention?.map((a) => ({ ...a, data: a.data.slice() })) : undefined;
      attention?.forEach((a) => transfer.push(a.data.buffer as ArrayBuffer));
      return {
        result: { type: 'unet', output: r.output, attention, attentionUnsupported: req.wantAttention && req.part !== 'uncond' && !state.probe },
        transfer,
      };
    }
    case 'vaeDecode': {
      await reopenPlainVae('vaeDecoder');
      if (!state.decoder) throw new Error('worker: vae_decoder not loaded');
      const r = await state.decoder.decode(req.latent, req.channels, req.height, req.width);
      const data = r.data.buffer.byteLength === r.data.byteLength ? r.data : r.data.slice();
      return { result: { type: 'vaeDecode', data, height: r.height, width: r.width }, transfer: [data.buffer as ArrayBuffer] };
    }
    case 'vaeEncode': {
      await reopenPlainVae('vaeEncoder');
      if (!state.encoder) throw new Error('worker: vae_encoder not loaded');
      const r = await state.encoder.encodeMean(req.image, req.height, req.width);
      return { result: { type: 'vaeEncode', ...r }, transfer: [r.data.buffer as ArrayBuffer] };
    }
    case 'vaeNorm': {
      const adapter = await vaeNormAdapter(req);
      const tile = req.affine && req.region ? { affine: req.affine, region: req.region, state: req.state, keep: req.keep } : undefined;
      const r = await adapter.run(req.input, req.channels, req.height, req.width, tile);
      const data = r.data.buffer.byteLength === r.data.byteLength ? r.data : r.data.slice();
      const stats = r.stats.slice();
      return {
        result: { type: 'vaeNorm', data, channels: r.channels, height: r.height, width: r.width, stats, ...(r.state ? { state: r.state } : {}) },
        transfer: [data.buffer as ArrayBuffer, stats.buffer, ...stateBuffers(r.state)],
      };
    }
    case 'vaeReleaseStates':
      await state.tileStates?.release(req.held);
      return { result: { type: 'ok' }, transfer: [] };
    case 'vaeHead': {
      if (!state.options) throw new Error('worker: vaeHead before init');
      // The head runs before the tiles: the derived sessions held from an earlier decode give their memory back first.
      await releaseDerivedVae();
      const load = req.externalDataFolder ? { externalDataFolder: req.externalDataFolder } : {};
      const r = await runAttentionHead(req.files, state.options, load, req.input, req.channels, req.height, req.width, req.chunkBytes, req.half);
      const data = r.data.buffer.byteLength === r.data.byteLength ? r.data : r.data.slice();
      return { result: { type: 'vaeHead', ...r, data }, transfer: [data.buffer as ArrayBuffer] };
    }
    case 'close':
      state.unet?.device?.clear();
      state.probe?.device?.clear();
      await state.uploader?.release();
      state.uploader = undefined;
      // The states first: then the sessions that made them are released with them.
      await state.tileStates?.clear();
      await releaseDerivedVae();
      for (const s of new Set(Object.values(state.sessions))) await releaseSession(s);
      state.sessions = {};
      state.files = {};
      state.vaeNorm = {};
      state.released = {};
      return { result: { type: 'ok' }, transfer: [] };
  }
}

async function load(paths: Partial<Record<ComponentName, string>>): Promise<void> {
  if (!state.options) throw new Error('worker: load before init');
  for (const [name, file] of Object.entries(paths) as [ComponentName, string][]) {
    if (state.sessions[name]) continue;
    // Two components given the same file share one session (the pipeline gives a CPU worker's UNet as its probe
    // graph where the two compute the same bits: pipeline.ts, probeServesUnet).
    const same = (Object.keys(state.files) as ComponentName[]).find((other) => state.files[other] === file && state.sessions[other]);
    if (same) {
      state.sessions[name] = state.sessions[same];
      state.files[name] = file;
      continue;
    }
    // A cached probe refers to the source UNet's folder for its weights (see probe.ts).
    const extra = isFusedAttentionFile(file) ? fusedLoadOptions(file) : isProbeFile(file) ? probeLoadOptions(file) : {};
    state.sessions[name] = await openSession(file, LABELS[name], state.options, extra);
    state.files[name] = file;
  }
  const s = state.sessions;
  if (s.textEncoder) state.text ??= new TextEncoderAdapter(s.textEncoder, 'text_encoder');
  if (s.textEncoder2) state.text2 ??= new TextEncoderAdapter(s.textEncoder2, 'text_encoder_2');
  if (s.textEncoder3) state.text3 ??= new TextEncoderAdapter(s.textEncoder3, 'text_encoder_3');
  if (s.unet) state.unet ??= denoiserAdapter(s.unet, deviceConditioning());
  // One adapter where the probe graph serves the UNet: one copy of the conditioning on the device.
  if (s.unetProbe) state.probe ??= s.unetProbe === s.unet && state.unet ? state.unet : denoiserAdapter(s.unetProbe, deviceConditioning());
  if (s.vaeDecoder) state.decoder ??= new VaeDecoderAdapter(s.vaeDecoder);
  if (s.vaeEncoder) state.encoder ??= new VaeEncoderAdapter(s.vaeEncoder);
}

/**
 * On webgpu the text conditioning stays on the device between UNet calls (src/onnx/device-conditioning.ts);
 * ASGD_DEVICE_CONDITIONING=0 feeds it from the host every call instead (for benchmarks: docs/benchmarks.md).
 */
function deviceConditioning(): { device?: DeviceConditioning } {
  if (state.options?.provider !== 'webgpu' || process.env['ASGD_DEVICE_CONDITIONING'] === '0') return {};
  state.uploader ??= new DeviceUploader(state.options);
  return { device: new DeviceConditioning(state.uploader) };
}

async function vaeNormAdapter(req: VaeNormRequest): Promise<VaeNormAdapter> {
  if (!state.options) throw new Error('worker: vaeNorm before init');
  const held = state.vaeNorm[req.graph];
  const key = req.segment ? `${req.file}#${segmentName(req.segment)}` : req.file;
  if (held && held.file === key) return held.adapter;
  // One derived graph at a time (they run in phases: a segment per norm layer, then the rest): their memory arenas do not add up.
  await releaseDerivedVae();
  // Nor with the plain model's session: a tiled run with shared statistics does not use it (reopened when needed).
  await releasePlainVae(req.graph.startsWith('vaeDecoder') ? 'vaeDecoder' : 'vaeEncoder');
  const half = req.graph.startsWith('vaeDecoder') ? 'vae_decoder' : 'vae_encoder';
  const what = req.segment ? `tile graph's ${segmentName(req.segment)}` : req.graph.endsWith('Tile') ? 'tile graph' : req.graph.endsWith('Tail') || req.graph.endsWith('Head') ? 'attention split, tiled part' : 'statistics graph';
  const label = `${half} (${what})`;
  const external = req.externalDataFolder ? { externalDataFolder: req.externalDataFolder } : {};
  const onDevice = req.segment ? tileStates() : undefined;
  let s: OpenSession;
  if (req.segment) {
    // A segment is cut from the tile graph here; its weights are the tile graph's (referenced from its folder).
    const m = await segmentModel(req.file, req.segment);
    const location = onDevice && req.segment.to !== 'end' ? { outputLocation: statesOnDevice(m.outputs) } : {};
    s = await openSession(m.bytes, label, state.options, { externalDataFolder: req.externalDataFolder ?? path.dirname(req.file), memory: VAE_GRAPH_MEMORY, ...location });
  } else {
    s = await openSession(req.file, label, state.options, { ...external, memory: VAE_GRAPH_MEMORY });
  }
  const adapter = new VaeNormAdapter(s, half, onDevice, req.segment !== undefined);
  state.vaeNorm[req.graph] = { file: key, adapter };
  return adapter;
}

/** Releases the derived VAE sessions; one whose tile states the device still holds goes after them (src/onnx/tile-states.ts). */
async function releaseDerivedVae(): Promise<void> {
  for (const [name, v] of Object.entries(state.vaeNorm)) {
    delete state.vaeNorm[name as VaeGraphName];
    const s = v.adapter.s;
    if (state.tileStates) await state.tileStates.retire(s, () => releaseSession(s));
    else await releaseSession(s);
  }
}

/** The last tile graph read, to cut its segments from (one decode runs one tile graph's segments in turn). */
let tileGraph: { file: string; bytes: Uint8Array } | undefined;

/** Segment `span` of the tile graph in `file` (src/graph/vae-segments.ts), as a model's bytes and its output names. */
async function segmentModel(file: string, span: SegmentSpan): Promise<{ bytes: Uint8Array; outputs: string[] }> {
  if (tileGraph?.file !== file) tileGraph = { file, bytes: await readFile(file) };
  const { deriveSegmentModel } = await import('../../graph/vae-derived-models.ts');
  const m = deriveSegmentModel(tileGraph.bytes, span);
  if ('reason' in m) throw new Error(`worker: ${file}: ${m.reason}`);
  return m;
}

/** Where segments keep the tile states: on the device (webgpu; one store per worker), else undefined (the host). */
function tileStates(): DeviceTileStates | undefined {
  if (!state.options) return undefined;
  return (state.tileStates ??= deviceTileStates(state.options.provider));
}

/**
 * A VAE half's plain session and its derived graphs' sessions take turns, so that their weights and arenas are not
 * held at once (memory a released session frees is reused by the next one, though not always returned to the system).
 */
async function releasePlainVae(name: 'vaeDecoder' | 'vaeEncoder'): Promise<void> {
  const s = state.sessions[name];
  if (!s) return;
  await releaseSession(s);
  delete state.sessions[name];
  delete state.files[name];
  state.released[name] = s.file;
  if (name === 'vaeDecoder') state.decoder = undefined;
  else state.encoder = undefined;
}

async function reopenPlainVae(name: 'vaeDecoder' | 'vaeEncoder'): Promise<void> {
  const file = state.released[name];
  if (state.sessions[name] || !file) return;
  await releaseDerivedVae();
  delete state.released[name];
  await load({ [name]: file });
}

// A worker thread (parentPort) or a worker process (an IPC channel with 'advanced' serialization: device-worker.ts).
const port = parentPort;
if (!port && !process.send) throw new Error('worker.ts must run in a worker thread or a forked process');
// A worker process gets and sends its large arrays through files in the folder the coordinator made (array-stow.ts).
const stow = port ? undefined : new ArrayStow(process.env[STOW_DIR_ENV] || undefined, 'w');
const send = (reply: WorkerReply, transfer: ArrayBuffer[]): void => {
  if (port) port.postMessage(reply, transfer);
  else process.send!(stow!.stow(reply));
};
const onRequest = (msg: { id: number; req: WorkerRequest }): void => {
  if (stow) {
    try {
      msg = stow.unstow(msg);
    } catch (err) {
      send({ id: msg.id, ok: false, error: errorToWire(err) }, []);
      return;
    }
  }
  handle(msg.req).then(
    ({ result, transfer }) => send({ id: msg.id, ok: true, result }, transfer),
    (err: unknown) => send({ id: msg.id, ok: false, error: errorToWire(err) }, []),
  );
};
if (port) port.on('message', onRequest);
else {
  process.on('message', onRequest as (m: unknown) => void);
  // The coordinator is gone (it ended, or was killed): nothing is left to answer to.
  process.on('disconnect', () => process.exit(0));
}
