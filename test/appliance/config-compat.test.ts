import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createSecureContext } from 'node:tls';
import { chmodSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { SecretBox } from '../../src/catalog/secret-box.js';
import { ConfigError, loadConfig, readSecretFile } from '../../src/config/load.js';
import { cliPath, dhcpProps, staticProps, tempDir, TOKEN, writeEnv } from './helpers.js';

/**
 * The configuration first boot writes must be one the product's config loader (src/config)
 * accepts, with secret files it can read: the same file is what `vbproxy api` loads on the
 * appliance. The config names appliance paths (/etc/vbproxy/...); the test re-roots every
 * absolute path into the temporary root first boot wrote, and loads that.
 */
function reRooted(value: unknown, root: string): unknown {
  if (typeof value === 'string') return value.startsWith('/') ? join(root, value) : value;
  if (Array.isArray(value)) return value.map((v) => reRooted(v, root));
  if (value !== null && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, reRooted(v, root)]));
  }
  return value;
}

function firstbootConfig(t: import('node:test').TestContext, props: Record<string, string>) {
  const dir = tempDir(t);
  const root = join(dir, 'root');
  const r = spawnSync(process.execPath, [cliPath, 'firstboot', '--ovf-env', writeEnv(dir, props), '--root', root, '--no-apply'], {
    encoding: 'utf8',
  });
  assert.equal(r.status, 0, r.stderr);
  const written = JSON.parse(readFileSync(join(root, 'etc/vbproxy/config.json'), 'utf8')) as Record<string, unknown>;
  // Database and Redis URLs are connection strings, not paths: keep them as written.
  const config = reRooted(written, root) as Record<string, Record<string, unknown>>;
  config.database = written.database as Record<string, unknown>;
  config.redis = written.redis as Record<string, unknown>;
  const path = join(dir, 'config.json');
  writeFileSync(path, JSON.stringify(config));
  return { root, path, written };
}

function caPem(t: import('node:test').TestContext): string {
  const dir = tempDir(t);
  const r = spawnSync(
    'openssl',
    ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '30', '-subj', '/CN=Manager CA',
      '-keyout', join(dir, 'ca.key'), '-out', join(dir, 'ca.pem')],
    { encoding: 'utf8' },
  );
  assert.equal(r.status, 0, r.stderr);
  return readFileSync(join(dir, 'ca.pem'), 'utf8');
}

const environments: [string, (t: import('node:test').TestContext) => Record<string, string>][] = [
  ['DHCP', () => dhcpProps()],
  ['static IPv4 with NTP and an SSH key', () => staticProps()],
  ['a manager CA certificate', (t) => ({ ...dhcpProps(), 'manager.ca_certificate': Buffer.from(caPem(t)).toString('base64') })],
];

for (const [name, props] of environments) {
  test(`first boot's config (${name}) loads with the product's config loader, secrets readable`, (t) => {
    const { path, written } = firstbootConfig(t, props(t));
    const loaded = loadConfig(path);
    const c = loaded.config;
    assert.equal(c.api.plainHttp, false, 'the appliance API speaks TLS');
    assert.equal(c.api.port, 8443);
    assert.equal(c.manager?.url, (written.manager as { url: string }).url);
    assert.equal(c.database.url, 'postgresql://vbproxy@/vbproxy?host=/run/postgresql');
    assert.equal(c.redis.url, 'redis://127.0.0.1:6379/0');

    assert.equal(readSecretFile(loaded, 'manager.enrollmentTokenFile').toString('utf8'), TOKEN);
    // The catalog key opens as the catalog's SecretBox (64 hex characters).
    const box = SecretBox.fromKeyFile(readSecretFile(loaded, 'catalog.secretKeyFile'), c.catalog.secretKeyFile);
    assert.ok(box instanceof SecretBox);
    assert.ok(readSecretFile(loaded, 'repository.passphraseFile').length >= 32);
    // The API's certificate and key are a pair Node's TLS accepts.
    const key = readSecretFile(loaded, 'api.tls.keyFile');
    assert.doesNotThrow(() => createSecureContext({ cert: readFileSync(c.api.tls!.certFile), key }));
    if (c.manager?.caFile !== undefined) assert.match(readFileSync(c.manager.caFile, 'utf8'), /BEGIN CERTIFICATE/);
  });
}

test("a secret first boot wrote, loosened to 0644, makes the product's loader refuse the config", (t) => {
  const { root, path } = firstbootConfig(t, dhcpProps());
  chmodSync(join(root, 'etc/vbproxy/secrets/catalog.key'), 0o644);
  assert.throws(
    () => loadConfig(path),
    (err: unknown) =>
      err instanceof ConfigError && err.code === 'CONFIG_SECRET_FILE_MODE' && /catalog\.secretKeyFile: .*chmod 600/.test(err.message),
  );
});
