import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { Worker } from 'bullmq';
import { getJob } from '../../src/catalog/jobs.js';
import { redisConnection } from '../../src/api/server.js';
import { QUEUE_NAMES, type BackupJobData } from '../../src/jobs/queues.js';
import * as s from '../../src/api/schemas.js';
import { startHarness, type Harness } from './harness.js';

// The contract between the API and the (future) workers, exercised with a real BullMQ worker.
/**
 * How long the worker waits for the cancel flag, and the test for the worker: only a limit for a
 * broken run, so generous enough for a slow, loaded CI machine.
 */
const CANCEL_WAIT_MS = 120_000;
let h: Harness;
let policyId: string;
const workers: Worker[] = [];
before(async () => {
  h = await startHarness();
  const vc = await h.call('POST', '/api/v1/vcenters', { body: h.vcenterBody('vc') });
  if (vc.status !== 201) throw new Error(`adding the lab vCenter failed: ${vc.text}`);
  const p = await h.call('POST', '/api/v1/policies', {
    body: {
      name: 'p',
      vcenterId: (vc.json as { id: string }).id,
      vmSelection: { morefs: ['vm-1'] },
      retention: { keepLast: 1 },
    },
  });
  policyId = (p.json as { id: string }).id;
});
after(async () => {
  for (const w of workers) await w.close(true);
  await h.close();
});

test('a running job asked to cancel stays running with cancelRequested until its worker stops; a finished VM can be queued again', async () => {
  const run = async () =>
    s.policyRunResponse.parse((await h.call('POST', `/api/v1/policies/${policyId}/run`, { body: {} })).json)
      .jobs[0]!;
  const first = await run();
  assert.equal(first.queued, true);

  let seenCancel = false;
  const started = new Promise<void>((resolveStarted) => {
    const worker = new Worker<BackupJobData>(
      QUEUE_NAMES.backup,
      async (job) => {
        if (job.data.jobId !== first.jobId) return 'not part of this test';
        resolveStarted();
        // what a backup worker does between chunks: look at the catalog's cancel flag (for as long
        // as the test may take to ask, however slow the machine: the limit only ends a broken run)
        const end = Date.now() + CANCEL_WAIT_MS;
        while (Date.now() < end) {
          if ((await getJob(h.db.pool, job.data.jobId)).cancelRequested) {
            seenCancel = true;
            return 'cancelled';
          }
          await new Promise((r) => setTimeout(r, 25));
        }
        throw new Error('cancel flag never seen');
      },
      { connection: redisConnection('redis://127.0.0.1:6379'), prefix: h.api.queues.prefix },
    );
    workers.push(worker);
  });
  await started;
  assert.equal((await run()).queued, false, 'the active backup holds the VM');
  const cancel = await h.call('POST', `/api/v1/jobs/${first.jobId}/cancel`, { token: h.tokens.operate });
  assert.equal(cancel.status, 202, cancel.text);
  const c = s.jobResponse.parse(cancel.json);
  assert.equal(c.cancelRequested, true);
  assert.equal(c.state, 'queued', 'an active job is not marked cancelled by the API: its worker finishes it');
  const end = Date.now() + CANCEL_WAIT_MS;
  while ((await h.api.queues.backup.getJob(first.jobId))?.finishedOn === undefined) {
    assert.ok(Date.now() < end, 'the worker finished');
    await new Promise((r) => setTimeout(r, 25));
  }
  assert.equal(seenCancel, true);
  const again = await run();
  assert.equal(again.queued, true, 'the VM is free again once its job finished');
  assert.notEqual(again.jobId, first.jobId);
  for (const w of workers) await w.close();
});
