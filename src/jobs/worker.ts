import {
  DelayedError,
  UnrecoverableError,
  Worker,
  type ConnectionOptions,
  type Job as QueueJob,
} from 'bullmq';
import type { Pool } from '../catalog/db.js';
import { NotFoundError } from '../catalog/errors.js';
import {
  addJobEvent,
  finishJob,
  getJob,
  markJobRunning,
  updateJobProgress,
  type JobType,
} from '../catalog/jobs.js';
import { getPolicy } from '../catalog/policies.js';
import { touchProxy } from '../catalog/proxies.js';
import type { SecretBox } from '../catalog/secret-box.js';
import { describeError, isTransient, VbproxyError } from '../errors.js';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics/metrics.js';
import type { Vddk } from '../vddk/index.js';
import { runBackupJob, type JobControl } from './backup-job.js';
import { JobCancelledError } from './errors.js';
import { runMaintenanceJob } from './maintenance-job.js';
import { resolvePolicyVms } from './policy-vms.js';
import {
  openQueues,
  queueCounts,
  QUEUE_NAMES,
  type BackupJobData,
  type MaintenanceJobData,
  type Queues,
  type RestoreJobData,
  type ScheduledRunJobData,
} from './queues.js';
import { runRestoreJob } from './restore-job.js';
import { shouldPassOn } from './routing.js';
import { submitBackup } from './submit.js';
import { RepositoryCache, type JobRuntime, type ProxyIdentity } from './runtime.js';
import { DiskSlots } from './semaphore.js';

export interface WorkerOptions {
  readonly connection: ConnectionOptions;
  readonly prefix: string;
  readonly pool: Pool;
  readonly metrics: Metrics;
  readonly logger: Logger;
  readonly secretBox: SecretBox;
  readonly proxy: ProxyIdentity;
  readonly vddk: Vddk;
  readonly repositoryPassphrase: string;
  /** Disks read or written at once by this proxy, across all its jobs. */
  readonly diskConcurrency: number;
  /** Backup jobs this worker runs at once (default: diskConcurrency). */
  readonly backupConcurrency?: number;
  /** BullMQ lock duration: how long a dead worker's job stays locked before another takes it (default 30 s). */
  readonly lockDurationMs?: number;
  /** How often stalled jobs are looked for (default 30 s). */
  readonly stalledIntervalMs?: number;
  readonly readRetries?: number;
  readonly retryDelayMs?: number;
  readonly quiesceAttempts?: number;
  /** How long a backup this proxy cannot hot-add waits for a proxy that can (default 3 s). */
  readonly passOnDelayMs?: number;
  /** How often a running job checks for a cancellation request (default 1 s). */
  readonly cancelPollMs?: number;
}

export interface RunningWorkers {
  readonly runtime: JobRuntime;
  readonly workers: readonly Worker[];
  /** Stops taking jobs, waits for the running ones (or, with force, abandons them), closes everything. */
  close(force?: boolean): Promise<void>;
}

const MAINTENANCE_TYPE: Record<MaintenanceJobData['operation'], JobType> = {
  verify: 'verify',
  prune: 'prune',
  gc: 'gc',
  'catalog-rebuild': 'catalog-rebuild',
};

/**
 * Starts this proxy's BullMQ workers on the backup, restore, maintenance and schedule queues. They
 * share Redis and PostgreSQL with every other proxy's workers: any of them may take any job, and a
 * job whose worker dies is taken over by another once its lock expires (stalled-job recovery).
 */
