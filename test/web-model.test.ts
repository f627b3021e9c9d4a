/**
 * The browser's reading of a model folder (src/browser/model/web-model.ts) against Node's reading of the same folder
 * on disk (src/node/model/folder.ts), on the tiny SD3 fixture's variants and on broken copies: the same facts, the
 * same notes and the same refusals. The page's file source is replaced by the folder's files (no browser needed:
 * the reader is portable).
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { readWebModel, type WebModelSpec } from '../src/browser/model/web-model.ts';
import type { FileSource } from '../src/browser/model/file-source.ts';
import { readModelFolder, type ModelSpec } from '../src/node/model/folder.ts';
import { AsgdError } from '../src/core/errors.ts';
import { NO_T5_NOTE } from '../src/core/sd3-config.ts';
import { writeTinySd3Model, type Sd3VariantName } from './fixtures/tiny-sd3.ts';
import { tempDir } from './helpers/models.ts';

/** The folder's files as the page's file source would give them (a missing optional file: undefined). */
function folderSource(dir: string): FileSource {
  const read = (file: string) => {
    const p = path.join(dir, ...file.split('/'));
    return fs.existsSync(p) ? new Uint8Array(fs.readFileSync(p)) : undefined;
  };
  const source: Partial<FileSource> = {
    get: async (file, optional) => {
      const bytes = read(file);
      if (!bytes && !optional) throw new AsgdError(`Cannot download ${file}`, { kind: 'model', parameter: 'model' });
      return bytes;
    },
    reload: async (file) => read(file),
    isStored: () => false,
    forget: async () => undefined,
  };
  return source as FileSource;
}

const URL_BASE = 'https://example.org/models/';

async function sd3Folder(variant: Sd3VariantName, change?: (dir: string) => void): Promise<string> {
  const dir = path.join(tempDir(`web-model-${variant}`), 'tiny-sd3');
  await writeTinySd3Model(dir, { variant });
  change?.(dir);
  return dir;
}

const readWeb = (dir: string) => readWebModel(`${URL_BASE}${path.basename(dir)}/`, folderSource(dir));

/** What both readers say of an SD3 folder. */
function facts(s: WebModelSpec | ModelSpec) {
  return {
    family: s.family, className: s.className, schedulerConfig: s.schedulerConfig, vae: s.vae, unetSampleSize: s.unetSampleSize,
    patchSize: s.patchSize, posEmbedMaxSize: s.posEmbedMaxSize, forceZerosForEmptyPrompt: s.forceZerosForEmptyPrompt,
    t5: s.tokenizer3 !== undefined, notes: s.notes,
  };
}

for (const variant of ['sd3', 'sd3-no-t5', 'sd3.5', 'sd3-dynamic-shift'] as const) {
  test(`${variant}: the page reads the folder as Node does (family, scheduler, VAE scale and shift, patch, position table, T5, notes)`, async () => {
    const dir = await sd3Folder(variant);
    const web = await readWeb(dir);
    const node = readModelFolder(dir);
    assert.deepEqual(facts(web), facts(node));
    assert.equal(web.family, 'sd3');
    assert.equal(web.files.unet, 'transformer/model.onnx');
    assert.equal(web.files.textEncoder3 !== undefined, variant !== 'sd3-no-t5');
    assert.equal(web.notes.includes(NO_T5_NOTE), variant === 'sd3-no-t5');
  });
}

test('an SD3 folder without its VAE and scheduler configs: the same defaults (SD3\'s) and notes in the page as in Node', async () => {
  const dir = await sd3Folder('sd3', (d) => {
    fs.rmSync(path.join(d, 'vae_decoder', 'config.json'));
    fs.rmSync(path.join(d, 'scheduler'), { recursive: true });
  });
  const web = await readWeb(dir);
  assert.deepEqual(facts(web), facts(readModelFolder(dir)));
  assert.deepEqual(web.vae, { scalingFactor: 1.5305, forceUpcast: false, shiftFactor: 0.0609 });
  assert.deepEqual(web.notes, [
    "no scheduler config: FlowMatchEulerDiscreteScheduler with shift 3 (SD3's)",
    "no VAE scaling_factor: using SD3's 1.5305",
    "no VAE shift_factor: using SD3's 0.0609",
  ]);
});

async function refusal(dir: string): Promise<{ web: AsgdError; node: AsgdError }> {
  const web = await readWeb(dir).then(() => undefined, (e: unknown) => e);
  let node: unknown;
  try {
    readModelFolder(dir);
  } catch (e) {
    node = e;
  }
  assert.ok(web instanceof AsgdError, `the page refuses the folder: ${String(web)}`);
  assert.ok(node instanceof AsgdError, `Node refuses the folder: ${String(node)}`);
  return { web, node };
}

const editJson = (file: string, edit: (v: Record<string, unknown>) => Record<string, unknown>) =>
  fs.writeFileSync(file, JSON.stringify(edit(JSON.parse(fs.readFileSync(file, 'utf8')) as Record<string, unknown>)));

test('FLUX (by its transformer class), another transformer class and an invalid patch size are refused by the page with Node\'s messages, naming the folder', async () => {
  for (const [change, message] of [
    [(c: Record<string, unknown>) => ({ ...c, _class_name: 'FluxTransformer2DModel' }), /^FLUX exports are not supported \(/],
    [(c: Record<string, unknown>) => ({ ...c, _class_name: 'HunyuanDiT2DModel' }), /^Unsupported transformer class HunyuanDiT2DModel \(/],
    [(c: Record<string, unknown>) => ({ ...c, patch_size: 0 }), /^transformer\/config\.json has an invalid patch_size \(0\)/],
  ] as const) {
    const dir = await sd3Folder('sd3', (d) => editJson(path.join(d, 'transformer', 'config.json'), change));
    const { web, node } = await refusal(dir);
    assert.match(web.message, message);
    assert.equal(web.message.replace(`${URL_BASE}tiny-sd3/`, dir), node.message);
    assert.equal(web.parameter, node.parameter);
    assert.equal(web.hint, node.hint);
  }
});

test('a folder whose model_index lists T5 without tokenizer_3/tokenizer.json is refused by the page, naming the file and the fixes', async () => {
  const dir = await sd3Folder('sd3', (d) => fs.rmSync(path.join(d, 'tokenizer_3', 'tokenizer.json')));
  const web = await readWeb(dir).then(() => undefined, (e: unknown) => e);
  assert.ok(web instanceof AsgdError);
  assert.equal(web.parameter, 'tokenizer_3');
  assert.match(web.message, /lists text_encoder_3 \(T5\) but has no tokenizer_3\/tokenizer\.json/);
  assert.match(web.hint ?? '', /set text_encoder_3 to \[null, null\] in model_index\.json/);
  // With T5 marked absent in model_index.json the folder loads without it, as Node's does without text_encoder_3.
  editJson(path.join(dir, 'model_index.json'), (v) => ({ ...v, text_encoder_3: [null, null] }));
  const spec = await readWeb(dir);
  assert.equal(spec.files.textEncoder3, undefined);
  assert.ok(spec.notes.includes(NO_T5_NOTE));
});
