import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { startE2E, type E2E, type WorkerProcess } from './harness.js';

let e: E2E;
let worker: WorkerProcess;

before(async () => {
  e = await startE2E();
  worker = e.startWorker('vbproxy01', { metrics: true });
});
after(async () => {
  await e?.close();
});

/** The worker logs its /metrics address in its "worker started" line. */
async function metricsUrl(w: WorkerProcess): Promise<string> {
  const deadline = Date.now() + 60_000;
  while (Date.now() < deadline) {
    const m = /"metrics":"(http:\/\/[^"]+)"/.exec(w.output());
    if (m) return m[1]!;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`the worker did not report its /metrics address:\n${w.output()}`);
}

/** Sum of the samples of `name` whose labels include every `labels` pair (0 when absent). */
function sample(text: string, name: string, labels: Record<string, string> = {}): number {
  let sum = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
    if (!Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`))) continue;
    sum += Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return sum;
}

test('during a lab backup, /metrics shows the job, byte and last-success metrics move', async () => {
  const url = await metricsUrl(worker);
  const scrape = async (): Promise<string> => {
    const res = await fetch(url.endsWith('/metrics') ? url : `${url}/metrics`);
    assert.equal(res.status, 200);
    return res.text();
  };
  const vm = e.morefs.get('db01')!;
  const started = Math.floor(Date.now() / 1000);
  const before = await scrape();
  assert.equal(sample(before, 'vbproxy_jobs_total', { type: 'backup', result: 'succeeded' }), 0);
  assert.equal(sample(before, 'vbproxy_last_successful_backup_timestamp_seconds', { vm }), 0);

  const policy = await e.policy();
  const job = await e.waitJob(await e.backup(policy, 'db01'));
  assert.equal(job.state, 'succeeded', job.errorMessage ?? '');

  const after = await scrape();
  assert.equal(sample(after, 'vbproxy_jobs_total', { type: 'backup', result: 'succeeded' }), 1);
  assert.ok(
    sample(after, 'vbproxy_bytes_read_total') > sample(before, 'vbproxy_bytes_read_total'),
    'bytes read moved',
  );
  assert.ok(
    sample(after, 'vbproxy_bytes_written_total') > sample(before, 'vbproxy_bytes_written_total'),
    'bytes written moved',
  );
  assert.ok(sample(after, 'vbproxy_job_duration_seconds_count', { type: 'backup' }) >= 1);
  assert.ok(sample(after, 'vbproxy_transport_used_total', { transport: 'hotadd' }) >= 1);
  const last = sample(after, 'vbproxy_last_successful_backup_timestamp_seconds', { vm });
  assert.ok(last >= started, `last successful backup of ${vm} is ${last}, expected >= ${started}`);
  // No secret reaches a label or a value.
  assert.doesNotMatch(after, /e2e-repository-passphrase/);
});
