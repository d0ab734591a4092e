import type { Pool } from '../catalog/db.js';
import { addJobEvent, finishJob, getJob, requestCancel, type Job } from '../catalog/jobs.js';
import { inTransaction } from '../catalog/db.js';
import {
  deletePolicy,
  insertPolicy,
  updatePolicy,
  type Policy,
  type PolicyFields,
} from '../catalog/policies.js';
import { getRestorePoint } from '../catalog/restore-points.js';
import { getVcenter } from '../catalog/vcenters.js';
import { describeError } from '../errors.js';
import { submitBackup, submitMaintenance, submitRestore } from '../jobs/submit.js';
import {
  InvalidScheduleError,
  QUEUE_NAMES,
  removePolicySchedule,
  syncPolicySchedule,
  removeIfWaiting,
  type MaintenanceOperation,
  type QueueKind,
  type Queues,
  type RestoreTarget,
} from '../jobs/queues.js';
import type { Logger } from '../log.js';
import type { PolicyVmResolver } from './deps.js';
import { ApiError } from './errors.js';
import { jobProgress } from './schemas.js';

/**
 * The operations that create or change jobs, shared by the API routes and the `vbproxy` command:
 * a catalog row first (state `queued`), then the BullMQ job with the same id.
 */
export interface OperationDeps {
  pool: Pool;
  queues: Queues;
  logger: Logger;
  repositoryPath: string;
}

export interface RunResult {
  vmMoref: string;
  jobId: string;
  queued: boolean;
  reason?: string;
}

export const QUEUE_KIND: Record<string, QueueKind> = {
  [QUEUE_NAMES.backup]: 'backup',
  [QUEUE_NAMES.restore]: 'restore',
  [QUEUE_NAMES.maintenance]: 'maintenance',
};

/** Queues one backup per VM of the policy (or of `vmMorefs`); VMs already queued or running are reported. */
export async function runPolicy(
  deps: OperationDeps & { vmResolver: PolicyVmResolver },
  policy: Policy,
  vmMorefs: string[] | undefined,
  trigger: 'api' | 'manual' = 'api',
): Promise<{ jobs: RunResult[] }> {
  let vms: { moref: string; name?: string }[];
  if (vmMorefs !== undefined) {
    vms = vmMorefs.map((moref) => ({ moref }));
  } else {
    try {
      vms = await deps.vmResolver.resolve(policy);
    } catch (err) {
      throw new ApiError(422, 'POLICY_SELECTION_UNRESOLVED', describeError(err), { cause: err });
    }
  }
  const jobs: RunResult[] = [];
  for (const vm of vms) {
    const r = await submitBackup(deps.pool, deps.queues, {
      policyId: policy.id,
      vcenterId: policy.vcenterId,
      vm,
      trigger,
    });
    if (r.queued) {
      deps.logger.info({ jobId: r.jobId, vm: vm.moref, policy: policy.name }, 'backup queued');
      jobs.push({ vmMoref: vm.moref, jobId: r.jobId, queued: true });
    } else {
      jobs.push({
        vmMoref: vm.moref,
        jobId: r.existingJobId,
        queued: false,
        reason: `a backup of ${vm.moref} is already queued or running (job ${r.existingJobId})`,
      });
    }
  }
  return { jobs };
}

export async function startMaintenance(
  deps: OperationDeps,
  operation: MaintenanceOperation,
  readData?: boolean,
  trigger: 'api' | 'manual' = 'api',
): Promise<string> {
  const jobId = await submitMaintenance(deps.pool, deps.queues, {
    operation,
    repository: deps.repositoryPath,
    readData,
    trigger,
  });
  deps.logger.info({ jobId, operation }, 'maintenance job queued');
  return jobId;
}

