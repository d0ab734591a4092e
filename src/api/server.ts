import { readFileSync } from 'node:fs';
import { createServer as createHttpServer, type Server } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import type { ConnectionOptions } from 'bullmq';
import type { Express } from 'express';
import { migrateCatalog, openCatalog, type Pool } from '../catalog/db.js';
import { SecretBox } from '../catalog/secret-box.js';
import { lastRestorePointPerVm } from '../catalog/restore-points.js';
import { ConfigError, readSecretFile, type LoadedConfig } from '../config/load.js';
import { openQueues, queueCounts, type Queues } from '../jobs/queues.js';
import { createLogger, type Logger } from '../log.js';
import { Metrics } from '../metrics/metrics.js';
import { version } from '../version.js';
import { createApp } from './app.js';
import { TokenStore } from './auth.js';
import type { PolicyVmResolver, RegistrationStatus, VcenterConnectionTester } from './deps.js';
import { catalogPolicyVmResolver } from '../jobs/policy-vms.js';
import { vsphereConnectionTester } from './vcenter-tester.js';

/** Redis connection options from a redis:// or rediss:// URL (and the password from its file, if any). */
export function redisConnection(url: string, password?: string): ConnectionOptions {
  const u = new URL(url);
  const db = u.pathname.length > 1 ? Number(u.pathname.slice(1)) : 0;
  return {
    host: u.hostname,
    port: Number(u.port || 6379),
    ...(u.username ? { username: decodeURIComponent(u.username) } : {}),
    ...(password === undefined ? {} : { password }),
    db: Number.isInteger(db) ? db : 0,
    ...(u.protocol === 'rediss:' ? { tls: {} } : {}),
    maxRetriesPerRequest: null,
  };
}

/** The content of an optional secret file key, or undefined when the key is not set. */
export function optionalSecret(
  loaded: LoadedConfig,
  key: 'database.passwordFile' | 'redis.passwordFile',
): string | undefined {
  const [section, field] = key.split('.') as ['database' | 'redis', 'passwordFile'];
  if (loaded.config[section][field] === undefined) return undefined;
  return readSecretFile(loaded, key).toString('utf8');
}

export interface RunningApi {
  readonly app: Express;
  readonly url: string;
  readonly port: number;
  readonly pool: Pool;
  readonly queues: Queues;
  readonly metrics: Metrics;
  /** The catalog key (vCenter passwords are sealed with it). */
  readonly secretBox: SecretBox;
  close(): Promise<void>;
}

export interface StartApiOptions {
  tester?: VcenterConnectionTester;
  vmResolver?: PolicyVmResolver;
  registration?: () => RegistrationStatus;
  logger?: Logger;
  metrics?: Metrics;
}

/**
 * Starts the API as `vbproxy api` does: migrates the catalog, opens the queues, and listens on
 * api.listen:api.port with TLS from api.tls (plain HTTP only when api.plainHttp is true).
 */
export async function startApi(loaded: LoadedConfig, options: StartApiOptions = {}): Promise<RunningApi> {
  const { config } = loaded;
  const logger = options.logger ?? createLogger('vbproxy-api', { level: config.logLevel });
  const secretBox = SecretBox.fromKeyFile(
    readSecretFile(loaded, 'catalog.secretKeyFile'),
    config.catalog.secretKeyFile,
  );
  const tokens = new TokenStore(config.api.tokensFile);
  let tls: { cert: Buffer; key: Buffer } | undefined;
  if (!config.api.plainHttp) {
    const t = config.api.tls!;
    let cert: Buffer;
    try {
      cert = readFileSync(t.certFile);
    } catch (err) {
      throw new ConfigError('CONFIG_TLS', `${loaded.path}: api.tls.certFile: cannot read ${t.certFile}`, {
        cause: err,
      });
    }
    tls = { cert, key: readSecretFile(loaded, 'api.tls.keyFile') };
  }
  const pool = await openCatalog(config.database.url, {
    password: optionalSecret(loaded, 'database.passwordFile'),
  });
  let queues: Queues | undefined;
  try {
    await migrateCatalog(pool);
    queues = openQueues(
      redisConnection(config.redis.url, optionalSecret(loaded, 'redis.passwordFile')),
      config.redis.prefix,
    );
    const metrics = options.metrics ?? new Metrics();
    const q = queues;
    metrics.setQueueSource(() => queueCounts(q));
    metrics.setLastSuccessSource(() => lastRestorePointPerVm(pool));
    const app = createApp({
      pool,
      queues,
      secretBox,
      tokens,
      metrics,
      tester: options.tester ?? vsphereConnectionTester(),
      vmResolver:
        options.vmResolver ?? catalogPolicyVmResolver(pool, secretBox, config.proxy.vmMoref ?? null),
      proxy: {
        name: config.proxy.name,
        version,
        vmMoref: config.proxy.vmMoref ?? null,
        biosUuid: config.proxy.biosUuid ?? null,
        diskConcurrency: config.worker.diskConcurrency,
      },
      repositoryPath: config.repository.path,
      ...(options.registration === undefined ? {} : { registration: options.registration }),
      logger,
      bodyLimitBytes: config.api.bodyLimitBytes,
    });
    const server: Server = tls === undefined ? createHttpServer(app) : createHttpsServer(tls, app);
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(config.api.port, config.api.listen, () => resolve());
    });
    const port = (server.address() as AddressInfo).port;
    const host = config.api.listen.includes(':') ? `[${config.api.listen}]` : config.api.listen;
    const url = `${tls === undefined ? 'http' : 'https'}://${host}:${port}`;
    logger.info({ url, tls: tls !== undefined }, 'API listening');
    return {
      app,
      url,
      port,
      pool,
      queues,
      metrics,
      secretBox,
      async close() {
        await new Promise<void>((resolve) => {
          server.close(() => resolve());
          server.closeAllConnections();
        });
        await q.close();
        await pool.end();
      },
    };
  } catch (err) {
    await queues?.close().catch(() => undefined);
    await pool.end().catch(() => undefined);
    throw err;
  }
}
