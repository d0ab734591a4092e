import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { until } from '../until.js';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseConfig, type LoadedConfig } from '../../src/config/load.js';
import { LabManager } from '../../src/lab/manager.js';
import type { RegistrationAgent } from '../../src/manager/agent.js';
import { createProxyAgent } from '../../src/manager/proxy-agent.js';
import { createLogger } from '../../src/log.js';
import { version } from '../../src/version.js';

let root: string;
const agents: RegistrationAgent[] = [];
const managers: LabManager[] = [];
before(() => {
  root = mkdtempSync(join(tmpdir(), 'vbproxy-manager-'));
});
after(async () => {
  for (const a of agents) await a.stop();
  for (const m of managers) await m.stop();
  rmSync(root, { recursive: true, force: true });
});

let n = 0;
function setup(managerUrl: string, token: string) {
  const dir = join(root, `p${n++}`);
  mkdirSync(join(dir, 'repo'), { recursive: true });
  const tokenFile = join(dir, 'enroll.token');
  writeFileSync(tokenFile, `${token}\n`, { mode: 0o600 });
  const config = {
    proxy: { name: `proxy-${n}`, vmMoref: 'vm-100', biosUuid: '4210b1c4-1b2c-4d5e-8f90-123456789abc' },
    manager: {
      url: managerUrl,
      enrollmentTokenFile: tokenFile,
      credentialsFile: join(dir, 'credentials.json'),
    },
    api: { plainHttp: true, tokensFile: join(dir, 'tokens.json') },
    database: { url: 'postgres://127.0.0.1/none' },
    redis: { url: 'redis://127.0.0.1:6379' },
    repository: { path: join(dir, 'repo'), passphraseFile: join(dir, 'pass') },
    catalog: { secretKeyFile: join(dir, 'key') },
    worker: { diskConcurrency: 3 },
  };
  const loaded: LoadedConfig = {
    path: join(dir, 'config.json'),
    config: parseConfig(JSON.stringify(config), 'test'),
  };
  const agent = createProxyAgent(loaded, {
    logger: createLogger('test-agent', { level: 'silent' }),
    backoff: { initialMs: 30, maxMs: 120 },
    redisOk: async () => true,
    inventory: {
      async hostsAndDatastores() {
        return {
          hosts: [{ moref: 'host-10', name: 'esx1.lab' }],
          datastores: [{ moref: 'datastore-20', name: 'ds1' }],
        };
      },
    },
    apiUrl: 'https://proxy-1.lab:8443',
  });
  agents.push(agent);
  return { dir, tokenFile, credentialsFile: config.manager.credentialsFile, agent };
}

async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()));
  const port = (s.address() as { port: number }).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

