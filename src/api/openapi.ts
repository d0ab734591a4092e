import { z } from 'zod';
import { version } from '../version.js';
import { errorResponse } from './schemas.js';
import type { RouteDef } from './route.js';

type JsonSchema = Record<string, unknown>;

/** A zod schema as the JSON Schema the OpenAPI document embeds (the request side for inputs). */
export function jsonSchema(schema: z.ZodType, io: 'input' | 'output'): JsonSchema {
  const js = z.toJSONSchema(schema, { io, unrepresentable: 'any', target: 'openapi-3.0' }) as JsonSchema;
  delete js.$schema;
  return js;
}

/** /api/v1/jobs/:id -> /api/v1/jobs/{id} */
export function openApiPath(expressPath: string): string {
  return expressPath.replace(/:([A-Za-z_]\w*)/g, '{$1}');
}

const STATUS_TEXT: Record<number, string> = {
  400: 'Invalid request: the message names the field and the rule, or the JSON is malformed',
  401: 'Missing or invalid bearer token',
  403: 'The token lacks the scope this route needs',
  404: 'No object with this id',
  409: 'Conflicts with the current state (duplicate name, object in use, job already finished)',
  413: 'Request body larger than the configured limit',
  422: 'Understood but refused (connection test failed, selection cannot be resolved)',
  503: 'Not ready: a dependency is unreachable',
};

function parameters(def: RouteDef): unknown[] {
  const out: unknown[] = [];
  for (const [where, schema] of [
    ['path', def.params],
    ['query', def.query],
  ] as const) {
    if (schema === undefined) continue;
    const js = jsonSchema(schema, 'input');
    const props = (js.properties ?? {}) as Record<string, JsonSchema>;
    const required = new Set((js.required ?? []) as string[]);
    for (const [name, p] of Object.entries(props)) {
      out.push({ name, in: where, required: where === 'path' || required.has(name), schema: p });
    }
  }
  return out;
}

/** The OpenAPI 3 document of every route, generated from the route table's zod schemas. */
export function buildOpenApi(routes: readonly RouteDef[]): Record<string, unknown> {
  const paths: Record<string, Record<string, unknown>> = {};
  const errorSchema = jsonSchema(errorResponse, 'output');
  for (const def of routes) {
    const responses: Record<string, unknown> = {};
    if (def.response !== undefined) {
      responses[String(def.status)] = {
        description: 'Success',
        content: { 'application/json': { schema: jsonSchema(def.response, 'output') } },
      };
    } else if (def.status === 204) {
      responses['204'] = { description: 'Done (no content)' };
    } else {
      responses[String(def.status)] = {
        description: 'Success',
        content: { 'text/plain': { schema: { type: 'string' } } },
      };
    }
    for (const code of def.errors) {
      responses[String(code)] = {
        description: STATUS_TEXT[code] ?? 'Error',
        content: { 'application/json': { schema: { $ref: '#/components/schemas/Error' } } },
      };
    }
    const op: Record<string, unknown> = {
      operationId: `${def.method}${openApiPath(def.path).replace(/[^A-Za-z0-9]+(\w)?/g, (_m, c: string | undefined) => (c ?? '').toUpperCase())}`,
      summary: def.summary,
      tags: [def.tag],
      parameters: parameters(def),
      responses,
      security: def.scope === null ? [] : [{ bearer: [def.scope] }],
      'x-vbproxy-scope': def.scope,
    };
    if (def.body !== undefined) {
      op.requestBody = {
        required: true,
        content: { 'application/json': { schema: jsonSchema(def.body, 'input') } },
      };
    }
    (paths[openApiPath(def.path)] ??= {})[def.method] = op;
  }
  return {
    openapi: '3.0.3',
    info: {
      title: 'vbproxy API',
      version,
      description:
        'The REST API of a vbproxy backup proxy, used by the central manager and operators. Bearer tokens carry one of the scopes read < operate < admin.',
    },
    servers: [{ url: '/' }],
    paths,
    components: {
      securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } },
      schemas: { Error: errorSchema },
    },
  };
}
