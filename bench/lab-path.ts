/**
 * `npm run bench [-- --size-mb 2048 --seed 1 --keep]`
 *
 * The lab path end to end: a lab VM with one VM-like disk (the lab's sample-image generator),
 * backed up by a real `vbproxy worker` process through the lab vSphere API (snapshot, CBT), the
 * lab VDDK (hot-add) and the repository pipeline, against restic and borg on the same image file
 * (the disk's flat extent). Phases: full; incremental after 2% of the 64 KiB blocks changed (guest
 * writes, so CBT sees them; restic and borg re-read the image); restore to a file. vbproxy's time
 * is the job's wall time from enqueue to success (snapshot, pre-flight, read, commit, snapshot
 * removal included); restic and borg are whole processes under GNU time. The restore job fsyncs
 * the image before it succeeds and restic's and borg's restores do not, so the table also has a
 * `durable restore` row: theirs plus an fsync of what they restored. Prints a markdown table with
 * the ratios. Needs the local PostgreSQL and Redis (as the demo).
 */
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, mkdirSync, rmSync } from 'node:fs';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import { getRestorePoint, listRestorePoints } from '../src/catalog/restore-points.js';
import { DEFAULT_PG_ADMIN_URL, startLabEnvironment, type LabEnvironment } from '../src/lab/environment.js';
import {
  ensureDebian,
  fsyncTime,
  measure,
  quiesce,
  run,
  settle,
  storedBytes,
  type Measured,
} from './measure.js';

const { values } = parseArgs({
  options: {
    'size-mb': { type: 'string', default: '2048' },
    seed: { type: 'string', default: '1' },
    keep: { type: 'boolean', default: false },
  },
});
const sizeMb = Number(values['size-mb']);
const seed = Number(values.seed);
const PG_URL = process.env.VBPROXY_DEMO_PG_URL ?? DEFAULT_PG_ADMIN_URL;

ensureDebian({ restic: 'restic', borg: 'borgbackup' });

function log(s: string): void {
  process.stderr.write(`${s}\n`);
}

async function main(): Promise<void> {
  let lab: LabEnvironment | undefined;
  const t0 = Date.now();
  try {
    log(`creating the lab VM (${sizeMb} MiB disk) ...`);
    const e = await startLabEnvironment({
      definition: {
        taskDurationMs: 50,
        hosts: [{ name: 'esx1', datastores: ['ds1'] }],
        datastores: [{ name: 'ds1' }],
        vms: [
          { name: 'big01', cbt: true, disks: [{ sizeMiB: sizeMb, content: { seed, template: 'debian' } }] },
        ],
        proxies: [{ name: 'vbproxy01', disks: [{ sizeMiB: 16 }] }],
      },
      dirPrefix: 'vbproxy-labbench-',
      pgAdminUrl: PG_URL,
      databasePrefix: 'vbproxy_bench',
      queuePrefix: 'vbproxy-bench',
      keep: values.keep,
    });
    lab = e;
    const work = e.dir;
    const image = join(e.lab.root, 'datastores', 'ds1', 'big01', 'big01-flat.vmdk');
    const passphrase = e.passphrase;
    const repoPath = e.repoPath;
    const vm = e.moref('big01');
    const policy = await e.policy({
      name: 'bench',
      vmSelection: { morefs: [vm], folders: [], namePatterns: [] },
    });
    const worker = e.startWorker('vbproxy01', { logLevel: 'warn', inheritStderr: true });
    const waitJob = async (id: string): Promise<number> => {
      const start = Date.now();
      const j = await e.waitJob(id, { pollMs: 20, timeoutMs: Infinity });
      if (j.state !== 'succeeded') throw new Error(`job ${id} ${j.state}: ${j.errorMessage}`);
      return (Date.now() - start) / 1000;
    };
    const backup = async (): Promise<number> => {
      settle();
      const id = await e.backup(policy, 'big01');
      const secs = await waitJob(id);
      const ev = await e.events(id);
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
    while ((await e.queues.backup.getWorkers()).length === 0) await sleep(100);
    await sleep(2000);
    // Writing the lab's 2 GiB disk (and any earlier run's deletes) must not slow the first tool.
    await quiesce();
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
    for (const b of chosen) e.lab.guestWrite('big01', 2000, b * block, randomBytes(block));

    log('incremental backups ...');
    r.vbproxy!.incremental = await backup();
    r.restic!.incremental = wall(await resticBackup());
    r.borg!.incremental = wall(await borgBackup('incr'));
    log(
      `  incremental: vbproxy ${r.vbproxy!.incremental!.toFixed(2)} s, restic ${r.restic!.incremental!.toFixed(2)} s, borg ${r.borg!.incremental!.toFixed(2)} s`,
    );
    const points = await listRestorePoints(e.db.pool, { vmMoref: vm });
    const inc = await getRestorePoint(e.db.pool, points[0]!.id);
    const full = await getRestorePoint(e.db.pool, points[1]!.id);

    log('restores ...');
    const out = join(work, 'restore');
    mkdirSync(out, { recursive: true });
    settle();
    const rid = await e.restore(inc.id, { kind: 'file', directory: out });
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
    // restic's restore leaves the image in the page cache; vbproxy's job fsyncs it before it succeeds.
    r.restic!.durableRestore = r.restic!.restore + wall(await fsyncTime(join(out, image)));
    const resticSame = (await hash(join(out, image))) === want;
    rmSync(out, { recursive: true, force: true });
    mkdirSync(out);
    r.borg!.restore = wall(
      await measure('borg', ['extract', '--sparse', `${borgRepo}::incr`], { env, cwd: out }),
    );
    r.borg!.durableRestore = r.borg!.restore + wall(await fsyncTime(join(out, image.replace(/^\//, ''))));
    r.vbproxy!.durableRestore = r.vbproxy!.restore;
    rmSync(out, { recursive: true, force: true });
    const rssKiB = worker.peakRssKiB();
    const stored = {
      vbproxy: storedBytes(repoPath),
      restic: storedBytes(resticRepo),
      borg: storedBytes(borgRepo),
    };
    await worker.kill('SIGTERM');
    await e.close();

    const mib = sizeMb;
    const lines: string[] = [];
    lines.push(`## Lab path benchmark: ${mib} MiB disk, ${cpus().length} CPUs, ${new Date().toISOString()}`);
    lines.push('');
    lines.push('| tool | phase | wall s | MiB/s (disk size / wall) | vbproxy speed-up vs this tool |');
    lines.push('|---|---|---:|---:|---:|');
    for (const ph of ['full', 'incremental', 'restore', 'durableRestore']) {
      for (const t of ['vbproxy', 'restic', 'borg']) {
        const w = r[t]![ph]!;
        lines.push(
          `| ${t} | ${ph === 'durableRestore' ? 'durable restore' : ph} | ${w.toFixed(2)} | ${(mib / w).toFixed(0)} | ${t === 'vbproxy' ? '' : `${(w / r.vbproxy![ph]!).toFixed(1)}x`} |`,
        );
      }
    }
    lines.push('');
    lines.push(
      "durable restore: the restore until the image is on disk. vbproxy's restore job fsyncs the image before it succeeds; restic's and borg's restores do not, so theirs is the restore plus an fsync of the restored image (`sync FILE`, right after).",
    );
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
    await lab?.close();
  }
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    process.stderr.write(`bench failed: ${(err as Error).stack ?? String(err)}\n`);
    process.exit(1);
  },
);
