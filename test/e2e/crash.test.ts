import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, test } from 'node:test';
import { getJob, listJobEvents } from '../../src/catalog/jobs.js';
import { listRestorePoints } from '../../src/catalog/restore-points.js';
import { CRASH_STEPS } from '../../src/jobs/failpoints.js';
import { getVm } from '../../src/vsphere/inventory.js';
import { listSnapshots, removeSnapshot } from '../../src/vsphere/snapshots.js';
import { startE2E, type E2E } from './harness.js';

let e: E2E;
before(async () => {
  e = await startE2E();
});
after(async () => {
  await e?.close();
});

const vmRef = (id: string) => ({
  _type: 'ManagedObjectReference' as const,
  type: 'VirtualMachine',
  value: id,
});

/** What the restarted job's pre-flight reported. */
async function preflightReport(jobId: string): Promise<Record<string, unknown>[]> {
  return (await listJobEvents(e.db.pool, jobId))
    .filter((x) => x.message === 'pre-flight cleanup done')
    .map((x) => x.data ?? {});
}

for (const step of CRASH_STEPS) {
  test(`a worker SIGKILLed ${step} leaves nothing the next job start does not clean`, async () => {
    const policy = await e.policy();
    // Guest writes, so that even an incremental has several chunks to read when the crash comes.
    e.lab.guestWrite('web01', 2000, 8 * 1024 * 1024, randomBytes(4 * 1024 * 1024));
    const crashing = e.startWorker('vbproxy01', { env: { VBPROXY_CRASH_AT: step } });
    const jobId = await e.backup(policy, 'web01');
    assert.equal(await crashing.exited, 'SIGKILL', crashing.output().slice(-2000));

    // What the crash left: the job still "running" in the catalog, maybe a snapshot and a hot-added disk.
    assert.equal((await getJob(e.db.pool, jobId)).state, 'running');
    if (step === 'after-hotadd' || step === 'mid-read') {
      assert.equal((await e.hotAdded('vbproxy01')).length, 1, 'the crash left the disk hot-added');
    }
    if (step !== 'after-commit' || (await e.ourSnapshots('web01')).length > 0) {
      assert.ok((await e.ourSnapshots('web01')).length >= 1, 'the crash left the snapshot');
    }

    // A new worker takes the stalled job over; its pre-flight cleans what the dead one left.
    const next = e.startWorker('vbproxy01');
    const job = await e.waitJob(jobId);
    assert.equal(job.state, 'succeeded', job.errorMessage ?? next.output().slice(-2000));
    const reports = await preflightReport(jobId);
    assert.equal(reports.length, 2, 'the job ran twice: the crashed attempt and the recovered one');
    const pf = reports[1]!;
    assert.deepEqual(pf.proxyDisksKept, []);
    if (step === 'after-hotadd' || step === 'mid-read') {
      const cleaned = (pf.proxyDisksDetached as string[]).length + (pf.vddkCleanedUp as number);
      assert.ok(cleaned >= 1, `the orphaned hot-add was detached: ${JSON.stringify(pf)}`);
    }
    if (step !== 'after-commit') assert.equal((pf.snapshotsRemoved as string[]).length, 1);

    assert.deepEqual(await e.hotAdded('vbproxy01'), []);
    assert.deepEqual(await e.ourSnapshots('web01'), []);
    assert.equal(await e.openLedger('vbproxy01'), 0);
    assert.equal((await getVm(e.client, vmRef(e.morefs.get('web01')!))).consolidationNeeded, false);
    const repo = await e.openRepo();
    try {
      const v = await repo.verify();
      assert.ok(v.ok, JSON.stringify(v.points.filter((p) => !p.ok)));
    } finally {
      await repo.close();
    }
    await next.kill();
  });
}

test('two workers, one killed mid-job: the job completes on the other and the leftovers are cleaned', async () => {
  const policy = await e.policy();
  const a = e.startWorker('vbproxy01', { env: { VBPROXY_CRASH_AT: 'mid-read' } });
  const jobId = await e.backup(policy, 'db01');
  assert.equal(await a.exited, 'SIGKILL');
  assert.ok((await e.hotAdded('vbproxy01')).length >= 1);
  const b = e.startWorker('vbproxy02');
  const job = await e.waitJob(jobId);
  assert.equal(job.state, 'succeeded', job.errorMessage ?? b.output().slice(-2000));
  const proxies = await e.db.pool.query<{ name: string }>('SELECT name FROM proxies WHERE id = $1', [
    job.proxyId,
  ]);
  assert.equal(proxies.rows[0]!.name, 'vbproxy02');
  const pf = (await preflightReport(jobId))[1]!;
  assert.ok((pf.targetDisksDetached as string[]).length >= 1, JSON.stringify(pf));
  assert.deepEqual(await e.hotAdded('vbproxy01'), []);
  assert.deepEqual(await e.hotAdded('vbproxy02'), []);
  assert.deepEqual(await e.ourSnapshots('db01'), []);
  const points = await listRestorePoints(e.db.pool, { vmMoref: e.morefs.get('db01') });
  assert.equal(points[0]!.jobId, jobId);
  await b.kill();
});

test('a snapshot removed while a crashed job still held its disk: the next pre-flight detaches, then consolidates', async () => {
  const policy = await e.policy();
  e.lab.guestWrite('web01', 2000, 12 * 1024 * 1024, randomBytes(4 * 1024 * 1024));
  const crashing = e.startWorker('vbproxy01', { env: { VBPROXY_CRASH_AT: 'after-hotadd' } });
  const jobId = await e.backup(policy, 'web01');
  assert.equal(await crashing.exited, 'SIGKILL');
  // Somebody (an operator, another tool) removes the snapshot while the disk is still hot-added:
  // the merge cannot take the lock, vSphere flags the VM for consolidation.
  const snaps = await listSnapshots(e.client, vmRef(e.morefs.get('web01')!));
  for (const s of snaps.filter((x) => x.tag)) await removeSnapshot(e.client, s.ref);
  assert.equal((await getVm(e.client, vmRef(e.morefs.get('web01')!))).consolidationNeeded, true);

  const next = e.startWorker('vbproxy01');
  const job = await e.waitJob(jobId);
  assert.equal(job.state, 'succeeded', job.errorMessage ?? '');
  const pf = (await preflightReport(jobId))[1]!;
  assert.equal((pf.proxyDisksDetached as string[]).length, 1);
  assert.equal(pf.consolidated, true);
  assert.equal((await getVm(e.client, vmRef(e.morefs.get('web01')!))).consolidationNeeded, false);
  assert.deepEqual(await e.hotAdded('vbproxy01'), []);
  assert.deepEqual(await e.ourSnapshots('web01'), []);
  await next.kill();
});
