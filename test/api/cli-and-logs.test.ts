import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startLab, type RunningLab } from '../../src/lab/lab.js';
import { LabManager } from '../../src/lab/manager.js';
import { createTestDatabase, type TestDatabase } from '../catalog/test-db.js';
import { API_LAB, writeTestConfig } from './harness.js';

const cli = new URL('../../src/cli/main.js', import.meta.url).pathname;
const WRONG_PASSWORD = 'Planted-VC-pw-7f3a9c';
let dir: string;
/** The lab vSphere: the vCenter these commands add (its password is a planted secret too). */
let vsphere: RunningLab;
let db: TestDatabase;
let lab: LabManager;
let enrollmentToken: string;
let configPath: string;
let api: ChildProcess | undefined;
let apiStderr = '';

/** Runs the CLI without blocking this process (the lab manager answers from this event loop). */
function run(
  args: string[],
  input?: string,
): Promise<{ status: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, [cli, ...args, '--config', configPath], {
    env: { ...process.env, VBPROXY_LOG_LEVEL: 'debug' },
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  child.stdin.end(input ?? '');
  return new Promise((resolve) => child.once('close', (status) => resolve({ status, stdout, stderr })));
}

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'vbproxy-cli-'));
  vsphere = await startLab({ dir: join(dir, 'vsphere'), definition: API_LAB });
  db = await createTestDatabase({ migrate: false });
  lab = new LabManager({ heartbeatIntervalSeconds: 1 });
  const managerUrl = await lab.start();
  enrollmentToken = lab.newEnrollmentToken();
  writeFileSync(join(dir, 'enroll.token'), enrollmentToken, { mode: 0o600 });
  configPath = writeTestConfig(dir, db.url, {
    manager: {
      url: managerUrl,
      enrollmentTokenFile: join(dir, 'enroll.token'),
      credentialsFile: join(dir, 'credentials.json'),
    },
  });
});
after(async () => {
  if (api !== undefined && api.exitCode === null) api.kill('SIGKILL');
  await lab.stop();
  await vsphere.stop();
  const c = JSON.parse(readFileSync(configPath, 'utf8')) as { redis: { prefix: string } };
  spawnSync('sh', [
    '-c',
    `redis-cli -h 127.0.0.1 --scan --pattern '${c.redis.prefix}:*' | xargs -r redis-cli -h 127.0.0.1 del`,
  ]);
  await db.drop();
  rmSync(dir, { recursive: true, force: true });
});

