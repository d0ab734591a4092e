import { addJobEvent } from '../catalog/jobs.js';
import { listPolicies } from '../catalog/policies.js';
import {
  findRestorePointByManifest,
  insertRestorePoint,
  type RestorePointDisk,
} from '../catalog/restore-points.js';
import type { ConsistencyMode } from '../catalog/policies.js';
import type { JobControl } from './backup-job.js';
import { JobError } from './errors.js';
import type { MaintenanceJobData } from './queues.js';
import type { JobRuntime } from './runtime.js';

/** Verify, prune, GC and catalog rebuild of a repository. Returns a short JSON report. */
export async function runMaintenanceJob(
  rt: JobRuntime,
  data: MaintenanceJobData,
  ctl: JobControl,
): Promise<Record<string, unknown>> {
  const repo = await rt.repositories.get(data.repository);
  switch (data.operation) {
    case 'verify': {
      const r = await repo.verify({
        sample: data.readData === false ? 0.000001 : 1,
        onProgress: (p) => ctl.progress({ ...p, phase: 'verify' }),
      });
      const damaged = r.points.filter((p) => !p.ok).map((p) => p.id);
      await addJobEvent(
        rt.pool,
        data.jobId,
        r.ok ? 'info' : 'error',
        r.ok ? 'repository verified clean' : 'damaged restore points found',
        {
          points: r.points.length,
          chunksChecked: r.chunksChecked,
          damaged,
        },
      );
      if (!r.ok) {
        throw new JobError(
          'VERIFY_DAMAGED',
          `verification of ${data.repository} found damaged restore points: ${damaged.join(', ')}`,
        );
      }
      return { ok: true, points: r.points.length, chunksChecked: r.chunksChecked };
    }
    case 'prune': {
      // Each policy's retention applies to the points of its VMs in its repository (grouped by VM name).
      const policies = (await listPolicies(rt.pool)).filter((p) => p.repository === data.repository);
      let removed = 0;
      for (const p of policies) {
        if (Object.values(p.retention).every((v) => v === undefined)) continue;
        const r = await repo.prune(p.retention);
        removed += r.removed.length;
        // Catalog rows of removed points go too.
        for (const gone of r.removed) {
          await rt.pool.query('DELETE FROM restore_points WHERE repository = $1 AND manifest_name = $2', [
            data.repository,
            gone.id,
          ]);
        }
      }
      await addJobEvent(rt.pool, data.jobId, 'info', `prune removed ${removed} restore point(s)`);
      return { removed };
    }
    case 'gc': {
      const r = await repo.gc({});
      await addJobEvent(rt.pool, data.jobId, 'info', 'garbage collection done', { ...r } as Record<
        string,
        unknown
      >);
      return { ...r } as Record<string, unknown>;
    }
    case 'catalog-rebuild': {
      const { points } = await repo.listPoints();
      let added = 0;
      for (const m of points) {
        if (await findRestorePointByManifest(rt.pool, data.repository, m.id)) continue;
        if (!m.tags.vmMoref) continue; // not a VM backup (an image backup from the CLI)
        const disks: RestorePointDisk[] = m.disks.map((d) => ({
          diskKey: Number(m.tags[`disk.${d.disk}.key`] ?? d.disk),
          label: d.label,
          capacityBytes: d.capacity,
          changeId: d.changeId,
          cbtUuid: d.changeId ? d.changeId.slice(0, Math.max(0, d.changeId.lastIndexOf('/'))) : null,
          mode: d.mode,
          bytesRead: d.stats.readBytes,
          bytesWritten: d.stats.storedBytes,
          durationMs: d.stats.durationMs,
          transport: 'nbdssl',
        }));
        await insertRestorePoint(rt.pool, {
          jobId: null,
          vcenterId: m.tags.vcenterId ?? null,
          vmMoref: m.tags.vmMoref,
          vmName: m.name,
          repository: data.repository,
          manifestName: m.id,
          snapshotTime: new Date(m.startedAt),
          consistency: (['application', 'filesystem', 'crash'].includes(m.consistency)
            ? m.consistency
            : 'crash') as ConsistencyMode,
          disks,
        });
        added++;
      }
      await addJobEvent(rt.pool, data.jobId, 'info', `catalog rebuild added ${added} restore point(s)`);
      return { added, points: points.length };
    }
  }
}
