import assert from 'node:assert/strict';
import { until } from '../until.js';
import { after, before, test } from 'node:test';
import { getRestorePoint, listRestorePoints } from '../../src/catalog/restore-points.js';
import { startE2E, type E2E } from './harness.js';

let e: E2E;
before(async () => {
  // Two hosts: esx1 sees ds1 only, esx2 sees ds1 and ds2. db01 lives on ds2.
  e = await startE2E({
    taskDurationMs: 20,
    hosts: [
      { name: 'esx1', datastores: ['ds1'] },
      { name: 'esx2', datastores: ['ds1', 'ds2'] },
    ],
    datastores: [{ name: 'ds1' }, { name: 'ds2' }],
    vms: [
      {
        name: 'db01',
        cbt: true,
        host: 'esx2',
        datastore: 'ds2',
        disks: [{ sizeMiB: 16, content: { seed: 5 } }],
      },
    ],
    proxies: [
      { name: 'vbproxy01', host: 'esx1', disks: [{ sizeMiB: 8 }] },
      { name: 'vbproxy02', host: 'esx2', disks: [{ sizeMiB: 8 }] },
    ],
  });
});
after(async () => {
  await e?.close();
});

test('a backup goes to the proxy whose host can hot-add the VM, not to one that would read over NBD', async () => {
  // vbproxy02 registers (its row is online), then is stopped; vbproxy01, which cannot see ds2, takes the job.
  const early = e.startWorker('vbproxy02', { hotaddDatastores: ['ds1', 'ds2'] });
  await until(
    'vbproxy02 to register',
    async () => (await e.db.pool.query(`SELECT 1 FROM proxies WHERE name = 'vbproxy02'`)).rowCount === 1,
  );
  await early.kill('SIGKILL');
  const w1 = e.startWorker('vbproxy01', { hotaddDatastores: ['ds1'] });
  const policy = await e.policy();
  const jobId = await e.backup(policy, 'db01');
  // vbproxy01 hands the job back instead of running it.
  await until('vbproxy01 to hand the job back', async () =>
    ((await e.queues.backup.getJob(jobId))?.data.passedBy ?? []).includes('vbproxy01'),
  );
  assert.deepEqual((await e.queues.backup.getJob(jobId))!.data.passedBy?.slice(0, 1), ['vbproxy01']);
  // vbproxy01 stops (gracefully) before vbproxy02 starts: left running, it could take the job back
  // again and again while vbproxy02 starts up, and after its fifth hand-back it runs the job itself,
  // so the outcome would depend on how fast vbproxy02 starts.
  await w1.kill();
  const w2 = e.startWorker('vbproxy02', { hotaddDatastores: ['ds1', 'ds2'] });
  const job = await e.waitJob(jobId);
  assert.equal(job.state, 'succeeded', job.errorMessage ?? '');
  const proxy = await e.db.pool.query<{ name: string }>('SELECT name FROM proxies WHERE id = $1', [
    job.proxyId,
  ]);
  assert.equal(proxy.rows[0]!.name, 'vbproxy02');
  const [p] = await listRestorePoints(e.db.pool, { vmMoref: e.morefs.get('db01') });
  assert.equal((await getRestorePoint(e.db.pool, p!.id)).disks[0]!.transport, 'hotadd');
  await w2.kill();
});
