/**
 * A whole vbproxy installation on the lab, for the demo, the end-to-end tests and the lab-path
 * benchmark: a started lab vSphere, a fresh catalog database (created, migrated, dropped), a
 * repository, the vCenter row with its encrypted credentials, the BullMQ queues under a key prefix
 * of their own, proxy configuration files, and `vbproxy worker` child processes. close() removes
 * all of it (the working directory too, unless `keep`).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { Redis } from 'ioredis';
import pg from 'pg';
import { migrateCatalog, openCatalog, redactUrl, type Pool } from '../catalog/db.js';
import { getJob, listJobEvents, type Job, type JobEvent } from '../catalog/jobs.js';
import { submitBackup, submitMaintenance, submitRestore } from '../jobs/submit.js';
import { insertPolicy, type Policy, type PolicyFields } from '../catalog/policies.js';
import { SecretBox } from '../catalog/secret-box.js';
import { insertVcenter } from '../catalog/vcenters.js';
import type { ConfigInput } from '../config/schema.js';
import { VbproxyError } from '../errors.js';
import { openQueues, type MaintenanceOperation, type Queues, type RestoreTarget } from '../jobs/queues.js';
import { Repository } from '../repository/repository.js';
import { VimClient } from '../vsphere/client.js';
import { findVmByPath, getVm } from '../vsphere/inventory.js';
import { listSnapshots, type SnapshotNode } from '../vsphere/snapshots.js';
import type { LabDefinitionInput } from './definition.js';
import { startLab, type RunningLab } from './lab.js';

const MAIN = fileURLToPath(new URL('../cli/main.js', import.meta.url));
const NATIVE = fileURLToPath(new URL('../../../native', import.meta.url));
export const DEFAULT_PG_ADMIN_URL = 'postgres://postgres@127.0.0.1:5432/postgres';
export const DEFAULT_REDIS_URL = 'redis://127.0.0.1:6379';

/** A lab environment could not be set up, or a job did not finish in time. */
export class LabEnvironmentError extends VbproxyError {}

/** A catalog database of its own: `<prefix>_<random>`, migrated unless asked not to. */
export interface CatalogDatabase {
  readonly url: string;
  readonly pool: Pool;
  /** Closes the pool and drops the database. */
  drop(): Promise<void>;
}

export async function createCatalogDatabase(
  options: { adminUrl?: string; namePrefix?: string; migrate?: boolean; hint?: string } = {},
): Promise<CatalogDatabase> {
  const adminUrl = options.adminUrl ?? DEFAULT_PG_ADMIN_URL;
  const name = `${options.namePrefix ?? 'vbproxy_lab'}_${randomBytes(6).toString('hex')}`;
  const admin = new pg.Client({ connectionString: adminUrl, connectionTimeoutMillis: 3000 });
  try {
    await admin.connect();
  } catch (err) {
    throw new LabEnvironmentError(
      'LAB_ENV_POSTGRES',
      `cannot reach PostgreSQL at ${redactUrl(adminUrl)} (${(err as Error).message}). ${options.hint ?? 'Start it.'}`,
      { cause: err },
    );
  }
  try {
    await admin.query(`CREATE DATABASE ${name}`);
  } finally {
    await admin.end();
  }
  const u = new URL(adminUrl);
  u.pathname = `/${name}`;
  const url = u.toString();
  const dropDatabase = async (): Promise<void> => {
    const a = new pg.Client({ connectionString: adminUrl });
    await a.connect();
    try {
      await a.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
    } finally {
      await a.end();
    }
  };
  let pool: Pool;
  try {
    pool = await openCatalog(url, { max: 4 });
    if (options.migrate !== false) await migrateCatalog(pool);
  } catch (err) {
    await dropDatabase().catch(() => undefined);
    throw err;
  }
  return {
    url,
    pool,
    async drop() {
      await pool.end().catch(() => undefined);
      await dropDatabase();
    },
  };
}

