import type { Queryable } from './db.js';
import { NotFoundError } from './errors.js';

export interface ProxyRecord {
  id: string;
  name: string;
  vmMoref: string | null;
  biosUuid: string | null;
  version: string;
  managerProxyId: string | null;
  diskConcurrency: number;
  status: 'online' | 'offline' | 'draining';
  lastSeenAt: Date;
  createdAt: Date;
}

interface Row {
  id: string;
  name: string;
  vm_moref: string | null;
  bios_uuid: string | null;
  version: string;
  manager_proxy_id: string | null;
  disk_concurrency: number;
  status: ProxyRecord['status'];
  last_seen_at: Date;
  created_at: Date;
}

function toProxy(r: Row): ProxyRecord {
  return {
    id: r.id,
    name: r.name,
    vmMoref: r.vm_moref,
    biosUuid: r.bios_uuid,
    version: r.version,
    managerProxyId: r.manager_proxy_id,
    diskConcurrency: r.disk_concurrency,
    status: r.status,
    lastSeenAt: r.last_seen_at,
    createdAt: r.created_at,
  };
}

/** Records this proxy (by name) or refreshes its row; returns it. Workers call this at start. */
export async function upsertProxy(
  db: Queryable,
  p: {
    name: string;
    vmMoref?: string | null;
    biosUuid?: string | null;
    version: string;
    diskConcurrency: number;
  },
): Promise<ProxyRecord> {
  const { rows } = await db.query<Row>(
    `INSERT INTO proxies (name, vm_moref, bios_uuid, version, disk_concurrency) VALUES ($1, $2, $3, $4, $5)
     ON CONFLICT (name) DO UPDATE SET vm_moref = EXCLUDED.vm_moref, bios_uuid = EXCLUDED.bios_uuid,
       version = EXCLUDED.version, disk_concurrency = EXCLUDED.disk_concurrency, status = 'online', last_seen_at = now()
     RETURNING *`,
    [p.name, p.vmMoref ?? null, p.biosUuid ?? null, p.version, p.diskConcurrency],
  );
  return toProxy(rows[0]!);
}

export async function setManagerProxyId(
  db: Queryable,
  id: string,
  managerProxyId: string | null,
): Promise<void> {
  const { rowCount } = await db.query('UPDATE proxies SET manager_proxy_id = $2 WHERE id = $1', [
    id,
    managerProxyId,
  ]);
  if (rowCount === 0) throw new NotFoundError('proxy', id);
}

export async function touchProxy(
  db: Queryable,
  id: string,
  status: ProxyRecord['status'] = 'online',
): Promise<void> {
  await db.query('UPDATE proxies SET last_seen_at = now(), status = $2 WHERE id = $1', [id, status]);
}

export async function listProxies(db: Queryable): Promise<ProxyRecord[]> {
  const { rows } = await db.query<Row>('SELECT * FROM proxies ORDER BY name');
  return rows.map(toProxy);
}

export async function getProxyByName(db: Queryable, name: string): Promise<ProxyRecord | undefined> {
  const { rows } = await db.query<Row>('SELECT * FROM proxies WHERE name = $1', [name]);
  return rows[0] === undefined ? undefined : toProxy(rows[0]);
}
