import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import type { z } from 'zod';
import { jsonSchema, openApiPath } from '../../src/api/openapi.js';
import { routes } from '../../src/api/routes.js';
import { startHarness, type Harness } from './harness.js';

let h: Harness;
before(async () => {
  h = await startHarness();
});
after(async () => {
  await h.close();
});

type Doc = { openapi: string; paths: Record<string, Record<string, Record<string, unknown>>> };

function expressRoutes(h: Harness): { path: string; method: string }[] {
  const stack = (
    h.api.app as unknown as {
      router: { stack: { route?: { path: string; methods: Record<string, boolean> } }[] };
    }
  ).router.stack;
  return stack.flatMap((l) =>
    l.route === undefined
      ? []
      : Object.keys(l.route.methods).map((method) => ({ path: l.route!.path, method })),
  );
}

function issuesOf(schema: z.ZodType, where: string, value: unknown): string[] {
  const r = schema.safeParse(value);
  assert.equal(r.success, false);
  return r.error!.issues.map((i) => {
    const keys = i.code === 'unrecognized_keys' ? `: ${i.keys.map((k) => `"${k}"`).join(', ')}` : '';
    return `${[where, ...i.path.map(String)].join('.')}: ${i.message}${keys}`;
  });
}

test('every route Express serves is in the OpenAPI document, and every documented operation is served', async () => {
  const r = await h.call('GET', '/api/v1/openapi.json', { token: null });
  assert.equal(r.status, 200);
  const doc = r.json as Doc;
  assert.equal(doc.openapi, '3.0.3');
  const served = expressRoutes(h);
  assert.equal(served.length, routes.length + 1, 'the route table plus the document itself');
  for (const { path, method } of served) {
    assert.ok(doc.paths[openApiPath(path)]?.[method], `${method.toUpperCase()} ${path} is documented`);
  }
  const documented = Object.entries(doc.paths).flatMap(([p, ops]) =>
    Object.keys(ops).map((m) => `${m} ${p}`),
  );
  assert.deepEqual(documented.sort(), served.map((s) => `${s.method} ${openApiPath(s.path)}`).sort());
  for (const def of routes) {
    const op = doc.paths[openApiPath(def.path)]![def.method]!;
    if (def.body !== undefined) {
      const body = op.requestBody as { content: Record<string, { schema: unknown }> };
      assert.deepEqual(
        body.content['application/json']!.schema,
        jsonSchema(def.body, 'input'),
        `${def.path} body`,
      );
    } else {
      assert.equal(op.requestBody, undefined);
    }
    if (def.response !== undefined) {
      const resp = op.responses as Record<string, { content: Record<string, { schema: unknown }> }>;
      assert.deepEqual(
        resp[String(def.status)]!.content['application/json']!.schema,
        jsonSchema(def.response, 'output'),
      );
    }
    const params = (op.parameters as { name: string; in: string }[]).map((p) => `${p.in}:${p.name}`).sort();
    const expected = [
      ...Object.keys((def.params && (jsonSchema(def.params, 'input').properties as object)) ?? {}).map(
        (n) => `path:${n}`,
      ),
      ...Object.keys((def.query && (jsonSchema(def.query, 'input').properties as object)) ?? {}).map(
        (n) => `query:${n}`,
      ),
    ].sort();
    assert.deepEqual(params, expected, `${def.method} ${def.path} parameters`);
    assert.deepEqual(op.security, def.scope === null ? [] : [{ bearer: [def.scope] }]);
  }
});

test('every route with a body or a query is validated by exactly the schema the document shows', async () => {
  const bad = { unexpectedField: 1, name: 42 };
  let checked = 0;
  for (const def of routes) {
    const path = def.path.replace(':id', randomUUID());
    if (def.body !== undefined) {
      const r = await h.call(def.method.toUpperCase(), path, { body: bad });
      assert.equal(r.status, 400, `${def.method} ${def.path}: ${r.text}`);
      const got = (r.json as { error: { issues: { path: string; message: string }[] } }).error.issues;
      assert.deepEqual(
        got.map((i) => `${i.path}: ${i.message}`),
        issuesOf(def.body, 'body', bad),
        `${def.method} ${def.path}`,
      );
      checked++;
    }
    if (def.query !== undefined) {
      const r = await h.call(def.method.toUpperCase(), `${path}?limit=0&bogus=1`);
      assert.equal(r.status, 400, `${def.method} ${def.path}: ${r.text}`);
      const got = (r.json as { error: { issues: { path: string; message: string }[] } }).error.issues;
      assert.deepEqual(
        got.map((i) => `${i.path}: ${i.message}`),
        issuesOf(def.query, 'query', { limit: '0', bogus: '1' }),
      );
      checked++;
    }
  }
  assert.ok(checked >= 10, `checked ${checked} routes`);
});

test('every authenticated route answers 401 without a token and 403 below its scope; every body route 400 on bad JSON and 413 when oversized', async () => {
  const below = { read: null, operate: h.tokens.read, admin: h.tokens.operate } as const;
  for (const def of routes) {
    const path = def.path.replace(':id', randomUUID());
    const method = def.method.toUpperCase();
    if (def.scope !== null) {
      const none = await h.call(method, path, { token: null, ...(def.body ? { body: {} } : {}) });
      assert.equal(none.status, 401, `${method} ${def.path} without a token`);
      const lower = below[def.scope];
      if (lower !== null) {
        const r = await h.call(method, path, { token: lower, ...(def.body ? { body: {} } : {}) });
        assert.equal(r.status, 403, `${method} ${def.path} with a token below "${def.scope}"`);
        assert.match(
          (r.json as { error: { message: string } }).error.message,
          new RegExp(`lacks the "${def.scope}" scope`),
        );
      }
    }
    if (def.body !== undefined) {
      const bad = await h.call(method, path, { rawBody: '{"a": [1, 2' });
      assert.equal(bad.status, 400, `${method} ${def.path} malformed JSON`);
      assert.match((bad.json as { error: { code: string } }).error.code, /MALFORMED_JSON/);
      const big = await h.call(method, path, { body: { pad: 'x'.repeat(5000) } });
      assert.equal(big.status, 413, `${method} ${def.path} oversized`);
    }
  }
});

test('every route with an id answers 404 for an unknown id (with an otherwise valid request)', async () => {
  const vc = await h.call('POST', '/api/v1/vcenters', { body: h.vcenterBody('vc-404') });
  assert.equal(vc.status, 201, vc.text);
  const validBodies: Record<string, unknown> = {
    'put /api/v1/policies/:id': {
      name: 'p404',
      vcenterId: (vc.json as { id: string }).id,
      vmSelection: { morefs: ['vm-1'] },
      retention: { keepLast: 1 },
    },
    'post /api/v1/policies/:id/run': {},
  };
  let checked = 0;
  for (const def of routes.filter((d) => d.path.includes(':id'))) {
    const key = `${def.method} ${def.path}`;
    const r = await h.call(def.method.toUpperCase(), def.path.replace(':id', randomUUID()), {
      ...(def.body !== undefined ? { body: validBodies[key] ?? {} } : {}),
    });
    assert.equal(r.status, 404, `${key}: ${r.text}`);
    assert.match((r.json as { error: { message: string } }).error.message, /^no .+ with id [0-9a-f-]{36}$/);
    checked++;
  }
  assert.equal(checked, 10);
});
