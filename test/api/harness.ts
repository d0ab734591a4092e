import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { createToken } from '../../src/api/auth.js';
import { startApi, type RunningApi } from '../../src/api/server.js';
import { SecretBox } from '../../src/catalog/secret-box.js';
import { parseConfig } from '../../src/config/load.js';
import type { ConfigInput } from '../../src/config/schema.js';
import { createLogger } from '../../src/log.js';
import { Metrics } from '../../src/metrics/metrics.js';
import { createTestDatabase, type TestDatabase } from '../catalog/test-db.js';

export interface Harness {
  api: RunningApi;
  db: TestDatabase;
  dir: string;
  repository: string;
  tokens: { admin: string; operate: string; read: string };
  configPath: string;
  call(
    method: string,
    path: string,
    options?: { token?: string | null; body?: unknown; rawBody?: string; contentType?: string },
  ): Promise<{ status: number; json: unknown; text: string; headers: Headers }>;
  close(): Promise<void>;
}

/** Writes a complete config for a test API into `dir` (plain HTTP on an ephemeral port). */
export function writeTestConfig(dir: string, dbUrl: string, extra: Partial<ConfigInput> = {}): string {
  const repository = join(dir, 'repository');
  mkdirSync(repository, { recursive: true });
  writeFileSync(join(dir, 'catalog.key'), `${SecretBox.generateKeyHex()}\n`, { mode: 0o600 });
  writeFileSync(join(dir, 'repo.pass'), 'repo-passphrase-planted\n', { mode: 0o600 });
  const config: ConfigInput = {
    proxy: { name: `proxy-${randomBytes(3).toString('hex')}`, vmMoref: 'vm-100' },
    api: {
      listen: '127.0.0.1',
      port: 0,
      plainHttp: true,
      tokensFile: join(dir, 'tokens.json'),
      bodyLimitBytes: 4096,
    },
    database: { url: dbUrl },
    redis: { url: 'redis://127.0.0.1:6379', prefix: `vbptest-${randomBytes(5).toString('hex')}` },
    repository: { path: repository, passphraseFile: join(dir, 'repo.pass') },
    catalog: { secretKeyFile: join(dir, 'catalog.key') },
    logLevel: 'info',
    ...extra,
  };
  const path = join(dir, 'config.json');
  writeFileSync(path, JSON.stringify(config, null, 2));
  return path;
}

export async function startHarness(): Promise<Harness> {
  const dir = mkdtempSync(join(tmpdir(), 'vbproxy-api-'));
  const db = await createTestDatabase({ migrate: false });
  const configPath = writeTestConfig(dir, db.url);
  const tokensFile = join(dir, 'tokens.json');
  const tokens = {
    admin: createToken(tokensFile, 'admin', ['admin']),
    operate: createToken(tokensFile, 'operator', ['operate']),
    read: createToken(tokensFile, 'monitor', ['read']),
  };
  const { readFileSync } = await import('node:fs');
  const loaded = { path: configPath, config: parseConfig(readFileSync(configPath, 'utf8'), configPath) };
  const api = await startApi(loaded, {
    logger: createLogger('test-api', { level: 'silent' }),
    metrics: new Metrics({ defaults: false }),
  });
  return {
    api,
    db,
    dir,
    repository: loaded.config.repository.path,
    tokens,
    configPath,
    async call(method, path, options = {}) {
      const headers: Record<string, string> = {};
      const token = options.token === undefined ? tokens.admin : options.token;
      if (token !== null) headers.authorization = `Bearer ${token}`;
      let body: string | undefined;
      if (options.rawBody !== undefined) body = options.rawBody;
      else if (options.body !== undefined) body = JSON.stringify(options.body);
      if (body !== undefined) headers['content-type'] = options.contentType ?? 'application/json';
      const res = await fetch(`${api.url}${path}`, {
        method,
        headers,
        ...(body === undefined ? {} : { body }),
      });
      const text = await res.text();
      let json: unknown = undefined;
      try {
        json = text.length > 0 ? JSON.parse(text) : undefined;
      } catch {
        /* not JSON */
      }
      return { status: res.status, json, text, headers: res.headers };
    },
    async close() {
      for (const q of [api.queues.backup, api.queues.restore, api.queues.maintenance, api.queues.schedule]) {
        await q.obliterate({ force: true }).catch(() => undefined);
      }
      await api.close();
      await db.drop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
