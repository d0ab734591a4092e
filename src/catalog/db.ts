import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { runner } from 'node-pg-migrate';
import { CatalogError } from './errors.js';

export type Pool = pg.Pool;
/** Anything queries can run on: the pool, or a client inside a transaction. */
export type Queryable = Pick<pg.Pool, 'query'>;

// bigint columns (byte counts) come back as numbers: they stay far below 2^53.
pg.types.setTypeParser(pg.types.builtins.INT8, (v) => Number(v));

const MIGRATIONS_DIR = fileURLToPath(new URL('./migrations', import.meta.url));

/** Opens a connection pool and checks that the database answers. */
export async function openCatalog(
  url: string,
  options: { max?: number; password?: string } = {},
): Promise<Pool> {
  const pool = new pg.Pool({
    connectionString: url,
    max: options.max ?? 10,
    ...(options.password === undefined ? {} : { password: options.password }),
  });
  pool.on('error', () => {
    /* idle client errors surface on the next query */
  });
  try {
    await pool.query('SELECT 1');
  } catch (err) {
    await pool.end().catch(() => undefined);
    throw new CatalogError(
      'CATALOG_UNREACHABLE',
      `cannot connect to the catalog database at ${redactUrl(url)}: ${(err as Error).message}; check database.url and that PostgreSQL is running`,
      { cause: err, transient: true },
    );
  }
  return pool;
}

/** The URL without its password, for messages. */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    // Socket URLs such as postgresql://vbproxy@/vbproxy?host=/run/postgresql have no host for
    // WHATWG URL; hide a password by pattern instead of losing the whole address.
    return url.replace(/^([a-z][a-z0-9+.-]*:\/\/[^:/@]*):[^@/]*@/i, '$1:***@');
  }
}

/** Applies the pending migrations (under node-pg-migrate's advisory lock, so concurrent starts are safe). */
export async function migrateCatalog(pool: Pool): Promise<string[]> {
  const client = await pool.connect();
  try {
    const applied = await runner({
      dbClient: client,
      dir: MIGRATIONS_DIR,
      ignorePattern: '.*\\.(map|d\\.ts)$',
      migrationsTable: 'vbproxy_migrations',
      direction: 'up',
      checkOrder: true,
      log: () => undefined,
    });
    return applied.map((m) => m.name);
  } catch (err) {
    throw new CatalogError('CATALOG_MIGRATION', `catalog migration failed: ${(err as Error).message}`, {
      cause: err,
    });
  } finally {
    client.release();
  }
}

/** Runs `fn` in a transaction on one client. */
export async function inTransaction<T>(pool: Pool, fn: (client: pg.PoolClient) => Promise<T>): Promise<T> {
  const client = await pool.connect();
  try {
    await client.query('BEGIN');
    const result = await fn(client);
    await client.query('COMMIT');
    return result;
  } catch (err) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw err;
  } finally {
    client.release();
  }
}

/** True when `err` is a PostgreSQL error with this SQLSTATE (23505 unique, 23503 foreign key, ...). */
export function isPgError(err: unknown, sqlState: string): boolean {
  return typeof err === 'object' && err !== null && (err as { code?: unknown }).code === sqlState;
}
