import { migrateCatalog, openCatalog, type Pool } from '../catalog/db.js';
import { findPolicyByName, getPolicy, type Policy } from '../catalog/policies.js';
import { SecretBox } from '../catalog/secret-box.js';
import { findVcenterByName, getVcenter, getVcenterCredentials, type Vcenter } from '../catalog/vcenters.js';
import type { PolicyVmResolver } from '../api/deps.js';
import { policyVmResolver } from '../jobs/policy-vms.js';
import { sessionFor } from '../jobs/runtime.js';
import { loadConfig, readSecretFile, type LoadedConfig } from '../config/load.js';
import { openQueues, type Queues } from '../jobs/queues.js';
import { optionalSecret, redisConnection } from '../api/server.js';
import { formatIssues } from '../config/load.js';
import { createLogger, type Logger } from '../log.js';
import type { z } from 'zod';
import { UsageError } from './usage-error.js';

/** What the operator commands work with: the config, the catalog, the queues. */
export interface CliContext {
  loaded: LoadedConfig;
  pool: Pool;
  queues: Queues;
  logger: Logger;
  secretBox(): SecretBox;
  close(): Promise<void>;
}

export async function openContext(configOption: string | undefined): Promise<CliContext> {
  const loaded = loadConfig(configOption);
  const logger = createLogger('vbproxy', { level: process.env.VBPROXY_LOG_LEVEL ?? 'warn' });
  const pool = await openCatalog(loaded.config.database.url, {
    max: 2,
    password: optionalSecret(loaded, 'database.passwordFile'),
  });
  try {
    await migrateCatalog(pool);
  } catch (err) {
    await pool.end();
    throw err;
  }
  const queues = openQueues(
    redisConnection(loaded.config.redis.url, optionalSecret(loaded, 'redis.passwordFile')),
    loaded.config.redis.prefix,
  );
  let box: SecretBox | undefined;
  return {
    loaded,
    pool,
    queues,
    logger,
    secretBox() {
      box ??= SecretBox.fromKeyFile(
        readSecretFile(loaded, 'catalog.secretKeyFile'),
        loaded.config.catalog.secretKeyFile,
      );
      return box;
    },
    async close() {
      await queues.close();
      await pool.end();
    },
  };
}

/** Runs `fn` with an open context and always closes it. */
export async function withContext<T>(
  configOption: string | undefined,
  fn: (ctx: CliContext) => Promise<T>,
): Promise<T> {
  const ctx = await openContext(configOption);
  try {
    return await fn(ctx);
  } finally {
    await ctx.close();
  }
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export async function resolveVcenter(pool: Pool, nameOrId: string): Promise<Vcenter> {
  if (UUID.test(nameOrId)) return getVcenter(pool, nameOrId);
  const v = await findVcenterByName(pool, nameOrId);
  if (v === undefined) throw new UsageError(`no vCenter named "${nameOrId}" (see: vbproxy vcenter list)`);
  return v;
}

export async function resolvePolicy(pool: Pool, nameOrId: string): Promise<Policy> {
  if (UUID.test(nameOrId)) return getPolicy(pool, nameOrId);
  const p = await findPolicyByName(pool, nameOrId);
  if (p === undefined) throw new UsageError(`no policy named "${nameOrId}" (see: vbproxy policy list)`);
  return p;
}

/** Validates with an API schema; a failure is a usage error naming the field and the rule. */
export function parseWith<S extends z.ZodType>(schema: S, value: unknown, what: string): z.output<S> {
  const r = schema.safeParse(value);
  if (!r.success) throw new UsageError(`${what}: ${formatIssues(r.error.issues)}`);
  return r.data;
}

/** Prints JSON (with --json) or the human form. */
export function output(json: boolean, data: unknown, human: () => string): void {
  process.stdout.write(json ? `${JSON.stringify(data, null, 2)}\n` : `${human()}\n`);
}

/** A fixed-width table of rows. */
export function table(headers: string[], rows: (string | number | null | undefined)[][]): string {
  const cells = [
    headers,
    ...rows.map((r) => r.map((c) => (c === null || c === undefined ? '-' : String(c)))),
  ];
  const widths = headers.map((_, i) => Math.max(...cells.map((r) => (r[i] ?? '').length)));
  return cells
    .map((r) =>
      r
        .map((c, i) => c.padEnd(widths[i]!))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}

export function bytes(n: number | null | undefined): string {
  if (n === null || n === undefined) return '-';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return `${v.toFixed(u === 0 ? 0 : 1)} ${units[u]}`;
}

/** The policy VM resolver of "run now" from the CLI (opens the catalog key only when it connects). */
export function vmResolverOf(ctx: CliContext): PolicyVmResolver {
  return policyVmResolver({
    connect: async (id) => sessionFor(await getVcenterCredentials(ctx.pool, ctx.secretBox(), id)),
    proxyVmMoref: ctx.loaded.config.proxy.vmMoref ?? null,
  });
}
