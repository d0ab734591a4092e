import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, chmodSync } from 'node:fs';
import { get as httpsGet } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startApi } from '../../src/api/server.js';
import { parseConfig } from '../../src/config/load.js';
import { createLogger } from '../../src/log.js';
import { Metrics } from '../../src/metrics/metrics.js';
import { createTestDatabase } from '../catalog/test-db.js';
import { writeTestConfig } from './harness.js';

test('without api.plainHttp the API serves HTTPS with the configured certificate, and refuses plain HTTP', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'vbproxy-tls-'));
  const db = await createTestDatabase({ migrate: false });
  try {
    execFileSync(
      'openssl',
      [
        'req',
        '-x509',
        '-newkey',
        'ec',
        '-pkeyopt',
        'ec_paramgen_curve:P-256',
        '-nodes',
        '-days',
        '1',
        '-subj',
        '/CN=127.0.0.1',
        '-addext',
        'subjectAltName=IP:127.0.0.1',
        '-keyout',
        join(dir, 'api.key'),
        '-out',
        join(dir, 'api.crt'),
      ],
      { stdio: 'ignore' },
    );
    chmodSync(join(dir, 'api.key'), 0o600);
    const path = writeTestConfig(dir, db.url);
    const raw = JSON.parse(readFileSync(path, 'utf8')) as { api: Record<string, unknown> };
    raw.api.plainHttp = false;
    raw.api.tls = { certFile: join(dir, 'api.crt'), keyFile: join(dir, 'api.key') };
    const api = await startApi(
      { path, config: parseConfig(JSON.stringify(raw), path) },
      { logger: createLogger('t', { level: 'silent' }), metrics: new Metrics({ defaults: false }) },
    );
    try {
      assert.match(api.url, /^https:\/\/127\.0\.0\.1:\d+$/);
      const body = await new Promise<string>((resolve, reject) => {
        httpsGet(`${api.url}/healthz`, { ca: readFileSync(join(dir, 'api.crt')) }, (res) => {
          let s = '';
          res.on('data', (d: Buffer) => (s += d.toString()));
          res.on('end', () => resolve(`${res.statusCode} ${s}`));
        }).on('error', reject);
      });
      assert.equal(body, '200 {"status":"ok"}');
      await assert.rejects(fetch(`http://127.0.0.1:${api.port}/healthz`));
    } finally {
      for (const q of [api.queues.backup, api.queues.restore, api.queues.maintenance, api.queues.schedule])
        await q.obliterate({ force: true });
      await api.close();
    }
  } finally {
    await db.drop();
    rmSync(dir, { recursive: true, force: true });
  }
});
