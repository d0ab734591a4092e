import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { SecretBox } from '../../src/catalog/secret-box.js';
import { openAttachments } from '../../src/catalog/hotadd-ledger.js';
import { getJob, insertJob, listJobEvents, type Job, type JobEvent } from '../../src/catalog/jobs.js';
import { insertPolicy, type Policy, type PolicyFields } from '../../src/catalog/policies.js';
import { insertVcenter } from '../../src/catalog/vcenters.js';
import type { ConfigInput } from '../../src/config/schema.js';
import {
  enqueueBackup,
  enqueueRestore,
  openQueues,
  QUEUE_NAMES,
  type Queues,
  type RestoreTarget,
} from '../../src/jobs/queues.js';
import type { LabDefinitionInput } from '../../src/lab/definition.js';
import { startLab, type RunningLab } from '../../src/lab/lab.js';
import { Repository } from '../../src/repository/repository.js';
import { VimClient } from '../../src/vsphere/client.js';
import { findVmByPath, getVm } from '../../src/vsphere/inventory.js';
import { listSnapshots } from '../../src/vsphere/snapshots.js';
import { createTestDatabase, type TestDatabase } from '../catalog/test-db.js';

const MAIN = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));
export const PASSPHRASE = 'e2e-repository-passphrase';
export const FAST_KDF = { opslimit: 1, memlimit: 8 * 1024 * 1024 };

/** A small lab: two VMs with CBT (one 2-disk), two proxies. Disks stay small so the suite is quick. */
export function smallLab(): LabDefinitionInput {
  return {
    taskDurationMs: 20,
    hosts: [{ name: 'esx1', datastores: ['ds1', 'ds2'] }],
    datastores: [{ name: 'ds1' }, { name: 'ds2' }],
    vms: [
      { name: 'web01', cbt: true, disks: [{ sizeMiB: 48, content: { seed: 11, template: 'debian' } }] },
      {
        name: 'db01',
        cbt: true,
        datastore: 'ds2',
        disks: [
          { sizeMiB: 32, content: { seed: 12 } },
          { sizeMiB: 16, content: { seed: 13 } },
        ],
      },
      // A powered-off VM to restore into.
      { name: 'spare01', powerState: 'poweredOff', disks: [{ sizeMiB: 32 }, { sizeMiB: 16 }] },
    ],
    proxies: [
      { name: 'vbproxy01', disks: [{ sizeMiB: 8 }] },
      { name: 'vbproxy02', disks: [{ sizeMiB: 8 }] },
    ],
  };
}

export interface WorkerProcess {
  readonly child: ChildProcess;
  readonly proxy: string;
  output(): string;
  /** Resolves with the exit code or signal. */
  readonly exited: Promise<number | string>;
  kill(signal?: NodeJS.Signals): Promise<number | string>;
}

export interface E2E {
  dir: string;
  lab: RunningLab;
  db: TestDatabase;
  queues: Queues;
  prefix: string;
  repoPath: string;
  vcenterId: string;
  client: VimClient;
  /** moref by VM name (VMs and proxies). */
  morefs: Map<string, string>;
  policy(fields?: Partial<PolicyFields>): Promise<Policy>;
  startWorker(
    proxy: string,
    opts?: { env?: Record<string, string>; hotaddDatastores?: string[]; metrics?: boolean },
  ): WorkerProcess;
  backup(policy: Policy, vm: string): Promise<string>;
  restore(restorePointId: string, target: RestoreTarget): Promise<string>;
  waitJob(jobId: string, timeoutMs?: number): Promise<Job>;
  events(jobId: string): Promise<JobEvent[]>;
  /** SHA-256 of a VM disk's current content (read through the lab). */
  diskHash(vm: string, diskKey: number): string;
  /** Disks attached to a proxy VM beyond its own. */
  hotAdded(proxy: string): Promise<string[]>;
  ourSnapshots(vm: string): Promise<string[]>;
  openLedger(proxy: string): Promise<number>;
  openRepo(): Promise<Repository>;
  close(): Promise<void>;
}

export function fileHash(path: string): string {
  return createHash('sha256').update(readFileSync(path)).digest('hex');
}

