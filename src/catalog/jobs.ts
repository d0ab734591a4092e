import type { Queryable } from './db.js';
import { NotFoundError } from './errors.js';

export const JOB_TYPES = ['backup', 'restore', 'verify', 'prune', 'gc', 'catalog-rebuild'] as const;
export type JobType = (typeof JOB_TYPES)[number];
export const JOB_STATES = ['queued', 'running', 'succeeded', 'failed', 'cancelled'] as const;
export type JobState = (typeof JOB_STATES)[number];
export type JobTrigger = 'manual' | 'schedule' | 'api';
export type EventLevel = 'debug' | 'info' | 'warn' | 'error';

export interface JobProgress {
  doneBytes: number;
  totalBytes: number;
  phase?: string | undefined;
}

export interface Job {
  id: string;
  type: JobType;
  state: JobState;
  trigger: JobTrigger;
  policyId: string | null;
  vcenterId: string | null;
  vmMoref: string | null;
  vmName: string | null;
  proxyId: string | null;
  queue: string;
  params: Record<string, unknown>;
  progress: JobProgress | null;
  errorCode: string | null;
  errorMessage: string | null;
  cancelRequested: boolean;
  createdAt: Date;
  startedAt: Date | null;
  finishedAt: Date | null;
}

export interface JobEvent {
  id: number;
  jobId: string;
  at: Date;
  level: EventLevel;
  message: string;
  data: Record<string, unknown> | null;
}

export interface NewJob {
  id: string;
  type: JobType;
  trigger: JobTrigger;
  queue: string;
  policyId?: string | null;
  vcenterId?: string | null;
  vmMoref?: string | null;
  vmName?: string | null;
  params?: Record<string, unknown>;
}

interface Row {
  id: string;
  type: JobType;
  state: JobState;
  trigger: JobTrigger;
  policy_id: string | null;
  vcenter_id: string | null;
  vm_moref: string | null;
  vm_name: string | null;
  proxy_id: string | null;
  queue: string;
  params: Record<string, unknown>;
  progress: JobProgress | null;
  error_code: string | null;
  error_message: string | null;
  cancel_requested: boolean;
  created_at: Date;
  started_at: Date | null;
  finished_at: Date | null;
}

function toJob(r: Row): Job {
  return {
    id: r.id,
    type: r.type,
    state: r.state,
    trigger: r.trigger,
    policyId: r.policy_id,
    vcenterId: r.vcenter_id,
    vmMoref: r.vm_moref,
    vmName: r.vm_name,
    proxyId: r.proxy_id,
    queue: r.queue,
    params: r.params,
    progress: r.progress,
    errorCode: r.error_code,
    errorMessage: r.error_message,
    cancelRequested: r.cancel_requested,
    createdAt: r.created_at,
    startedAt: r.started_at,
    finishedAt: r.finished_at,
  };
}

export async function insertJob(db: Queryable, j: NewJob): Promise<Job> {
  const { rows } = await db.query<Row>(
    `INSERT INTO jobs (id, type, trigger, queue, policy_id, vcenter_id, vm_moref, vm_name, params)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING *`,
    [
      j.id,
      j.type,
      j.trigger,
      j.queue,
      j.policyId ?? null,
      j.vcenterId ?? null,
      j.vmMoref ?? null,
      j.vmName ?? null,
      JSON.stringify(j.params ?? {}),
    ],
  );
  return toJob(rows[0]!);
}

export async function getJob(db: Queryable, id: string): Promise<Job> {
  const { rows } = await db.query<Row>('SELECT * FROM jobs WHERE id = $1', [id]);
  if (rows.length === 0) throw new NotFoundError('job', id);
  return toJob(rows[0]!);
}

export async function deleteJob(db: Queryable, id: string): Promise<void> {
  await db.query('DELETE FROM jobs WHERE id = $1', [id]);
}

export interface JobFilter {
  type?: JobType | undefined;
  state?: JobState | undefined;
  policyId?: string | undefined;
  vmMoref?: string | undefined;
  since?: Date | undefined;
  until?: Date | undefined;
  limit?: number | undefined;
}

/** Jobs newest first, filtered. */
export async function listJobs(db: Queryable, f: JobFilter = {}): Promise<Job[]> {
  const where: string[] = [];
  const args: unknown[] = [];
  const add = (sql: string, v: unknown) => {
    args.push(v);
    where.push(sql.replace('?', `$${args.length}`));
  };
  if (f.type !== undefined) add('type = ?', f.type);
  if (f.state !== undefined) add('state = ?', f.state);
  if (f.policyId !== undefined) add('policy_id = ?', f.policyId);
  if (f.vmMoref !== undefined) add('vm_moref = ?', f.vmMoref);
  if (f.since !== undefined) add('created_at >= ?', f.since);
  if (f.until !== undefined) add('created_at < ?', f.until);
  args.push(f.limit ?? 100);
  const { rows } = await db.query<Row>(
    `SELECT * FROM jobs ${where.length > 0 ? `WHERE ${where.join(' AND ')}` : ''}
     ORDER BY created_at DESC, id LIMIT $${args.length}`,
    args,
  );
  return rows.map(toJob);
}

