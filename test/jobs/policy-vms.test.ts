import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { insertPolicy, type Policy } from '../../src/catalog/policies.js';
import { SecretBox } from '../../src/catalog/secret-box.js';
import { insertVcenter } from '../../src/catalog/vcenters.js';
import { JobError } from '../../src/jobs/errors.js';
import { resolvePolicyVms } from '../../src/jobs/policy-vms.js';
import type { JobRuntime } from '../../src/jobs/runtime.js';
import { startLab, type RunningLab } from '../../src/lab/lab.js';
import { API_LAB } from '../api/harness.js';
import { createTestDatabase, type TestDatabase } from '../catalog/test-db.js';

// The worker's path (scheduled runs): resolvePolicyVms through the job runtime's vCenter session.
let dir: string;
let lab: RunningLab;
let db: TestDatabase;
let rt: JobRuntime;
let vcenterId: string;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'vbproxy-policy-vms-'));
  lab = await startLab({ dir: join(dir, 'lab'), definition: API_LAB });
  db = await createTestDatabase();
  const secretBox = SecretBox.fromKeyFile(Buffer.from(SecretBox.generateKeyHex()), 'test key');
  const vc = await insertVcenter(db.pool, secretBox, {
    name: 'lab',
    url: lab.url,
    username: lab.username,
    password: lab.password,
    thumbprint: lab.fingerprint256,
  });
  vcenterId = vc.id;
  const proxy = lab.world.vms.find((v) => v.name === 'vbproxy01')!.moref;
  // Only what resolvePolicyVms reads: the catalog, the key, and this proxy's VM.
  rt = { pool: db.pool, secretBox, proxy: { id: 'p', name: 'p', vmMoref: proxy } } as unknown as JobRuntime;
});
after(async () => {
  await lab.stop();
  await db.drop();
  rmSync(dir, { recursive: true, force: true });
});

let n = 0;
function policy(vmSelection: Partial<Policy['vmSelection']>): Promise<Policy> {
  return insertPolicy(db.pool, {
    name: `p${n++}`,
    vcenterId,
    vmSelection: { morefs: [], folders: [], namePatterns: [], ...vmSelection },
    diskSelection: { mode: 'all', diskKeys: [] },
    consistency: 'crash',
    consistencyFallback: 'crash',
    transports: ['nbdssl'],
    schedule: null,
    retention: { keepLast: 1 },
    repository: join(dir, 'repo'),
    enabled: true,
  });
}
const folder = (name: string) => lab.world.folders.find((f) => f.name === name)!.moref;
const vm = (name: string) => lab.world.vms.find((v) => v.name === name)!.moref;

test('a folder selects exactly the VMs below it, recursively, without templates, with their names', async () => {
  const got = await resolvePolicyVms(rt, await policy({ folders: [folder('prod')] }));
  assert.deepEqual(
    got.sort((a, b) => a.moref.localeCompare(b.moref)),
    [
      { moref: vm('web01'), name: 'web01' },
      { moref: vm('web02'), name: 'web02' },
    ].sort((a, b) => a.moref.localeCompare(b.moref)),
  );
  const sub = await resolvePolicyVms(rt, await policy({ folders: [folder('web')] }));
  assert.deepEqual(sub, [{ moref: vm('web02'), name: 'web02' }]);
});

test("the datacenter's vm folder selects every VM but the proxy itself and templates; morefs are kept", async () => {
  const got = await resolvePolicyVms(rt, await policy({ folders: ['group-v3'], morefs: ['vm-9999'] }));
  assert.deepEqual(got.map((v) => v.moref).sort(), ['vm-9999', vm('web01'), vm('web02'), vm('db01')].sort());
});

test('an unknown folder is a clear error naming it and the policy', async () => {
  const p = await policy({ folders: ['group-v999'] });
  await assert.rejects(resolvePolicyVms(rt, p), (err: unknown) => {
    assert.ok(err instanceof JobError);
    assert.equal(err.code, 'POLICY_FOLDER_NOT_FOUND');
    assert.match(err.message, new RegExp(`policy ${p.name} selects folder group-v999, which does not exist`));
    return true;
  });
});

test('a folder given by inventory path selects the same VMs as by moref, nested folders too', async () => {
  for (const [path, name] of [
    ['/dc1/vm/prod', 'prod'],
    ['/dc1/vm/prod/web', 'web'],
  ] as const) {
    const byPath = await resolvePolicyVms(rt, await policy({ folders: [path] }));
    const byMoref = await resolvePolicyVms(rt, await policy({ folders: [folder(name)] }));
    const sort = (l: { moref: string }[]) => [...l].sort((a, b) => a.moref.localeCompare(b.moref));
    assert.deepEqual(sort(byPath), sort(byMoref), path);
    assert.ok(byPath.length > 0);
  }
  const all = await resolvePolicyVms(rt, await policy({ folders: ['/dc1/vm'] }));
  assert.deepEqual(all.map((v) => v.moref).sort(), [vm('web01'), vm('web02'), vm('db01')].sort());
});

test('an inventory path that leads nowhere is a clear error naming the path, the policy and renames', async () => {
  const p = await policy({ folders: ['/dc1/vm/prod/no-such-folder'] });
  await assert.rejects(resolvePolicyVms(rt, p), (err: unknown) => {
    assert.ok(err instanceof JobError);
    assert.equal(err.code, 'POLICY_FOLDER_NOT_FOUND');
    assert.match(
      err.message,
      new RegExp(
        `^policy ${p.name} selects folder /dc1/vm/prod/no-such-folder, but no object of its vCenter has that inventory path`,
      ),
    );
    assert.match(err.message, /renamed or moved/);
    assert.match(err.message, /fix the policy's vmSelection\.folders/);
    return true;
  });
});

test('an inventory path to a VM (or a datacenter) is a clear error saying what it is instead', async () => {
  const p = await policy({ folders: ['/dc1/vm/prod/web01'] });
  await assert.rejects(resolvePolicyVms(rt, p), (err: unknown) => {
    assert.ok(err instanceof JobError);
    assert.equal(err.code, 'POLICY_FOLDER_NOT_FOUND');
    assert.equal(
      err.message,
      `policy ${p.name} selects folder /dc1/vm/prod/web01, but that inventory path is a VirtualMachine (${vm('web01')}), ` +
        "not a folder; fix the policy's vmSelection.folders: to protect that VM alone, put its moref in vmSelection.morefs",
    );
    return true;
  });
  const d = await policy({ folders: ['/dc1'] });
  await assert.rejects(resolvePolicyVms(rt, d), (err: unknown) => {
    assert.ok(err instanceof JobError);
    assert.equal(err.code, 'POLICY_FOLDER_NOT_FOUND');
    assert.match(err.message, /is a Datacenter \(datacenter-\d+\), not a folder; .*give its vm folder/);
    return true;
  });
});
