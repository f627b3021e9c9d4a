// The demo page (demo/): `npm run web` serves it with the shipped model; `npm run web:build` writes a static site
// to demo/dist (the page, ONNX Runtime Web's files and models/shapes-128) for any static host. Both send the
// cross-origin isolation headers WebAssembly threads need. The page imports `asgdiffusion/web` as a user would:
// the built entry (dist/browser, from `npm run build` or `tsc -p tsconfig.build.web.json`), so what ships is what
// the browser test runs.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { defineConfig, type Connect, type Plugin } from 'vite';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const MODELS = path.join(ROOT, 'models');
const SHIPPED = 'shapes-128';
const ENTRY = path.join(ROOT, 'dist', 'browser', 'index.js');
if (!fs.existsSync(ENTRY)) throw new Error(`The demo imports the built asgdiffusion/web (${ENTRY}): run \`npm run build\` first`);

/** Cross-origin isolation: SharedArrayBuffer, hence ONNX Runtime's WebAssembly threads. */
export const ISOLATION_HEADERS = { 'Cross-Origin-Opener-Policy': 'same-origin', 'Cross-Origin-Embedder-Policy': 'require-corp' };

// Graphs the library derives beside a model (*.asgd-*: probe, fused attention, VAE graphs) are never served nor copied.
const keep = (file: string) => !/\.asgd-/.test(file);

/** Serves models/ at /models/ in dev and preview; copies the shipped model into the build. */
function models(): Plugin {
  const serve: Connect.NextHandleFunction = (req, res, next) => {
    const url = decodeURIComponent((req.url ?? '').split('?')[0]!);
    const m = /^\/models\/(.+)$/.exec(url);
    if (!m) return next();
    const file = path.join(MODELS, m[1]!);
    if (!file.startsWith(MODELS + path.sep) || !keep(file) || !fs.existsSync(file) || !fs.statSync(file).isFile()) {
      res.statusCode = 404;
      return res.end();
    }
    res.setHeader('Content-Type', file.endsWith('.json') ? 'application/json' : 'application/octet-stream');
    res.setHeader('Content-Length', String(fs.statSync(file).size));
    fs.createReadStream(file).pipe(res);
  };
  let outDir = '';
  return {
    name: 'asgd-models',
    configResolved(c) {
      outDir = c.build.outDir;
    },
    configureServer(s) {
      s.middlewares.use(serve);
    },
    configurePreviewServer(s) {
      s.middlewares.use(serve);
    },
    closeBundle() {
      if (!outDir || !fs.existsSync(outDir)) return;
      fs.cpSync(path.join(MODELS, SHIPPED), path.join(outDir, 'models', SHIPPED), { recursive: true, filter: keep });
    },
  };
}

export default defineConfig({
  root: fileURLToPath(new URL('.', import.meta.url)),
  base: './',
  logLevel: 'warn',
  plugins: [models()],
  resolve: { alias: { 'asgdiffusion/web': ENTRY } },
  // ONNX Runtime Web finds its .wasm next to its module: serve it unbundled in dev.
  optimizeDeps: { exclude: ['onnxruntime-web'] },
  worker: { format: 'es' },
  server: { headers: ISOLATION_HEADERS, fs: { allow: [ROOT] } },
  preview: { headers: ISOLATION_HEADERS },
  build: { outDir: fileURLToPath(new URL('./dist', import.meta.url)), emptyOutDir: true, sourcemap: false, target: 'es2022' },
});
