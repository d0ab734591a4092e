import { Queue, type ConnectionOptions, type JobsOptions } from 'bullmq';
import { VbproxyError } from '../errors.js';

/**
 * The BullMQ queues and their producers. The API and the CLI enqueue here; the workers (src/jobs/
 * workers, later) consume. A queue job's id is the catalog job id, so the two always match.
 */
export const QUEUE_NAMES = {
  backup: 'vbproxy-backup',
  restore: 'vbproxy-restore',
  maintenance: 'vbproxy-maintenance',
  /** Policy cron schedules (BullMQ job schedulers): each firing is one "run this policy" job. */
  schedule: 'vbproxy-schedule',
} as const;
/** The queues whose jobs are catalog jobs (the schedule queue only holds policy firings). */
export type QueueKind = 'backup' | 'restore' | 'maintenance';

/** One VM's backup under one policy. At most one is queued or active per VM (deduplicated). */
export interface BackupJobData {
  /** The catalog job id (also the BullMQ job id). */
  jobId: string;
  policyId: string;
  vcenterId: string;
  vmMoref: string;
  trigger: 'manual' | 'schedule' | 'api';
  /** Proxies that could not hot-add this VM and left the job to one that can (scale-out routing). */
  passedBy?: string[] | undefined;
}

export type RestoreTarget =
  /** Each disk to a raw image file `<directory>/<vm>-disk<key>.img`. */
  | { kind: 'file'; directory: string; diskKeys?: number[] | undefined }
  /** Into the disks of an existing powered-off VM. */
  | { kind: 'vm'; vcenterId: string; vmMoref: string; diskKeys?: number[] | undefined }
  /** Into a new VM created from the configuration in the restore point's manifest. */
  | {
      kind: 'new-vm';
      vcenterId: string;
      name: string;
      datastore?: string | undefined;
      folder?: string | undefined;
    };

export interface RestoreJobData {
  jobId: string;
  restorePointId: string;
  target: RestoreTarget;
}

export type MaintenanceOperation = 'verify' | 'prune' | 'gc' | 'catalog-rebuild';
export interface MaintenanceJobData {
  jobId: string;
  operation: MaintenanceOperation;
  /** The repository (its path) the operation runs on. */
  repository: string;
  /** verify only: re-read every chunk (true) or check indexes and manifests only. */
  readData?: boolean | undefined;
}

/**
 * One firing of a policy's cron schedule. The consumer resolves the policy's VMs and queues one
 * backup per VM (trigger `schedule`), exactly like "run now".
 */
export interface ScheduledRunJobData {
  policyId: string;
}

/** Retry policy for all queues: transient failures back off exponentially; workers fail permanent ones at once. */
export const DEFAULT_JOB_OPTIONS: JobsOptions = {
  attempts: 5,
  backoff: { type: 'exponential', delay: 30_000 },
  removeOnComplete: { age: 7 * 24 * 3600, count: 10_000 },
  removeOnFail: { age: 30 * 24 * 3600 },
};

/** The deduplication id that keeps one backup per VM in the queue. */
export function backupDedupId(vcenterId: string, vmMoref: string): string {
  return `backup:${vcenterId}:${vmMoref}`;
}

export interface Queues {
  readonly backup: Queue<BackupJobData>;
  readonly restore: Queue<RestoreJobData>;
  readonly maintenance: Queue<MaintenanceJobData>;
  readonly schedule: Queue<ScheduledRunJobData>;
  readonly prefix: string;
  close(): Promise<void>;
}

/** Opens the three queues on one Redis connection configuration with the given key prefix. */
export function openQueues(connection: ConnectionOptions, prefix: string): Queues {
  const opts = { connection, prefix, defaultJobOptions: DEFAULT_JOB_OPTIONS };
  const backup = new Queue<BackupJobData>(QUEUE_NAMES.backup, opts);
  const restore = new Queue<RestoreJobData>(QUEUE_NAMES.restore, opts);
  const maintenance = new Queue<MaintenanceJobData>(QUEUE_NAMES.maintenance, opts);
  const schedule = new Queue<ScheduledRunJobData>(QUEUE_NAMES.schedule, {
    connection,
    prefix,
    defaultJobOptions: { removeOnComplete: { count: 1000 }, removeOnFail: { count: 1000 } },
  });
  for (const q of [backup, restore, maintenance, schedule]) q.on('error', () => undefined);
  return {
    backup,
    restore,
    maintenance,
    schedule,
    prefix,
    async close() {
      await Promise.all([backup.close(), restore.close(), maintenance.close(), schedule.close()]);
    },
  };
}