test('vbproxy api serves, registers with the manager, stops on SIGTERM, and its logs hold no planted secret', async () => {
  const created = await run(['api', 'token', 'create', '--name', 'ops', '--scope', 'admin', '--json']);
  assert.equal(created.status, 0, created.stderr);
  const apiToken = (JSON.parse(created.stdout) as { token: string }).token;
  assert.match(apiToken, /^vbp_/);
  assert.ok(!readFileSync(join(dir, 'tokens.json'), 'utf8').includes(apiToken), 'only the hash is stored');

  api = spawn(process.execPath, [cli, 'api', '--config', configPath], {
    env: { ...process.env, VBPROXY_LOG_LEVEL: 'debug' },
  });
  api.stderr!.on('data', (d: Buffer) => (apiStderr += d.toString()));
  const url = await new Promise<string>((resolve, reject) => {
    let out = '';
    api!.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /listening on (\S+)/.exec(out);
      if (m) resolve(m[1]!);
    });
    api!.once('exit', (code) => reject(new Error(`vbproxy api exited with ${code}: ${apiStderr}`)));
  });
  const post = (path: string, body: unknown, token = apiToken) =>
    fetch(`${url}${path}`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });
  const vc = await post('/api/v1/vcenters', {
    name: 'vc-a',
    url: vsphere.url,
    username: vsphere.username,
    password: vsphere.password,
    thumbprint: vsphere.fingerprint256,
  });
  assert.equal(vc.status, 201, await vc.clone().text());
  assert.ok(!(await vc.text()).includes(vsphere.password));
  const badPw = await post('/api/v1/vcenters', {
    name: 'vc-x',
    url: vsphere.url,
    username: vsphere.username,
    password: WRONG_PASSWORD,
    thumbprint: vsphere.fingerprint256,
  });
  assert.equal(badPw.status, 422);
  assert.match(await badPw.text(), /InvalidLogin/);
  assert.equal((await post('/api/v1/vcenters', { password: WRONG_PASSWORD }, 'vbp_wrong')).status, 401);

  // The first heartbeat follows the registration at once; the limit is generous for a slow, loaded machine.
  const end = Date.now() + 120_000;
  while (!lab.proxies().some((p) => p.heartbeats.length > 0)) {
    assert.ok(Date.now() < end, `no heartbeat reached the lab manager; api stderr: ${apiStderr}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  const proxy = await fetch(`${url}/api/v1/proxy`, { headers: { authorization: `Bearer ${apiToken}` } });
  const proxyJson = (await proxy.json()) as { registration: { state: string; proxyId: string } };
  assert.equal(proxyJson.registration.state, 'registered');
  assert.equal(proxyJson.registration.proxyId, lab.proxies()[0]!.proxyId);
  const hb = lab.proxies()[0]!.heartbeats[0]!;
  assert.deepEqual(hb.health, { database: true, redis: true, datastore: true });
  assert.equal(hb.status, 'ok');

  const exited = new Promise<number | null>((r) => api!.once('exit', (code) => r(code)));
  api.kill('SIGTERM');
  assert.equal(await exited, 0);

  assert.match(apiStderr, /"msg":"request"/, 'the API logged its requests');
  assert.match(apiStderr, /"msg":"vCenter added"/);
  const secrets = {
    'vCenter password': vsphere.password,
    'wrong vCenter password': WRONG_PASSWORD,
    'API token': apiToken,
    'enrollment token': enrollmentToken,
    'manager secret': (JSON.parse(readFileSync(join(dir, 'credentials.json'), 'utf8')) as { secret: string })
      .secret,
    'repository passphrase': 'repo-passphrase-planted',
    'catalog key': readFileSync(join(dir, 'catalog.key'), 'utf8').trim(),
  };
  for (const [what, value] of Object.entries(secrets)) {
    assert.ok(!apiStderr.includes(value), `the ${what} appears in the API log`);
  }
});

test('operator commands: vcenter, policy, backup now, jobs, restore, status, register', async () => {
  writeFileSync(join(dir, 'vc.pass'), `${vsphere.password}\n`, { mode: 0o600 });
  const down = await run([
    'vcenter',
    'add',
    '--name',
    'vc-down',
    '--url',
    'https://127.0.0.1:1/sdk',
    '--username',
    'u',
    '--password-file',
    join(dir, 'vc.pass'),
  ]);
  assert.equal(down.status, 1);
  assert.match(
    down.stderr,
    /connection test failed: cannot reach vCenter at https:\/\/127\.0\.0\.1:1\/sdk: ECONNREFUSED/,
  );
  const noPw = await run(['vcenter', 'add', '--name', 'x', '--url', 'https://h/sdk', '--username', 'u']);
  assert.equal(noPw.status, 2);
  assert.match(noPw.stderr, /exactly one of --password-file FILE or --password-stdin/);

  const addB = (password: string) =>
    run(
      [
        'vcenter',
        'add',
        '--name',
        'vc-b',
        '--url',
        vsphere.url,
        '--username',
        vsphere.username,
        '--thumbprint',
        vsphere.thumbprintSha1,
        '--password-stdin',
      ],
      password,
    );
  const refused = await addB(WRONG_PASSWORD);
  assert.equal(refused.status, 1);
  assert.match(refused.stderr, /refused the login of administrator@vsphere\.local with InvalidLogin/);
  assert.ok(!refused.stderr.includes(WRONG_PASSWORD));
  const added = await addB(vsphere.password);
  assert.equal(added.status, 0, added.stderr);
  const list = await run(['vcenter', 'list', '--json']);
  assert.equal(list.status, 0, list.stderr);
  assert.deepEqual(
    (JSON.parse(list.stdout) as { name: string }[]).map((v) => v.name),
    ['vc-a', 'vc-b'],
  );
  assert.ok(!list.stdout.includes(vsphere.password));
  const tested = await run(['vcenter', 'test', 'vc-b']);
  assert.equal(tested.status, 0, tested.stderr);
  assert.match(tested.stdout, /vc-b: logged in to VMware vCenter Server/);
  assert.equal((await run(['vcenter', 'remove', 'vc-b'])).status, 0);

  writeFileSync(
    join(dir, 'policy.json'),
    JSON.stringify({
      name: 'nightly',
      vmSelection: { morefs: ['vm-1', 'vm-2'] },
      retention: { keepDaily: 7 },
    }),
  );
  const created = await run([
    'policy',
    'create',
    '--file',
    join(dir, 'policy.json'),
    '--vcenter',
    'vc-a',
    '--json',
  ]);
  assert.equal(created.status, 0, created.stderr);
  writeFileSync(
    join(dir, 'bad-policy.json'),
    JSON.stringify({ name: 'bad', vmSelection: { morefs: ['vm-1'] } }),
  );
  const bad = await run(['policy', 'create', '--file', join(dir, 'bad-policy.json'), '--vcenter', 'vc-a']);
  assert.equal(bad.status, 2);
  assert.match(bad.stderr, /bad-policy\.json: retention: Invalid input: expected object, received undefined/);

  const backup = await run(['backup', 'now', '--policy', 'nightly', '--vm', 'vm-2', '--json']);
  assert.equal(backup.status, 0, backup.stderr);
  const { jobs } = JSON.parse(backup.stdout) as { jobs: { jobId: string; queued: boolean }[] };
  assert.equal(jobs.length, 1);
  assert.equal(jobs[0]!.queued, true);
  const again = await run(['policy', 'run', 'nightly', '--json']);
  const second = (JSON.parse(again.stdout) as { jobs: { vmMoref: string; queued: boolean }[] }).jobs;
  assert.deepEqual(
    second.map((j) => [j.vmMoref, j.queued]),
    [
      ['vm-1', true],
      ['vm-2', false],
    ],
  );
  assert.equal((await run(['backup', 'now', '--policy', 'nightly', '--vm', 'web01'])).status, 2);

  const listed = await run(['jobs', 'list', '--state', 'queued', '--json']);
  assert.equal((JSON.parse(listed.stdout) as unknown[]).length, 2);
  const cancel = await run(['jobs', 'cancel', jobs[0]!.jobId]);
  assert.equal(cancel.status, 0, cancel.stderr);
  assert.match(cancel.stdout, /cancelled/);
  const watch = await run(['jobs', 'watch', jobs[0]!.jobId]);
  assert.equal(watch.status, 0, watch.stderr);
  assert.equal((await run(['jobs', 'list', '--state', 'bogus'])).status, 2);

  const restore = await run([
    'restore',
    '--point',
    '00000000-0000-4000-8000-000000000000',
    '--to-dir',
    '/srv/x',
  ]);
  assert.equal(restore.status, 1);
  assert.match(restore.stderr, /no restore point with id 00000000-0000-4000-8000-000000000000/);
  assert.equal((await run(['restore', '--point', 'x'])).status, 2);

  const reg = await run(['register', '--json']);
  assert.equal(reg.status, 0, reg.stderr);
  const proxyId = (JSON.parse(reg.stdout) as { proxyId: string }).proxyId;
  const status = await run(['status', '--json']);
  assert.equal(status.status, 0, status.stderr);
  const st = JSON.parse(status.stdout) as {
    healthy: boolean;
    registration: { proxyId: string };
    jobs: { queued: number };
  };
  assert.equal(st.healthy, true);
  assert.equal(st.registration.proxyId, proxyId);
  assert.equal(st.jobs.queued, 1);
  const human = await run(['status']);
  assert.match(human.stdout, /^database {4}ok$/m);
});
