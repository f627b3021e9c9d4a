/**
 * The HTTP server of `asgd serve`: a versioned JSON API under /api/v1 (OpenAPI document at
 * /api/v1/openapi.json), Server-Sent Events for progress, the outputs folder as the gallery, and the page.
 *
 * Fastify: it validates every request body against a JSON schema before a handler runs (Ajv, compiled once),
 * it is among the fastest Node HTTP frameworks, it is actively maintained, and `inject` tests the routes without
 * a socket. The server stays thin: jobs go to a JobQueue, the queue runs them through an Engine.
 */
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import fs from 'node:fs';
import path from 'node:path';
import { AsgdError } from '../core/errors.ts';
import { checkSettings, generationScheduler, type ModelFacts } from '../core/generation/check.ts';
import { denoiserGrid } from '../core/model-family.ts';
import { planMethod } from '../core/methods/plan.ts';
import { createScheduler } from '../core/schedulers/index.ts';
import { resolveParams, validateParams, type GenerateParams, type ResolvedParams } from '../core/params.ts';
import type { Engine, EngineResult, ModelEntry } from './engine.ts';
import { QueueError } from './local-queue.ts';
import type { JobEvent, JobQueue } from './queue.ts';
import { errorSchema, generateRequestSchema, jobEventSchema, jobSchema, moveRequestSchema, outputSchema, uploadSchema, upscaleRequestSchema } from './schema.ts';
import { checkUpscale, img2imgScheduler, startStep, upscaleMethodOptions } from '../core/generation/img2img.ts';
import { saveUpload, UPLOAD_MAX_BYTES, UPLOAD_TYPES } from './uploads.ts';
import { ApiError, apiWording, bodyField, fastifyErrorBody, jobErrorOf, jsonBodyError, schemaErrorBody, type SchemaError } from './errors.ts';
import { OutputGallery, THUMB_SIZE } from './gallery.ts';
import { contentType, mediaType, normalHost, sameSecret, unsupportedType } from './http.ts';
import { jobIdOfOutput, OUTPUT_NAME_MAX, outputNameFor, toGenerateParams, upscaleParams } from './output-names.ts';
import { openApiDocument, routePattern, type Route } from './routes.ts';

export interface ServerOptions {
  queue: JobQueue;
  engine: Engine;
  /** The gallery: outputs are written here, with their metadata. */
  outputsDir: string;
  /** The built page (index.html and assets/); absent: the root answers with a note on how to build it. */
  webDir?: string;
  /** Required on every API request when set (`Authorization: Bearer <token>` or `?token=`). */
  token?: string;
  /** Host names the Host header may carry besides the loopback names (the bound address). */
  allowedHosts?: string[];
  /** Largest request body in bytes (default 1 MiB). */
  bodyLimit?: number;
  /** The latest preview of a job run elsewhere (a fleet worker), when the engine here does not make it. */
  preview?: (jobId: string) => Promise<Uint8Array | undefined>;
  /** The fleet's status (GET /api/v1/fleet), when jobs run on fleet workers. */
  fleetStatus?: () => Promise<unknown>;
  /** The message for an error that says the queue's store cannot be reached (answered 503); else undefined. */
  unavailable?: (err: unknown) => string | undefined;
}

const LOOPBACK_HOSTS = ['localhost', '127.0.0.1', '[::1]'];
const FINAL = new Set(['completed', 'failed', 'cancelled']);
/**
 * Outputs and their thumbnails may be kept by the browser: an output's name is its job's (or an upload's content
 * hash), so the bytes behind a name do not change. A page reload then does not fetch the whole gallery again.
 */
const OUTPUT_CACHE = 'private, max-age=86400';

/** Jobs whose last preview is kept after they end. */
const PREVIEWS_KEPT = 8;

