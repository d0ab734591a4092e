import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { createToken } from '../../src/api/auth.js';
import { startApi, type RunningApi } from '../../src/api/server.js';
import { SecretBox } from '../../src/catalog/secret-box.js';
import { parseConfig } from '../../src/config/load.js';
import type { ConfigInput } from '../../src/config/schema.js';
import { startLab, type RunningLab } from '../../src/lab/lab.js';
import type { LabDefinitionInput } from '../../src/lab/definition.js';
import { createLogger } from '../../src/log.js';
import { Metrics } from '../../src/metrics/metrics.js';
import { createTestDatabase, type TestDatabase } from '../catalog/test-db.js';

/**
 * The lab vSphere the API tests add as their vCenter: no disks (nothing to back up here), VMs in
 * nested folders: prod (web01, tmpl01 a template), prod/web (web02), and db01 in the vm folder.
 */
export const API_LAB: LabDefinitionInput = {
  hosts: [{ name: 'esx1' }],
  datastores: [{ name: 'ds1' }],
  vms: [
    { name: 'web01', folder: 'prod' },
    { name: 'web02', folder: 'prod/web' },
    { name: 'tmpl01', folder: 'prod', template: true },
    { name: 'db01' },
  ],
  proxies: [{ name: 'vbproxy01' }],
};

export interface Harness {
  api: RunningApi;
  /** The lab vSphere (the vCenter of these tests). */
  lab: RunningLab;
  /** A valid POST /vcenters body for the lab under `name`. */
  vcenterBody(name: string): {
    name: string;
    url: string;
    username: string;
    password: string;
    thumbprint: string;
  };
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
  const lab = await startLab({ dir: join(dir, 'lab'), definition: API_LAB });
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
    lab,
    vcenterBody: (name) => ({
      name,
      url: lab.url,
      username: lab.username,
      password: lab.password,
      thumbprint: lab.fingerprint256,
    }),
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
      await lab.stop();
      await db.drop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