/** The outcome of enqueuing a backup: either this job was queued, or another job already holds the VM. */
export type EnqueueBackupResult = { queued: true; jobId: string } | { queued: false; existingJobId: string };

/**
 * Queues a backup unless one for the same VM is already waiting or running (BullMQ deduplication
 * keyed by vCenter and VM; the key is released when that job completes or fails).
 */
export async function enqueueBackup(queues: Queues, data: BackupJobData): Promise<EnqueueBackupResult> {
  const job = await queues.backup.add('backup', data, {
    jobId: data.jobId,
    deduplication: { id: backupDedupId(data.vcenterId, data.vmMoref) },
  });
  if (job.id === data.jobId) return { queued: true, jobId: data.jobId };
  return { queued: false, existingJobId: job.id ?? 'unknown' };
}

export async function enqueueRestore(queues: Queues, data: RestoreJobData): Promise<string> {
  await queues.restore.add('restore', data, { jobId: data.jobId, attempts: 3 });
  return data.jobId;
}

export async function enqueueMaintenance(queues: Queues, data: MaintenanceJobData): Promise<string> {
  await queues.maintenance.add(data.operation, data, { jobId: data.jobId, attempts: 2 });
  return data.jobId;
}

/**
 * Removes a job that has not started yet. Returns false when the job is active (or gone): an
 * active job is cancelled by its worker, which sees `cancel_requested` in the catalog.
 */
export async function removeIfWaiting(queues: Queues, kind: QueueKind, jobId: string): Promise<boolean> {
  const queue: Queue = queues[kind] as Queue;
  const job = await queue.getJob(jobId);
  if (job === undefined) return false;
  const state = await job.getState();
  if (state !== 'waiting' && state !== 'delayed' && state !== 'prioritized' && state !== 'waiting-children') {
    return false;
  }
  try {
    await job.remove();
    return true;
  } catch {
    return false; // picked up by a worker in the meantime
  }
}

/** Waiting/active/failed/... counts per queue, for metrics and status. */
export async function queueCounts(queues: Queues): Promise<Record<QueueKind, Record<string, number>>> {
  const kinds: QueueKind[] = ['backup', 'restore', 'maintenance'];
  const counts = await Promise.all(
    kinds.map((k) =>
      (queues[k] as Queue).getJobCounts('waiting', 'active', 'failed', 'delayed', 'completed', 'prioritized'),
    ),
  );
  return { backup: counts[0]!, restore: counts[1]!, maintenance: counts[2]! };
}

/** A cron expression BullMQ (cron-parser) refuses. */
export class InvalidScheduleError extends VbproxyError {
  constructor(schedule: string, why: string, cause?: unknown) {
    super('POLICY_INVALID_SCHEDULE', `invalid cron schedule "${schedule}": ${why}`, { cause });
  }
}

export function policySchedulerId(policyId: string): string {
  return `policy:${policyId}`;
}

/**
 * Makes the policy's BullMQ job scheduler match the policy: present with its cron pattern (in UTC)
 * when the policy is enabled and has a schedule, absent otherwise.
 */
export async function syncPolicySchedule(
  queues: Queues,
  policy: { id: string; schedule: string | null; enabled: boolean },
): Promise<void> {
  const id = policySchedulerId(policy.id);
  if (!policy.enabled || policy.schedule === null) {
    await queues.schedule.removeJobScheduler(id);
    return;
  }
  try {
    await queues.schedule.upsertJobScheduler(
      id,
      { pattern: policy.schedule, tz: 'UTC' },
      { name: 'policy-run', data: { policyId: policy.id } },
    );
  } catch (err) {
    const message = (err as Error).message;
    // cron-parser's complaints (ranges, syntax) are the user's to fix; anything else is not
    if (/constraint|invalid|validation|unexpected|out of range|expected/i.test(message)) {
      throw new InvalidScheduleError(policy.schedule, message, err);
    }
    throw err;
  }
}

export async function removePolicySchedule(queues: Queues, policyId: string): Promise<void> {
  await queues.schedule.removeJobScheduler(policySchedulerId(policyId));
}
