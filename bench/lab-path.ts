/**
 * `npm run bench [-- --size-mb 2048 --seed 1 --keep]`
 *
 * The lab path end to end: a lab VM with one VM-like disk (the lab's sample-image generator),
 * backed up by a real `vbproxy worker` process through the lab vSphere API (snapshot, CBT), the
 * lab VDDK (hot-add) and the repository pipeline, against restic and borg on the same image file
 * (the disk's flat extent). Phases: full; incremental after 2% of the 64 KiB blocks changed (guest
 * writes, so CBT sees them; restic and borg re-read the image); restore to a file. vbproxy's time
 * is the job's wall time from enqueue to success (snapshot, pre-flight, read, commit, snapshot
 * removal included); restic and borg are whole processes under GNU time. Prints a markdown table
 * with the ratios. Needs the local PostgreSQL and Redis (as the demo).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { createReadStream, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import pg from 'pg';
import { migrateCatalog, openCatalog, type Pool } from '../src/catalog/db.js';
import { getJob, insertJob, listJobEvents } from '../src/catalog/jobs.js';
import { insertPolicy } from '../src/catalog/policies.js';
import { getRestorePoint, listRestorePoints } from '../src/catalog/restore-points.js';
import { SecretBox } from '../src/catalog/secret-box.js';
import { insertVcenter } from '../src/catalog/vcenters.js';
import type { ConfigInput } from '../src/config/schema.js';
import { enqueueBackup, enqueueRestore, openQueues, QUEUE_NAMES } from '../src/jobs/queues.js';
import { startLab } from '../src/lab/lab.js';
import { Repository } from '../src/repository/repository.js';
import { VimClient } from '../src/vsphere/client.js';
import { findVmByPath } from '../src/vsphere/inventory.js';
import { ensureDebian, measure, run, settle, storedBytes, type Measured } from './measure.js';

const { values } = parseArgs({
  options: {
    'size-mb': { type: 'string', default: '2048' },
    seed: { type: 'string', default: '1' },
    keep: { type: 'boolean', default: false },
  },
});
const sizeMb = Number(values['size-mb']);
const seed = Number(values.seed);
const MAIN = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const NATIVE = fileURLToPath(new URL('../../native', import.meta.url));
const PG_URL = process.env.VBPROXY_DEMO_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';

ensureDebian({ restic: 'restic', borg: 'borgbackup' });

function log(s: string): void {
  process.stderr.write(`${s}\n`);
}

async function main(): Promise<void> {
  const work = mkdtempSync(join(tmpdir(), 'vbproxy-labbench-'));
  const dbName = `vbproxy_bench_${randomBytes(4).toString('hex')}`;
  const admin = new pg.Client({ connectionString: PG_URL });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${dbName}`);
  await admin.end();
  const dbUrl = Object.assign(new URL(PG_URL), { pathname: `/${dbName}` }).toString();
  const prefix = `vbproxy-bench-${randomBytes(4).toString('hex')}`;
  let worker: ChildProcess | undefined;
  let pool: Pool | undefined;
  const t0 = Date.now();
  try {
    log(`creating the lab VM (${sizeMb} MiB disk) ...`);
    const lab = await startLab({
      dir: join(work, 'lab'),
      definition: {
        taskDurationMs: 50,
        hosts: [{ name: 'esx1', datastores: ['ds1'] }],
        datastores: [{ name: 'ds1' }],
        vms: [
          { name: 'big01', cbt: true, disks: [{ sizeMiB: sizeMb, content: { seed, template: 'debian' } }] },
        ],
        proxies: [{ name: 'vbproxy01', disks: [{ sizeMiB: 16 }] }],
      },
    });
    const image = join(lab.root, 'datastores', 'ds1', 'big01', 'big01-flat.vmdk');
    pool = await openCatalog(dbUrl, { max: 4 });
    await migrateCatalog(pool);
    const passphrase = randomBytes(18).toString('base64url');
    const repoPath = join(work, 'vbproxy-repo');
    await (await Repository.init(repoPath, passphrase)).close();
    const keyHex = SecretBox.generateKeyHex();
    const secret = (n: string, v: string): string => {
      writeFileSync(join(work, n), `${v}\n`, { mode: 0o600 });
      return join(work, n);
    };
    const vc = await insertVcenter(pool, SecretBox.fromKeyFile(Buffer.from(keyHex), 'bench'), {
      name: 'lab',
      url: lab.url,
      username: lab.username,
      password: lab.password,
      thumbprint: lab.fingerprint256,
    });
    const client = await VimClient.connect({
      url: lab.url,
      username: lab.username,
      password: lab.password,
      fingerprint256: lab.fingerprint256,
    });
    const vm = (await findVmByPath(client, 'dc1/vm/big01')).value;
    const proxyVm = (await findVmByPath(client, 'dc1/vm/vbproxy01')).value;
    await client.close();
    writeFileSync(
      join(work, 'vddk.conf'),
      `${readFileSync(lab.vddkConf, 'utf8').trimEnd()}\nvixDiskLib.lab.proxyVm = "${proxyVm}"\n`,
    );
    const config: ConfigInput = {
      proxy: { name: 'vbproxy01', vmMoref: proxyVm },
      api: { listen: '127.0.0.1', port: 0, plainHttp: true, tokensFile: secret('tokens.json', '[]') },
      database: { url: dbUrl },
      redis: { url: 'redis://127.0.0.1:6379', prefix },
      repository: { path: repoPath, passphraseFile: secret('repo.pass', passphrase) },
      catalog: { secretKeyFile: secret('catalog.key', keyHex) },
      vddk: { libDir: NATIVE, configFile: join(work, 'vddk.conf') },
      worker: { diskConcurrency: 2 },
      metrics: { listen: '127.0.0.1', port: 0 },
      logLevel: 'warn',
    };
    writeFileSync(join(work, 'config.json'), JSON.stringify(config));
    const policy = await insertPolicy(pool, {
      name: 'bench',
      vcenterId: vc.id,
      vmSelection: { morefs: [vm], folders: [], namePatterns: [] },
      diskSelection: { mode: 'all', diskKeys: [] },
      consistency: 'crash',
      consistencyFallback: 'crash',
      transports: ['hotadd', 'nbdssl'],
      schedule: null,
      retention: {},
      repository: repoPath,
      enabled: true,
    });
    const queues = openQueues({ host: '127.0.0.1', port: 6379 }, prefix);
    worker = spawn(
      process.execPath,
      [MAIN, 'worker', '--config', join(work, 'config.json'), '--no-metrics'],
      {
        stdio: ['ignore', 'ignore', 'inherit'],
      },
    );
    const p = pool;
    const waitJob = async (id: string): Promise<number> => {
      const start = Date.now();
      for (;;) {
        const j = await getJob(p, id);
        if (j.state === 'succeeded') return (Date.now() - start) / 1000;
        if (j.state === 'failed' || j.state === 'cancelled')
          throw new Error(`job ${id} ${j.state}: ${j.errorMessage}`);
        await sleep(20);
      }
    };
    const backup = async (): Promise<number> => {
      settle();
      const id = randomUUID();
      await insertJob(p, {
        id,
        type: 'backup',
        trigger: 'manual',
        queue: QUEUE_NAMES.backup,
        policyId: policy.id,
        vcenterId: vc.id,
        vmMoref: vm,
        vmName: 'big01',
      });
      await enqueueBackup(queues, {
        jobId: id,
        policyId: policy.id,
        vcenterId: vc.id,
        vmMoref: vm,
        trigger: 'manual',
      });
      const secs = await waitJob(id);
      const ev = await listJobEvents(p, id);
      const t0e = ev[0]!.at.getTime();
      log(
        `  job timeline: ${ev.map((x) => `${((x.at.getTime() - t0e) / 1000).toFixed(2)}s ${x.message.slice(0, 40)}`).join(' | ')}`,
      );
      log(
        `  phases (ms): ${JSON.stringify(ev.find((x) => x.message.endsWith(' committed'))?.data?.phasesMs ?? {})}`,
      );
      return secs;
    };
    const env = {
      RESTIC_PASSWORD: passphrase,
      BORG_PASSPHRASE: passphrase,
      RESTIC_CACHE_DIR: join(work, 'restic-cache'),
      BORG_BASE_DIR: join(work, 'borg-base'),
      BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK: 'yes',
    };
    const resticRepo = join(work, 'restic-repo');
    const borgRepo = join(work, 'borg-repo');
    run('restic', ['init', '--repo', resticRepo, '--repository-version', '2'], env);
    run('borg', ['init', '--encryption', 'repokey-blake2', borgRepo], env);
    const resticBackup = () => measure('restic', ['backup', '--repo', resticRepo, '--quiet', image], { env });
    const borgBackup = (name: string) =>
      measure(
        'borg',
        ['create', '--chunker-params', 'fixed,4194304', '--sparse', `${borgRepo}::${name}`, image],
        { env },
      );

    const r: Record<string, Record<string, number>> = { vbproxy: {}, restic: {}, borg: {} };
    const wall = (m: Measured): number => m.wallS;
    // Wait for the worker to be ready (connected to the queue), plus its repository opening (KDF).
    while ((await queues.backup.getWorkers()).length === 0) await sleep(100);
    await sleep(2000);
    log('full backups ...');
    r.vbproxy!.full = await backup();
    r.restic!.full = wall(await resticBackup());
    r.borg!.full = wall(await borgBackup('full'));
    log(
      `  full: vbproxy ${r.vbproxy!.full!.toFixed(2)} s, restic ${r.restic!.full!.toFixed(2)} s, borg ${r.borg!.full!.toFixed(2)} s`,
    );

    log('2% of the 64 KiB blocks changed by guest writes ...');
    const block = 64 * 1024;
    const blocks = Math.floor((sizeMb * 2 ** 20) / block);
    let state = seed * 2654435761;
    const rnd = (): number => (state = (Math.imul(state, 1103515245) + 12345) >>> 0) / 2 ** 32;
    const chosen = new Set<number>();
    while (chosen.size < Math.round(blocks * 0.02)) chosen.add(Math.floor(rnd() * blocks));
    for (const b of chosen) lab.guestWrite('big01', 2000, b * block, randomBytes(block));

    log('incremental backups ...');
    r.vbproxy!.incremental = await backup();
    r.restic!.incremental = wall(await resticBackup());
    r.borg!.incremental = wall(await borgBackup('incr'));
    log(
      `  incremental: vbproxy ${r.vbproxy!.incremental!.toFixed(2)} s, restic ${r.restic!.incremental!.toFixed(2)} s, borg ${r.borg!.incremental!.toFixed(2)} s`,
    );
    const points = await listRestorePoints(p, { vmMoref: vm });
    const inc = await getRestorePoint(p, points[0]!.id);
    const full = await getRestorePoint(p, points[1]!.id);

    log('restores ...');
    const out = join(work, 'restore');
    mkdirSync(out, { recursive: true });
    settle();
    const rid = randomUUID();
    await insertJob(p, {
      id: rid,
      type: 'restore',
      trigger: 'manual',
      queue: QUEUE_NAMES.restore,
      params: {},
    });
    await enqueueRestore(queues, {
      jobId: rid,
      restorePointId: inc.id,
      target: { kind: 'file', directory: out },
    });
    r.vbproxy!.restore = await waitJob(rid);
    const hash = async (f: string): Promise<string> => {
      const h = createHash('sha256');
      for await (const c of createReadStream(f, { highWaterMark: 4 << 20 })) h.update(c as Buffer);
      return h.digest('hex');
    };
    const want = await hash(image);
    const same = (await hash(join(out, 'big01-disk2000.img'))) === want;
    rmSync(out, { recursive: true, force: true });
    mkdirSync(out);
    r.restic!.restore = wall(
      await measure('restic', ['restore', 'latest', '--repo', resticRepo, '--target', out, '--quiet'], {
        env,
      }),
    );
    const resticSame = (await hash(join(out, image))) === want;
    rmSync(out, { recursive: true, force: true });
    mkdirSync(out);
    r.borg!.restore = wall(
      await measure('borg', ['extract', '--sparse', `${borgRepo}::incr`], { env, cwd: out }),
    );
    rmSync(out, { recursive: true, force: true });
    const rssKiB = Number(
      /VmHWM:\s+(\d+)/.exec(readFileSync(`/proc/${worker.pid}/status`, 'utf8'))?.[1] ?? 0,
    );
    const stored = {
      vbproxy: storedBytes(repoPath),
      restic: storedBytes(resticRepo),
      borg: storedBytes(borgRepo),
    };
    worker.kill('SIGTERM');
    for (const q of [queues.backup, queues.restore, queues.maintenance, queues.schedule]) {
      await q.obliterate({ force: true }).catch(() => undefined);
    }
    await queues.close();
    await lab.stop();

    const mib = sizeMb;
    const lines: string[] = [];
    lines.push(`## Lab path benchmark: ${mib} MiB disk, ${cpus().length} CPUs, ${new Date().toISOString()}`);
    lines.push('');
    lines.push('| tool | phase | wall s | MiB/s (disk size / wall) | vbproxy speed-up vs this tool |');
    lines.push('|---|---|---:|---:|---:|');
    for (const ph of ['full', 'incremental', 'restore']) {
      for (const t of ['vbproxy', 'restic', 'borg']) {
        const w = r[t]![ph]!;
        lines.push(
          `| ${t} | ${ph} | ${w.toFixed(2)} | ${(mib / w).toFixed(0)} | ${t === 'vbproxy' ? '' : `${(w / r.vbproxy![ph]!).toFixed(1)}x`} |`,
        );
      }
    }
    lines.push('');
    lines.push(
      `vbproxy read ${(full.disks[0]!.bytesRead / 2 ** 20).toFixed(0)} MiB for the full (allocated areas) and ${(inc.disks[0]!.bytesRead / 2 ** 20).toFixed(1)} MiB for the incremental (${inc.disks[0]!.mode}, ${inc.disks[0]!.transport}).`,
    );
    lines.push(
      `stored: vbproxy ${(stored.vbproxy / 2 ** 20).toFixed(0)} MiB, restic ${(stored.restic / 2 ** 20).toFixed(0)} MiB, borg ${(stored.borg / 2 ** 20).toFixed(0)} MiB; worker peak RSS ${(rssKiB / 1024).toFixed(0)} MiB.`,
    );
    lines.push(
      `restores byte for byte: vbproxy ${same ? 'yes' : 'NO'}, restic ${resticSame ? 'yes' : 'NO'}; total ${((Date.now() - t0) / 1000).toFixed(0)} s.`,
    );
    process.stdout.write(lines.join('\n') + '\n');
  } finally {
    worker?.kill('SIGKILL');
    await pool?.end().catch(() => undefined);
    const a = new pg.Client({ connectionString: PG_URL });
    await a.connect();
    await a.query(`DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`).finally(() => a.end());
    if (!values.keep) rmSync(work, { recursive: true, force: true });
  }
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    process.stderr.write(`bench failed: ${(err as Error).stack ?? String(err)}\n`);
    process.exit(1);
  },
);