/** The live job (queued or running) holding a VM's backup, if any. */
export async function findLiveBackup(
  db: Queryable,
  vcenterId: string,
  vmMoref: string,
): Promise<Job | undefined> {
  const { rows } = await db.query<Row>(
    `SELECT * FROM jobs WHERE type = 'backup' AND vcenter_id = $1 AND vm_moref = $2 AND state IN ('queued', 'running')
     ORDER BY created_at LIMIT 1`,
    [vcenterId, vmMoref],
  );
  return rows[0] === undefined ? undefined : toJob(rows[0]);
}

export async function markJobRunning(db: Queryable, id: string, proxyId: string | null): Promise<void> {
  await db.query(`UPDATE jobs SET state = 'running', started_at = now(), proxy_id = $2 WHERE id = $1`, [
    id,
    proxyId,
  ]);
}

export async function updateJobProgress(db: Queryable, id: string, progress: JobProgress): Promise<void> {
  await db.query('UPDATE jobs SET progress = $2 WHERE id = $1', [id, JSON.stringify(progress)]);
}

/** Ends a job. A job already finished keeps its first outcome. */
export async function finishJob(
  db: Queryable,
  id: string,
  outcome: { state: 'succeeded' | 'failed' | 'cancelled'; errorCode?: string; errorMessage?: string },
): Promise<void> {
  await db.query(
    `UPDATE jobs SET state = $2, error_code = $3, error_message = $4, finished_at = now()
     WHERE id = $1 AND state IN ('queued', 'running')`,
    [id, outcome.state, outcome.errorCode ?? null, outcome.errorMessage ?? null],
  );
}

/** Flags a cancellation request; returns the job as it is now. */
export async function requestCancel(db: Queryable, id: string): Promise<Job> {
  const { rows } = await db.query<Row>('UPDATE jobs SET cancel_requested = true WHERE id = $1 RETURNING *', [
    id,
  ]);
  if (rows.length === 0) throw new NotFoundError('job', id);
  return toJob(rows[0]!);
}

export async function addJobEvent(
  db: Queryable,
  jobId: string,
  level: EventLevel,
  message: string,
  data?: Record<string, unknown>,
): Promise<void> {
  await db.query('INSERT INTO job_events (job_id, level, message, data) VALUES ($1, $2, $3, $4)', [
    jobId,
    level,
    message,
    data === undefined ? null : JSON.stringify(data),
  ]);
}

export async function listJobEvents(db: Queryable, jobId: string): Promise<JobEvent[]> {
  const { rows } = await db.query<{
    id: number;
    job_id: string;
    at: Date;
    level: EventLevel;
    message: string;
    data: Record<string, unknown> | null;
  }>('SELECT * FROM job_events WHERE job_id = $1 ORDER BY id', [jobId]);
  return rows.map((r) => ({
    id: r.id,
    jobId: r.job_id,
    at: r.at,
    level: r.level,
    message: r.message,
    data: r.data,
  }));
}

/** Counts of jobs by state, for status displays. */
export async function countJobsByState(db: Queryable): Promise<Record<JobState, number>> {
  const { rows } = await db.query<{ state: JobState; n: number }>(
    'SELECT state, count(*)::int AS n FROM jobs GROUP BY state',
  );
  const out = { queued: 0, running: 0, succeeded: 0, failed: 0, cancelled: 0 };
  for (const r of rows) out[r.state] = r.n;
  return out;
}

/** Ids of the jobs not finished yet (queued or running): what the pre-flight cleanup must not touch. */
export async function liveJobIds(db: Queryable): Promise<Set<string>> {
  const { rows } = await db.query<{ id: string }>(`SELECT id FROM jobs WHERE state IN ('queued', 'running')`);
  return new Set(rows.map((r) => r.id));
}

/** Jobs running on the proxy with this name, and jobs queued for any proxy (the queue is shared). */
export async function proxyLoad(
  db: Queryable,
  proxyName: string,
): Promise<{ running: number; queued: number }> {
  const { rows } = await db.query<{ running: number; queued: number }>(
    `SELECT
       (SELECT count(*)::int FROM jobs j JOIN proxies p ON p.id = j.proxy_id
         WHERE p.name = $1 AND j.state = 'running') AS running,
       (SELECT count(*)::int FROM jobs WHERE state = 'queued') AS queued`,
    [proxyName],
  );
  return rows[0]!;
}
