import { Command } from 'commander';
import { checkHealth, repositoryStatus } from '../api/health.js';
import { countJobsByState } from '../catalog/jobs.js';
import { readCredentials } from '../manager/credentials.js';
import { queueCounts } from '../jobs/queues.js';
import { Metrics } from '../metrics/metrics.js';
import { version } from '../version.js';
import { bytes, output, withContext } from './surface-context.js';
import { ExitCode } from './exit-codes.js';

/** `vbproxy status`: identity, health, registration, queues and the catalog at a glance. */
export function statusCommand(): Command {
  return new Command('status')
    .description(
      'show this proxy: identity, health of PostgreSQL/Redis/datastore, registration, jobs (exit 1 when unhealthy)',
    )
    .option('-c, --config <file>', 'configuration file')
    .option('--json', 'JSON output')
    .action(async (opts: { config?: string; json?: boolean }) => {
      await withContext(opts.config, async (ctx) => {
        const { config } = ctx.loaded;
        const deps = { pool: ctx.pool, queues: ctx.queues, repositoryPath: config.repository.path };
        const health = await checkHealth(deps);
        const repo = await repositoryStatus({ ...deps, metrics: new Metrics({ defaults: false }) });
        const jobs = await countJobsByState(ctx.pool);
        const queues = await queueCounts(ctx.queues).catch(() => null);
        let registration: { manager: string | null; proxyId: string | null; error?: string } = {
          manager: config.manager?.url ?? null,
          proxyId: null,
        };
        if (config.manager !== undefined) {
          try {
            registration.proxyId = readCredentials(config.manager.credentialsFile)?.proxyId ?? null;
          } catch (err) {
            registration = { ...registration, error: (err as Error).message };
          }
        }
        const healthy = health.database.ok && health.redis.ok && health.datastore.ok;
        const data = {
          proxy: { name: config.proxy.name, version, vmMoref: config.proxy.vmMoref ?? null },
          healthy,
          health,
          registration,
          repository: repo,
          jobs,
          queues,
        };
        output(opts.json === true, data, () => {
          const check = (c: { ok: boolean; message?: string }) =>
            c.ok ? 'ok' : `FAILING (${c.message ?? ''})`;
          return [
            `proxy       ${config.proxy.name} (vbproxy ${version}${config.proxy.vmMoref ? `, VM ${config.proxy.vmMoref}` : ''})`,
            `database    ${check(health.database)}`,
            `redis       ${check(health.redis)}`,
            `datastore   ${check(health.datastore)}  ${repo.path}  free ${bytes(repo.freeBytes)} of ${bytes(repo.totalBytes)}`,
            `manager     ${registration.manager === null ? 'not configured' : `${registration.manager}  ${registration.proxyId === null ? 'not registered' : `proxy id ${registration.proxyId}`}`}`,
            `catalog     ${repo.restorePoints} restore points of ${repo.vms} VMs, last ${repo.lastRestorePointAt ?? 'never'}`,
            `jobs        ${jobs.running} running, ${jobs.queued} queued, ${jobs.failed} failed, ${jobs.succeeded} succeeded`,
          ].join('\n');
        });
        if (!healthy) process.exitCode = ExitCode.failure;
      });
    });
}
