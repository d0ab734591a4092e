import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { openAttachments } from '../../src/catalog/hotadd-ledger.js';
import type { Job } from '../../src/catalog/jobs.js';
import type { LabDefinitionInput } from '../../src/lab/definition.js';
import {
  DEFAULT_PG_ADMIN_URL,
  startLabEnvironment,
  type LabEnvironment,
  type WorkerProcess,
} from '../../src/lab/environment.js';

export type { WorkerProcess } from '../../src/lab/environment.js';
export const PASSPHRASE = 'e2e-repository-passphrase';
export const FAST_KDF = { opslimit: 1, memlimit: 8 * 1024 * 1024 };

/** A small lab: two VMs with CBT (one 2-disk), two proxies. Disks stay small so the suite is quick. */
export function smallLab(): LabDefinitionInput {
  return {
    taskDurationMs: 20,
    hosts: [{ name: 'esx1', datastores: ['ds1', 'ds2'] }],
    datastores: [{ name: 'ds1' }, { name: 'ds2' }],
    vms: [
      { name: 'web01', cbt: true, disks: [{ sizeMiB: 48, content: { seed: 11, template: 'debian' } }] },
      {
        name: 'db01',
        cbt: true,
        datastore: 'ds2',
        disks: [
          { sizeMiB: 32, content: { seed: 12 } },
          { sizeMiB: 16, content: { seed: 13 } },
        ],
      },
      // A powered-off VM to restore into.
      { name: 'spare01', powerState: 'poweredOff', disks: [{ sizeMiB: 32 }, { sizeMiB: 16 }] },
    ],
    proxies: [
      { name: 'vbproxy01', disks: [{ sizeMiB: 8 }] },
      { name: 'vbproxy02', disks: [{ sizeMiB: 8 }] },
    ],
  };
}

/** The lab environment (src/lab/environment.ts) with the end-to-end tests' worker timings. */
export interface E2E extends Omit<LabEnvironment, 'startWorker' | 'waitJob' | 'ourSnapshots'> {
  /** A worker with short lock, stalled-check and retry delays, logging at info, its output kept. */
  startWorker(
    proxy: string,
    opts?: { env?: Record<string, string>; hotaddDatastores?: string[]; metrics?: boolean },
  ): WorkerProcess;
  waitJob(jobId: string, timeoutMs?: number): Promise<Job>;
  /** Morefs of this product's snapshots of a VM. */
  ourSnapshots(vm: string): Promise<string[]>;
  /** Open hot-add ledger entries of a proxy VM. */
  openLedger(proxy: string): Promise<number>;
}

export function fileHash(path: string): string {
  return createHash('sha256').update(readFileSync(path)).digest('hex');
}

export async function startE2E(definition: LabDefinitionInput = smallLab()): Promise<E2E> {
  const env = await startLabEnvironment({
    definition,
    dirPrefix: 'vbproxy-e2e-',
    pgAdminUrl: process.env.VBPROXY_TEST_PG_URL ?? DEFAULT_PG_ADMIN_URL,
    databasePrefix: 'vbproxy_test',
    queuePrefix: 'vbpe2e',
    repository: { passphrase: PASSPHRASE, kdf: FAST_KDF },
  });
  return {
    ...env,
    startWorker: (proxy, opts = {}) =>
      env.startWorker(proxy, {
        ...opts,
        env: { VBPROXY_LOG_LEVEL: 'info', ...(opts.env ?? {}) },
        lockDurationMs: 2500,
        stalledIntervalMs: 1000,
        retryDelayMs: 300,
      }),
    // A job takes seconds here; the limit only ends a broken run, so it allows a slow, loaded machine.
    waitJob: (jobId, timeoutMs = 180_000) => env.waitJob(jobId, { timeoutMs }),
    ourSnapshots: async (vm) => (await env.ourSnapshots(vm)).map((n) => n.ref.value),
    openLedger: async (proxy) => (await openAttachments(env.db.pool, env.moref(proxy))).length,
  };
}
