import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import {
  addJobEvent,
  ConflictError,
  deletePolicy,
  deleteVcenter,
  finishJob,
  findLiveBackup,
  findRestorePointByManifest,
  liveJobIds,
  markJobRunning,
  proxyLoad,
  getJob,
  getPolicy,
  getRestorePoint,
  getVcenter,
  getVcenterCredentials,
  insertJob,
  insertPolicy,
  insertRestorePoint,
  insertVcenter,
  latestDiskRecord,
  ledgerForJob,
  listJobEvents,
  listJobs,
  listRestorePoints,
  listVcenters,
  migrateCatalog,
  NotFoundError,
  openAttachments,
  openCatalog,
  recordAttach,
  recordDetach,
  SecretBox,
  updatePolicy,
  upsertProxy,
  type PolicyFields,
} from '../../src/catalog/index.js';
import { createTestDatabase, type TestDatabase } from './test-db.js';

const PASSWORD = 'Planted-vC-Passw0rd!';
let db: TestDatabase;
const box = new SecretBox(Buffer.alloc(32, 7));

before(async () => {
  db = await createTestDatabase();
});
after(async () => {
  await db.drop();
});

function policyFields(vcenterId: string, name = 'gold'): PolicyFields {
  return {
    name,
    vcenterId,
    vmSelection: { morefs: ['vm-1'], folders: ['group-v3'], namePatterns: ['web-*'] },
    diskSelection: { mode: 'all', diskKeys: [] },
    consistency: 'application',
    consistencyFallback: 'crash',
    transports: ['hotadd', 'nbdssl'],
    schedule: '0 2 * * *',
    retention: { keepLast: 3, keepDaily: 7 },
    repository: '/srv/backup',
    enabled: true,
  };
}

