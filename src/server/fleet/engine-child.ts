/**
 * The engine process of a fleet worker: it runs the engine (the library's, or a test's) and nothing else, so the
 * worker's event loop, which renews the BullMQ lock, never waits on a model call. Started by engine-process.ts
 * with the engine spec as JSON in argv[2]; ends when its parent goes away (IPC disconnect).
 */
import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import type { GenerateParams } from '../../core/params.ts';
import type { UpscaleParams } from '../../node/pipeline.ts';
import type { Engine } from '../engine.ts';
import type { EngineSpec, FromChild, ToChild } from './engine-messages.ts';

const send = (m: FromChild) => process.send?.(m);

async function makeEngine(spec: EngineSpec): Promise<Engine> {
  if (spec.module) {
    const mod = (await import(pathToFileURL(spec.module).href)) as Record<string, new (o: unknown) => Engine>;
    const Ctor = mod[spec.exportName ?? 'default'];
    if (!Ctor) throw new Error(`engine module ${spec.module} has no export ${spec.exportName}`);
    return new Ctor(spec.options);
  }
  const { LibraryEngine } = await import('../library-engine.ts');
  return new LibraryEngine(spec.modelDirs, spec.pipeline);
}

function writeAtomic(file: string, bytes: Uint8Array): void {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const tmp = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, bytes);
  fs.renameSync(tmp, file);
}

async function main(): Promise<void> {
  const spec = JSON.parse(process.argv[2] ?? '{}') as EngineSpec;
  const engine = await makeEngine(spec);
  const runs = new Map<number, AbortController>();
  process.on('disconnect', () => {
    for (const c of runs.values()) c.abort();
    void engine.close().finally(() => process.exit(0));
  });
  process.on('message', (m: ToChild) => {
    if (m.type === 'abort') {
      runs.get(m.runId)?.abort();
      return;
    }
    const controller = new AbortController();
    runs.set(m.runId, controller);
    const ctx = {
      signal: controller.signal,
      onProgress: (p: Parameters<Parameters<Engine['generate']>[3]['onProgress']>[0]) => send({ type: 'progress', runId: m.runId, progress: { ...p } }),
      onPreview: (png: Uint8Array) => {
        try {
          writeAtomic(m.previewFile, png);
          send({ type: 'preview', runId: m.runId });
        } catch {
          // A preview that cannot be written is skipped.
        }
      },
    };
    const run = m.kind === 'upscale'
      ? engine.upscale(m.source!, m.params as Omit<UpscaleParams, 'image'>, m.model, m.file, ctx)
      : engine.generate(m.params as GenerateParams, m.model, m.file, ctx);
    run.then(
      (r) => send({ type: 'done', runId: m.runId, warnings: r.warnings }),
      (err: { message?: string; kind?: string; parameter?: string }) =>
        send({ type: 'error', runId: m.runId, error: { message: err?.message ?? String(err), ...(err?.kind ? { kind: err.kind } : {}), ...(err?.parameter ? { parameter: err.parameter } : {}) } }),
    ).finally(() => runs.delete(m.runId));
  });
  send({ type: 'ready', models: engine.models(), devices: await engine.devices(), deviceSet: engine.deviceSet });
}

main().catch((err: unknown) => {
  send({ type: 'fatal', message: err instanceof Error ? err.message : String(err) });
  process.exit(1);
});