async function checkRedis(url: string, hint: string | undefined): Promise<void> {
  const r = new Redis(url, {
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
    throw new LabEnvironmentError(
      'LAB_ENV_REDIS',
      `cannot reach Redis at ${redactUrl(url)} (${(err as Error).message}). ${hint ?? 'Start it.'}`,
      { cause: err },
    );
  } finally {
    r.disconnect();
  }
}

export interface LabEnvironmentOptions {
  /** The lab's definition; default: the built-in sample lab. */
  readonly definition?: LabDefinitionInput;
  /** Prefix of the temporary working directory (default `vbproxy-lab-`). */
  readonly dirPrefix?: string;
  /** A PostgreSQL URL of a user that may CREATE DATABASE (default: the local server). */
  readonly pgAdminUrl?: string;
  /** Prefix of the catalog database's name (default `vbproxy_lab`). */
  readonly databasePrefix?: string;
  readonly redisUrl?: string;
  /** Prefix of the BullMQ key prefix; a random part is appended (default `vbproxy-lab`). */
  readonly queuePrefix?: string;
  /** What to tell the user when PostgreSQL or Redis cannot be reached (after the URL and the error). */
  readonly hints?: { readonly postgres?: string; readonly redis?: string };
  /** The repository's passphrase (default: random) and Argon2id cost (default: the product's). */
  readonly repository?: {
    readonly passphrase?: string;
    readonly kdf?: { opslimit: number; memlimit: number };
  };
  /** Keep the working directory at close(). */
  readonly keep?: boolean;
}

/** What a proxy's configuration file says beyond the environment's shared parts. */
export interface ProxyConfigOptions {
  /** Datastores the proxy's host sees for hot-add (`vixDiskLib.lab.hotaddDatastores`); default all. */
  readonly hotaddDatastores?: readonly string[];
  /** Register with this manager (the enrollment token goes to a 0600 file). */
  readonly manager?: { readonly url: string; readonly enrollmentToken: string };
  readonly logLevel?: 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'fatal';
  /** `worker.diskConcurrency` (default 2). */
  readonly diskConcurrency?: number;
}

export interface StartWorkerOptions extends ProxyConfigOptions {
  /** An existing configuration file (from writeProxyConfig); otherwise a new one is written. */
  readonly configPath?: string;
  /** Extra environment of the child. */
  readonly env?: Readonly<Record<string, string>>;
  /** Serve /metrics (default: `--no-metrics`). */
  readonly metrics?: boolean;
  readonly lockDurationMs?: number;
  readonly stalledIntervalMs?: number;
  readonly retryDelayMs?: number;
  /** The child's stderr goes to ours instead of being kept for output(). */
  readonly inheritStderr?: boolean;
}

export interface WorkerProcess {
  readonly child: ChildProcess;
  readonly proxy: string;
  readonly configPath: string;
  /** What the child wrote (stdout and stderr), unless its stderr is inherited. */
  output(): string;
  /** Resolves with the exit code or signal. */
  readonly exited: Promise<number | string>;
  /** Sends `signal` (default SIGTERM) unless it has exited, and waits for the exit. */
  kill(signal?: NodeJS.Signals): Promise<number | string>;
  /** The child's peak resident set size (VmHWM) in KiB, while it runs. */
  peakRssKiB(): number;
}

export interface LabEnvironment {
  readonly dir: string;
  readonly lab: RunningLab;
  readonly db: CatalogDatabase;
  readonly queues: Queues;
  /** The BullMQ key prefix. */
  readonly prefix: string;
  readonly redisUrl: string;
  readonly repoPath: string;
  readonly passphrase: string;
  readonly vcenterId: string;
  /** A vim25 session on the lab, for what the callers check in vSphere. */
  readonly client: VimClient;
  /** moref by VM name (VMs and proxies). */
  readonly morefs: ReadonlyMap<string, string>;
  moref(vm: string): string;
  /** Writes `proxies/<proxy>-<n>/config.json` (and its vddk.conf); returns its path. */
  writeProxyConfig(proxy: string, options?: ProxyConfigOptions): string;
  /** Starts `vbproxy worker` for `proxy` as a child process. */
  startWorker(proxy: string, options?: StartWorkerOptions): WorkerProcess;
  /** A policy on the lab vCenter and the repository; `fields` override the defaults. */
  policy(fields?: Partial<PolicyFields>): Promise<Policy>;
  /** Catalog row and BullMQ job of a manual backup of `vm`; the job id. */
  backup(policy: Policy, vm: string): Promise<string>;
  restore(restorePointId: string, target: RestoreTarget): Promise<string>;
  /** Catalog row and BullMQ job of a maintenance operation on the repository; the job id. */
  maintenance(operation: MaintenanceOperation, options?: { readData?: boolean }): Promise<string>;
  /** Waits until the job has ended (succeeded, failed or cancelled); throws after `timeoutMs`. */
  waitJob(jobId: string, options?: { timeoutMs?: number; pollMs?: number }): Promise<Job>;
  events(jobId: string): Promise<JobEvent[]>;
  /** SHA-256 of a VM disk's current content (read through the lab). */
  diskHash(vm: string, diskKey: number): string;
  /** Disk files attached to a proxy VM beyond its own. */
  hotAdded(proxy: string): Promise<string[]>;
  /** This product's snapshots (tagged) of a VM. */
  ourSnapshots(vm: string): Promise<SnapshotNode[]>;
  openRepo(): Promise<Repository>;
  /** Kills the workers still running (SIGKILL), removes queues, lab, database and files. Idempotent. */
  close(): Promise<void>;
}

/** Sets up a lab environment; on failure, removes what it had set up. */
export async function startLabEnvironment(options: LabEnvironmentOptions = {}): Promise<LabEnvironment> {
  const redisUrl = options.redisUrl ?? DEFAULT_REDIS_URL;
  await checkRedis(redisUrl, options.hints?.redis);
  const db = await createCatalogDatabase({
    adminUrl: options.pgAdminUrl,
    namePrefix: options.databasePrefix,
    hint: options.hints?.postgres,
  });
  const dir = mkdtempSync(join(tmpdir(), options.dirPrefix ?? 'vbproxy-lab-'));
  const undo: Array<() => Promise<void>> = [
    () => db.drop(),
    async () => {
      if (!options.keep) rmSync(dir, { recursive: true, force: true });
    },
  ];
  const unwind = async (): Promise<void> => {
    for (const u of undo.splice(0).reverse()) await u().catch(() => undefined);
  };
  try {
    const lab = await startLab({
      dir: join(dir, 'lab'),
      ...(options.definition ? { definition: options.definition } : {}),
    });
    undo.push(() => lab.stop());
    const passphrase = options.repository?.passphrase ?? randomBytes(18).toString('base64url');
    const repoPath = join(dir, 'repository');
    await (
      await Repository.init(
        repoPath,
        passphrase,
        options.repository?.kdf ? { kdf: options.repository.kdf } : {},
      )
    ).close();
    const secret = (name: string, value: string): string => {
      const p = join(dir, name);
      writeFileSync(p, `${value}\n`, { mode: 0o600 });
      return p;
    };
    const keyHex = SecretBox.generateKeyHex();
    const keyFile = secret('catalog.key', keyHex);
    const passFile = secret('repository.pass', passphrase);
    const tokensFile = secret('tokens.json', '[]');
    const vc = await insertVcenter(db.pool, SecretBox.fromKeyFile(Buffer.from(keyHex), keyFile), {
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
    undo.push(() => client.close());
    const morefs = new Map<string, string>();
    for (const v of lab.world.vms) morefs.set(v.name, (await findVmByPath(client, `dc1/vm/${v.name}`)).value);
    const prefix = `${options.queuePrefix ?? 'vbproxy-lab'}-${randomBytes(5).toString('hex')}`;
    const ru = new URL(redisUrl);
    const queues = openQueues({ host: ru.hostname, port: Number(ru.port || 6379) }, prefix);
    undo.push(async () => {
      for (const q of [queues.backup, queues.restore, queues.maintenance, queues.schedule])
        await q.obliterate({ force: true }).catch(() => undefined);
      await queues.close();
    });
    const workers: WorkerProcess[] = [];
    undo.push(async () => {
      await Promise.all(workers.map((w) => w.kill('SIGKILL')));
    });
    const baseConf = readFileSync(lab.vddkConf, 'utf8');
    let configs = 0;
    const moref = (vm: string): string => {
      const m = morefs.get(vm);
      if (m === undefined) throw new LabEnvironmentError('LAB_ENV_VM', `the lab has no VM named "${vm}"`);
      return m;
    };
    const vmRef = (vm: string) => ({
      _type: 'ManagedObjectReference' as const,
      type: 'VirtualMachine',
      value: moref(vm),
    });

    const env: LabEnvironment = {
      dir,
      lab,
      db,
      queues,
      prefix,
      redisUrl,
      repoPath,
      passphrase,
      vcenterId: vc.id,
      client,
      morefs,
      moref,
      writeProxyConfig(proxy, o = {}) {
        const pdir = join(dir, 'proxies', `${proxy}-${configs++}`);
        mkdirSync(pdir, { recursive: true });
        const lines = [baseConf.trimEnd(), `vixDiskLib.lab.proxyVm = "${moref(proxy)}"`];
        if (o.hotaddDatastores)
          lines.push(`vixDiskLib.lab.hotaddDatastores = "${o.hotaddDatastores.join(',')}"`);
        writeFileSync(join(pdir, 'vddk.conf'), lines.join('\n') + '\n');
        let manager: ConfigInput['manager'];
        if (o.manager) {
          const tokenFile = join(pdir, 'enrollment.token');
          writeFileSync(tokenFile, `${o.manager.enrollmentToken}\n`, { mode: 0o600 });
          manager = {
            url: o.manager.url,
            enrollmentTokenFile: tokenFile,
            credentialsFile: join(pdir, 'manager-credentials.json'),
          };
        }
        const config: ConfigInput = {
          proxy: { name: proxy, vmMoref: moref(proxy) },
          ...(manager ? { manager } : {}),
          api: { listen: '127.0.0.1', port: 0, plainHttp: true, tokensFile },
          database: { url: db.url },
          redis: { url: redisUrl, prefix },
          repository: { path: repoPath, passphraseFile: passFile },
          catalog: { secretKeyFile: keyFile },
          vddk: { libDir: NATIVE, configFile: join(pdir, 'vddk.conf') },
          worker: { diskConcurrency: o.diskConcurrency ?? 2 },
          metrics: { listen: '127.0.0.1', port: 0 },
          logLevel: o.logLevel ?? 'info',
        };
        const configPath = join(pdir, 'config.json');
        writeFileSync(configPath, JSON.stringify(config, null, 2));
        return configPath;
      },
      startWorker(proxy, o = {}) {
        const configPath = o.configPath ?? env.writeProxyConfig(proxy, o);
        const args = [MAIN, 'worker', '--config', configPath];
        if (o.lockDurationMs !== undefined) args.push('--lock-duration-ms', String(o.lockDurationMs));
        if (o.stalledIntervalMs !== undefined)
          args.push('--stalled-interval-ms', String(o.stalledIntervalMs));
        if (o.retryDelayMs !== undefined) args.push('--retry-delay-ms', String(o.retryDelayMs));
        if (!o.metrics) args.push('--no-metrics');
        const child = spawn(process.execPath, args, {
          env: { ...process.env, ...(o.env ?? {}) },
          stdio: ['ignore', 'pipe', o.inheritStderr ? 'inherit' : 'pipe'],
        });
        let out = '';
        child.stdout!.on('data', (c: Buffer) => (out += c.toString()));
        child.stderr?.on('data', (c: Buffer) => (out += c.toString()));
        const exited = new Promise<number | string>((resolve) =>
          child.once('exit', (code, signal) => resolve(signal ?? code ?? -1)),
        );
        const w: WorkerProcess = {
          child,
          proxy,
          configPath,
          output: () => out,
          exited,
          async kill(signal = 'SIGTERM') {
            if (child.exitCode === null && child.signalCode === null) child.kill(signal);
            return exited;
          },
          peakRssKiB() {
            const status = readFileSync(`/proc/${child.pid}/status`, 'utf8');
            return Number(/VmHWM:\s+(\d+)/.exec(status)?.[1] ?? 0);
          },
        };
        workers.push(w);
        return w;
      },
      policy(fields = {}) {
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
      async backup(policy, vm) {
        const r = await submitBackup(db.pool, queues, {
          policyId: policy.id,
          vcenterId: vc.id,
          vm: { moref: moref(vm), name: vm },
          trigger: 'manual',
        });
        if (!r.queued)
          throw new LabEnvironmentError(
            'LAB_ENV_QUEUE',
            `backup of ${vm} not queued: ${r.existingJobId} holds it`,
          );
        return r.jobId;
      },
      restore: (restorePointId, target) =>
        submitRestore(db.pool, queues, { restorePointId, target, trigger: 'manual' }),
      maintenance: (operation, o = {}) =>
        submitMaintenance(db.pool, queues, {
          operation,
          repository: repoPath,
          readData: o.readData,
          trigger: 'manual',
        }),
      async waitJob(jobId, o = {}) {
        const timeoutMs = o.timeoutMs ?? 60_000;
        const end = Date.now() + timeoutMs;
        for (;;) {
          const j = await getJob(db.pool, jobId);
          if (j.state === 'succeeded' || j.state === 'failed' || j.state === 'cancelled') return j;
          if (Date.now() > end) {
            const ev = await listJobEvents(db.pool, jobId);
            throw new LabEnvironmentError(
              'LAB_ENV_JOB_TIMEOUT',
              `job ${jobId} still ${j.state} after ${timeoutMs} ms; events: ${ev.map((x) => x.message).join(' | ')}\n` +
                workers
                  .map((w) => `--- worker of ${w.proxy}, log tail:\n${w.output().slice(-3000)}`)
                  .join('\n'),
            );
          }
          await sleep(o.pollMs ?? 150);
        }
      },
      events: (jobId) => listJobEvents(db.pool, jobId),
      diskHash(vm, diskKey) {
        const d = lab.world.vmByRefOrName(vm).disks.find((x) => x.key === diskKey);
        if (!d) throw new LabEnvironmentError('LAB_ENV_VM', `VM ${vm} has no disk ${diskKey}`);
        const h = createHash('sha256');
        const step = 4 * 1024 * 1024;
        for (let o = 0; o < d.capacity; o += step)
          h.update(lab.world.readDisk(vm, diskKey, o, Math.min(step, d.capacity - o)));
        return h.digest('hex');
      },
      async hotAdded(proxy) {
        const info = await getVm(client, vmRef(proxy));
        return info.disks.filter((d) => d.controllerKey === 1001).map((d) => d.fileName);
      },
      async ourSnapshots(vm) {
        return (await listSnapshots(client, vmRef(vm))).filter((n) => n.tag !== undefined);
      },
      openRepo: () => Repository.open(repoPath, passphrase),
      close: unwind,
    };
    return env;
  } catch (err) {
    await unwind();
    throw err;
  }
}
