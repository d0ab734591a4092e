import type { Queryable } from '../catalog/db.js';
import { liveJobIds } from '../catalog/jobs.js';
import type { Queues } from './queues.js';

/**
 * Which jobs are live, for the pre-flight cleanup: a catalog job that is queued, or running AND
 * still holding its BullMQ lock (a worker renews the lock while it works; a SIGKILLed worker's lock
 * expires after the lock duration). A `running` job without a lock belongs to a dead worker: what
 * it left in vSphere is an orphan. The job asking (`self`) is never live for its own cleanup: what
 * carries its id was left by an earlier attempt of it.
 */
export async function liveJobs(db: Queryable, queues: Queues, self: string): Promise<Set<string>> {
  const { rows } = await db.query<{ id: string; state: string; queue: string }>(
    `SELECT id, state, queue FROM jobs WHERE state IN ('queued', 'running')`,
  );
  const client = await queues.backup.client;
  const out = new Set<string>();
  for (const r of rows) {
    if (r.id === self) continue;
    if (r.state === 'queued') {
      out.add(r.id);
      continue;
    }
    const key = `${queues.prefix}:${r.queue}:${r.id}:lock`;
    if ((await client.get(key)) !== null) out.add(r.id);
  }
  return out;
}

export { liveJobIds };
