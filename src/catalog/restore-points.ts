import type { Queryable } from './db.js';
import { inTransaction, isPgError, type Pool } from './db.js';
import { ConflictError, NotFoundError } from './errors.js';
import type { ConsistencyMode } from './policies.js';

export type DiskTransport = 'hotadd' | 'nbdssl' | 'nbd' | 'file';

export interface RestorePointDisk {
  diskKey: number;
  label: string;
  capacityBytes: number;
  changeId: string | null;
  cbtUuid: string | null;
  mode: 'full' | 'incremental';
  bytesRead: number;
  bytesWritten: number;
  durationMs: number;
  transport: DiskTransport;
}

export interface RestorePoint {
  id: string;
  jobId: string | null;
  vcenterId: string | null;
  vmMoref: string;
  vmName: string;
  repository: string;
  manifestName: string;
  snapshotTime: Date;
  consistency: ConsistencyMode;
  createdAt: Date;
}

export interface RestorePointWithDisks extends RestorePoint {
  disks: RestorePointDisk[];
}

export type NewRestorePoint = Omit<RestorePoint, 'id' | 'createdAt'> & { disks: RestorePointDisk[] };

interface Row {
  id: string;
  job_id: string | null;
  vcenter_id: string | null;
  vm_moref: string;
  vm_name: string;
  repository: string;
  manifest_name: string;
  snapshot_time: Date;
  consistency: ConsistencyMode;
  created_at: Date;
}
interface DiskRow {
  restore_point_id: string;
  disk_key: number;
  label: string;
  capacity_bytes: number;
  change_id: string | null;
  cbt_uuid: string | null;
  mode: 'full' | 'incremental';
  bytes_read: number;
  bytes_written: number;
  duration_ms: number;
  transport: DiskTransport;
}

function toPoint(r: Row): RestorePoint {
  return {
    id: r.id,
    jobId: r.job_id,
    vcenterId: r.vcenter_id,
    vmMoref: r.vm_moref,
    vmName: r.vm_name,
    repository: r.repository,
    manifestName: r.manifest_name,
    snapshotTime: r.snapshot_time,
    consistency: r.consistency,
    createdAt: r.created_at,
  };
}
function toDisk(r: DiskRow): RestorePointDisk {
  return {
    diskKey: r.disk_key,
    label: r.label,
    capacityBytes: r.capacity_bytes,
    changeId: r.change_id,
    cbtUuid: r.cbt_uuid,
    mode: r.mode,
    bytesRead: r.bytes_read,
    bytesWritten: r.bytes_written,
    durationMs: r.duration_ms,
    transport: r.transport,
  };
}

/** Records a committed restore point and its disks in one transaction. */
export async function insertRestorePoint(pool: Pool, p: NewRestorePoint): Promise<RestorePointWithDisks> {
  try {
    return await insertRestorePointTx(pool, p);
  } catch (err) {
    if (isPgError(err, '23505')) {
      throw new ConflictError(
        `restore point ${p.manifestName} of repository ${p.repository} is already in the catalog`,
        {
          cause: err,
        },
      );
    }
    throw err;
  }
}

async function insertRestorePointTx(pool: Pool, p: NewRestorePoint): Promise<RestorePointWithDisks> {
  return inTransaction(pool, async (c) => {
    const { rows } = await c.query<Row>(
      `INSERT INTO restore_points (job_id, vcenter_id, vm_moref, vm_name, repository, manifest_name, snapshot_time, consistency)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING *`,
      [
        p.jobId,
        p.vcenterId,
        p.vmMoref,
        p.vmName,
        p.repository,
        p.manifestName,
        p.snapshotTime,
        p.consistency,
      ],
    );
    const point = toPoint(rows[0]!);
    for (const d of p.disks) {
      await c.query(
        `INSERT INTO restore_point_disks (restore_point_id, disk_key, label, capacity_bytes, change_id, cbt_uuid, mode,
           bytes_read, bytes_written, duration_ms, transport)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)`,
        [
          point.id,
          d.diskKey,
          d.label,
          d.capacityBytes,
          d.changeId,
          d.cbtUuid,
          d.mode,
          d.bytesRead,
          d.bytesWritten,
          d.durationMs,
          d.transport,
        ],
      );
    }
    return { ...point, disks: p.disks };
  });
}