export function startWorkers(opts: WorkerOptions): RunningWorkers {
  const queues = openQueues(opts.connection, opts.prefix);
  const rt: JobRuntime = {
    pool: opts.pool,
    queues,
    metrics: opts.metrics,
    logger: opts.logger,
    secretBox: opts.secretBox,
    proxy: opts.proxy,
    vddk: opts.vddk,
    repositories: new RepositoryCache(opts.repositoryPassphrase),
    diskSlots: new DiskSlots(opts.diskConcurrency),
    readRetries: opts.readRetries ?? 5,
    retryDelayMs: opts.retryDelayMs ?? 2000,
    quiesceAttempts: opts.quiesceAttempts ?? 3,
  };
  opts.metrics.setQueueSource(() => queueCounts(queues));
  const common = {
    connection: opts.connection,
    prefix: opts.prefix,
    lockDuration: opts.lockDurationMs ?? 30_000,
    stalledInterval: opts.stalledIntervalMs ?? 30_000,
    maxStalledCount: 2,
    autorun: true,
  };
  const run = <D extends { jobId: string }, R>(
    type: (d: D) => JobType,
    fn: (d: D, ctl: JobControl) => Promise<R>,
  ) => {
    return (job: QueueJob<D>) => runCatalogJob(rt, opts, job, type(job.data), fn);
  };
  const runBackup = run<BackupJobData, unknown>(
    () => 'backup',
    (d, ctl) => runBackupJob(rt, d, ctl),
  );
  const backup = new Worker<BackupJobData>(
    QUEUE_NAMES.backup,
    async (job, token) => {
      const log = opts.logger.child({ jobId: job.data.jobId, proxy: opts.proxy.name });
      const passOn = await shouldPassOn(rt, job, log).catch((err: unknown) => {
        log.warn({ err: describeError(err) }, 'routing check failed; running the job here');
        return false;
      });
      if (passOn && token !== undefined) {
        await job.moveToDelayed(Date.now() + (opts.passOnDelayMs ?? 3000), token);
        throw new DelayedError();
      }
      return runBackup(job);
    },
    { ...common, concurrency: opts.backupConcurrency ?? opts.diskConcurrency },
  );
  const restore = new Worker<RestoreJobData>(
    QUEUE_NAMES.restore,
    run<RestoreJobData, unknown>(
      () => 'restore',
      (d, ctl) => runRestoreJob(rt, d, ctl),
    ),
    { ...common, concurrency: 2 },
  );
  const maintenance = new Worker<MaintenanceJobData>(
    QUEUE_NAMES.maintenance,
    run<MaintenanceJobData, unknown>(
      (d) => MAINTENANCE_TYPE[d.operation],
      (d, ctl) => runMaintenanceJob(rt, d, ctl),
    ),
    { ...common, concurrency: 1 },
  );
  const schedule = new Worker<ScheduledRunJobData>(
    QUEUE_NAMES.schedule,
    (job) => runScheduledPolicy(rt, queues, job.data),
    { ...common, concurrency: 1 },
  );
  const workers = [backup, restore, maintenance, schedule];
  // This proxy is online while its workers run (routing looks at last_seen_at).
  const heartbeat = setInterval(
    () => void touchProxy(opts.pool, opts.proxy.id).catch(() => undefined),
    30_000,
  );
  heartbeat.unref();
  for (const w of workers) {
    w.on('error', (err) => opts.logger.error({ err: describeError(err), queue: w.name }, 'worker error'));
    w.on('stalled', (id) =>
      opts.logger.warn({ jobId: id, queue: w.name }, 'job stalled: its worker died; it will run again'),
    );
  }
  return {
    runtime: rt,
    workers,
    async close(force = false) {
      clearInterval(heartbeat);
      await Promise.all(workers.map((w) => w.close(force)));
      await queues.close();
      await rt.repositories.close();
    },
  };
}

/**
 * Runs one catalog job: state and events in the catalog, progress to BullMQ and the catalog,
 * cancellation, metrics, and the retry decision (transient errors are rethrown for BullMQ's
 * exponential backoff; permanent ones become UnrecoverableError, so they are not retried).
 */