export async function startE2E(definition: LabDefinitionInput = smallLab()): Promise<E2E> {
  const dir = mkdtempSync(join(tmpdir(), 'vbproxy-e2e-'));
  const lab = await startLab({ dir: join(dir, 'lab'), definition });
  const db = await createTestDatabase();
  const prefix = `vbpe2e-${randomBytes(5).toString('hex')}`;
  const queues = openQueues({ host: '127.0.0.1', port: 6379 }, prefix);
  const repoPath = join(dir, 'repository');
  const repo = await Repository.init(repoPath, PASSPHRASE, { kdf: FAST_KDF });
  await repo.close();
  const keyHex = SecretBox.generateKeyHex();
  writeFileSync(join(dir, 'catalog.key'), `${keyHex}\n`, { mode: 0o600 });
  writeFileSync(join(dir, 'repo.pass'), `${PASSPHRASE}\n`, { mode: 0o600 });
  writeFileSync(join(dir, 'tokens.json'), '[]\n', { mode: 0o600 });
  const box = SecretBox.fromKeyFile(Buffer.from(keyHex), join(dir, 'catalog.key'));
  const vc = await insertVcenter(db.pool, box, {
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
  const morefs = new Map<string, string>();
  for (const v of lab.world.vms) morefs.set(v.name, (await findVmByPath(client, `dc1/vm/${v.name}`)).value);
  const workers: WorkerProcess[] = [];
  const baseConf = readFileSync(lab.vddkConf, 'utf8');

  const e: E2E = {
    dir,
    lab,
    db,
    queues,
    prefix,
    repoPath,
    vcenterId: vc.id,
    client,
    morefs,
    async policy(fields = {}) {
      return insertPolicy(db.pool, {
        name: `p-${randomBytes(3).toString('hex')}`,
        vcenterId: vc.id,
        vmSelection: { morefs: [], folders: [], namePatterns: [] },
        diskSelection: { mode: 'all', diskKeys: [] },
        consistency: 'crash',
        consistencyFallback: 'crash',
        transports: ['hotadd', 'nbdssl'],
        schedule: null,
        retention: {},
        repository: repoPath,
        enabled: true,
        ...fields,
      });
    },
    startWorker(proxy, opts = {}) {
      const pdir = join(dir, 'proxies', `${proxy}-${workers.length}`);
      mkdirSync(pdir, { recursive: true });
      const lines = [baseConf.trimEnd(), `vixDiskLib.lab.proxyVm = "${morefs.get(proxy)!}"`];
      if (opts.hotaddDatastores)
        lines.push(`vixDiskLib.lab.hotaddDatastores = "${opts.hotaddDatastores.join(',')}"`);
      writeFileSync(join(pdir, 'vddk.conf'), lines.join('\n') + '\n');
      const config: ConfigInput = {
        proxy: { name: proxy, vmMoref: morefs.get(proxy)! },
        api: { listen: '127.0.0.1', port: 0, plainHttp: true, tokensFile: join(dir, 'tokens.json') },
        database: { url: db.url },
        redis: { url: 'redis://127.0.0.1:6379', prefix },
        repository: { path: repoPath, passphraseFile: join(dir, 'repo.pass') },
        catalog: { secretKeyFile: join(dir, 'catalog.key') },
        vddk: {
          libDir: fileURLToPath(new URL('../../../native', import.meta.url)),
          configFile: join(pdir, 'vddk.conf'),
        },
        worker: { diskConcurrency: 2 },
        metrics: { listen: '127.0.0.1', port: 0 },
        logLevel: 'info',
      };
      const configPath = join(pdir, 'config.json');
      writeFileSync(configPath, JSON.stringify(config, null, 2));
      const child = spawn(
        process.execPath,
        [
          MAIN,
          'worker',
          '--config',
          configPath,
          '--lock-duration-ms',
          '2500',
          '--stalled-interval-ms',
          '1000',
          '--retry-delay-ms',
          '300',
          ...(opts.metrics ? [] : ['--no-metrics']),
        ],
        {
          env: { ...process.env, VBPROXY_LOG_LEVEL: 'info', ...(opts.env ?? {}) },
          stdio: ['ignore', 'pipe', 'pipe'],
        },
      );
      let out = '';
      child.stdout!.on('data', (c: Buffer) => (out += c.toString()));
      child.stderr!.on('data', (c: Buffer) => (out += c.toString()));
      const exited = new Promise<number | string>((resolve) =>
        child.once('exit', (code, signal) => resolve(signal ?? code ?? -1)),
      );
      const w: WorkerProcess = {
        child,
        proxy,
        output: () => out,
        exited,
        async kill(signal = 'SIGTERM') {
          if (child.exitCode === null && child.signalCode === null) child.kill(signal);
          return exited;
        },
      };
      workers.push(w);
      return w;
    },
    async backup(policy, vm) {
      const jobId = randomUUID();
      const moref = morefs.get(vm)!;
      await insertJob(db.pool, {
        id: jobId,
        type: 'backup',
        trigger: 'manual',
        queue: QUEUE_NAMES.backup,
        policyId: policy.id,
        vcenterId: vc.id,
        vmMoref: moref,
        vmName: vm,
      });
      const r = await enqueueBackup(queues, {
        jobId,
        policyId: policy.id,
        vcenterId: vc.id,
        vmMoref: moref,
        trigger: 'manual',
      });
      if (!r.queued) throw new Error(`backup of ${vm} not queued: ${r.existingJobId} holds it`);
      return jobId;
    },
    async restore(restorePointId, target) {
      const jobId = randomUUID();
      await insertJob(db.pool, {
        id: jobId,
        type: 'restore',
        trigger: 'manual',
        queue: QUEUE_NAMES.restore,
        params: { restorePointId, target },
      });
      await enqueueRestore(queues, { jobId, restorePointId, target });
      return jobId;
    },
    async waitJob(jobId, timeoutMs = 60_000) {
      const end = Date.now() + timeoutMs;
      for (;;) {
        const j = await getJob(db.pool, jobId);
        if (j.state === 'succeeded' || j.state === 'failed' || j.state === 'cancelled') return j;
        if (Date.now() > end) {
          const ev = await listJobEvents(db.pool, jobId);
          throw new Error(
            `job ${jobId} still ${j.state} after ${timeoutMs} ms; events: ${ev.map((x) => x.message).join(' | ')}\n` +
              workers.map((w) => `--- ${w.proxy}\n${w.output().slice(-3000)}`).join('\n'),
          );
        }
        await sleep(150);
      }
    },
    events: (jobId) => listJobEvents(db.pool, jobId),
    diskHash(vm, diskKey) {
      const v = lab.world.vmByRefOrName(vm);
      const d = v.disks.find((x) => x.key === diskKey)!;
      const h = createHash('sha256');
      const step = 4 * 1024 * 1024;
      for (let o = 0; o < d.capacity; o += step)
        h.update(lab.world.readDisk(vm, diskKey, o, Math.min(step, d.capacity - o)));
      return h.digest('hex');
    },
    async hotAdded(proxy) {
      const info = await getVm(client, {
        _type: 'ManagedObjectReference',
        type: 'VirtualMachine',
        value: morefs.get(proxy)!,
      });
      return info.disks.filter((d) => d.controllerKey === 1001).map((d) => d.fileName);
    },
    async ourSnapshots(vm) {
      const s = await listSnapshots(client, {
        _type: 'ManagedObjectReference',
        type: 'VirtualMachine',
        value: morefs.get(vm)!,
      });
      return s.filter((n) => n.tag !== undefined).map((n) => n.ref.value);
    },
    async openLedger(proxy) {
      return (await openAttachments(db.pool, morefs.get(proxy)!)).length;
    },
    openRepo: () => Repository.open(repoPath, PASSPHRASE),
    async close() {
      await Promise.all(workers.map((w) => w.kill('SIGKILL')));
      await client.close().catch(() => undefined);
      for (const q of [queues.backup, queues.restore, queues.maintenance, queues.schedule]) {
        await q.obliterate({ force: true }).catch(() => undefined);
      }
      await queues.close();
      await lab.stop();
      await db.drop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
  return e;
}