export interface RestorePointFilter {
  vmMoref?: string | undefined;
  vcenterId?: string | undefined;
  from?: Date | undefined;
  to?: Date | undefined;
  limit?: number | undefined;
}

/** Restore points newest first. */
export async function listRestorePoints(db: Queryable, f: RestorePointFilter = {}): Promise<RestorePoint[]> {
  const where: string[] = [];
  const args: unknown[] = [];
  const add = (sql: string, v: unknown) => {
    args.push(v);
    where.push(sql.replace('?', `$${args.length}`));
  };
  if (f.vmMoref !== undefined) add('vm_moref = ?', f.vmMoref);
  if (f.vcenterId !== undefined) add('vcenter_id = ?', f.vcenterId);
  if (f.from !== undefined) add('snapshot_time >= ?', f.from);
  if (f.to !== undefined) add('snapshot_time <= ?', f.to);
  args.push(f.limit ?? 100);
  const { rows } = await db.query<Row>(
    `SELECT * FROM restore_points ${where.length > 0 ? `WHERE ${where.join(' AND ')}` : ''}
     ORDER BY snapshot_time DESC, id LIMIT $${args.length}`,
    args,
  );
  return rows.map(toPoint);
}

export async function getRestorePoint(db: Queryable, id: string): Promise<RestorePointWithDisks> {
  const { rows } = await db.query<Row>('SELECT * FROM restore_points WHERE id = $1', [id]);
  if (rows.length === 0) throw new NotFoundError('restore point', id);
  const disks = await db.query<DiskRow>(
    'SELECT * FROM restore_point_disks WHERE restore_point_id = $1 ORDER BY disk_key',
    [id],
  );
  return { ...toPoint(rows[0]!), disks: disks.rows.map(toDisk) };
}

/**
 * The newest restore point of a VM disk in a repository, with its changeId: what the CBT trust rule
 * compares against before an incremental.
 */
export async function latestDiskRecord(
  db: Queryable,
  q: { vcenterId: string; vmMoref: string; repository: string; diskKey: number },
): Promise<(RestorePointDisk & { restorePointId: string }) | undefined> {
  const { rows } = await db.query<DiskRow>(
    `SELECT d.* FROM restore_point_disks d JOIN restore_points p ON p.id = d.restore_point_id
     WHERE p.vcenter_id = $1 AND p.vm_moref = $2 AND p.repository = $3 AND d.disk_key = $4
     ORDER BY p.snapshot_time DESC LIMIT 1`,
    [q.vcenterId, q.vmMoref, q.repository, q.diskKey],
  );
  const r = rows[0];
  return r === undefined ? undefined : { ...toDisk(r), restorePointId: r.restore_point_id };
}

export async function deleteRestorePoint(db: Queryable, id: string): Promise<void> {
  const { rowCount } = await db.query('DELETE FROM restore_points WHERE id = $1', [id]);
  if (rowCount === 0) throw new NotFoundError('restore point', id);
}

/** Totals for status displays. */
export async function restorePointTotals(
  db: Queryable,
): Promise<{ points: number; vms: number; lastAt: Date | null }> {
  const { rows } = await db.query<{ points: number; vms: number; last_at: Date | null }>(
    'SELECT count(*)::int AS points, count(DISTINCT vm_moref)::int AS vms, max(snapshot_time) AS last_at FROM restore_points',
  );
  const r = rows[0]!;
  return { points: r.points, vms: r.vms, lastAt: r.last_at };
}

/** The newest restore point's commit time per VM moref (for the last-success metric). */
export async function lastRestorePointPerVm(db: Queryable): Promise<{ vm: string; at: Date }[]> {
  const { rows } = await db.query<{ vm: string; at: Date }>(
    'SELECT vm_moref AS vm, max(created_at) AS at FROM restore_points GROUP BY vm_moref',
  );
  return rows;
}

/** The restore point recorded for a manifest of a repository, if any (catalog rebuild skips those). */
export async function findRestorePointByManifest(
  db: Queryable,
  repository: string,
  manifestName: string,
): Promise<RestorePoint | undefined> {
  const { rows } = await db.query<Row>(
    'SELECT * FROM restore_points WHERE repository = $1 AND manifest_name = $2',
    [repository, manifestName],
  );
  return rows[0] === undefined ? undefined : toPoint(rows[0]);
}