describe('catalog', () => {
  test('migrations are idempotent: a second run applies nothing', async () => {
    assert.deepEqual(await migrateCatalog(db.pool), []);
  });

  test('an unreachable database names the URL without its password', async () => {
    await assert.rejects(openCatalog('postgres://u:hunter2@127.0.0.1:1/x'), (err: Error) => {
      assert.match(err.message, /127\.0\.0\.1:1/);
      assert.doesNotMatch(err.message, /hunter2/);
      return true;
    });
  });

  test('vCenter passwords are sealed at rest and open only with the key', async () => {
    const v = await insertVcenter(db.pool, box, {
      name: 'vc1',
      url: 'https://vc1.example/sdk',
      username: 'backup@vsphere.local',
      password: PASSWORD,
    });
    assert.equal((v as unknown as Record<string, unknown>).password, undefined);
    const raw = await db.pool.query<{ password_sealed: Buffer }>('SELECT password_sealed FROM vcenters');
    assert.equal(raw.rows[0]!.password_sealed.includes(Buffer.from(PASSWORD)), false);
    assert.equal((await getVcenterCredentials(db.pool, box, v.id)).password, PASSWORD);
    await assert.rejects(
      getVcenterCredentials(db.pool, new SecretBox(Buffer.alloc(32, 8)), v.id),
      /does not open/,
    );
    await assert.rejects(
      insertVcenter(db.pool, box, { name: 'vc1', url: 'https://x/sdk', username: 'u', password: 'p' }),
      ConflictError,
    );
    assert.equal((await listVcenters(db.pool)).length, 1);
    await assert.rejects(getVcenter(db.pool, randomUUID()), NotFoundError);
  });

  test('policies round-trip; a vCenter in use cannot be deleted', async () => {
    const v = await insertVcenter(db.pool, box, {
      name: 'vc2',
      url: 'https://vc2/sdk',
      username: 'u',
      password: 'p',
    });
    const p = await insertPolicy(db.pool, policyFields(v.id, 'silver'));
    const got = await getPolicy(db.pool, p.id);
    assert.deepEqual(got.vmSelection, { morefs: ['vm-1'], folders: ['group-v3'], namePatterns: ['web-*'] });
    assert.deepEqual(got.transports, ['hotadd', 'nbdssl']);
    const upd = await updatePolicy(db.pool, p.id, {
      ...policyFields(v.id, 'silver'),
      schedule: null,
      enabled: false,
    });
    assert.equal(upd.schedule, null);
    assert.equal(upd.enabled, false);
    await assert.rejects(deleteVcenter(db.pool, v.id), ConflictError);
    await assert.rejects(insertPolicy(db.pool, policyFields(v.id, 'silver')), ConflictError);
    await assert.rejects(insertPolicy(db.pool, policyFields(randomUUID(), 'other')), NotFoundError);
    await deletePolicy(db.pool, p.id);
    await deleteVcenter(db.pool, v.id);
    await assert.rejects(getPolicy(db.pool, p.id), NotFoundError);
  });

  test('jobs, events, filters and the live backup of a VM', async () => {
    const v = await insertVcenter(db.pool, box, {
      name: 'vc3',
      url: 'https://vc3/sdk',
      username: 'u',
      password: 'p',
    });
    const id = randomUUID();
    await insertJob(db.pool, {
      id,
      type: 'backup',
      trigger: 'api',
      queue: 'vbproxy-backup',
      vcenterId: v.id,
      vmMoref: 'vm-9',
    });
    assert.equal((await findLiveBackup(db.pool, v.id, 'vm-9'))?.id, id);
    assert.equal((await liveJobIds(db.pool)).has(id), true);
    const px = await upsertProxy(db.pool, { name: 'proxy-load', version: '0.1.0', diskConcurrency: 2 });
    assert.deepEqual(await proxyLoad(db.pool, 'proxy-load'), { running: 0, queued: 1 });
    await markJobRunning(db.pool, id, px.id);
    assert.deepEqual(await proxyLoad(db.pool, 'proxy-load'), { running: 1, queued: 0 });
    assert.deepEqual(await proxyLoad(db.pool, 'other-proxy'), { running: 0, queued: 0 });
    await addJobEvent(db.pool, id, 'info', 'snapshot created', { snapshot: 'snapshot-1' });
    await addJobEvent(db.pool, id, 'warn', 'quiesce failed, falling back to crash-consistent');
    const events = await listJobEvents(db.pool, id);
    assert.deepEqual(
      events.map((e) => e.level),
      ['info', 'warn'],
    );
    await finishJob(db.pool, id, { state: 'failed', errorCode: 'X', errorMessage: 'boom' });
    await finishJob(db.pool, id, { state: 'succeeded' }); // first outcome stays
    const j = await getJob(db.pool, id);
    assert.equal(j.state, 'failed');
    assert.equal(j.errorMessage, 'boom');
    assert.equal(await findLiveBackup(db.pool, v.id, 'vm-9'), undefined);
    assert.equal((await liveJobIds(db.pool)).has(id), false);
    assert.equal((await listJobs(db.pool, { state: 'failed', vmMoref: 'vm-9' })).length, 1);
    assert.equal((await listJobs(db.pool, { state: 'running' })).length, 0);
  });

  test('restore points with disks, the latest changeId per disk, and the hot-add ledger', async () => {
    const v = await insertVcenter(db.pool, box, {
      name: 'vc4',
      url: 'https://vc4/sdk',
      username: 'u',
      password: 'p',
    });
    const proxy = await upsertProxy(db.pool, {
      name: 'proxy-a',
      vmMoref: 'vm-100',
      version: '0.1.0',
      diskConcurrency: 4,
    });
    const disk = {
      diskKey: 2000,
      label: 'Hard disk 1',
      capacityBytes: 8 * 2 ** 30,
      cbtUuid: 'uuid-1',
      bytesRead: 3 * 2 ** 30,
      bytesWritten: 2 ** 30,
      durationMs: 1200,
      transport: 'hotadd' as const,
    };
    const base = {
      jobId: null,
      vcenterId: v.id,
      vmMoref: 'vm-5',
      vmName: 'web-1',
      repository: '/srv/backup',
      consistency: 'filesystem' as const,
    };
    await insertRestorePoint(db.pool, {
      ...base,
      manifestName: 'rp-1',
      snapshotTime: new Date('2026-01-01T00:00:00Z'),
      disks: [{ ...disk, changeId: '52 a/1', mode: 'full' }],
    });
    const second = await insertRestorePoint(db.pool, {
      ...base,
      manifestName: 'rp-2',
      snapshotTime: new Date('2026-01-02T00:00:00Z'),
      disks: [{ ...disk, changeId: '52 a/2', mode: 'incremental' }],
    });
    await assert.rejects(
      insertRestorePoint(db.pool, { ...base, manifestName: 'rp-2', snapshotTime: new Date(), disks: [] }),
      /restore point rp-2 of repository \/srv\/backup is already in the catalog/,
    );
    assert.equal((await findRestorePointByManifest(db.pool, '/srv/backup', 'rp-2'))?.id, second.id);
    assert.equal(await findRestorePointByManifest(db.pool, '/srv/backup', 'rp-9'), undefined);
    const latest = await latestDiskRecord(db.pool, {
      vcenterId: v.id,
      vmMoref: 'vm-5',
      repository: '/srv/backup',
      diskKey: 2000,
    });
    assert.equal(latest?.changeId, '52 a/2');
    assert.equal(latest?.capacityBytes, 8 * 2 ** 30);
    const got = await getRestorePoint(db.pool, second.id);
    assert.equal(got.disks[0]?.mode, 'incremental');
    assert.equal(got.disks[0]?.bytesRead, 3 * 2 ** 30);
    const inJan1 = await listRestorePoints(db.pool, {
      vmMoref: 'vm-5',
      to: new Date('2026-01-01T12:00:00Z'),
    });
    assert.deepEqual(
      inJan1.map((p) => p.manifestName),
      ['rp-1'],
    );

    const jobId = randomUUID();
    await insertJob(db.pool, { id: jobId, type: 'backup', trigger: 'api', queue: 'vbproxy-backup' });
    await recordAttach(db.pool, {
      jobId,
      proxyId: proxy.id,
      proxyVmMoref: 'vm-100',
      vmMoref: 'vm-5',
      diskPath: '[ds1] web-1/web-1.vmdk',
      controllerKey: 1000,
      unitNumber: 1,
    });
    assert.equal((await openAttachments(db.pool, 'vm-100')).length, 1);
    assert.equal(
      await recordDetach(db.pool, {
        proxyVmMoref: 'vm-100',
        diskPath: '[ds1] web-1/web-1.vmdk',
        by: 'preflight',
      }),
      1,
    );
    assert.equal((await openAttachments(db.pool, 'vm-100')).length, 0);
    assert.equal((await ledgerForJob(db.pool, jobId))[0]?.detachedBy, 'preflight');
  });
});
