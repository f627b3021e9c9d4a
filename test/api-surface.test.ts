/**
 * The public API is what api/asgdiffusion.api.md, api/asgdiffusion-core.api.md and api/asgdiffusion-web.api.md record (API Extractor reports
 * of the built declarations). A change of the public surface fails here until the reports are updated on purpose
 * (`npm run api:update`, then review the diff). The API reference (TypeDoc) must build without warnings.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const bin = (pkg: string, file: string) => path.join(ROOT, 'node_modules', pkg, 'bin', file);

for (const entry of ['node', 'core', 'web']) {
  test(`the public API of the ${entry} entry matches its committed report`, () => {
    const r = spawnSync(process.execPath, [bin('@microsoft/api-extractor', 'api-extractor'), 'run', '-c', `api/extractor.${entry}.json`], { cwd: ROOT, encoding: 'utf8', timeout: 180_000 });
    assert.equal(r.status, 0, `${r.stdout}\n${r.stderr}\nIf the change is intended: npm run api:update, and commit the reports.`);
  });
}

test('the API reference builds from the sources without warnings', () => {
  const r = spawnSync(process.execPath, [bin('typedoc', 'typedoc'), '--emit', 'none', '--treatWarningsAsErrors'], { cwd: ROOT, encoding: 'utf8', timeout: 180_000 });
  assert.equal(r.status, 0, r.stdout + r.stderr);
});
