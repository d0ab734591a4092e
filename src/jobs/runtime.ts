import type { Pool } from '../catalog/db.js';
import type { SecretBox } from '../catalog/secret-box.js';
import { getVcenterCredentials, type VcenterCredentials } from '../catalog/vcenters.js';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics/metrics.js';
import { Repository } from '../repository/repository.js';
import type { Vddk } from '../vddk/index.js';
import type { VddkConnectionSpec, Transport } from '../vddk/index.js';
import type { VimClient } from '../vsphere/client.js';
import { connectEndpoint } from '../vsphere/connect.js';
import { moref, type MoRef } from '../vsphere/wire/values.js';
import type { Queues } from './queues.js';
import type { DiskSlots } from './semaphore.js';

/** This worker's proxy: its catalog row and the VM it runs in (the hot-add target). */
export interface ProxyIdentity {
  readonly id: string;
  readonly name: string;
  /** The proxy VM's moref in the vCenter, or null when unknown (then only NBD is possible). */
  readonly vmMoref: string | null;
}

/** Everything a job handler needs; one per worker process. */
export interface JobRuntime {
  readonly pool: Pool;
  readonly queues: Queues;
  readonly metrics: Metrics;
  readonly logger: Logger;
  readonly secretBox: SecretBox;
  readonly proxy: ProxyIdentity;
  readonly vddk: Vddk;
  readonly repositories: RepositoryCache;
  readonly diskSlots: DiskSlots;
  /** Transient-fault retries inside one disk read (each resumes from the last durable chunk). */
  readonly readRetries: number;
  /** First delay between those retries; doubles each time. */
  readonly retryDelayMs: number;
  /** Snapshot attempts with quiescing before the policy's fallback applies. */
  readonly quiesceAttempts: number;
}

/** Opened repositories by path: opening derives the key (memory-hard KDF), so it is done once. */
export class RepositoryCache {
  readonly #open = new Map<string, Promise<Repository>>();
  constructor(private readonly passphrase: string) {}

  get(path: string): Promise<Repository> {
    let p = this.#open.get(path);
    if (!p) {
      p = Repository.open(path, this.passphrase, { startWorkers: true });
      p.catch(() => this.#open.delete(path));
      this.#open.set(path, p);
    }
    return p;
  }

  async close(): Promise<void> {
    for (const p of this.#open.values()) {
      const repo = await p.catch(() => undefined);
      await repo?.close().catch(() => undefined);
    }
    this.#open.clear();
  }
}

/** A logged-in vSphere session for a catalog vCenter, and what VDDK needs to reach the same server. */
export interface VcenterSession {
  readonly client: VimClient;
  readonly url: URL;
  readonly username: string;
  /** Builds the VDDK connection spec for a VM (and snapshot) of this vCenter. */
  vddkSpec(opts: {
    vmMoref?: string;
    snapshotMoref?: string;
    transports?: readonly Transport[];
    readOnly?: boolean;
  }): VddkConnectionSpec;
  close(): Promise<void>;
}

/** Connects to a vCenter of the catalog with its stored (sealed) credentials and certificate pin. */
export async function connectVcenter(rt: JobRuntime, vcenterId: string): Promise<VcenterSession> {
  const creds = await getVcenterCredentials(rt.pool, rt.secretBox, vcenterId);
  return sessionFor(creds);
}

/** A logged-in session for catalog credentials (the API's policy resolver uses it too). */
export async function sessionFor(creds: VcenterCredentials): Promise<VcenterSession> {
  const client = await connectEndpoint(creds);
  const url = new URL(creds.url);
  const password = creds.password;
  return {
    client,
    url,
    username: creds.username,
    vddkSpec(o) {
      const thumbprint = client.peerCertificate?.thumbprintSha1 ?? '';
      const cookie = client.transport.sessionCookie;
      return {
        server: url.hostname,
        port: Number(url.port || 443),
        thumbprint,
        credentials:
          cookie !== undefined
            ? { kind: 'session', cookie, userName: creds.username }
            : { kind: 'password', userName: creds.username, password },
        ...(o.vmMoref !== undefined ? { vmMoref: o.vmMoref } : {}),
        ...(o.snapshotMoref !== undefined ? { snapshotMoref: o.snapshotMoref } : {}),
        ...(o.transports !== undefined ? { transports: o.transports } : {}),
        readOnly: o.readOnly ?? true,
      };
    },
    close: () => client.close().catch(() => undefined),
  };
}

export function vmRef(id: string): MoRef {
  return moref('VirtualMachine', id);
}