/** Queues a restore after checking the restore point, the target vCenter and the disk keys. */
export async function startRestore(
  deps: OperationDeps,
  restorePointId: string,
  target: RestoreTarget,
  trigger: 'api' | 'manual' = 'api',
): Promise<string> {
  const point = await getRestorePoint(deps.pool, restorePointId);
  if (target.kind !== 'file') await getVcenter(deps.pool, target.vcenterId);
  const keys = target.kind === 'new-vm' ? undefined : target.diskKeys;
  for (const k of keys ?? []) {
    if (!point.disks.some((d) => d.diskKey === k)) {
      throw new ApiError(
        400,
        'RESTORE_UNKNOWN_DISK',
        `target.diskKeys: restore point ${point.id} has no disk ${k}`,
      );
    }
  }
  const jobId = await submitRestore(deps.pool, deps.queues, {
    restorePointId: point.id,
    target,
    trigger,
    vcenterId: point.vcenterId,
    vmMoref: point.vmMoref,
    vmName: point.vmName,
  });
  deps.logger.info({ jobId, vm: point.vmMoref, target: target.kind }, 'restore queued');
  return jobId;
}

/**
 * Cancels a job: a job still waiting in its queue is removed and marked cancelled at once; a running
 * job gets `cancel_requested`, which its worker sees and acts on (cleaning up as it stops).
 */
export async function cancelJob(deps: OperationDeps, id: string): Promise<Job> {
  const before = await getJob(deps.pool, id);
  if (before.state !== 'queued' && before.state !== 'running') {
    throw new ApiError(
      409,
      'JOB_FINISHED',
      `job ${before.id} has already ${before.state}; nothing to cancel`,
    );
  }
  await requestCancel(deps.pool, before.id);
  const kind = QUEUE_KIND[before.queue];
  if (kind !== undefined && (await removeIfWaiting(deps.queues, kind, before.id))) {
    await finishJob(deps.pool, before.id, {
      state: 'cancelled',
      errorMessage: 'cancelled before it started',
    });
  }
  await addJobEvent(deps.pool, before.id, 'info', 'cancellation requested');
  deps.logger.info({ jobId: before.id, vm: before.vmMoref }, 'job cancellation requested');
  return getJob(deps.pool, before.id);
}

/**
 * A job's BullMQ state and its freshest progress: the worker's `job.updateProgress` value when it
 * has one, else the catalog's copy.
 */
export async function liveJobState(
  queues: Queues,
  job: Job,
): Promise<{ queueState: string | null; progress: Job['progress'] }> {
  const kind = QUEUE_KIND[job.queue];
  if (kind === undefined) return { queueState: null, progress: job.progress };
  const qj = await queues[kind].getJob(job.id);
  if (qj === undefined) return { queueState: null, progress: job.progress };
  const live = jobProgress.safeParse(qj.progress);
  return { queueState: await qj.getState(), progress: live.success ? live.data : job.progress };
}

async function syncSchedule(deps: OperationDeps, policy: Policy): Promise<void> {
  try {
    await syncPolicySchedule(deps.queues, policy);
  } catch (err) {
    if (err instanceof InvalidScheduleError) {
      throw new ApiError(400, 'INVALID_REQUEST', `body.schedule: ${err.message}`, {
        cause: err,
        issues: [{ path: 'body.schedule', message: err.message }],
      });
    }
    throw err;
  }
}

/** Creates a policy and its cron schedule (BullMQ job scheduler) together: a refused cron creates nothing. */
export async function createPolicy(deps: OperationDeps, fields: PolicyFields): Promise<Policy> {
  return inTransaction(deps.pool, async (c) => {
    const p = await insertPolicy(c, fields);
    await syncSchedule(deps, p);
    return p;
  });
}

/** Replaces a policy and updates (or removes) its schedule in step. */
export async function replacePolicy(deps: OperationDeps, id: string, fields: PolicyFields): Promise<Policy> {
  return inTransaction(deps.pool, async (c) => {
    const p = await updatePolicy(c, id, fields);
    await syncSchedule(deps, p);
    return p;
  });
}

/** Deletes a policy and its schedule. */
export async function removePolicy(deps: OperationDeps, id: string): Promise<void> {
  await deletePolicy(deps.pool, id);
  await removePolicySchedule(deps.queues, id);
}
