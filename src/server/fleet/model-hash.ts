/**
 * A model folder's content hash: sha256 over every file's relative path, size and bytes, in path order. Jobs name
 * their model by this hash, so two workers with folders of the same name but different weights never serve each
 * other's jobs. Caches the library writes beside the model (*.asgd-*) and hidden files are left out.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';

function files(dir: string, rel = ''): string[] {
  const out: string[] = [];
  for (const e of fs.readdirSync(path.join(dir, rel), { withFileTypes: true })) {
    if (e.name.startsWith('.') || e.name.includes('.asgd-')) continue;
    const r = rel ? `${rel}/${e.name}` : e.name;
    if (e.isDirectory()) out.push(...files(dir, r));
    else if (e.isFile()) out.push(r);
  }
  return out;
}

export async function modelHash(dir: string): Promise<string> {
  const h = createHash('sha256');
  for (const rel of files(dir).sort()) {
    const file = path.join(dir, rel);
    h.update(`${rel}\0${fs.statSync(file).size}\0`);
    for await (const chunk of fs.createReadStream(file, { highWaterMark: 1 << 20 })) h.update(chunk as Buffer);
  }
  return h.digest('hex');
}
