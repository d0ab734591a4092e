import type { Queryable } from './db.js';
import { isPgError } from './db.js';
import { ConflictError, NotFoundError } from './errors.js';
import type { SecretBox } from './secret-box.js';

/** A vCenter as the catalog returns it: never with its password. */
export interface Vcenter {
  id: string;
  name: string;
  url: string;
  username: string;
  thumbprint: string | null;
  createdAt: Date;
  updatedAt: Date;
}

export interface NewVcenter {
  name: string;
  url: string;
  username: string;
  password: string;
  thumbprint?: string | null;
}

/** Connection details including the opened password, for the vSphere client only. */
export interface VcenterCredentials {
  url: string;
  username: string;
  password: string;
  thumbprint: string | null;
}

interface Row {
  id: string;
  name: string;
  url: string;
  username: string;
  thumbprint: string | null;
  created_at: Date;
  updated_at: Date;
}
const COLUMNS = 'id, name, url, username, thumbprint, created_at, updated_at';

function toVcenter(r: Row): Vcenter {
  return {
    id: r.id,
    name: r.name,
    url: r.url,
    username: r.username,
    thumbprint: r.thumbprint,
    createdAt: r.created_at,
    updatedAt: r.updated_at,
  };
}

export async function insertVcenter(db: Queryable, box: SecretBox, v: NewVcenter): Promise<Vcenter> {
  try {
    const { rows } = await db.query<Row>(
      `INSERT INTO vcenters (name, url, username, password_sealed, thumbprint) VALUES ($1, $2, $3, $4, $5)
       RETURNING ${COLUMNS}`,
      [v.name, v.url, v.username, box.seal(v.password), v.thumbprint ?? null],
    );
    return toVcenter(rows[0]!);
  } catch (err) {
    if (isPgError(err, '23505'))
      throw new ConflictError(`a vCenter named "${v.name}" already exists`, { cause: err });
    throw err;
  }
}

export async function listVcenters(db: Queryable): Promise<Vcenter[]> {
  const { rows } = await db.query<Row>(`SELECT ${COLUMNS} FROM vcenters ORDER BY name`);
  return rows.map(toVcenter);
}

export async function getVcenter(db: Queryable, id: string): Promise<Vcenter> {
  const { rows } = await db.query<Row>(`SELECT ${COLUMNS} FROM vcenters WHERE id = $1`, [id]);
  if (rows.length === 0) throw new NotFoundError('vCenter', id);
  return toVcenter(rows[0]!);
}

export async function findVcenterByName(db: Queryable, name: string): Promise<Vcenter | undefined> {
  const { rows } = await db.query<Row>(`SELECT ${COLUMNS} FROM vcenters WHERE name = $1`, [name]);
  return rows[0] === undefined ? undefined : toVcenter(rows[0]);
}

export async function getVcenterCredentials(
  db: Queryable,
  box: SecretBox,
  id: string,
): Promise<VcenterCredentials> {
  const { rows } = await db.query<{
    url: string;
    username: string;
    password_sealed: Buffer;
    thumbprint: string | null;
  }>('SELECT url, username, password_sealed, thumbprint FROM vcenters WHERE id = $1', [id]);
  const r = rows[0];
  if (r === undefined) throw new NotFoundError('vCenter', id);
  return {
    url: r.url,
    username: r.username,
    password: box.open(r.password_sealed),
    thumbprint: r.thumbprint,
  };
}

/** Deletes a vCenter; refused (409) while a policy uses it. */
export async function deleteVcenter(db: Queryable, id: string): Promise<void> {
  try {
    const { rowCount } = await db.query('DELETE FROM vcenters WHERE id = $1', [id]);
    if (rowCount === 0) throw new NotFoundError('vCenter', id);
  } catch (err) {
    if (isPgError(err, '23503')) {
      throw new ConflictError(
        `vCenter ${id} is still used by a policy; delete or move those policies first`,
        {
          cause: err,
        },
      );
    }
    throw err;
  }
}
