import type { Repository } from './repository.js';
import { InvalidRequestError, PointNotFoundError } from './errors.js';
import { paths } from './format.js';
import { MaintenanceLock } from './locks.js';
import { policyIsEmpty, selectRetention, type RetentionPolicy, type RetentionRule } from './retention.js';
import { liveSessions } from './gc.js';

export interface PruneOptions {
  /** Only points with this name (default: every name, each group pruned on its own). */
  name?: string;
  /** Report what would be removed without removing it. */
  dryRun?: boolean;
  /** When gc or another prune holds the maintenance lock, wait this long for it (default 0). */
  lockWaitMs?: number;
}

export interface PrunedPoint {
  readonly id: string;
  readonly name: string;
  readonly createdAt: string;
  readonly rule?: RetentionRule | 'in-use';
}

export interface PruneReport {
  readonly kept: PrunedPoint[];
  readonly removed: PrunedPoint[];
  /** Points whose manifest could not be read: never removed by prune. */
  readonly unreadable: string[];
  readonly dryRun: boolean;
}

/**
 * Applies a retention policy per point name. Removing a point deletes its manifest only; its index
 * and the chunks no other point uses are deleted by the next gc. Points that a running backup uses
 * as its base are kept.
 */
export async function runPrune(
  repo: Repository,
  policy: RetentionPolicy,
  options: PruneOptions,
): Promise<PruneReport> {
  if (policyIsEmpty(policy)) {
    throw new InvalidRequestError('no --keep-* option given: refusing to remove every restore point');
  }
  const lock = options.dryRun
    ? undefined
    : await MaintenanceLock.acquire(repo.backend, 'prune', options.lockWaitMs);
  try {
    const { points, damaged } = await repo.listPoints();
    const inUse = new Set<string>();
    for (const s of await liveSessions(repo.backend)) s.record.basePoints.forEach((p) => inUse.add(p));
    const groups = new Map<string, typeof points>();
    for (const p of points) {
      if (options.name !== undefined && p.name !== options.name) continue;
      const g = groups.get(p.name) ?? [];
      g.push(p);
      groups.set(p.name, g);
    }
    if (options.name !== undefined && groups.size === 0) {
      throw new PointNotFoundError(repo.location, `restore points named ${JSON.stringify(options.name)}`);
    }
    const kept: PrunedPoint[] = [];
    const removed: PrunedPoint[] = [];
    for (const group of groups.values()) {
      const decisions = selectRetention(
        group.map((p) => ({ id: p.id, time: new Date(p.createdAt) })),
        policy,
      );
      for (const p of group) {
        const d = decisions.get(p.id)!;
        const info = { id: p.id, name: p.name, createdAt: p.createdAt };
        if (d.keep) kept.push({ ...info, rule: d.rule });
        else if (inUse.has(p.id)) kept.push({ ...info, rule: 'in-use' });
        else removed.push(info);
      }
    }
    if (!options.dryRun) {
      for (const p of removed) await repo.backend.delete(paths.point(p.id));
      await repo.backend.syncDirs([paths.pointsDir]);
    }
    return { kept, removed, unreadable: damaged.map((d) => d.id), dryRun: options.dryRun ?? false };
  } finally {
    await lock?.release();
  }
}
