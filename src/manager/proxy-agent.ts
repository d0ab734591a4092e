import { access, constants } from 'node:fs/promises';
import { cpus, loadavg, totalmem } from 'node:os';
import type { Pool } from '../catalog/db.js';
import { proxyLoad } from '../catalog/jobs.js';
import type { LoadedConfig } from '../config/load.js';
import type { Logger } from '../log.js';
import { version } from '../version.js';
import { RegistrationAgent } from './agent.js';
import { ManagerClient } from './client.js';

/** The vSphere objects this proxy can see; the integrator wires the vSphere client here. */
export interface InventoryView {
  hostsAndDatastores(): Promise<{
    hosts: { moref: string; name: string }[];
    datastores: { moref: string; name: string }[];
  }>;
}

/** Until the vSphere client is wired: no hosts and datastores are reported. */
export const emptyInventory: InventoryView = {
  async hostsAndDatastores() {
    return { hosts: [], datastores: [] };
  },
};

export interface ProxyAgentOptions {
  pool?: Pool;
  /** Redis liveness for heartbeats (e.g. a PING through the queue client). */
  redisOk?: () => Promise<boolean>;
  inventory?: InventoryView;
  apiUrl?: string | null;
  logger: Logger;
  backoff?: { initialMs: number; maxMs: number };
}

/** The registration agent of this proxy, built from its configuration (requires a `manager` section). */
export function createProxyAgent(loaded: LoadedConfig, o: ProxyAgentOptions): RegistrationAgent {
  const { config } = loaded;
  const m = config.manager;
  if (m === undefined)
    throw new Error(`${loaded.path}: no "manager" section; registration is not configured`);
  const client = new ManagerClient(m.url, { caFile: m.caFile });
  const inventory = o.inventory ?? emptyInventory;
  return new RegistrationAgent({
    client,
    enrollmentTokenFile: m.enrollmentTokenFile,
    credentialsFile: m.credentialsFile,
    logger: o.logger,
    ...(o.backoff === undefined ? {} : { backoff: o.backoff }),
    describe: async () => ({
      name: config.proxy.name,
      version,
      vm: { moref: config.proxy.vmMoref ?? null, biosUuid: config.proxy.biosUuid ?? null },
      ...(await inventory.hostsAndDatastores()),
      capacity: {
        cpus: cpus().length,
        memoryBytes: totalmem(),
        diskConcurrency: config.worker.diskConcurrency,
      },
      apiUrl: o.apiUrl ?? null,
    }),
    load: async () => {
      let database = false;
      let counts = { running: 0, queued: 0 };
      if (o.pool !== undefined) {
        try {
          counts = await proxyLoad(o.pool, config.proxy.name);
          database = true;
        } catch {
          database = false;
        }
      }
      const redis = o.redisOk === undefined ? false : await o.redisOk().catch(() => false);
      const datastore = await access(config.repository.path, constants.W_OK).then(
        () => true,
        () => false,
      );
      return {
        version,
        status: database && redis && datastore ? 'ok' : 'degraded',
        load: {
          runningJobs: counts.running,
          queuedJobs: counts.queued,
          diskConcurrency: config.worker.diskConcurrency,
          loadAverage1m: loadavg()[0] ?? 0,
        },
        health: { database, redis, datastore },
      };
    },
  });
}
