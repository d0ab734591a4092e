/**
 * `npm run demo`: the whole product on the lab, in a few minutes, on this machine.
 *
 * Starts the lab vSphere (3 sample VMs and a proxy VM) and the lab manager in this process, and the
 * proxy's worker (`vbproxy worker`) as a child process, on the local PostgreSQL and Redis. Then:
 * full backups of the sample VMs, guest writes, incrementals, a worker killed while a disk is
 * hot-added and the next job start cleaning that up, a restore proven byte for byte, and a summary.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { Redis } from 'ioredis';
import pg from 'pg';
import { migrateCatalog, openCatalog, redactUrl, type Pool } from '../catalog/db.js';
import { getJob, insertJob, listJobEvents, type Job } from '../catalog/jobs.js';
import { insertPolicy, type Policy } from '../catalog/policies.js';
import { SecretBox } from '../catalog/secret-box.js';
import { insertVcenter } from '../catalog/vcenters.js';
import type { ConfigInput } from '../config/schema.js';
import type { BackupResult, DiskResult } from '../jobs/backup-job.js';
import type { PreflightReport } from '../jobs/preflight.js';
import {
  enqueueBackup,
  enqueueMaintenance,
  enqueueRestore,
  openQueues,
  QUEUE_NAMES,
  type Queues,
} from '../jobs/queues.js';
import { startLab, type RunningLab } from '../lab/lab.js';
import { LabManager } from '../lab/manager.js';
import { Repository } from '../repository/repository.js';
import { VimClient } from '../vsphere/client.js';
import { findVmByPath, getVm } from '../vsphere/inventory.js';
import { listSnapshots } from '../vsphere/snapshots.js';

const MAIN = fileURLToPath(new URL('../cli/main.js', import.meta.url));
const NATIVE = fileURLToPath(new URL('../../../native', import.meta.url));
const PG_URL = process.env.VBPROXY_DEMO_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
const REDIS_URL = process.env.VBPROXY_DEMO_REDIS_URL ?? 'redis://127.0.0.1:6379';
const VMS = ['web01', 'web02', 'db01'];
const T0 = Date.now();

function say(text: string): void {
  const s = ((Date.now() - T0) / 1000).toFixed(1).padStart(5);
  process.stdout.write(`[${s}s] ${text}\n`);
}

class DemoError extends Error {}

async function checkPostgres(): Promise<{ url: string; drop(): Promise<void> }> {
  const admin = new pg.Client({ connectionString: PG_URL, connectionTimeoutMillis: 3000 });
  try {
    await admin.connect();
  } catch (err) {
    throw new DemoError(
      `cannot reach PostgreSQL at ${redactUrl(PG_URL)} (${(err as Error).message}). Start it, or set VBPROXY_DEMO_PG_URL to a server where this user may CREATE DATABASE.`,
    );
  }
  const name = `vbproxy_demo_${randomBytes(4).toString('hex')}`;
  try {
    await admin.query(`CREATE DATABASE ${name}`);
  } finally {
    await admin.end();
  }
  const u = new URL(PG_URL);
  u.pathname = `/${name}`;
  return {
    url: u.toString(),
    async drop() {
      const a = new pg.Client({ connectionString: PG_URL });
      await a.connect();
      await a.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`).finally(() => a.end());
    },
  };
}

async function checkRedis(): Promise<void> {
  const r = new Redis(REDIS_URL, {
    lazyConnect: true,
    connectTimeout: 3000,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
  });
  r.on('error', () => undefined);
  try {
    await r.connect();
    await r.ping();
  } catch (err) {
    throw new DemoError(
      `cannot reach Redis at ${REDIS_URL} (${(err as Error).message}). Start it, or set VBPROXY_DEMO_REDIS_URL.`,
    );
  } finally {
    r.disconnect();
  }
}

interface Worker {
  child: ChildProcess;
  exited: Promise<string>;
  log: string[];
}

function startWorker(configPath: string, env: Record<string, string> = {}): Worker {
  const child = spawn(
    process.execPath,
    [
      MAIN,
      'worker',
      '--config',
      configPath,
      '--lock-duration-ms',
      '3000',
      '--stalled-interval-ms',
      '1000',
      '--no-metrics',
    ],
    { env: { ...process.env, ...env }, stdio: ['ignore', 'ignore', 'pipe'] },
  );
  const log: string[] = [];
  child.stderr!.on('data', (c: Buffer) => log.push(c.toString()));
  const exited = new Promise<string>((resolve) =>
    child.once('exit', (code, sig) => resolve(sig ?? String(code))),
  );
  return { child, exited, log };
}

async function stopWorker(w: Worker): Promise<void> {
  if (w.child.exitCode === null && w.child.signalCode === null) w.child.kill('SIGTERM');
  await w.exited;
}

async function waitJob(pool: Pool, id: string, worker: () => Worker, timeoutMs = 120_000): Promise<Job> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const j = await getJob(pool, id);
    if (j.state === 'succeeded' || j.state === 'failed' || j.state === 'cancelled') return j;
    if (Date.now() > end) {
      throw new DemoError(
        `job ${id} did not finish in time; worker log tail:\n${worker().log.join('').slice(-3000)}`,
      );
    }
    await sleep(100);
  }
}

function hashDisk(lab: RunningLab, vm: string, key: number): { hash: string; bytes: Buffer[] } {
  const v = lab.world.vmByRefOrName(vm);
  const d = v.disks.find((x) => x.key === key)!;
  const h = createHash('sha256');
  const parts: Buffer[] = [];
  for (let o = 0; o < d.capacity; o += 8 << 20) {
    const b = lab.world.readDisk(vm, key, o, Math.min(8 << 20, d.capacity - o));
    h.update(b);
    parts.push(b);
  }
  return { hash: h.digest('hex'), bytes: parts };
}

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
  const pgdb = await checkPostgres();
  await checkRedis();
  const dir = mkdtempSync(join(tmpdir(), 'vbproxy-demo-'));
  const prefix = `vbproxy-demo-${randomBytes(4).toString('hex')}`;
  let lab: RunningLab | undefined;
  let manager: LabManager | undefined;
  let pool: Pool | undefined;
  let queues: Queues | undefined;
  let worker: Worker | undefined;
  let client: VimClient | undefined;
  try {
    lab = await startLab({ dir: join(dir, 'lab') });
    say(`lab vSphere at ${lab.url} (web01, web02, db01 with CBT; proxy VM vbproxy01)`);
    manager = new LabManager();
    const managerUrl = await manager.start();
    const token = manager.newEnrollmentToken();
    say(`lab manager at ${managerUrl}`);

    pool = await openCatalog(pgdb.url, { max: 4 });
    await migrateCatalog(pool);
    const passphrase = randomBytes(18).toString('base64url');
    const repoPath = join(dir, 'repository');
    await (await Repository.init(repoPath, passphrase)).close();
    const keyHex = SecretBox.generateKeyHex();
    const secret = (name: string, value: string): string => {
      const p = join(dir, name);
      writeFileSync(p, `${value}\n`, { mode: 0o600 });
      return p;
    };
    const box = SecretBox.fromKeyFile(Buffer.from(keyHex), 'demo');
    const vc = await insertVcenter(pool, box, {
      name: 'lab',
      url: lab.url,
      username: lab.username,
      password: lab.password,
      thumbprint: lab.fingerprint256,
    });
    client = await VimClient.connect({
      url: lab.url,
      username: lab.username,
      password: lab.password,
      fingerprint256: lab.fingerprint256,
    });
    const morefs = new Map<string, string>();
    for (const name of [...VMS, 'vbproxy01'])
      morefs.set(name, (await findVmByPath(client, `dc1/vm/${name}`)).value);
    const proxyVm = morefs.get('vbproxy01')!;
    writeFileSync(
      join(dir, 'vddk.conf'),
      `${readFileSync(lab.vddkConf, 'utf8').trimEnd()}\nvixDiskLib.lab.proxyVm = "${proxyVm}"\n`,
    );
    const config: ConfigInput = {
      proxy: { name: 'vbproxy01', vmMoref: proxyVm },
      manager: {
        url: managerUrl,
        enrollmentTokenFile: secret('enrollment.token', token),
        credentialsFile: join(dir, 'manager-credentials.json'),
      },
      api: { listen: '127.0.0.1', port: 0, plainHttp: true, tokensFile: secret('tokens.json', '[]') },
      database: { url: pgdb.url },
      redis: { url: REDIS_URL, prefix },
      repository: { path: repoPath, passphraseFile: secret('repository.pass', passphrase) },
      catalog: { secretKeyFile: secret('catalog.key', keyHex) },
      vddk: { libDir: NATIVE, configFile: join(dir, 'vddk.conf') },
      worker: { diskConcurrency: 2 },
      metrics: { listen: '127.0.0.1', port: 0 },
      logLevel: 'info',
    };
    const configPath = join(dir, 'config.json');
    writeFileSync(configPath, JSON.stringify(config, null, 2));
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

    const policy: Policy = await insertPolicy(pool, {
      name: 'demo',
      vcenterId: vc.id,
      vmSelection: { morefs: VMS.map((v) => morefs.get(v)!), folders: [], namePatterns: [] },
      diskSelection: { mode: 'all', diskKeys: [] },
      consistency: 'filesystem',
      consistencyFallback: 'crash',
      transports: ['hotadd', 'nbdssl'],
      schedule: null,
      retention: { keepLast: 10 },
      repository: repoPath,
      enabled: true,
    });
    queues = openQueues(
      { host: new URL(REDIS_URL).hostname, port: Number(new URL(REDIS_URL).port || 6379) },
      prefix,
    );
    worker = startWorker(configPath);
    say('worker started: vbproxy worker --config ' + configPath);
    const p = pool;
    const q = queues;
    const current = (): Worker => worker!;

    const backup = async (vm: string): Promise<string> => {
      const id = randomUUID();
      await insertJob(p, {
        id,
        type: 'backup',
        trigger: 'manual',
        queue: QUEUE_NAMES.backup,
        policyId: policy.id,
        vcenterId: vc.id,
        vmMoref: morefs.get(vm)!,
        vmName: vm,
      });
      await enqueueBackup(q, {
        jobId: id,
        policyId: policy.id,
        vcenterId: vc.id,
        vmMoref: morefs.get(vm)!,
        trigger: 'manual',
      });
      return id;
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
        const j = await waitJob(p, id, current);
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
    await stopWorker(worker);
    lab.guestWrite('web02', 2000, 8 << 20, randomBytes(2 << 20));
    worker = startWorker(configPath, { VBPROXY_CRASH_AT: 'after-hotadd' });
    const crashedJob = await backup('web02');
    const sig = await worker.exited;
    const proxyInfo = await getVm(client, {
      _type: 'ManagedObjectReference',
      type: 'VirtualMachine',
      value: proxyVm,
    });
    const left = proxyInfo.disks.filter((d) => d.controllerKey === 1001).map((d) => d.fileName);
    const snaps = (
      await listSnapshots(client, {
        _type: 'ManagedObjectReference',
        type: 'VirtualMachine',
        value: morefs.get('web02')!,
      })
    ).filter((s) => s.tag);
    say(
      `  worker exited by ${sig}; left behind: hot-added on vbproxy01 [${left.join(', ')}], snapshots of web02 [${snaps.map((s) => s.name).join(', ')}]`,
    );
    say('  a new worker starts; the stalled job is taken over and its pre-flight cleans up');
    worker = startWorker(configPath);
    const j = await waitJob(p, crashedJob, current);
    if (j.state !== 'succeeded') throw new DemoError(`recovered backup ${j.state}: ${j.errorMessage}`);
    const pfs = (await listJobEvents(p, crashedJob)).filter((e) => e.message === 'pre-flight cleanup done');
    const pf = pfs[pfs.length - 1]!.data as unknown as PreflightReport;
    say(
      `  pre-flight: detached [${pf.proxyDisksDetached.join(', ')}], VDDK Cleanup removed ${pf.vddkCleanedUp}, removed snapshots [${pf.snapshotsRemoved.join(', ')}], consolidated: ${pf.consolidated}`,
    );
    const r3 = await result(crashedJob);
    for (const d of r3.disks) rows.push({ round: '3 after crash', vm: 'web02', d });
    const after = await getVm(client, {
      _type: 'ManagedObjectReference',
      type: 'VirtualMachine',
      value: proxyVm,
    });
    say(`  now hot-added on vbproxy01: ${after.disks.filter((d) => d.controllerKey === 1001).length}`);

    say('restore: the newest restore point of web01, disk 2000, to an image file');
    const expected = hashDisk(lab, 'web01', 2000);
    const { rows: pts } = await p.query<{ id: string }>(
      `SELECT id FROM restore_points WHERE vm_moref = $1 ORDER BY snapshot_time DESC LIMIT 1`,
      [morefs.get('web01')],
    );
    const rid = randomUUID();
    const outDir = join(dir, 'restore');
    await insertJob(p, {
      id: rid,
      type: 'restore',
      trigger: 'manual',
      queue: QUEUE_NAMES.restore,
      params: {},
    });
    await enqueueRestore(q, {
      jobId: rid,
      restorePointId: pts[0]!.id,
      target: { kind: 'file', directory: outDir, diskKeys: [2000] },
    });
    const rj = await waitJob(p, rid, current);
    if (rj.state !== 'succeeded') throw new DemoError(`restore ${rj.state}: ${rj.errorMessage}`);
    const img = readFileSync(join(outDir, 'web01-disk2000.img'));
    const same = Buffer.compare(img, Buffer.concat(expected.bytes)) === 0;
    const gotHash = createHash('sha256').update(img).digest('hex');
    say(
      `  restored ${mib(img.length)}: sha256 ${gotHash.slice(0, 16)}..., the disk: ${expected.hash.slice(0, 16)}... -> ${same ? 'byte for byte identical' : 'DIFFERENT'}`,
    );
    if (!same) throw new DemoError('the restored image differs from the disk');

    say('verify: every chunk of the repository re-read and authenticated');
    const vid = randomUUID();
    await insertJob(p, {
      id: vid,
      type: 'verify',
      trigger: 'manual',
      queue: QUEUE_NAMES.maintenance,
      params: {},
    });
    await enqueueMaintenance(q, { jobId: vid, operation: 'verify', repository: repoPath, readData: true });
    const vj = await waitJob(p, vid, current);
    say(`  verify ${vj.state}${vj.errorMessage ? `: ${vj.errorMessage}` : ''}`);

    process.stdout.write(`\n${summary(rows)}\n\n`);
    process.stdout.write(
      'dedup = bytes read / new bytes written (before compression); compr. = new bytes / stored bytes.\n' +
        `demo finished in ${((Date.now() - T0) / 1000).toFixed(1)} s${keep ? `; files kept in ${dir}` : ''}\n`,
    );
  } finally {
    if (worker) await stopWorker(worker).catch(() => undefined);
    await client?.close().catch(() => undefined);
    if (queues) {
      for (const qq of [queues.backup, queues.restore, queues.maintenance, queues.schedule])
        await qq.obliterate({ force: true }).catch(() => undefined);
      await queues.close();
    }
    await pool?.end().catch(() => undefined);
    await manager?.stop().catch(() => undefined);
    await lab?.stop().catch(() => undefined);
    await pgdb.drop().catch(() => undefined);
    if (!keep) rmSync(dir, { recursive: true, force: true });
  }
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    process.stderr.write(
      `demo failed: ${err instanceof DemoError ? err.message : ((err as Error).stack ?? String(err))}\n`,
    );
    process.exit(1);
  },
);
