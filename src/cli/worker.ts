import { Command, InvalidArgumentError } from 'commander';
import { migrateCatalog, openCatalog } from '../catalog/db.js';
import { upsertProxy } from '../catalog/proxies.js';
import { SecretBox } from '../catalog/secret-box.js';
import { listVcenters } from '../catalog/vcenters.js';
import { optionalSecret, redisConnection } from '../api/server.js';
import { loadConfig, readSecretFile } from '../config/load.js';
import { connectVcenter, type JobRuntime } from '../jobs/runtime.js';
import { startWorkers } from '../jobs/worker.js';
import { createLogger } from '../log.js';
import { Metrics } from '../metrics/metrics.js';
import { startMetricsServer } from '../metrics/server.js';
import { Vddk } from '../vddk/index.js';
import { findSelfVm, readSelfIdentity } from '../vsphere/inventory.js';
import { version } from '../version.js';

function msArg(name: string) {
  return (v: string): number => {
    const n = Number(v);
    if (!Number.isSafeInteger(n) || n < 0)
      throw new InvalidArgumentError(`${name} must be a whole number of milliseconds`);
    return n;
  };
}

interface WorkerCliOptions {
  config?: string;
  lockDurationMs?: number;
  stalledIntervalMs?: number;
  retryDelayMs?: number;
  metrics: boolean;
}

/** `vbproxy worker`: this proxy's BullMQ workers (backup, restore, maintenance, schedules). */
export function workerCommand(): Command {
  return new Command('worker')
    .description('Run the backup, restore and maintenance workers of this proxy (the vbproxy-worker service)')
    .option(
      '-c, --config <file>',
      'configuration file (default: $VBPROXY_CONFIG or /etc/vbproxy/config.json)',
    )
    .option(
      '--lock-duration-ms <ms>',
      'how long a dead worker keeps its job locked (default 30000)',
      msArg('--lock-duration-ms'),
    )
    .option(
      '--stalled-interval-ms <ms>',
      'how often jobs of dead workers are looked for (default 30000)',
      msArg('--stalled-interval-ms'),
    )
    .option(
      '--retry-delay-ms <ms>',
      'first delay before resuming a read after a transient fault (default 2000)',
      msArg('--retry-delay-ms'),
    )
    .option('--no-metrics', 'do not serve /metrics')
    .action(async (opts: WorkerCliOptions) => {
      const loaded = loadConfig(opts.config);
      const { config } = loaded;
      const logger = createLogger('vbproxy-worker', {
        level: process.env.VBPROXY_LOG_LEVEL ?? config.logLevel,
      });
      const pool = await openCatalog(config.database.url, {
        password: optionalSecret(loaded, 'database.passwordFile'),
      });
      await migrateCatalog(pool);
      const secretBox = SecretBox.fromKeyFile(
        readSecretFile(loaded, 'catalog.secretKeyFile'),
        config.catalog.secretKeyFile,
      );
      const passphrase = readSecretFile(loaded, 'repository.passphraseFile').toString('utf8');
      const vddk = await Vddk.start({
        ...(config.vddk?.libDir !== undefined ? { libDir: config.vddk.libDir } : {}),
        ...(config.vddk?.configFile !== undefined ? { configFile: config.vddk.configFile } : {}),
        logger,
      });
      let vmMoref = config.proxy.vmMoref ?? null;
      const row0 = await upsertProxy(pool, {
        name: config.proxy.name,
        vmMoref,
        biosUuid: config.proxy.biosUuid ?? null,
        version,
        diskConcurrency: config.worker.diskConcurrency,
      });
      if (vmMoref === null)
        vmMoref = await discoverProxyVm(pool, secretBox, logger, row0.id, config.proxy.name);
      const row = await upsertProxy(pool, {
        name: config.proxy.name,
        vmMoref,
        biosUuid: config.proxy.biosUuid ?? null,
        version,
        diskConcurrency: config.worker.diskConcurrency,
      });
      const metrics = new Metrics();
      const server = opts.metrics ? await startMetricsServer(metrics, config.metrics) : undefined;
      const running = startWorkers({
        connection: redisConnection(config.redis.url, optionalSecret(loaded, 'redis.passwordFile')),
        prefix: config.redis.prefix,
        pool,
        metrics,
        logger,
        secretBox,
        proxy: { id: row.id, name: row.name, vmMoref },
        vddk,
        repositoryPassphrase: passphrase,
        diskConcurrency: config.worker.diskConcurrency,
        ...(opts.lockDurationMs !== undefined ? { lockDurationMs: opts.lockDurationMs } : {}),
        ...(opts.stalledIntervalMs !== undefined ? { stalledIntervalMs: opts.stalledIntervalMs } : {}),
        ...(opts.retryDelayMs !== undefined ? { retryDelayMs: opts.retryDelayMs } : {}),
      });
      // The repository's key derivation is deliberately slow: open it now, not in the first job.
      void running.runtime.repositories
        .get(config.repository.path)
        .catch((err: unknown) =>
          logger.warn(
            { err: (err as Error).message, repository: config.repository.path },
            'cannot open the repository yet',
          ),
        );
      logger.info(
        {
          proxy: row.name,
          proxyVm: vmMoref,
          diskConcurrency: config.worker.diskConcurrency,
          metrics: server?.url,
        },
        'worker started',
      );
      await new Promise<void>((resolve) => {
        const stop = (signal: string) => {
          logger.info({ signal }, 'stopping: waiting for running jobs');
          resolve();
        };
        process.once('SIGTERM', () => stop('SIGTERM'));
        process.once('SIGINT', () => stop('SIGINT'));
      });
      await running.close();
      await server?.close();
      await pool.end();
    });
}

/** The proxy VM from the DMI identity, tried against each vCenter of the catalog; null when not found. */
async function discoverProxyVm(
  pool: import('../catalog/db.js').Pool,
  secretBox: SecretBox,
  logger: import('../log.js').Logger,
  proxyId: string,
  name: string,
): Promise<string | null> {
  const identity = readSelfIdentity();
  const rt = { pool, secretBox } as unknown as JobRuntime;
  for (const v of await listVcenters(pool)) {
    try {
      const vc = await connectVcenter(rt, v.id);
      try {
        const ref = await findSelfVm(vc.client, identity);
        logger.info({ vcenter: v.name, vm: ref.value }, 'found the proxy VM');
        return ref.value;
      } finally {
        await vc.close();
      }
    } catch (err) {
      logger.warn({ vcenter: v.name, err: (err as Error).message }, 'proxy VM not found in this vCenter');
    }
  }
  logger.warn(
    { proxy: name, proxyId },
    'the proxy VM is unknown (set proxy.vmMoref): backups read over NBD only',
  );
  return null;
}
