import type { Queryable } from './db.js';

/** One hot-add: which job attached which disk of which VM to which proxy VM, and when it went away. */
export interface HotaddEntry {
  id: number;
  jobId: string | null;
  proxyId: string | null;
  proxyVmMoref: string;
  vmMoref: string;
  diskPath: string;
  controllerKey: number | null;
  unitNumber: number | null;
  attachedAt: Date;
  detachedAt: Date | null;
  detachedBy: 'job' | 'preflight' | 'operator' | null;
}

interface Row {
  id: number;
  job_id: string | null;
  proxy_id: string | null;
  proxy_vm_moref: string;
  vm_moref: string;
  disk_path: string;
  controller_key: number | null;
  unit_number: number | null;
  attached_at: Date;
  detached_at: Date | null;
  detached_by: HotaddEntry['detachedBy'];
}

function toEntry(r: Row): HotaddEntry {
  return {
    id: r.id,
    jobId: r.job_id,
    proxyId: r.proxy_id,
    proxyVmMoref: r.proxy_vm_moref,
    vmMoref: r.vm_moref,
    diskPath: r.disk_path,
    controllerKey: r.controller_key,
    unitNumber: r.unit_number,
    attachedAt: r.attached_at,
    detachedAt: r.detached_at,
    detachedBy: r.detached_by,
  };
}

/** Records an attach before (or right after) VDDK hot-adds the disk. */
export async function recordAttach(
  db: Queryable,
  e: {
    jobId: string | null;
    proxyId: string | null;
    proxyVmMoref: string;
    vmMoref: string;
    diskPath: string;
    controllerKey?: number | null;
    unitNumber?: number | null;
  },
): Promise<HotaddEntry> {
  const { rows } = await db.query<Row>(
    `INSERT INTO hotadd_ledger (job_id, proxy_id, proxy_vm_moref, vm_moref, disk_path, controller_key, unit_number)
     VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING *`,
    [
      e.jobId,
      e.proxyId,
      e.proxyVmMoref,
      e.vmMoref,
      e.diskPath,
      e.controllerKey ?? null,
      e.unitNumber ?? null,
    ],
  );
  return toEntry(rows[0]!);
}

/** Marks the open entries for this disk on this proxy VM detached. Returns how many were open. */
export async function recordDetach(
  db: Queryable,
  e: { proxyVmMoref: string; diskPath: string; by: 'job' | 'preflight' | 'operator' },
): Promise<number> {
  const { rowCount } = await db.query(
    `UPDATE hotadd_ledger SET detached_at = now(), detached_by = $3
     WHERE proxy_vm_moref = $1 AND disk_path = $2 AND detached_at IS NULL`,
    [e.proxyVmMoref, e.diskPath, e.by],
  );
  return rowCount ?? 0;
}

/** Attachments on a proxy VM that were never detached (the pre-flight's starting list). */
export async function openAttachments(db: Queryable, proxyVmMoref: string): Promise<HotaddEntry[]> {
  const { rows } = await db.query<Row>(
    'SELECT * FROM hotadd_ledger WHERE proxy_vm_moref = $1 AND detached_at IS NULL ORDER BY id',
    [proxyVmMoref],
  );
  return rows.map(toEntry);
}

export async function ledgerForJob(db: Queryable, jobId: string): Promise<HotaddEntry[]> {
  const { rows } = await db.query<Row>('SELECT * FROM hotadd_ledger WHERE job_id = $1 ORDER BY id', [jobId]);
  return rows.map(toEntry);
}