export async function createServer(o: ServerOptions): Promise<FastifyInstance> {
  const app = Fastify({
    logger: false,
    bodyLimit: o.bodyLimit ?? 1024 * 1024,
    // Fastify's default (100) would answer 404 for longer output names that the gallery lists.
    routerOptions: { maxParamLength: OUTPUT_NAME_MAX },
    // Bodies are taken as sent: no type coercion, no defaults filled in, nothing removed.
    // verbose: errors carry the value sent and the schema it failed (the messages name both).
    ajv: { customOptions: { coerceTypes: false, useDefaults: false, removeAdditional: false, allErrors: false, verbose: true } },
  });
  // Fastify's JSON parser (prototype-poisoning keys refused), with errors that say which of the two it was.
  const parseJson = app.getDefaultJsonParser('error', 'error');
  app.removeContentTypeParser('application/json');
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (req, body, done) => {
    parseJson(req, body as string, (err, value) => {
      if (err && (err as { code?: string }).code === 'FST_ERR_CTP_INVALID_JSON_BODY') return done(jsonBodyError(String(body)), undefined);
      done(err, value);
    });
  });
  const gallery = new OutputGallery(o.outputsDir);
  const outputsDir = gallery.dir;
  const previews = new Map<string, Uint8Array>();
  const allowedHosts = new Set([...LOOPBACK_HOSTS, ...(o.allowedHosts ?? [])]);
  const sse = new Set<FastifyReply>();

  // Host and Origin: block DNS rebinding (a foreign name resolving to this machine) and other sites' pages.
  app.addHook('onRequest', async (req, reply) => {
    const host = req.headers.host ?? '';
    const hostname = host.replace(/:\d+$/, '').toLowerCase();
    if (!o.allowedHosts?.includes('*') && !allowedHosts.has(hostname)) {
      return reply.code(403).send({ error: 'forbidden', message: `Host ${host} is not served here` });
    }
    const origin = req.headers.origin;
    if (origin !== undefined && origin !== 'null') {
      let originHost: string;
      try {
        originHost = new URL(origin).host;
      } catch {
        originHost = '';
      }
      if (originHost !== normalHost(host)) return reply.code(403).send({ error: 'forbidden', message: `Requests from ${origin} are not allowed` });
    } else if (origin === 'null' || req.headers['sec-fetch-site'] === 'cross-site') {
      return reply.code(403).send({ error: 'forbidden', message: 'Cross-site requests are not allowed' });
    }
    // The route the router matched, not the raw URL: the router decodes it, so /%61pi/... reaches /api/... routes.
    if (o.token && ((req.routeOptions.url ?? '').startsWith('/api/') || req.url.startsWith('/api/'))) {
      const auth = req.headers.authorization;
      const q = new URL(req.url, 'http://x').searchParams.get('token');
      if (!sameSecret(auth, `Bearer ${o.token}`) && !sameSecret(q, o.token)) return reply.code(401).send({ error: 'unauthorized', message: 'A token is required (Authorization: Bearer <token> or ?token=)' });
    }
    return undefined;
  });

  app.setErrorHandler((err: Error & { validation?: SchemaError[]; validationContext?: string; statusCode?: number; code?: string }, req, reply) => {
    if (err.validation && err.validation.length) return reply.code(400).send(schemaErrorBody(err.validation[0]!, err.validationContext));
    if (err instanceof ApiError) return reply.code(err.status).send(err.body);
    if (err instanceof AsgdError && err.kind === 'invalid-argument') {
      return reply.code(400).send({ error: 'invalid-argument', field: bodyField(err.parameter), message: apiWording(err.message) });
    }
    if (err instanceof QueueError) return reply.code(err.status).send({ error: 'queue', message: err.message });
    const down = o.unavailable?.(err);
    if (down) return reply.code(503).send({ error: 'queue-unavailable', message: down });
    const known = fastifyErrorBody(err.code, { limit: req.routeOptions.bodyLimit, contentType: mediaType(req), expectedTypes: routeTypes(req) });
    if (known) return reply.code(known.status).send(known.body);
    const status = err.statusCode && err.statusCode >= 400 && err.statusCode < 500 ? err.statusCode : 500;
    return reply.code(status).send({ error: status === 500 ? 'internal' : 'bad-request', message: err.message });
  });

  /** The content types the matched route takes, in words. */
  const routeTypes = (req: FastifyRequest): string => {
    const r = routes.find((x) => x.url === req.routeOptions.url && x.method === req.method);
    return r?.rawBody ? r.rawBody.types.join(', ') : r?.body ? 'application/json' : 'no body';
  };

  /**
   * A request no route matched: 405 with Allow when the path exists under other methods, else 404; both in the
   * API's shape.
   */
  const noRoute = (req: FastifyRequest, reply: FastifyReply) => {
    const pathname = new URL(req.url, 'http://x').pathname;
    const allowed = [...new Set(routes.filter((r) => routePattern(r.url).test(pathname)).flatMap((r) => (r.method === 'GET' ? ['GET', 'HEAD'] : [r.method])))];
    if (allowed.length) {
      return reply.code(405).header('allow', allowed.join(', ')).send({ error: 'method-not-allowed', field: 'method', message: `Invalid method for ${pathname}; expected ${allowed.join(', ')}; received ${req.method}` });
    }
    return reply.code(404).send({ error: 'not-found', message: `No such endpoint: ${req.method} ${pathname}` });
  };
  app.setNotFoundHandler(async (req, reply) => noRoute(req, reply));

  // The queue runs jobs through the engine; an output that exists belongs to a run that completed before a crash.
  o.queue.process(async (job, ctx) => {
    const name = outputNameFor(job);
    const file = path.join(outputsDir, name);
    if (fs.existsSync(file)) return { output: name };
    const params = toGenerateParams(job.spec.settings);
    let first: { t: number; units: number } | undefined;
    let last: { t: number; units: number } | undefined;
    const run = (c: Parameters<Engine['generate']>[3]) => {
      if (job.spec.kind !== 'upscale') return o.engine.generate(params, job.spec.model, file, c);
      const { source, ...settings } = job.spec.settings;
      return o.engine.upscale(path.join(outputsDir, String(source)), upscaleParams(settings), job.spec.model, file, c);
    };
    let result: EngineResult;
    try {
      result = await run({
        signal: ctx.signal,
        onProgress: (p) => {
          if (p.phase === 'denoise') {
            const now = { t: performance.now(), units: p.unitsDone };
            first ??= now;
            last = now;
          }
          ctx.progress(p);
        },
        onPreview: (png) => {
          previews.set(job.id, png);
          ctx.preview();
        },
      });
    } catch (err) {
      throw jobErrorOf(err, outputsDir, job.spec.kind === 'upscale' ? 'upscale' : 'generate');
    } finally {
      // The last preview stays a while (a page may still ask for it); only the newest jobs' are kept.
      for (const id of [...previews.keys()].slice(0, Math.max(0, previews.size - PREVIEWS_KEPT))) previews.delete(id);
    }
    const model = modelEntry(job.spec.model);
    if (model && first && last && last.units > first.units) {
      // An upscale's settings hold no size; the size it denoised is the job's (a direct unit covers all of it).
      const scale = unitArea(job.spec.size ? { ...params, ...job.spec.size } : params, model);
      unitMs.set(model.name, (last.t - first.t) / (last.units - first.units) / scale);
    }
    return { output: name, warnings: result.warnings.map(apiWording) };
  });

  /** Measured milliseconds of one native-size UNet evaluation, per model (from the last completed job). */
  const unitMs = new Map<string, number>();
  /** The model `name` (the first one when undefined or unknown); undefined while there is none (a fleet without workers). */
  const modelEntry = (name: string | undefined): ModelEntry | undefined => o.engine.models().find((m) => m.name === name) ?? o.engine.models()[0];
  /** The area of one unit relative to the native size: 1 for the patch methods, the whole image for direct. */
  const unitArea = (p: GenerateParams, m: { nativeWidth?: number; nativeHeight?: number }) =>
    (p.method ?? 'asg') === 'direct' ? ((p.width ?? m.nativeWidth ?? 512) * (p.height ?? m.nativeHeight ?? 512)) / ((m.nativeWidth ?? 512) * (m.nativeHeight ?? 512)) : 1;

  /** What the check stage needs to know of a model, from its entry; undefined when its family is not known. */
  const modelFacts = (m: ModelEntry): ModelFacts | undefined =>
    m.family === undefined
      ? undefined
      : {
          family: m.family,
          nativeWidth: m.nativeWidth ?? 512,
          nativeHeight: m.nativeHeight ?? 512,
          latentChannels: m.latentChannels ?? (m.family === 'sd3' ? 16 : 4),
          ...denoiserGrid(m.family, m.patchSize, m.posEmbedMaxSize),
          schedulerClassName: String(m.schedulerConfig?._class_name ?? ''),
          // A static input size and the VAE's precision need the ONNX files: checked where the job runs.
          vaeForceUpcast: false,
          vaeIsFloat16: false,
        };

  /** UNet evaluations of `p` denoised over `numSteps` steps, and seconds once a job on the model was measured. */
  const estimate = (p: ResolvedParams, model: ModelEntry, numSteps: number) => {
    const nw = model.nativeWidth ?? 512;
    const nh = model.nativeHeight ?? 512;
    // The latent grid the run plans on: SD3's patch size, not the UNets' 8.
    const latentMultiple = modelFacts(model)?.latentMultiple;
    const plan = planMethod(p.method, p.methodOptions, {
      height: p.height / 8, width: p.width / 8, nativeHeight: nh / 8, nativeWidth: nw / 8, numSteps, ...(latentMultiple ? { latentMultiple } : {}),
    });
    const units = plan.unitsBefore[plan.numSteps]!;
    const ms = unitMs.get(model.name);
    return { unetEvaluations: units, ...(ms !== undefined ? { seconds: Math.round((units * ms * unitArea(p, model)) / 100) / 10 } : {}) };
  };

  /**
   * The steps the scheduler a generation of `p` would use runs: PNDM (SD 1.x's at the native size) runs one more
   * than asked. Without a readable config, the steps asked (the job itself then names the problem).
   */
  const schedulerSteps = (p: ResolvedParams, model: ModelEntry): number => {
    const config = model.schedulerConfig;
    if (!config) return p.steps;
    try {
      const native = { nativeWidth: model.nativeWidth ?? 512, nativeHeight: model.nativeHeight ?? 512, schedulerClassName: String(config._class_name ?? '') };
      return createScheduler(config, p.steps, generationScheduler(p, native)).numSteps;
    } catch {
      return p.steps;
    }
  };

  /**
   * An upscale request's every check the library makes before a model call: the output exists, the model, the
   * settings, and the size against the source's. Undefined when it replied with the error.
   */
  async function checkUpscaleRequest(req: FastifyRequest, reply: FastifyReply) {
    const name = (req.params as { name: string }).name;
    const file = outputFile(name, reply);
    if (!file) return undefined;
    const body = req.body as Record<string, unknown>;
    const model = body['model'] as string | undefined;
    const entry = await requestModel(model, reply);
    if (!entry) return undefined;
    const { scale, strength, structureSource, maxPixels, width, height } = body as Record<string, number & string & undefined>;
    const source = await gallery.source(name, file);
    if (!source) {
      void unreadableImage(reply, name);
      return undefined;
    }
    const plan = checkUpscale({ width: source.width, height: source.height }, { scale, strength, structureSource, maxPixels, width, height });
    const { scale: _s, strength: _t, structureSource: _u, maxPixels: _m, width: _w, height: _h, ...rest } = body;
    const generation = toGenerateParams(rest);
    // As the upscale pipeline runs it: the prompt given or the one in the image, a scheduler that can start from a
    // noised image, the upscale defaults of the method options, at the size denoised.
    const prompt = generation.prompt ?? source.embedded?.prompt ?? '';
    const chosen = img2imgScheduler(generation.scheduler, String(entry.schedulerConfig?._class_name ?? ''));
    const methodOptions = upscaleMethodOptions(generation.method, generation.methodOptions);
    const params = checkGenerate({ ...generation, methodOptions, scheduler: chosen.scheduler, prompt, width: plan.workWidth, height: plan.workHeight }, entry);
    return { name, body, model, entry, plan, params };
  }

  /**
   * The checks the library's check stage makes before a model call, made before a job is queued so that a job
   * queued runs: the settings, and against the model's facts (its family, native size, latent channels, scheduler),
   * the scheduler's family, SDXL-only options and the method's plan; the mask words with the model's tokenizer where
   * the engine has it (the fleet checks them on the worker). Returns the settings resolved (the seed as given, or 0).
   * Throws an AsgdError naming the field.
   */
  function checkGenerate(params: GenerateParams, entry: ModelEntry): ResolvedParams {
    const seeded = { ...params, seed: params.seed ?? '0' };
    validateParams(seeded);
    const facts = modelFacts(entry);
    const p = facts ? checkSettings(seeded, facts).params : resolveParams(seeded, { width: entry.nativeWidth ?? 512, height: entry.nativeHeight ?? 512 });
    if (p.maskWords && o.engine.checkMaskWords) o.engine.checkMaskWords(entry.name, p.prompt, p.maskWords);
    return p;
  }

  /**
   * The model a request names (the first one when it names none), checked as queueing checks it: 400 naming the
   * field for an unknown one, 409 while there is none at all (a fleet no worker has joined). Undefined when it replied.
   */
  async function requestModel(model: string | undefined, reply: FastifyReply): Promise<ModelEntry | undefined> {
    if (model !== undefined && !(await knownModel(model))) {
      void reply.code(400).send({ error: 'invalid-argument', field: 'model', message: `Invalid model; expected one of ${o.engine.models().map((m) => m.name).join(', ')}; received ${JSON.stringify(model)}` });
      return undefined;
    }
    if (model === undefined && o.engine.models().length === 0) await o.engine.refresh?.();
    const entry = modelEntry(model);
    if (!entry) void reply.code(409).send({ error: 'queue', message: 'No live worker: start one with `asgd worker --queue ...` (no model is served until one joins)' });
    return entry;
  }

  /** Whether jobs may name `model`; an engine whose models change while it runs (the fleet's) is read again first. */
  const knownModel = async (model: string) => {
    const has = () => o.engine.models().some((m) => m.name === model);
    if (has() || !o.engine.refresh) return has();
    await o.engine.refresh();
    return has();
  };
  const unreadableImage = (reply: FastifyReply, name: string) =>
    reply.code(422).send({ error: 'unreadable-image', field: 'name', message: `Invalid name; expected an output that is a readable image; received ${name}, which cannot be decoded (truncated or damaged)` });
  const jobId = (req: FastifyRequest) => (req.params as { id: string }).id;
  const notFound = (reply: FastifyReply, what = 'No such job') => reply.code(404).send({ error: 'not-found', message: what });

  /** The file of output `name`; undefined when it replied 400 (not an output's name) or 404 (none). */
  function outputFile(name: string, reply: FastifyReply): string | undefined {
    const file = gallery.file(name);
    if (file === 'invalid') void reply.code(400).send({ error: 'invalid-argument', field: 'name', message: 'Invalid output name' });
    else if (file === 'missing') void notFound(reply, 'No such output');
    else return file;
    return undefined;
  }

  const idParams = { type: 'object', properties: { id: { type: 'string' } }, required: ['id'] };
  const nameParams = { type: 'object', properties: { name: { type: 'string' } }, required: ['name'] };
  const err = (description: string) => ({ description, schema: errorSchema });

  const routes: Route[] = [
    {
      method: 'POST', url: '/api/v1/jobs', summary: 'Queue a generation', body: generateRequestSchema(),
      responses: { 202: { description: 'queued', schema: { type: 'object', properties: { id: { type: 'string' } } } }, 400: err('invalid settings (the field is named)'), 409: err('no live worker can run it (a fleet)') },
      handler: async (req, reply) => {
        const body = req.body as Record<string, unknown>;
        const model = body['model'] as string | undefined;
        const entry = await requestModel(model, reply);
        if (!entry) return reply;
        checkGenerate(toGenerateParams(body), entry);
        const job = await o.queue.add({ kind: 'generate', model, settings: body }, o.engine.deviceSet);
        return reply.code(202).send({ id: job.id });
      },
    },
    {
      method: 'POST', url: '/api/v1/outputs/:name/upscale', summary: 'Queue an upscale of an output (img2img with structure from the picture)', body: upscaleRequestSchema(),
      responses: { 202: { description: 'queued', schema: { type: 'object', properties: { id: { type: 'string' } } } }, 400: err('invalid settings (the field is named)'), 404: err('no such output'), 409: err('no live worker can run it (a fleet)'), 422: err('the output is not a readable image') },
      handler: async (req, reply) => {
        const up = await checkUpscaleRequest(req, reply);
        if (!up) return reply;
        const job = await o.queue.add(
          { kind: 'upscale', model: up.model, settings: { ...up.body, source: up.name }, size: { width: up.plan.workWidth, height: up.plan.workHeight } }, o.engine.deviceSet,
        );
        return reply.code(202).send({ id: job.id });
      },
    },
    {
      method: 'POST', url: '/api/v1/outputs/:name/upscale/estimate', summary: 'The size an upscale makes, its UNet evaluations, and about how long (once a job was measured here)', body: upscaleRequestSchema(),
      responses: {
        200: { description: 'estimate', schema: { type: 'object', properties: { width: { type: 'integer' }, height: { type: 'integer' }, unetEvaluations: { type: 'integer' }, seconds: { type: 'number' } } } },
        400: err('invalid settings (the field is named)'), 404: err('no such output'), 409: err('no live worker (a fleet)'), 422: err('the output is not a readable image'),
      },
      handler: async (req, reply) => {
        const up = await checkUpscaleRequest(req, reply);
        if (!up) return reply;
        const model = up.entry;
        const p = up.params;
        // As the pipeline runs it: the method over the steps left after the strength's start.
        return { width: up.plan.targetWidth, height: up.plan.targetHeight, ...estimate(p, model, p.steps - startStep(p.steps, up.plan.strength)) };
      },
    },
    {
      method: 'POST', url: '/api/v1/uploads', summary: 'Add a picture (PNG, JPEG or WebP bytes as the body) to the gallery, to upscale it like an output',
      rawBody: { types: Object.keys(UPLOAD_TYPES), limit: UPLOAD_MAX_BYTES },
      responses: {
        201: { description: 'added', schema: uploadSchema }, 200: { description: 'the same bytes were uploaded before', schema: uploadSchema },
        400: err('not a PNG, JPEG or WebP picture, or a side outside 8 to 8192 px'), 413: err('larger than 64 MiB'), 415: err('another content type'),
      },
      handler: async (req, reply) => {
        // Another content type was refused before its body was read (see the route's onRequest below).
        if (!Buffer.isBuffer(req.body)) return unsupportedType(req, reply, Object.keys(UPLOAD_TYPES));
        const saved = await saveUpload(outputsDir, req.body);
        return reply.code(saved.created ? 201 : 200).send(saved);
      },
    },
    {
      method: 'POST', url: '/api/v1/estimate', summary: 'How many UNet evaluations a generation takes, and about how long (once a job was measured here)', body: generateRequestSchema(),
      responses: { 200: { description: 'estimate', schema: { type: 'object', properties: { unetEvaluations: { type: 'integer' }, seconds: { type: 'number' } } } }, 400: err('invalid settings (the field is named)'), 409: err('no live worker (a fleet)') },
      handler: async (req, reply) => {
        const params = toGenerateParams(req.body as Record<string, unknown>);
        const model = await requestModel((req.body as { model?: string }).model, reply);
        if (!model) return reply;
        // The checks queueing makes: what the estimate accepts, the queue accepts.
        const p = checkGenerate(params, model);
        return estimate(p, model, schedulerSteps(p, model));
      },
    },
    {
      method: 'GET', url: '/api/v1/jobs', summary: 'Every job: running, queued in order, then finished (newest first)',
      query: { finished: { type: 'string', pattern: '^[0-9]{1,6}$', description: 'at most this many finished jobs (the newest); default: every one the server keeps' } },
      responses: { 200: { description: 'jobs', schema: { type: 'object', properties: { jobs: { type: 'array', items: jobSchema } } } }, 400: err('finished is not a whole number') },
      handler: async (req) => {
        const finished = (req.query as { finished?: string }).finished;
        return { jobs: await o.queue.list(finished === undefined ? {} : { finished: Number(finished) }) };
      },
    },
    {
      method: 'GET', url: '/api/v1/jobs/:id', summary: 'One job',
      responses: { 200: { description: 'the job', schema: jobSchema }, 404: err('no such job') },
      handler: async (req, reply) => (await o.queue.get(jobId(req))) ?? notFound(reply),
    },
    {
      method: 'PATCH', url: '/api/v1/jobs/:id', summary: 'Move a queued job', body: moveRequestSchema,
      responses: { 200: { description: 'the queued jobs in their new order' }, 404: err('no such job'), 409: err('the job is not queued') },
      handler: async (req) => ({ queued: (await o.queue.move(jobId(req), (req.body as { position: number }).position)).map((j) => j.id) }),
    },
    {
      method: 'DELETE', url: '/api/v1/jobs/:id', summary: 'Cancel a queued or running job; remove a finished one',
      responses: { 200: { description: 'cancelled', schema: jobSchema }, 204: { description: 'removed' }, 404: err('no such job') },
      handler: async (req, reply) => {
        const job = await o.queue.get(jobId(req));
        if (!job) return notFound(reply);
        if (FINAL.has(job.state)) {
          await o.queue.remove(job.id);
          return reply.code(204).send();
        }
        return o.queue.cancel(job.id);
      },
    },
    {
      method: 'GET', url: '/api/v1/jobs/:id/events', summary: 'Server-Sent Events of a job: state and progress; resumable with Last-Event-ID',
      responses: { 200: { description: 'event stream (event: state | progress; data: JSON)', type: 'text/event-stream', schema: jobEventSchema }, 404: err('no such job') },
      handler: async (req, reply) => {
        const id = jobId(req);
        if (!(await o.queue.get(id))) return notFound(reply);
        const last = (req.headers['last-event-id'] as string | undefined) ?? (req.query as { lastEventId?: string }).lastEventId;
        reply.hijack();
        const res = reply.raw;
        res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache, no-transform', connection: 'keep-alive', 'x-accel-buffering': 'no' });
        res.write('retry: 1000\n\n');
        let ended = false;
        let unsubscribe: (() => void) | undefined;
        const end = () => {
          if (ended) return;
          ended = true;
          clearInterval(heartbeat);
          unsubscribe?.();
          sse.delete(reply);
          res.end();
        };
        const heartbeat = setInterval(() => res.write(': keep-alive\n\n'), 15_000);
        sse.add(reply);
        req.raw.on('close', end);
        const send = (e: JobEvent) => {
          if (ended) return;
          const data = e.type === 'state' ? e.job : e.progress;
          res.write(`id: ${e.id}\nevent: ${e.type}\ndata: ${JSON.stringify(data)}\n\n`);
          if (e.type === 'state' && FINAL.has(e.job.state)) end();
        };
        unsubscribe = o.queue.subscribe(id, last, send);
        if (ended) unsubscribe();
        return reply;
      },
    },
    {
      method: 'GET', url: '/api/v1/jobs/:id/preview', summary: 'The latest preview of a running job (PNG)',
      responses: { 200: { description: 'PNG', type: 'image/png' }, 404: err('no preview yet') },
      handler: async (req, reply) => {
        const png = previews.get(jobId(req)) ?? (await o.preview?.(jobId(req)));
        if (!png) return notFound(reply, 'No preview');
        return reply.type('image/png').header('cache-control', 'no-store').send(Buffer.from(png));
      },
    },
    {
      method: 'GET', url: '/api/v1/outputs', summary: 'The gallery: output files with their metadata, newest first',
      responses: { 200: { description: 'outputs', schema: { type: 'object', properties: { outputs: { type: 'array', items: outputSchema } } } } },
      handler: async () => ({ outputs: await gallery.list() }),
    },
    {
      method: 'GET', url: '/api/v1/outputs/:name', summary: 'An output file',
      responses: { 200: { description: 'the image', type: 'image/*' }, 400: err('invalid name'), 404: err('no such output') },
      handler: async (req, reply) => {
        const file = outputFile((req.params as { name: string }).name, reply);
        if (!file) return reply;
        const ext = path.extname(file).slice(1).toLowerCase();
        return reply.type(ext === 'png' ? 'image/png' : ext === 'webp' ? 'image/webp' : 'image/jpeg').header('cache-control', OUTPUT_CACHE).send(fs.createReadStream(file));
      },
    },
    {
      method: 'GET', url: '/api/v1/outputs/:name/metadata', summary: "An output's embedded generation settings",
      responses: { 200: { description: 'metadata', schema: outputSchema }, 400: err('invalid name'), 404: err('no such output') },
      handler: async (req, reply) => {
        const name = (req.params as { name: string }).name;
        if (!outputFile(name, reply)) return reply;
        return gallery.describe(name);
      },
    },
    {
      method: 'GET', url: '/api/v1/outputs/:name/thumbnail', summary: `A ${THUMB_SIZE} px thumbnail (WebP), made once and cached`,
      responses: { 200: { description: 'WebP', type: 'image/webp' }, 400: err('invalid name'), 404: err('no such output'), 422: err('the file is not a readable image (truncated or damaged)') },
      handler: async (req, reply) => {
        const name = (req.params as { name: string }).name;
        const file = outputFile(name, reply);
        if (!file) return reply;
        const thumb = await gallery.thumbnail(name, file);
        if (!thumb) return unreadableImage(reply, name);
        return reply.type('image/webp').header('cache-control', OUTPUT_CACHE).send(thumb);
      },
    },
    {
      method: 'DELETE', url: '/api/v1/outputs/:name', summary: 'Delete an output (and its thumbnail)',
      responses: { 204: { description: 'deleted' }, 400: err('invalid name'), 404: err('no such output'), 409: err('a queued or running upscale reads it (the jobs are named)') },
      handler: async (req, reply) => {
        const name = (req.params as { name: string }).name;
        const file = outputFile(name, reply);
        if (!file) return reply;
        // An upscale that has yet to read its source would fail on a file gone.
        const users = (await o.queue.list({ finished: 0 })).filter((j) => !FINAL.has(j.state) && j.spec.kind === 'upscale' && j.spec.settings['source'] === name);
        if (users.length) {
          return reply.code(409).send({
            error: 'in-use', field: 'name',
            message: `Output ${name} is the source of ${users.length === 1 ? 'job' : 'jobs'} ${users.map((j) => `${j.id} (${j.state})`).join(', ')}; cancel ${users.length === 1 ? 'it' : 'them'} or wait until ${users.length === 1 ? 'it ends' : 'they end'}, then delete it`,
          });
        }
        gallery.remove(name, file);
        // The job that wrote it goes too: the fleet names jobs by their settings, and would answer the same
        // settings again with that finished job, whose output is gone, instead of running them.
        const id = jobIdOfOutput(name);
        const job = id === undefined ? undefined : await o.queue.get(id);
        if (job?.state === 'completed' && job.output === name) await o.queue.remove(job.id);
        return reply.code(204).send();
      },
    },
    {
      method: 'GET', url: '/api/v1/models', summary: 'The models jobs can name',
      responses: { 200: { description: 'models' } },
      // Name and native size only (a list, so that a fact added for the server's own checks stays its own).
      handler: async () => ({ models: o.engine.models().map(({ name, nativeWidth, nativeHeight }) => ({ name, nativeWidth, nativeHeight })) }),
    },
    {
      method: 'GET', url: '/api/v1/devices', summary: 'The device set jobs run on, and what this machine offers',
      responses: { 200: { description: 'devices' } },
      handler: async () => ({ deviceSet: o.engine.deviceSet, devices: await o.engine.devices() }),
    },
  ];
  const fleetStatus = o.fleetStatus;
  if (fleetStatus) {
    routes.push({
      method: 'GET', url: '/api/v1/fleet', summary: 'The fleet: live workers (devices, models, what each runs) and queue depths per model',
      responses: { 200: { description: 'fleet status' } },
      handler: async () => fleetStatus(),
    });
  }

  const openapi = openApiDocument(routes);
  routes.push({
    method: 'GET', url: '/api/v1/openapi.json', summary: 'This document', responses: { 200: { description: 'OpenAPI 3.1' } },
    handler: async () => openapi,
  });
  (openapi['paths'] as Record<string, unknown>)['/api/v1/openapi.json'] = { get: { summary: 'This document', responses: { 200: { description: 'OpenAPI 3.1' } } } };

  for (const r of routes) {
    const params = r.url.includes(':id') ? idParams : r.url.includes(':name') ? nameParams : undefined;
    if (r.rawBody) {
      // The raw body's parser applies to this route alone (a plugin scope), with the route's size limit.
      const raw = r.rawBody;
      await app.register(async (scope) => {
        scope.addContentTypeParser([...raw.types], { parseAs: 'buffer', bodyLimit: raw.limit }, (_req, body, done) => done(null, body));
        // Another content type is refused before its body is read: the route's size limit is for its own types
        // (a JSON body would otherwise be read and parsed up to that limit, then refused).
        const onRequest = async (req: FastifyRequest, reply: FastifyReply) => {
          if (!raw.types.includes(mediaType(req))) return unsupportedType(req, reply, raw.types);
          return undefined;
        };
        scope.route({ method: r.method, url: r.url, handler: r.handler, bodyLimit: raw.limit, onRequest });
      });
      continue;
    }
    app.route({
      method: r.method, url: r.url, handler: r.handler,
      // A JSON body in another content type (text/plain parses as a string) is refused as such, before it is read.
      ...(r.body ? { onRequest: async (req: FastifyRequest, reply: FastifyReply) => (mediaType(req) === 'application/json' ? undefined : unsupportedType(req, reply, ['application/json'])) } : {}),
      schema: { ...(r.body ? { body: r.body } : {}), ...(params ? { params } : {}), ...(r.query ? { querystring: { type: 'object', properties: r.query } } : {}) },
    });
  }

  // The page.
  const web = o.webDir && fs.existsSync(path.join(o.webDir, 'index.html')) ? path.resolve(o.webDir) : undefined;
  app.get('/*', async (req, reply) => {
    if (req.url.startsWith('/api/')) return noRoute(req, reply);
    if (!web) {
      return reply.type('text/html').send('<!doctype html><title>asgd</title><p>The page is not built. Run <code>npm run build</code> in the asgdiffusion folder, then start <code>asgd serve</code> again. The API is at <a href="/api/v1/openapi.json">/api/v1/openapi.json</a>.</p>');
    }
    const rel = decodeURIComponent(new URL(req.url, 'http://x').pathname).replace(/^\/+/, '') || 'index.html';
    const file = path.resolve(web, rel);
    if (!file.startsWith(web + path.sep) || !fs.existsSync(file) || !fs.statSync(file).isFile()) {
      // Unknown paths get the page (it has one view); missing assets 404.
      if (rel.startsWith('assets/')) return notFound(reply, 'No such file');
      return reply.type('text/html').send(fs.readFileSync(path.join(web, 'index.html')));
    }
    return reply.type(contentType(file)).send(fs.readFileSync(file));
  });

  // Open event streams would hold the server open: end them first.
  app.addHook('preClose', async () => {
    for (const r of [...sse]) r.raw.end();
  });
  return app;
}

