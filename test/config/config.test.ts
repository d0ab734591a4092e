import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfig, readSecretFile, resolveConfigPath } from '../../src/config/load.js';

let dir: string;
before(() => {
  dir = mkdtempSync(join(tmpdir(), 'vbproxy-config-'));
});
after(() => rmSync(dir, { recursive: true, force: true }));

function base(): Record<string, unknown> {
  return {
    proxy: { name: 'proxy-1', vmMoref: 'vm-100' },
    manager: {
      url: 'https://manager.example',
      enrollmentTokenFile: join(dir, 'enroll.token'),
      credentialsFile: join(dir, 'credentials.json'),
    },
    api: {
      tls: { certFile: join(dir, 'api.crt'), keyFile: join(dir, 'api.key') },
      tokensFile: join(dir, 'tokens.json'),
    },
    database: { url: 'postgres://vbproxy@127.0.0.1/vbproxy' },
    redis: { url: 'redis://127.0.0.1:6379' },
    repository: { path: '/srv/backup', passphraseFile: join(dir, 'repo.pass') },
    catalog: { secretKeyFile: join(dir, 'catalog.key') },
  };
}

function write(name: string, content: unknown): string {
  const p = join(dir, name);
  writeFileSync(p, typeof content === 'string' ? content : JSON.stringify(content));
  return p;
}

test('a valid file loads with the documented defaults', () => {
  const p = write('ok.json', base());
  const { config } = loadConfig(p);
  assert.equal(config.api.listen, '127.0.0.1');
  assert.equal(config.api.port, 8443);
  assert.equal(config.api.plainHttp, false);
  assert.equal(config.redis.prefix, 'vbproxy');
  assert.equal(config.worker.diskConcurrency, 4);
  assert.equal(config.logLevel, 'info');
});

test('the path comes from --config, then VBPROXY_CONFIG, then /etc/vbproxy/config.json', () => {
  const saved = process.env.VBPROXY_CONFIG;
  try {
    process.env.VBPROXY_CONFIG = '/from/env.json';
    assert.equal(resolveConfigPath('/from/option.json'), '/from/option.json');
    assert.equal(resolveConfigPath(), '/from/env.json');
    delete process.env.VBPROXY_CONFIG;
    assert.equal(resolveConfigPath(), '/etc/vbproxy/config.json');
  } finally {
    if (saved === undefined) delete process.env.VBPROXY_CONFIG;
    else process.env.VBPROXY_CONFIG = saved;
  }
});

test('a bad value names the key path, the file and the rule', () => {
  const c = base();
  (c.api as Record<string, unknown>).port = 70000;
  const p = write('bad-port.json', c);
  assert.throws(
    () => loadConfig(p),
    (err: Error) => {
      assert.ok(err.message.startsWith(`${p}: invalid configuration: `), err.message);
      assert.match(err.message, /api\.port: Too big: expected number to be <=65535/);
      return true;
    },
  );
  const c2 = base();
  (c2.repository as Record<string, unknown>).path = 'relative/dir';
  assert.throws(() => loadConfig(write('rel.json', c2)), /repository\.path: must be an absolute path/);
  const c4 = base();
  (c4.database as Record<string, unknown>).url = 'postgres://vbproxy:hunter2@db/vbproxy';
  assert.throws(
    () => loadConfig(write('dbpw.json', c4)),
    (err: Error) =>
      /database\.url: must not contain a password; put it in database\.passwordFile/.test(err.message) &&
      !err.message.includes('hunter2'),
  );
  const c3 = base();
  delete (c3.api as Record<string, unknown>).tls;
  assert.throws(
    () => loadConfig(write('notls.json', c3)),
    /api\.tls: api\.tls \(certFile and keyFile\) is required unless api\.plainHttp is true/,
  );
});

test('an inline secret is refused as an unknown key', () => {
  const c = base();
  (c.repository as Record<string, unknown>).passphrase = 'hunter2';
  assert.throws(
    () => loadConfig(write('inline.json', c)),
    (err: Error) => {
      assert.match(
        err.message,
        /repository: unknown key "passphrase" \(secrets go in files named by "\.\.\.File" keys\)/,
      );
      assert.doesNotMatch(err.message, /hunter2/);
      return true;
    },
  );
});

test('malformed JSON and a missing file get specific messages', () => {
  const p = write('broken.json', '{"proxy": ');
  assert.throws(
    () => loadConfig(p),
    (err: Error) => err.message.startsWith(`${p}: not valid JSON: `),
  );
  assert.throws(
    () => loadConfig(join(dir, 'absent.json')),
    /cannot read the configuration file .*absent\.json \(no such file; pass --config or set VBPROXY_CONFIG\)/,
  );
});

test('a secret file readable by others fails the load; 0600 passes and is read without its newline', () => {
  const key = write('catalog.key', 'ab'.repeat(32) + '\n');
  chmodSync(key, 0o644);
  const p = write('modes.json', base());
  assert.throws(
    () => loadConfig(p),
    (err: Error) => {
      assert.match(
        err.message,
        /catalog\.secretKeyFile: the secret file .*catalog\.key has mode 0644; it must be readable by its owner only \(run: chmod 600 /,
      );
      return true;
    },
  );
  chmodSync(key, 0o600);
  const loaded = loadConfig(p);
  assert.equal(readSecretFile(loaded, 'catalog.secretKeyFile').toString(), 'ab'.repeat(32));
  assert.throws(
    () => readSecretFile(loaded, 'repository.passphraseFile'),
    /repository\.passphraseFile: cannot read the secret file/,
  );
});