async function runCatalogJob<D extends { jobId: string }, R>(
  rt: JobRuntime,
  opts: WorkerOptions,
  job: QueueJob<D>,
  type: JobType,
  fn: (d: D, ctl: JobControl) => Promise<R>,
): Promise<R | { cancelled: true } | { skipped: string }> {
  const jobId = job.data.jobId;
  const attempt = job.attemptsMade + 1;
  const attempts = job.opts.attempts ?? 1;
  const log = rt.logger.child({ jobId, queue: job.queueName, attempt, proxy: rt.proxy.name });
  let row;
  try {
    row = await getJob(rt.pool, jobId);
  } catch (err) {
    if (err instanceof NotFoundError) throw new UnrecoverableError(`job ${jobId} is not in the catalog`);
    throw err;
  }
  if (row.state === 'succeeded' || row.state === 'failed' || row.state === 'cancelled') {
    return { skipped: `job ${jobId} already ${row.state}` };
  }
  if (row.cancelRequested) {
    await finishJob(rt.pool, jobId, { state: 'cancelled', errorMessage: 'cancelled before it started' });
    return { cancelled: true };
  }
  await markJobRunning(rt.pool, jobId, rt.proxy.id);
  await addJobEvent(
    rt.pool,
    jobId,
    'info',
    `started on proxy ${rt.proxy.name} (attempt ${attempt} of ${attempts})`,
    {
      proxy: rt.proxy.name,
      attempt,
    },
  );
  log.info({ vm: row.vmMoref }, 'job started');
  const started = Date.now();
  const ac = new AbortController();
  const poll = setInterval(() => {
    void getJob(rt.pool, jobId)
      .then((j) => {
        if (j.cancelRequested && !ac.signal.aborted) {
          log.info('cancellation requested; stopping and cleaning up');
          ac.abort(new JobCancelledError(jobId));
        }
      })
      .catch(() => undefined);
  }, opts.cancelPollMs ?? 1000);
  poll.unref();
  let lastCatalog = 0;
  let lastQueue = 0;
  let lastPhase = '';
  const ctl: JobControl = {
    jobId,
    signal: ac.signal,
    log,
    // Progress comes per chunk; Redis gets it at most every 250 ms and the catalog every second
    // (and at every phase change, and at the end of a phase).
    progress(p) {
      const now = Date.now();
      const edge = p.phase !== lastPhase || p.doneBytes >= p.totalBytes;
      lastPhase = p.phase;
      if (edge || now - lastQueue >= 250) {
        lastQueue = now;
        void job.updateProgress(p).catch(() => undefined);
      }
      if (edge || now - lastCatalog >= 1000) {
        lastCatalog = now;
        void updateJobProgress(rt.pool, jobId, p).catch(() => undefined);
      }
    },
  };
  try {
    const result = await fn(job.data, ctl);
    await finishJob(rt.pool, jobId, { state: 'succeeded' });
    await addJobEvent(rt.pool, jobId, 'info', 'succeeded');
    rt.metrics.recordJobFinished(type, 'succeeded', (Date.now() - started) / 1000);
    log.info({ seconds: (Date.now() - started) / 1000 }, 'job succeeded');
    return result;
  } catch (err) {
    if (ac.signal.aborted) {
      await finishJob(rt.pool, jobId, { state: 'cancelled', errorMessage: 'cancelled by request' });
      await addJobEvent(rt.pool, jobId, 'info', 'cancelled; cleanup done');
      rt.metrics.recordJobFinished(type, 'cancelled', (Date.now() - started) / 1000);
      log.info('job cancelled');
      return { cancelled: true };
    }
    const message = describeError(err);
    const code = err instanceof VbproxyError ? err.code : 'INTERNAL';
    const transient = isTransient(err);
    if (transient && attempt < attempts) {
      await addJobEvent(
        rt.pool,
        jobId,
        'warn',
        `attempt ${attempt} failed (transient), retried with backoff: ${message}`,
        {
          code,
        },
      );
      log.warn({ err: message, code }, 'job attempt failed; BullMQ retries it with backoff');
      throw err;
    }
    await finishJob(rt.pool, jobId, { state: 'failed', errorCode: code, errorMessage: message });
    await addJobEvent(rt.pool, jobId, 'error', `failed: ${message}`, { code });
    rt.metrics.recordJobFinished(type, 'failed', (Date.now() - started) / 1000);
    log.error({ err: message, code }, 'job failed');
    if (transient) throw err;
    throw new UnrecoverableError(message);
  } finally {
    clearInterval(poll);
  }
}

/** One firing of a policy's cron schedule: one backup job per selected VM (duplicates are skipped). */
async function runScheduledPolicy(
  rt: JobRuntime,
  queues: Queues,
  data: ScheduledRunJobData,
): Promise<unknown> {
  const policy = await getPolicy(rt.pool, data.policyId);
  if (!policy.enabled) return { skipped: 'policy disabled' };
  const vms = await resolvePolicyVms(rt, policy);
  const out: { vm: string; jobId: string; queued: boolean }[] = [];
  for (const vm of vms) {
    const r = await submitBackup(rt.pool, queues, {
      policyId: policy.id,
      vcenterId: policy.vcenterId,
      vm,
      trigger: 'schedule',
    });
    out.push({ vm: vm.moref, jobId: r.queued ? r.jobId : r.existingJobId, queued: r.queued });
  }
  rt.logger.info({ policy: policy.name, jobs: out.length }, 'scheduled policy run queued its backups');
  return { jobs: out };
}
