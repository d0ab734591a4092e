import { access, constants, statfs } from 'node:fs/promises';
import type { Redis } from 'ioredis';
import { restorePointTotals } from '../catalog/restore-points.js';
import { describeError } from '../errors.js';
import type { ApiDeps } from './deps.js';

export interface Check {
  ok: boolean;
  message?: string;
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const t = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not answer within ${ms} ms`)), ms);
  });
  return Promise.race([p, t]).finally(() => clearTimeout(timer));
}

async function probe(what: string, fn: () => Promise<unknown>): Promise<Check> {
  try {
    await withTimeout(fn(), 2000, what);
    return { ok: true };
  } catch (err) {
    return { ok: false, message: `${what}: ${describeError(err)}` };
  }
}

/** PostgreSQL answers, Redis answers, and the repository directory is writable. */
export async function checkHealth(deps: Pick<ApiDeps, 'pool' | 'queues' | 'repositoryPath'>) {
  const [database, redis, datastore] = await Promise.all([
    probe('PostgreSQL', () => deps.pool.query('SELECT 1')),
    probe('Redis', async () => ((await deps.queues.backup.client) as unknown as Redis).ping()),
    probe(`datastore ${deps.repositoryPath}`, () => access(deps.repositoryPath, constants.W_OK)),
  ]);
  return { database, redis, datastore };
}

export async function repositoryStatus(deps: Pick<ApiDeps, 'pool' | 'repositoryPath' | 'metrics'>) {
  const totals = await restorePointTotals(deps.pool);
  const base = {
    path: deps.repositoryPath,
    restorePoints: totals.points,
    vms: totals.vms,
    lastRestorePointAt: totals.lastAt === null ? null : totals.lastAt.toISOString(),
  };
  try {
    const st = await statfs(deps.repositoryPath);
    const totalBytes = st.blocks * st.bsize;
    const freeBytes = st.bavail * st.bsize;
    if (totalBytes > 0) deps.metrics.setDatastoreFreeRatio(freeBytes / totalBytes);
    return { ...base, reachable: true, totalBytes, freeBytes };
  } catch (err) {
    return { ...base, reachable: false, totalBytes: null, freeBytes: null, error: describeError(err) };
  }
}
