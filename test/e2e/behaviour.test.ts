import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { until } from '../until.js';
import { after, before, test } from 'node:test';
import { requestCancel } from '../../src/catalog/jobs.js';
import { getRestorePoint, listRestorePoints } from '../../src/catalog/restore-points.js';
import { startE2E, type E2E } from './harness.js';

let e: E2E;
before(async () => {
  e = await startE2E();
});
after(async () => {
  await e?.close();
});

const faultFile = (): string => join(e.lab.root, 'faults', 'vddk.conf');
function vddkFaults(lines: string[] | null): void {
  mkdirSync(join(e.lab.root, 'faults'), { recursive: true });
  if (lines === null) rmSync(faultFile(), { force: true });
  else writeFileSync(faultFile(), lines.join('\n') + '\n');
}

async function newestPoint(vm: string) {
  const [p] = await listRestorePoints(e.db.pool, { vmMoref: e.morefs.get(vm) });
  return getRestorePoint(e.db.pool, p!.id);
}

test('two concurrent jobs on one proxy: the second pre-flight leaves the first job disk attached', async () => {
  const w = e.startWorker('vbproxy01');
  try {
    // The first job's first read takes 10 s, so that its disk stays hot-added while the second
    // job starts and runs its pre-flight (a fraction of a second here) even on a slow, loaded
    // machine. Its connection read the fault file before the hot-add; the second job's has none.
    vddkFaults(['read.delay.nth = 1', 'read.delay.ms = 10000']);
    const policy = await e.policy();
    const first = await e.backup(policy, 'web01');
    await until(
      'the first job to hot-add its disk',
      async () => (await e.hotAdded('vbproxy01')).length === 1,
    );
    vddkFaults(null);
    const second = await e.backup(policy, 'db01');
    const [j1, j2] = await Promise.all([e.waitJob(first), e.waitJob(second)]);
    assert.equal(j1.state, 'succeeded', j1.errorMessage ?? '');
    assert.equal(j2.state, 'succeeded', j2.errorMessage ?? '');
    const pf = (await e.events(second)).find((x) => x.message === 'pre-flight cleanup done')!.data!;
    assert.deepEqual(pf.proxyDisksKept, ['[ds1] web01/web01.vmdk']);
    assert.deepEqual(pf.proxyDisksDetached, []);
    assert.deepEqual(await e.hotAdded('vbproxy01'), []);
  } finally {
    vddkFaults(null);
    await w.kill();
  }
});

test('a CBT reset forces a full read, and the reason is recorded', async () => {
  const w = e.startWorker('vbproxy01');
  try {
    const policy = await e.policy();
    const j0 = await e.waitJob(await e.backup(policy, 'web01'));
    assert.equal(j0.state, 'succeeded');
    e.lab.resetCbt('web01');
    const id = await e.backup(policy, 'web01');
    const j = await e.waitJob(id);
    assert.equal(j.state, 'succeeded', j.errorMessage ?? '');
    const p = await newestPoint('web01');
    assert.equal(p.disks[0]!.mode, 'full');
    assert.ok(p.disks[0]!.bytesRead > 0);
    const ev = await e.events(id);
    assert.ok(
      ev.some((x) => /full read: CBT was reset/.test(x.message)),
      ev.map((x) => x.message).join('|'),
    );
    // And the next one is incremental again, reading nothing.
    const j2 = await e.waitJob(await e.backup(policy, 'web01'));
    assert.equal(j2.state, 'succeeded');
    const p2 = await newestPoint('web01');
    assert.equal(p2.disks[0]!.mode, 'incremental');
    assert.equal(p2.disks[0]!.bytesRead, 0);
  } finally {
    await w.kill();
  }
});

