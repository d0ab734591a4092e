import { randomUUID } from 'node:crypto';
import type { Pool } from '../catalog/db.js';
import { deleteJob, insertJob, type JobTrigger } from '../catalog/jobs.js';
import {
  enqueueBackup,
  enqueueMaintenance,
  enqueueRestore,
  QUEUE_NAMES,
  type MaintenanceOperation,
  type Queues,
  type RestoreTarget,
} from './queues.js';

/**
 * Submitting work, for every producer (API and CLI operations, scheduled policy runs, the lab
 * environment): the catalog row first (state `queued`), then the BullMQ job with the same id.
 */

export type SubmittedBackup = { queued: true; jobId: string } | { queued: false; existingJobId: string };

/**
 * Queues a backup of one VM. When a backup of that VM is already queued or running, nothing is
 * queued, the new catalog row is deleted again, and the holding job is returned.
 */
export async function submitBackup(
  pool: Pool,
  queues: Queues,
  b: {
    policyId: string;
    vcenterId: string;
    vm: { moref: string; name?: string | undefined };
    trigger: JobTrigger;
  },
): Promise<SubmittedBackup> {
  const jobId = randomUUID();
  await insertJob(pool, {
    id: jobId,
    type: 'backup',
    trigger: b.trigger,
    queue: QUEUE_NAMES.backup,
    policyId: b.policyId,
    vcenterId: b.vcenterId,
    vmMoref: b.vm.moref,
    vmName: b.vm.name ?? null,
  });
  const r = await enqueueBackup(queues, {
    jobId,
    policyId: b.policyId,
    vcenterId: b.vcenterId,
    vmMoref: b.vm.moref,
    trigger: b.trigger,
  });
  if (r.queued) return { queued: true, jobId };
  await deleteJob(pool, jobId);
  return { queued: false, existingJobId: r.existingJobId };
}

/** Queues a restore; the VM fields name the backed-up VM in the catalog row, when known. */
export async function submitRestore(
  pool: Pool,
  queues: Queues,
  r: {
    restorePointId: string;
    target: RestoreTarget;
    trigger: JobTrigger;
    vcenterId?: string | null | undefined;
    vmMoref?: string | null | undefined;
    vmName?: string | null | undefined;
  },
): Promise<string> {
  const jobId = randomUUID();
  await insertJob(pool, {
    id: jobId,
    type: 'restore',
    trigger: r.trigger,
    queue: QUEUE_NAMES.restore,
    vcenterId: r.vcenterId ?? null,
    vmMoref: r.vmMoref ?? null,
    vmName: r.vmName ?? null,
    params: { restorePointId: r.restorePointId, target: r.target },
  });
  await enqueueRestore(queues, { jobId, restorePointId: r.restorePointId, target: r.target });
  return jobId;
}

/** Queues a maintenance operation on the repository at `repository`. */
export async function submitMaintenance(
  pool: Pool,
  queues: Queues,
  m: {
    operation: MaintenanceOperation;
    repository: string;
    readData?: boolean | undefined;
    trigger: JobTrigger;
  },
): Promise<string> {
  const jobId = randomUUID();
  await insertJob(pool, {
    id: jobId,
    type: m.operation,
    trigger: m.trigger,
    queue: QUEUE_NAMES.maintenance,
    params: { repository: m.repository, ...(m.readData === undefined ? {} : { readData: m.readData }) },
  });
  await enqueueMaintenance(queues, {
    jobId,
    operation: m.operation,
    repository: m.repository,
    readData: m.readData,
  });
  return jobId;
}