describe('registration with the lab manager', () => {
  test('manager down at boot: the agent keeps retrying with backoff and registers once the manager is up', async () => {
    const port = await freePort();
    const lab = new LabManager({ heartbeatIntervalSeconds: 1 });
    managers.push(lab);
    const token = lab.newEnrollmentToken();
    const p = setup(`http://127.0.0.1:${port}`, token);
    p.agent.start();
    await until('unreachable state', () => p.agent.status().state === 'manager-unreachable');
    assert.match(
      p.agent.status().lastError ?? '',
      /cannot reach the manager at http:\/\/127\.0\.0\.1:\d+: ECONNREFUSED/,
    );
    assert.equal(existsSync(p.credentialsFile), false);
    await new Promise((r) => setTimeout(r, 200)); // several failed attempts, the process carries on
    await lab.start(port);
    await until(
      'registered',
      () => p.agent.status().state === 'registered' && p.agent.status().heartbeats > 0,
    );
    assert.equal(lab.proxies().length, 1);
  });

  test('an invalid token is rejected, not retried as is, and a valid token written later registers', async () => {
    const lab = new LabManager({ heartbeatIntervalSeconds: 1 });
    managers.push(lab);
    const url = await lab.start();
    const p = setup(url, 'enr_not-a-token-the-manager-knows');
    p.agent.start();
    await until('rejected', () => p.agent.status().state === 'enrollment-rejected');
    assert.match(p.agent.status().lastError ?? '', /enrollment token is not valid/);
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(lab.requests.filter((r) => r.status === 401).length, 1, 'the rejected token is tried once');
    assert.equal(p.agent.status().state, 'enrollment-rejected');
    writeFileSync(p.tokenFile, lab.newEnrollmentToken(), { mode: 0o600 });
    await until('registered', () => p.agent.status().state === 'registered');
  });

  test('a revoked proxy drops its credentials, keeps away from the old token, and re-registers with a new one', async () => {
    const lab = new LabManager({ heartbeatIntervalSeconds: 1 });
    managers.push(lab);
    const url = await lab.start();
    const p = setup(url, lab.newEnrollmentToken()); // the old token stays valid at the manager
    p.agent.start();
    await until('registered', () => p.agent.status().state === 'registered');
    const first = p.agent.status().proxyId!;
    lab.revoke(first);
    await until('revoked', () => p.agent.status().state === 'revoked');
    assert.equal(existsSync(p.credentialsFile), false);
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(lab.proxies().length, 1, 'no re-registration with the token of the revoked registration');
    writeFileSync(p.tokenFile, lab.newEnrollmentToken(), { mode: 0o600 });
    await until('re-registered', () => p.agent.status().state === 'registered');
    assert.notEqual(p.agent.status().proxyId, first);
    assert.equal(lab.proxies().length, 2);
  });

  test('registration and heartbeat content; credentials stored 0600 without the enrollment token', async () => {
    const lab = new LabManager({ heartbeatIntervalSeconds: 1 });
    managers.push(lab);
    const url = await lab.start();
    const token = lab.newEnrollmentToken();
    const p = setup(url, token);
    const startedAt = Date.now();
    p.agent.start();
    await until('two heartbeats', () => p.agent.status().heartbeats >= 2);
    const [proxy] = lab.proxies();
    assert.ok(proxy);
    const reg = proxy.registration;
    assert.equal(reg.version, version);
    assert.deepEqual(reg.vm, { moref: 'vm-100', biosUuid: '4210b1c4-1b2c-4d5e-8f90-123456789abc' });
    assert.deepEqual(reg.hosts, [{ moref: 'host-10', name: 'esx1.lab' }]);
    assert.deepEqual(reg.datastores, [{ moref: 'datastore-20', name: 'ds1' }]);
    assert.equal(reg.capacity.diskConcurrency, 3);
    assert.ok(reg.capacity.cpus >= 1 && reg.capacity.memoryBytes > 0);
    assert.equal(reg.apiUrl, 'https://proxy-1.lab:8443');
    const hb = proxy.heartbeats[0]!;
    assert.equal(hb.version, version);
    assert.equal(hb.load.diskConcurrency, 3);
    assert.equal(hb.load.runningJobs, 0);
    assert.deepEqual(hb.health, { database: false, redis: true, datastore: true });
    assert.equal(hb.status, 'degraded', 'no catalog in this test, so the proxy reports itself degraded');
    const sent = Date.parse(hb.time);
    assert.ok(
      sent >= startedAt && sent <= Date.now(),
      `the heartbeat carries the time it was sent (${hb.time}), between the agent's start and now`,
    );

    assert.equal(statSync(p.credentialsFile).mode & 0o777, 0o600);
    const creds = readFileSync(p.credentialsFile, 'utf8');
    assert.ok(!creds.includes(token));
    assert.equal(JSON.parse(creds).proxyId, proxy.proxyId);
  });
});

