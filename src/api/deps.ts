import type { Pool } from '../catalog/db.js';
import type { Policy } from '../catalog/policies.js';
import type { SecretBox } from '../catalog/secret-box.js';
import type { Queues } from '../jobs/queues.js';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics/metrics.js';
import type { TokenStore } from './auth.js';

/** What a vCenter connection test needs. The password is only ever passed, never stored here. */
export interface VcenterConnectionParams {
  url: string;
  username: string;
  password: string;
  thumbprint: string | null;
}

/**
 * Tests a vCenter connection before it is stored (POST /vcenters) or on demand
 * (POST /vcenters/{id}/test). `vbproxy api` uses `vsphereConnectionTester` (vcenter-tester.ts:
 * login, CurrentTime, logout). Throw a VbproxyError with a message naming what failed
 * (unreachable, bad certificate, wrong credentials).
 */
export interface VcenterConnectionTester {
  test(params: VcenterConnectionParams): Promise<{ message: string }>;
}

/** Turns a policy's VM selection (morefs, folders, name patterns) into the VMs to back up. */
export interface PolicyVmResolver {
  resolve(policy: Policy): Promise<{ moref: string; name?: string }[]>;
}

/** The registration state shown by GET /proxy (from src/manager). */
export interface RegistrationStatus {
  state: string;
  proxyId: string | null;
}

export interface ProxyIdentity {
  name: string;
  version: string;
  vmMoref: string | null;
  biosUuid: string | null;
  diskConcurrency: number;
}

export interface ApiDeps {
  pool: Pool;
  queues: Queues;
  secretBox: SecretBox;
  tokens: TokenStore;
  metrics: Metrics;
  tester: VcenterConnectionTester;
  vmResolver: PolicyVmResolver;
  proxy: ProxyIdentity;
  /** The repository (datastore) path this proxy writes to. */
  repositoryPath: string;
  registration?: () => RegistrationStatus;
  logger: Logger;
  /** Largest request body in bytes (413 beyond). */
  bodyLimitBytes: number;
}
