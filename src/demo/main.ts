/**
 * `npm run demo`: the whole product on the lab, in a few minutes, on this machine.
 *
 * Starts the lab vSphere (3 sample VMs and a proxy VM) and the lab manager in this process, and the
 * proxy's worker (`vbproxy worker`) as a child process, on the local PostgreSQL and Redis. Then:
 * full backups of the sample VMs, guest writes, incrementals, a worker killed while a disk is
 * hot-added and the next job start cleaning that up, a restore proven byte for byte, and a summary.
 */
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Job } from '../catalog/jobs.js';
import type { Policy } from '../catalog/policies.js';
import { VbproxyError } from '../errors.js';
import type { BackupResult, DiskResult } from '../jobs/backup-job.js';
import type { PreflightReport } from '../jobs/preflight.js';
import {
  DEFAULT_PG_ADMIN_URL,
  DEFAULT_REDIS_URL,
  startLabEnvironment,
  type LabEnvironment,
  type WorkerProcess,
} from '../lab/environment.js';
import { LabManager } from '../lab/manager.js';

const MAIN = fileURLToPath(new URL('../cli/main.js', import.meta.url));
const PG_URL = process.env.VBPROXY_DEMO_PG_URL ?? DEFAULT_PG_ADMIN_URL;
const REDIS_URL = process.env.VBPROXY_DEMO_REDIS_URL ?? DEFAULT_REDIS_URL;
const VMS = ['web01', 'web02', 'db01'];
const T0 = Date.now();

function say(text: string): void {
  const s = ((Date.now() - T0) / 1000).toFixed(1).padStart(5);
  process.stdout.write(`[${s}s] ${text}\n`);
}

class DemoError extends Error {}

function mib(n: number): string {
  return `${(n / 1048576).toFixed(1)} MiB`;
}

interface Row {
  round: string;
  vm: string;
  d: DiskResult;
}

function summary(rows: Row[]): string {
  const head = [
    'round',
    'VM',
    'disk',
    'mode',
    'transport',
    'read',
    'stored',
    'dedup',
    'compr.',
    'time',
    'MB/s',
  ];
  const cells = rows.map(({ round, vm, d }) => {
    const dedup =
      d.newBytes > 0 ? `${(d.bytesRead / d.newBytes).toFixed(2)}x` : d.bytesRead > 0 ? 'all dup' : '-';
    const comp = d.storedBytes > 0 ? `${(d.newBytes / d.storedBytes).toFixed(2)}x` : '-';
    const secs = d.durationMs / 1000;
    const mbs = d.bytesRead > 0 && secs > 0 ? (d.bytesRead / 1e6 / secs).toFixed(0) : '-';
    return [
      round,
      vm,
      String(d.diskKey),
      d.mode,
      d.transport,
      mib(d.bytesRead),
      mib(d.storedBytes),
      dedup,
      comp,
      `${secs.toFixed(2)}s`,
      mbs,
    ];
  });
  const all = [head, ...cells];
  const w = head.map((_, i) => Math.max(...all.map((r) => r[i]!.length)));
  const line = (r: string[]) => r.map((c, i) => (i >= 5 ? c.padStart(w[i]!) : c.padEnd(w[i]!))).join('  ');
  return [line(head), w.map((n) => '-'.repeat(n)).join('  '), ...cells.map(line)].join('\n');
}