test('the lab manager runs as a process: it prints its URL and token and accepts a registration', async () => {
  const { spawn } = await import('node:child_process');
  const { ManagerClient } = await import('../../src/manager/client.js');
  const main = new URL('../../src/lab/manager-main.js', import.meta.url).pathname;
  const child = spawn(process.execPath, [main, '--heartbeat-interval', '5']);
  try {
    const out = await new Promise<string>((resolve, reject) => {
      let s = '';
      child.stdout.on('data', (d: Buffer) => {
        s += d.toString();
        if (/enrollment token: \S+\n/.test(s)) resolve(s);
      });
      child.once('exit', (code) => reject(new Error(`exited ${code}`)));
    });
    const url = /listening on (\S+)/.exec(out)![1]!;
    const token = /enrollment token: (\S+)/.exec(out)![1]!;
    const client = new ManagerClient(url);
    const r = await client.register(token, {
      protocolVersion: 1,
      name: 'p',
      version,
      vm: { moref: null, biosUuid: null },
      hosts: [],
      datastores: [],
      capacity: { cpus: 1, memoryBytes: 1, diskConcurrency: 1 },
      apiUrl: null,
    });
    assert.equal(r.heartbeatIntervalSeconds, 5);
    await assert.rejects(
      client.register('wrong', { protocolVersion: 1 } as never),
      /enrollment token is not valid/,
    );
  } finally {
    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGTERM');
    await exited;
  }
});