test('a quiesce failure falls back per policy and the achieved consistency is recorded', async () => {
  const w = e.startWorker('vbproxy01');
  try {
    const rule = {
      method: 'CreateSnapshot_Task',
      object: 'web01',
      action: 'task' as const,
      fault: 'ApplicationQuiesceFault',
      times: 3,
    };
    e.lab.injectFault(rule);
    const lenient = await e.policy({ consistency: 'application', consistencyFallback: 'crash' });
    const id = await e.backup(lenient, 'web01');
    const j = await e.waitJob(id);
    assert.equal(j.state, 'succeeded', j.errorMessage ?? '');
    const p = await newestPoint('web01');
    assert.equal(p.consistency, 'crash');
    const ev = (await e.events(id)).map((x) => x.message);
    assert.equal(ev.filter((m) => m.startsWith('quiesced snapshot attempt')).length, 3);
    assert.ok(ev.some((m) => m.startsWith('fell back to a crash-consistent snapshot')));

    // Without the failure, the same policy gets what it asked for.
    const ok = await e.waitJob(await e.backup(lenient, 'web01'));
    assert.equal(ok.state, 'succeeded');
    assert.equal((await newestPoint('web01')).consistency, 'application');

    // A strict policy fails, at once (not retried), and leaves no snapshot.
    e.lab.injectFault(rule);
    const strict = await e.policy({ consistency: 'application', consistencyFallback: 'fail' });
    const f = await e.waitJob(await e.backup(strict, 'web01'));
    assert.equal(f.state, 'failed');
    assert.equal(f.errorCode, 'BACKUP_QUIESCE_FAILED');
    assert.match(f.errorMessage ?? '', /web01 could not be quiesced after 3 attempts/);
    assert.deepEqual(await e.ourSnapshots('web01'), []);
  } finally {
    e.lab.clearFaults();
    await w.kill();
  }
});

test('a refused hot-add falls back to nbdssl and that is recorded', async () => {
  const w = e.startWorker('vbproxy02', { hotaddDatastores: ['ds2'] });
  try {
    const policy = await e.policy();
    const id = await e.backup(policy, 'web01'); // web01 is on ds1: this proxy cannot hot-add it
    const j = await e.waitJob(id);
    assert.equal(j.state, 'succeeded', j.errorMessage ?? '');
    assert.equal((await newestPoint('web01')).disks[0]!.transport, 'nbdssl');
    const ev = await e.events(id);
    assert.ok(ev.some((x) => /hot-add not possible, read over nbdssl/.test(x.message)));
    assert.equal(await e.openLedger('vbproxy02'), 0);
  } finally {
    await w.kill();
  }
});

test('a transient read fault and a session expiry mid-read are survived; the read resumes', async () => {
  const w = e.startWorker('vbproxy01');
  try {
    e.lab.guestWrite('db01', 2000, 0, randomBytes(6 * 1024 * 1024));
    const before = e.diskHash('db01', 2000);
    vddkFaults(['read.delay.nth = *', 'read.delay.ms = 10', 'read.fail.nth = 6', 'read.fail.code = 14011']);
    const policy = await e.policy();
    const id = await e.backup(policy, 'db01');
    await until('the transient fault', async () =>
      (await e.events(id)).some((x) => x.message.includes('transient fault, resuming')),
    );
    vddkFaults(['read.delay.nth = *', 'read.delay.ms = 10']);
    e.lab.expireSessions();
    const j = await e.waitJob(id);
    assert.equal(j.state, 'succeeded', j.errorMessage ?? '');
    assert.deepEqual(await e.ourSnapshots('db01'), []);
    const p = await newestPoint('db01');
    const out = join(e.dir, 'resumed');
    const r = await e.waitJob(await e.restore(p.id, { kind: 'file', directory: out, diskKeys: [2000] }));
    assert.equal(r.state, 'succeeded', r.errorMessage ?? '');
    const { fileHash } = await import('./harness.js');
    assert.equal(fileHash(join(out, 'db01-disk2000.img')), before);
  } finally {
    vddkFaults(null);
    await w.kill();
  }
});

test('a cancelled backup stops, cleans up its snapshot and hot-add, and is recorded as cancelled', async () => {
  const w = e.startWorker('vbproxy01');
  try {
    e.lab.guestWrite('web01', 2000, 0, randomBytes(24 * 1024 * 1024));
    // Reads slow enough that the whole disk would take about 25 s: the cancellation (seen within
    // a second or two) comes long before the end, on a slow machine too.
    vddkFaults(['read.delay.nth = *', 'read.delay.ms = 500']);
    const policy = await e.policy();
    const id = await e.backup(policy, 'web01');
    await until('the hot-add', async () => (await e.hotAdded('vbproxy01')).length === 1);
    await requestCancel(e.db.pool, id);
    const j = await e.waitJob(id);
    assert.equal(j.state, 'cancelled');
    assert.deepEqual(await e.hotAdded('vbproxy01'), []);
    assert.deepEqual(await e.ourSnapshots('web01'), []);
  } finally {
    vddkFaults(null);
    await w.kill();
  }
});
