import type { Queryable } from './db.js';
import { isPgError } from './db.js';
import { ConflictError, NotFoundError } from './errors.js';

export type ConsistencyMode = 'application' | 'filesystem' | 'crash';
export type ConsistencyFallback = 'filesystem' | 'crash' | 'fail';
export type Transport = 'hotadd' | 'nbdssl' | 'nbd';

/** Which VMs a policy protects: the union of explicit morefs, folders and name patterns (globs). */
export interface VmSelection {
  morefs: string[];
  folders: string[];
  namePatterns: string[];
}
/** Which disks of each VM: all, only the listed device keys, or all but them. */
export interface DiskSelection {
  mode: 'all' | 'include' | 'exclude';
  diskKeys: number[];
}
export interface Retention {
  keepLast?: number | undefined;
  keepDaily?: number | undefined;
  keepWeekly?: number | undefined;
  keepMonthly?: number | undefined;
  keepYearly?: number | undefined;
}

export interface PolicyFields {
  name: string;
  vcenterId: string;
  vmSelection: VmSelection;
  diskSelection: DiskSelection;
  consistency: ConsistencyMode;
  consistencyFallback: ConsistencyFallback;
  transports: Transport[];
  /** A cron expression (5 or 6 fields) or null for manual runs only. */
  schedule: string | null;
  retention: Retention;
  repository: string;
  enabled: boolean;
}

export interface Policy extends PolicyFields {
  id: string;
  createdAt: Date;
  updatedAt: Date;
}

interface Row {
  id: string;
  name: string;
  vcenter_id: string;
  vm_selection: VmSelection;
  disk_selection: DiskSelection;
  consistency: ConsistencyMode;
  consistency_fallback: ConsistencyFallback;
  transports: Transport[];
  schedule: string | null;
  retention: Retention;
  repository: string;
  enabled: boolean;
  created_at: Date;
  updated_at: Date;
}

function toPolicy(r: Row): Policy {
  return {
    id: r.id,
    name: r.name,
    vcenterId: r.vcenter_id,
    vmSelection: r.vm_selection,
    diskSelection: r.disk_selection,
    consistency: r.consistency,
    consistencyFallback: r.consistency_fallback,
    transports: r.transports,
    schedule: r.schedule,
    retention: r.retention,
    repository: r.repository,
    enabled: r.enabled,
    createdAt: r.created_at,
    updatedAt: r.updated_at,
  };
}

function values(p: PolicyFields): unknown[] {
  return [
    p.name,
    p.vcenterId,
    JSON.stringify(p.vmSelection),
    JSON.stringify(p.diskSelection),
    p.consistency,
    p.consistencyFallback,
    p.transports,
    p.schedule,
    JSON.stringify(p.retention),
    p.repository,
    p.enabled,
  ];
}

function mapWriteError(err: unknown, p: PolicyFields): never {
  if (isPgError(err, '23505'))
    throw new ConflictError(`a policy named "${p.name}" already exists`, { cause: err });
  if (isPgError(err, '23503')) throw new NotFoundError('vCenter', p.vcenterId);
  throw err;
}

export async function insertPolicy(db: Queryable, p: PolicyFields): Promise<Policy> {
  try {
    const { rows } = await db.query<Row>(
      `INSERT INTO policies (name, vcenter_id, vm_selection, disk_selection, consistency, consistency_fallback,
         transports, schedule, retention, repository, enabled)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING *`,
      values(p),
    );
    return toPolicy(rows[0]!);
  } catch (err) {
    mapWriteError(err, p);
  }
}

export async function updatePolicy(db: Queryable, id: string, p: PolicyFields): Promise<Policy> {
  let rows: Row[];
  try {
    ({ rows } = await db.query<Row>(
      `UPDATE policies SET name = $1, vcenter_id = $2, vm_selection = $3, disk_selection = $4, consistency = $5,
         consistency_fallback = $6, transports = $7, schedule = $8, retention = $9, repository = $10, enabled = $11,
         updated_at = now()
       WHERE id = $12 RETURNING *`,
      [...values(p), id],
    ));
  } catch (err) {
    mapWriteError(err, p);
  }
  if (rows.length === 0) throw new NotFoundError('policy', id);
  return toPolicy(rows[0]!);
}

export async function getPolicy(db: Queryable, id: string): Promise<Policy> {
  const { rows } = await db.query<Row>('SELECT * FROM policies WHERE id = $1', [id]);
  if (rows.length === 0) throw new NotFoundError('policy', id);
  return toPolicy(rows[0]!);
}

export async function findPolicyByName(db: Queryable, name: string): Promise<Policy | undefined> {
  const { rows } = await db.query<Row>('SELECT * FROM policies WHERE name = $1', [name]);
  return rows[0] === undefined ? undefined : toPolicy(rows[0]);
}

export async function listPolicies(db: Queryable): Promise<Policy[]> {
  const { rows } = await db.query<Row>('SELECT * FROM policies ORDER BY name');
  return rows.map(toPolicy);
}

export async function deletePolicy(db: Queryable, id: string): Promise<void> {
  const { rowCount } = await db.query('DELETE FROM policies WHERE id = $1', [id]);
  if (rowCount === 0) throw new NotFoundError('policy', id);
}
