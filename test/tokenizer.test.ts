import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { ClipTokenizer } from '../src/core/text/clip-tokenizer.ts';
import { readTokenizerFiles } from '../src/node/model/folder.ts';
import { tinyModel } from './helpers/models.ts';

const ROOT = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');

test('the CLIP tokenizer gives the same 77 ids as the Python BPE the shipped model was trained with', () => {
  // training/tokenizer-examples.json was written by training/tokenizer.py (an independent BPE in Python).
  const ref = JSON.parse(fs.readFileSync(path.join(ROOT, 'training', 'tokenizer-examples.json'), 'utf8')) as {
    bos: number; eos: number; pad: number; examples: { text: string; input_ids: number[] }[];
  };
  const tok = new ClipTokenizer(readTokenizerFiles(path.join(ROOT, 'models', 'shapes-128', 'tokenizer'), 'tokenizer'));
  assert.equal(tok.bosId, ref.bos);
  assert.equal(tok.eosId, ref.eos);
  assert.equal(tok.padId, ref.pad);
  assert.ok(ref.examples.length >= 10);
  for (const ex of ref.examples) assert.deepEqual([...tok.encode(ex.text).ids], ex.input_ids, ex.text);
});

test('vocab.json + merges.txt and tokenizer.json give identical ids; truncation is counted', async () => {
  const a = new ClipTokenizer(readTokenizerFiles(path.join(await tinyModel('standard'), 'tokenizer'), 'tokenizer'));
  const b = new ClipTokenizer(readTokenizerFiles(path.join(await tinyModel('tokenizer-json'), 'tokenizer'), 'tokenizer'));
  for (const text of ['a red circle on a blue background', 'A  Photo of a CAT, at night!', 'unknownword 123 ünïcödé', '']) {
    const ea = a.encode(text);
    assert.deepEqual([...ea.ids], [...b.encode(text).ids], text);
    assert.equal(ea.ids.length, 77);
    assert.equal(ea.ids[0], a.bosId);
    assert.equal(ea.ids[ea.eosIndex], a.eosId);
    assert.ok([...ea.ids.subarray(ea.eosIndex + 1)].every((id) => id === a.padId));
  }
  assert.deepEqual(a.encode('A  Photo').ids.slice(0, 4), a.encode('a photo').ids.slice(0, 4), 'lower-cased, whitespace collapsed');
  const long = a.encode(Array.from({ length: 80 }, () => 'red').join(' '));
  assert.equal(long.truncated, 5);
  assert.equal(long.eosIndex, 76);
});