test('the lab manager answers the protocol errors of docs/manager-protocol.md', async () => {
  const lab = new LabManager();
  managers.push(lab);
  const url = await lab.start();
  const token = lab.newEnrollmentToken();
  const post = async (path: string, bearer: string, body: unknown) => {
    const r = await fetch(`${url}${path}`, {
      method: 'POST',
      headers: { authorization: `Bearer ${bearer}`, 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });
    return {
      status: r.status,
      body: (await r.json()) as { error?: { code: string; message: string } } & Record<string, unknown>,
    };
  };
  const good = {
    protocolVersion: 1,
    name: 'p',
    version,
    vm: { moref: null, biosUuid: null },
    hosts: [],
    datastores: [],
    capacity: { cpus: 1, memoryBytes: 1, diskConcurrency: 1 },
    apiUrl: null,
  };
  const bad = await post('/api/v1/proxies/register', token, {
    ...good,
    capacity: { cpus: 0, memoryBytes: 1, diskConcurrency: 1 },
  });
  assert.equal(bad.status, 400);
  assert.equal(bad.body.error?.code, 'invalid_request');
  assert.match(bad.body.error?.message ?? '', /^capacity\.cpus: /);
  const v2 = await post('/api/v1/proxies/register', token, { ...good, protocolVersion: 2 });
  assert.equal(v2.body.error?.code, 'unsupported_protocol');
  const reg = await post('/api/v1/proxies/register', token, good);
  assert.equal(reg.status, 201);
  const { proxyId, secret } = reg.body as unknown as { proxyId: string; secret: string };
  const hb = {
    protocolVersion: 1,
    time: new Date().toISOString(),
    version,
    status: 'ok',
    load: { runningJobs: 0, queuedJobs: 0, diskConcurrency: 1, loadAverage1m: 0 },
    health: { database: true, redis: true, datastore: true },
  };
  assert.equal((await post(`/api/v1/proxies/${proxyId}/heartbeat`, secret, hb)).status, 200);
  const wrong = await post(`/api/v1/proxies/${proxyId}/heartbeat`, `${secret}x`, hb);
  assert.deepEqual([wrong.status, wrong.body.error?.code], [401, 'invalid_credentials']);
  const unknown = await post('/api/v1/proxies/nope/heartbeat', secret, hb);
  assert.deepEqual([unknown.status, unknown.body.error?.code], [404, 'unknown_proxy']);
  lab.revoke(proxyId);
  const revoked = await post(`/api/v1/proxies/${proxyId}/heartbeat`, secret, hb);
  assert.deepEqual([revoked.status, revoked.body.error?.code], [403, 'proxy_revoked']);
});

test('registration against the lab vSphere carries its hosts and the datastores the proxy VM sees; without a vCenter it carries none', async () => {
  const { startLab } = await import('../../src/lab/lab.js');
  const { SecretBox } = await import('../../src/catalog/secret-box.js');
  const { insertVcenter } = await import('../../src/catalog/vcenters.js');
  const { vsphereInventory } = await import('../../src/manager/inventory.js');
  const { createTestDatabase } = await import('../catalog/test-db.js');
  const vsphere = await startLab({
    dir: join(root, 'vsphere'),
    definition: {
      hosts: [
        { name: 'esx1', datastores: ['ds1', 'shared'] },
        { name: 'esx2', datastores: ['ds2', 'shared'] },
      ],
      datastores: [{ name: 'ds1' }, { name: 'ds2' }, { name: 'shared' }],
      vms: [{ name: 'web01', host: 'esx2' }],
      proxies: [{ name: 'vbproxy01', host: 'esx1' }],
    },
  });
  const db = await createTestDatabase();
  const manager = new LabManager({ heartbeatIntervalSeconds: 1 });
  managers.push(manager);
  try {
    const url = await manager.start();
    const secretBox = SecretBox.fromKeyFile(Buffer.from(SecretBox.generateKeyHex()), 'test key');
    const proxyVm = vsphere.world.vms.find((v) => v.name === 'vbproxy01')!.moref;
    const warnings: string[] = [];
    const logger = createLogger('test-agent', { level: 'silent' });
    const spy = Object.assign(Object.create(logger) as typeof logger, {
      warn: (_o: unknown, msg?: string) => void warnings.push(msg ?? ''),
    });
    const inventory = vsphereInventory({
      pool: db.pool,
      secretBox: () => secretBox,
      proxyVmMoref: proxyVm,
      logger: spy,
    });

    // No vCenter in the catalog yet: empty lists, one warning, registration goes on.
    assert.deepEqual(await inventory.hostsAndDatastores(), { hosts: [], datastores: [] });
    await inventory.hostsAndDatastores();
    assert.equal(warnings.filter((w) => /no vCenter is configured/.test(w)).length, 1);

    await insertVcenter(db.pool, secretBox, {
      name: 'lab',
      url: vsphere.url,
      username: vsphere.username,
      password: vsphere.password,
      thumbprint: vsphere.fingerprint256,
    });
    const p = setup(url, manager.newEnrollmentToken());
    const agent = createProxyAgent(
      {
        path: join(p.dir, 'config.json'),
        config: parseConfig(
          JSON.stringify({
            proxy: { name: 'proxy-inv', vmMoref: proxyVm },
            manager: {
              url,
              enrollmentTokenFile: p.tokenFile,
              credentialsFile: join(p.dir, 'credentials-inv.json'),
            },
            api: { plainHttp: true, tokensFile: join(p.dir, 'tokens.json') },
            database: { url: db.url },
            redis: { url: 'redis://127.0.0.1:6379' },
            repository: { path: join(p.dir, 'repo'), passphraseFile: join(p.dir, 'pass') },
            catalog: { secretKeyFile: join(p.dir, 'key') },
          }),
          'test',
        ),
      },
      { logger: spy, inventory, redisOk: async () => true },
    );
    agents.push(agent);
    await agent.registerOnce();
    const reg = manager.proxies().find((x) => x.registration.name === 'proxy-inv')!.registration;
    const id = (n: string, list: readonly { name: string; moref: string }[]) =>
      list.find((x) => x.name === n)!.moref;
    assert.deepEqual(
      [...reg.hosts].sort((a, b) => a.name.localeCompare(b.name)),
      ['esx1', 'esx2'].map((name) => ({ name, moref: id(name, vsphere.world.hosts) })),
    );
    assert.deepEqual(
      [...reg.datastores].sort((a, b) => a.name.localeCompare(b.name)),
      ['ds1', 'shared'].map((name) => ({ name, moref: id(name, vsphere.world.datastores) })),
      'the datastores of the proxy VM host esx1, not ds2',
    );

    // vCenter down: registration still answers at once, with empty lists and a warning.
    await vsphere.stop();
    assert.deepEqual(await inventory.hostsAndDatastores(), { hosts: [], datastores: [] });
    assert.ok(
      warnings.some((w) =>
        /cannot read the inventory of vCenter lab for registration: cannot talk to vSphere/.test(w),
      ),
      warnings.join('\n'),
    );
  } finally {
    await vsphere.stop().catch(() => undefined);
    await db.drop();
  }
});
