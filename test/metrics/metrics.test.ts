import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { z } from 'zod';
import { Metrics } from '../../src/metrics/metrics.js';
import { openQueues, queueCounts } from '../../src/jobs/queues.js';
import { startMetricsServer } from '../../src/metrics/server.js';

const root = new URL('../../../', import.meta.url).pathname;

function sample(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const line of text.split('\n')) {
    if (line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][\w:]*)(\{(.*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const have = Object.fromEntries([...(m[3] ?? '').matchAll(/(\w+)="([^"]*)"/g)].map((x) => [x[1], x[2]]));
    if (Object.entries(labels).every(([k, v]) => have[k] === v)) return Number(m[4]);
  }
  return undefined;
}

describe('metrics', () => {
  test('recording functions move the job, byte, cleanup and last-success metrics', async () => {
    const m = new Metrics();
    const before = await m.text();
    assert.equal(sample(before, 'vbproxy_jobs_total', { type: 'backup', result: 'succeeded' }), 0);
    assert.ok(sample(before, 'nodejs_eventloop_lag_seconds') !== undefined, 'event-loop lag is exported');

    m.recordJobFinished('backup', 'succeeded', 42);
    m.recordDiskFinished({
      mode: 'incremental',
      transport: 'hotadd',
      durationSeconds: 2,
      bytesRead: 4 << 20,
      bytesWritten: 1 << 20,
      bytesDeduplicated: 2 << 20,
      bytesCompressedSaved: 512 << 10,
    });
    m.recordBackupSucceeded('vm-42', new Date('2026-01-01T00:00:00Z'));
    m.recordOrphanDisksDetached(2);
    m.recordLeftoverSnapshotsRemoved(1);
    m.recordCbtReset();
    m.recordTransportUsed('nbdssl');
    m.recordVddkError(13);
    m.recordVddkError(987654);
    m.setRepositorySize(123456);
    m.setDatastoreFreeRatio(0.25);
    const t = await m.text();
    assert.equal(sample(t, 'vbproxy_jobs_total', { type: 'backup', result: 'succeeded' }), 1);
    assert.equal(sample(t, 'vbproxy_job_duration_seconds_count', { type: 'backup' }), 1);
    assert.equal(
      sample(t, 'vbproxy_disk_duration_seconds_count', { mode: 'incremental', transport: 'hotadd' }),
      1,
    );
    assert.equal(sample(t, 'vbproxy_bytes_read_total', { mode: 'incremental' }), 4 << 20);
    assert.equal(sample(t, 'vbproxy_bytes_written_total', { mode: 'incremental' }), 1 << 20);
    assert.equal(sample(t, 'vbproxy_bytes_deduplicated_total'), 2 << 20);
    assert.equal(sample(t, 'vbproxy_bytes_compression_saved_total'), 512 << 10);
    assert.equal(sample(t, 'vbproxy_disk_throughput_bytes_per_second', { transport: 'hotadd' }), 2 << 20);
    assert.equal(sample(t, 'vbproxy_last_successful_backup_timestamp_seconds', { vm: 'vm-42' }), 1767225600);
    assert.equal(sample(t, 'vbproxy_orphan_disks_detached_total'), 2);
    assert.equal(sample(t, 'vbproxy_leftover_snapshots_removed_total'), 1);
    assert.equal(sample(t, 'vbproxy_cbt_resets_total'), 1);
    assert.equal(sample(t, 'vbproxy_transport_used_total', { transport: 'nbdssl' }), 1);
    assert.equal(sample(t, 'vbproxy_vddk_errors_total', { code: '13' }), 1);
    assert.equal(sample(t, 'vbproxy_vddk_errors_total', { code: 'other' }), 1);
    assert.equal(sample(t, 'vbproxy_repository_size_bytes'), 123456);
    assert.equal(sample(t, 'vbproxy_datastore_free_ratio'), 0.25);
  });

  test('label cardinality is bounded: VM labels are morefs only and capped', async () => {
    const m = new Metrics({ defaults: false, maxVms: 3 });
    assert.throws(() => m.recordBackupSucceeded('web server (password=x)'), /not a VM moref/);
    for (let i = 0; i < 10; i++) m.recordBackupSucceeded(`vm-${i}`);
    const t = await m.text();
    const vmLines = t
      .split('\n')
      .filter((l) => l.startsWith('vbproxy_last_successful_backup_timestamp_seconds{'));
    assert.equal(vmLines.length, 3);
    assert.equal(sample(t, 'vbproxy_vm_label_overflow_total'), 7);
    for (const line of t.split('\n')) {
      for (const [, value] of line.matchAll(/\w+="([^"]*)"/g)) assert.ok(value!.length <= 64, line);
    }
  });

  test('queue gauges are collected from BullMQ at scrape time', async () => {
    const prefix = `vbproxy-test-${randomBytes(4).toString('hex')}`;
    const queues = openQueues({ host: '127.0.0.1', port: 6379 }, prefix);
    try {
      const m = new Metrics({ defaults: false });
      m.setQueueSource(() => queueCounts(queues));
      await queues.maintenance.add(
        'verify',
        { jobId: 'j1', operation: 'verify', repository: '/r' },
        { jobId: 'j1' },
      );
      await queues.maintenance.add('gc', { jobId: 'j2', operation: 'gc', repository: '/r' }, { jobId: 'j2' });
      const t = await m.text();
      assert.equal(sample(t, 'vbproxy_queue_jobs', { queue: 'maintenance', state: 'waiting' }), 2);
      assert.equal(sample(t, 'vbproxy_queue_jobs', { queue: 'backup', state: 'waiting' }), 0);
    } finally {
      await queues.backup.obliterate({ force: true });
      await queues.restore.obliterate({ force: true });
      await queues.maintenance.obliterate({ force: true });
      await queues.close();
    }
  });
});

test('a worker serves its own /metrics; the last success per VM only moves forward', async () => {
  const m = new Metrics({ defaults: false });
  const server = await startMetricsServer(m, { listen: '127.0.0.1', port: 0 });
  try {
    m.recordBackupSucceeded('vm-7', new Date(2_000_000_000_000));
    m.recordBackupSucceeded('vm-7', new Date(1_000_000_000_000)); // an older point read from the catalog
    const r = await fetch(server.url);
    assert.equal(r.status, 200);
    assert.equal(
      sample(await r.text(), 'vbproxy_last_successful_backup_timestamp_seconds', { vm: 'vm-7' }),
      2_000_000_000,
    );
    assert.equal((await fetch(server.url.replace('/metrics', '/other'))).status, 404);
  } finally {
    await server.close();
  }
});

describe('monitoring/', () => {
  test('promtool checks the alert rules and their unit tests pass', () => {
    const check = spawnSync('promtool', ['check', 'rules', 'monitoring/alerts.yml'], {
      cwd: root,
      encoding: 'utf8',
    });
    assert.equal(
      check.error,
      undefined,
      'promtool is missing: install Debian\'s "prometheus" package (listed in .ci/apt-packages.txt)',
    );
    assert.equal(check.status, 0, check.stdout + check.stderr);
    assert.match(check.stdout, /SUCCESS: 5 rules found/);
    const unit = spawnSync('promtool', ['test', 'rules', 'monitoring/alerts.test.yml'], {
      cwd: root,
      encoding: 'utf8',
    });
    assert.equal(unit.status, 0, unit.stdout + unit.stderr);
  });

  test('the Grafana dashboard is a valid dashboard whose queries use only exported metrics', async () => {
    const target = z.strictObject({
      refId: z.string().regex(/^[A-Z]$/),
      expr: z.string().min(1),
      legendFormat: z.string(),
      datasource: z.object({ type: z.literal('prometheus'), uid: z.string() }),
    });
    const panel = z.object({
      id: z.number().int().positive(),
      title: z.string().min(1),
      type: z.enum(['timeseries', 'table', 'gauge', 'stat']),
      gridPos: z.strictObject({
        h: z.number().int().positive(),
        w: z.number().int().min(1).max(24),
        x: z.number().int().min(0).max(23),
        y: z.number().int().min(0),
      }),
      targets: z.array(target).min(1),
    });
    const dashboard = z.object({
      title: z.string().min(1),
      uid: z.string().regex(/^[a-zA-Z0-9_-]{1,40}$/),
      schemaVersion: z.number().int().min(30),
      panels: z.array(panel).min(1),
      templating: z.object({ list: z.array(z.object({ name: z.string(), type: z.string() })) }),
      time: z.object({ from: z.string(), to: z.string() }),
    });
    const json: unknown = JSON.parse(readFileSync(`${root}monitoring/grafana-dashboard.json`, 'utf8'));
    const d = dashboard.parse(json);
    const ids = d.panels.map((p) => p.id);
    assert.equal(new Set(ids).size, ids.length, 'panel ids are unique');
    for (const p of d.panels)
      assert.ok(p.gridPos.x + p.gridPos.w <= 24, `panel ${p.title} fits the 24-column grid`);

    const m = new Metrics();
    const exported = new Set(
      (await m.registry.getMetricsAsJSON()).flatMap((x) =>
        String(x.type) === 'histogram' ? [`${x.name}_bucket`, `${x.name}_sum`, `${x.name}_count`] : [x.name],
      ),
    );
    const rules = readFileSync(`${root}monitoring/alerts.yml`, 'utf8');
    const exprs = [...d.panels.flatMap((p) => p.targets.map((t) => t.expr)), rules];
    for (const e of exprs) {
      for (const [name] of e.matchAll(/\b(vbproxy|nodejs)_[a-z_0-9]+/g)) {
        assert.ok(exported.has(name), `${name} is used by monitoring/ but not exported`);
      }
    }
  });
});