async function main(): Promise<void> {
  const keep = process.argv.includes('--keep');
  say('vbproxy demo: lab vSphere + lab manager + worker, local PostgreSQL and Redis');
  let env: LabEnvironment | undefined;
  let manager: LabManager | undefined;
  let worker: WorkerProcess | undefined;
  try {
    env = await startLabEnvironment({
      dirPrefix: 'vbproxy-demo-',
      pgAdminUrl: PG_URL,
      redisUrl: REDIS_URL,
      databasePrefix: 'vbproxy_demo',
      queuePrefix: 'vbproxy-demo',
      hints: {
        postgres: 'Start it, or set VBPROXY_DEMO_PG_URL to a server where this user may CREATE DATABASE.',
        redis: 'Start it, or set VBPROXY_DEMO_REDIS_URL.',
      },
      keep,
    });
    const { lab } = env;
    const dir = env.dir;
    say(`lab vSphere at ${lab.url} (web01, web02, db01 with CBT; proxy VM vbproxy01)`);
    manager = new LabManager();
    const managerUrl = await manager.start();
    const token = manager.newEnrollmentToken();
    say(`lab manager at ${managerUrl}`);

    const morefs = env.morefs;
    const configPath = env.writeProxyConfig('vbproxy01', {
      manager: { url: managerUrl, enrollmentToken: token },
    });
    // Asynchronously: the lab manager answers from this process's event loop.
    const reg = await new Promise<{ status: number | null; stderr: string }>((resolve) => {
      const c = spawn(process.execPath, [MAIN, 'register', '--config', configPath], {
        stdio: ['ignore', 'ignore', 'pipe'],
      });
      let stderr = '';
      c.stderr!.on('data', (b: Buffer) => (stderr += b.toString()));
      c.once('exit', (status) => resolve({ status, stderr }));
    });
    say(
      reg.status === 0
        ? `proxy registered with the lab manager (${manager.proxies().length} proxy known to it)`
        : `registration failed (the demo goes on without it): ${reg.stderr.trim()}`,
    );

    const policy: Policy = await env.policy({
      name: 'demo',
      vmSelection: { morefs: VMS.map((v) => morefs.get(v)!), folders: [], namePatterns: [] },
      consistency: 'filesystem',
      consistencyFallback: 'crash',
      retention: { keepLast: 10 },
    });
    const start = (envVars: Record<string, string> = {}): WorkerProcess =>
      env!.startWorker('vbproxy01', {
        configPath,
        lockDurationMs: 3000,
        stalledIntervalMs: 1000,
        env: envVars,
      });
    worker = start();
    say('worker started: vbproxy worker --config ' + configPath);
    const e = env;
    const q = env.queues;
    const backup = (vm: string): Promise<string> => e.backup(policy, vm);
    const waitJob = async (id: string): Promise<Job> => {
      try {
        return await e.waitJob(id, { timeoutMs: 120_000, pollMs: 100 });
      } catch (err) {
        throw new DemoError((err as Error).message);
      }
    };
    /**
     * The job's result as BullMQ stored it. The worker marks the catalog row succeeded just before
     * its processor returns, so BullMQ may record the return value a moment after the catalog.
     */
    const result = async (id: string): Promise<BackupResult> => {
      const deadline = Date.now() + 30_000;
      for (;;) {
        const job = await q.backup.getJob(id);
        if (job?.returnvalue) return job.returnvalue as BackupResult;
        if (Date.now() > deadline)
          throw new DemoError(`backup job ${id} succeeded but left no result in the queue`);
        await new Promise((r) => setTimeout(r, 50));
      }
    };
    const rows: Row[] = [];
    const round = async (label: string, vms: string[]): Promise<Map<string, BackupResult>> => {
      const ids = await Promise.all(vms.map(backup));
      const out = new Map<string, BackupResult>();
      for (const [i, id] of ids.entries()) {
        const j = await waitJob(id);
        if (j.state !== 'succeeded') throw new DemoError(`backup of ${vms[i]} ${j.state}: ${j.errorMessage}`);
        const r = await result(id);
        out.set(vms[i]!, r);
        for (const d of r.disks) rows.push({ round: label, vm: vms[i]!, d });
        const read = r.disks.reduce((a, d) => a + d.bytesRead, 0);
        say(
          `  ${vms[i]}: ${r.disks.map((d) => `${d.mode}/${d.transport}`).join(', ')}, read ${mib(read)}, consistency ${r.consistency}`,
        );
      }
      return out;
    };

    say('round 1: full backups of web01, web02, db01');
    await round('1 full', VMS);

    say('guest writes: web01 2% of its disk, db01 1 MiB on each disk');
    const web01 = lab.world.vmByRefOrName('web01').disks[0]!;
    const step = Math.floor(web01.capacity / 40 / 512) * 512;
    for (let i = 0; i < 4; i++)
      lab.guestWrite(
        'web01',
        2000,
        i * 10 * step,
        randomBytes(Math.floor((web01.capacity * 0.02) / 4 / 512) * 512),
      );
    for (const d of lab.world.vmByRefOrName('db01').disks)
      lab.guestWrite('db01', d.key, 4 << 20, randomBytes(1 << 20));
    say('round 2: incrementals');
    await round('2 incr', VMS);

    say('crash: a worker killed (SIGKILL) right after hot-adding a disk of web02');
    await worker.kill('SIGTERM');
    lab.guestWrite('web02', 2000, 8 << 20, randomBytes(2 << 20));
    worker = start({ VBPROXY_CRASH_AT: 'after-hotadd' });
    const crashedJob = await backup('web02');
    const sig = await worker.exited;
    const left = await e.hotAdded('vbproxy01');
    const snaps = await e.ourSnapshots('web02');
    say(
      `  worker exited by ${sig}; left behind: hot-added on vbproxy01 [${left.join(', ')}], snapshots of web02 [${snaps.map((s) => s.name).join(', ')}]`,
    );
    say('  a new worker starts; the stalled job is taken over and its pre-flight cleans up');
    worker = start();
    const j = await waitJob(crashedJob);
    if (j.state !== 'succeeded') throw new DemoError(`recovered backup ${j.state}: ${j.errorMessage}`);
    const pfs = (await e.events(crashedJob)).filter((e) => e.message === 'pre-flight cleanup done');
    const pf = pfs[pfs.length - 1]!.data as unknown as PreflightReport;
    say(
      `  pre-flight: detached [${pf.proxyDisksDetached.join(', ')}], VDDK Cleanup removed ${pf.vddkCleanedUp}, removed snapshots [${pf.snapshotsRemoved.join(', ')}], consolidated: ${pf.consolidated}`,
    );
    const r3 = await result(crashedJob);
    for (const d of r3.disks) rows.push({ round: '3 after crash', vm: 'web02', d });
    say(`  now hot-added on vbproxy01: ${(await e.hotAdded('vbproxy01')).length}`);

    say('restore: the newest restore point of web01, disk 2000, to an image file');
    const expected = e.diskHash('web01', 2000);
    const { rows: pts } = await e.db.pool.query<{ id: string }>(
      `SELECT id FROM restore_points WHERE vm_moref = $1 ORDER BY snapshot_time DESC LIMIT 1`,
      [morefs.get('web01')],
    );
    const outDir = join(dir, 'restore');
    const rid = await e.restore(pts[0]!.id, { kind: 'file', directory: outDir, diskKeys: [2000] });
    const rj = await waitJob(rid);
    if (rj.state !== 'succeeded') throw new DemoError(`restore ${rj.state}: ${rj.errorMessage}`);
    const img = readFileSync(join(outDir, 'web01-disk2000.img'));
    const gotHash = createHash('sha256').update(img).digest('hex');
    const same = gotHash === expected;
    say(
      `  restored ${mib(img.length)}: sha256 ${gotHash.slice(0, 16)}..., the disk: ${expected.slice(0, 16)}... -> ${same ? 'byte for byte identical' : 'DIFFERENT'}`,
    );
    if (!same) throw new DemoError('the restored image differs from the disk');

    say('verify: every chunk of the repository re-read and authenticated');
    const vid = await e.maintenance('verify', { readData: true });
    const vj = await waitJob(vid);
    say(`  verify ${vj.state}${vj.errorMessage ? `: ${vj.errorMessage}` : ''}`);

    process.stdout.write(`\n${summary(rows)}\n\n`);
    process.stdout.write(
      'dedup = bytes read / new bytes written (before compression); compr. = new bytes / stored bytes.\n' +
        `demo finished in ${((Date.now() - T0) / 1000).toFixed(1)} s${keep ? `; files kept in ${dir}` : ''}\n`,
    );
  } finally {
    if (worker) await worker.kill('SIGTERM').catch(() => undefined);
    await env?.close();
    await manager?.stop().catch(() => undefined);
  }
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    process.stderr.write(
      `demo failed: ${err instanceof DemoError || err instanceof VbproxyError ? err.message : ((err as Error).stack ?? String(err))}\n`,
    );
    process.exit(1);
  },
);
