import { randomUUID } from 'node:crypto';
import express, { type NextFunction, type Request, type Response } from 'express';
import type { z } from 'zod';
import { ConflictError, NotFoundError } from '../catalog/errors.js';
import { describeError, VbproxyError } from '../errors.js';
import type { ApiDeps } from './deps.js';
import { ApiError } from './errors.js';
import { buildOpenApi } from './openapi.js';
import type { RouteDef } from './route.js';
import { routes as defaultRoutes } from './routes.js';

/** The document route, added to the table so that the document lists itself too. */
function withDocument(routes: readonly RouteDef[]): RouteDef[] {
  const all: RouteDef[] = [...routes];
  let document: Record<string, unknown> | undefined;
  all.push({
    method: 'get',
    path: '/api/v1/openapi.json',
    summary: 'This OpenAPI document',
    tag: 'meta',
    scope: null,
    status: 200,
    errors: [],
    handler: async () => {
      document ??= buildOpenApi(all);
      return { json: document };
    },
  });
  return all;
}

type Issue = { path: string; message: string };

function validate(where: string, schema: z.ZodType | undefined, value: unknown, issues: Issue[]): unknown {
  if (schema === undefined) return undefined;
  const r = schema.safeParse(value);
  if (r.success) return r.data;
  for (const i of r.error.issues) {
    const keys = i.code === 'unrecognized_keys' ? `: ${i.keys.map((k) => `"${k}"`).join(', ')}` : '';
    issues.push({ path: [where, ...i.path.map(String)].join('.'), message: `${i.message}${keys}` });
  }
  return undefined;
}

/** What the API answers for an error thrown by a handler or the body parser. */
export function errorToResponse(err: unknown): ApiError {
  if (err instanceof ApiError) return err;
  if (err instanceof NotFoundError) return new ApiError(404, err.code, err.message, { cause: err });
  if (err instanceof ConflictError) return new ApiError(409, err.code, err.message, { cause: err });
  const type = (err as { type?: unknown } | null)?.type;
  if (type === 'entity.too.large') {
    const limit = (err as { limit?: number }).limit;
    return new ApiError(413, 'BODY_TOO_LARGE', `request body too large (limit ${limit ?? '?'} bytes)`, {
      cause: err,
    });
  }
  if (type === 'entity.parse.failed') {
    return new ApiError(400, 'MALFORMED_JSON', `malformed JSON body: ${(err as Error).message}`, {
      cause: err,
    });
  }
  if (type === 'encoding.unsupported' || type === 'charset.unsupported') {
    return new ApiError(415, 'UNSUPPORTED_ENCODING', (err as Error).message, { cause: err });
  }
  if (err instanceof VbproxyError && err.transient) {
    return new ApiError(503, err.code, `${describeError(err)} (temporary; retry later)`, { cause: err });
  }
  return new ApiError(500, 'INTERNAL', 'internal error (see the proxy log for details)', { cause: err });
}

/** The Express application: every route of the table, validated, authorized, logged. */
export function createApp(deps: ApiDeps, routes: readonly RouteDef[] = defaultRoutes): express.Express {
  const table = withDocument(routes);
  const app = express();
  app.disable('x-powered-by');
  app.set('query parser', 'simple');
  app.use(express.json({ limit: deps.bodyLimitBytes, strict: true }));

  app.use((req: Request, res: Response, next: NextFunction) => {
    const started = process.hrtime.bigint();
    const reqId = randomUUID();
    res.setHeader('x-request-id', reqId);
    res.on('finish', () => {
      const ms = Number(process.hrtime.bigint() - started) / 1e6;
      // Only method, path (no query string: filters are harmless but keep lines short), status, time.
      deps.logger.info(
        { reqId, method: req.method, path: req.path, status: res.statusCode, ms: Math.round(ms) },
        'request',
      );
    });
    next();
  });

  for (const def of table) {
    app[def.method](def.path, async (req: Request, res: Response) => {
      let tokenName: string | null = null;
      if (def.scope !== null) tokenName = deps.tokens.authorize(req.get('authorization'), def.scope);
      const issues: Issue[] = [];
      const params = validate('params', def.params, req.params, issues);
      const query = validate('query', def.query, req.query, issues);
      const hasBody = req.body !== undefined && req.body !== null;
      const body = validate('body', def.body, def.body !== undefined && !hasBody ? {} : req.body, issues);
      if (def.body === undefined && hasBody && Object.keys(req.body as object).length > 0) {
        issues.push({ path: 'body', message: 'this route takes no request body' });
      }
      if (issues.length > 0) {
        throw new ApiError(400, 'INVALID_REQUEST', issues.map((i) => `${i.path}: ${i.message}`).join('; '), {
          issues,
        });
      }
      const result = await def.handler({ params, query, body, deps, req, tokenName });
      res.status(result.status ?? def.status);
      if ('text' in result) {
        res.type(result.contentType).send(result.text);
      } else if ((result.status ?? def.status) === 204) {
        res.end();
      } else {
        res.json(result.json);
      }
    });
  }

  app.use((req: Request, _res: Response, next: NextFunction) => {
    next(new ApiError(404, 'NO_ROUTE', `no route ${req.method} ${req.path}`));
  });

  app.use((err: unknown, req: Request, res: Response, _next: NextFunction) => {
    const e = errorToResponse(err);
    if (e.status >= 500) {
      deps.logger.error({ method: req.method, path: req.path, err: describeError(err) }, 'request failed');
    }
    res.status(e.status).json({
      error: { code: e.code, message: e.message, ...(e.issues === undefined ? {} : { issues: e.issues }) },
    });
  });
  return app;
}
