import { connect } from 'node:net';
import { VbproxyError } from '../errors.js';
import type { VcenterConnectionParams, VcenterConnectionTester } from './deps.js';

export class VcenterConnectionError extends VbproxyError {}

/**
 * The default connection test until the vSphere client is wired in: opens a TCP connection to the
 * vCenter's host and port. It proves the address is reachable from the proxy; it does not check
 * the certificate or the credentials (the message says so).
 */
export function reachabilityTester(timeoutMs = 5000): VcenterConnectionTester {
  return {
    test(p: VcenterConnectionParams) {
      const u = new URL(p.url);
      const port = Number(u.port || (u.protocol === 'https:' ? 443 : 80));
      return new Promise((resolve, reject) => {
        const socket = connect({ host: u.hostname, port, timeout: timeoutMs });
        const fail = (why: string, cause?: unknown) => {
          socket.destroy();
          reject(
            new VcenterConnectionError(
              'VCENTER_UNREACHABLE',
              `cannot reach vCenter at ${u.host}: ${why}; check the URL and the proxy's network`,
              { cause, transient: true },
            ),
          );
        };
        socket.once('connect', () => {
          socket.end();
          resolve({ message: `${u.host} is reachable (credentials are checked at the first job)` });
        });
        socket.once('timeout', () => fail(`no answer within ${timeoutMs} ms`));
        socket.once('error', (err) => fail((err as NodeJS.ErrnoException).code ?? err.message, err));
      });
    },
  };
}

/** The default VM resolver: explicit morefs only; folders and name patterns need the vSphere client. */
export const explicitMorefResolver = {
  async resolve(policy: { vmSelection: { morefs: string[]; folders: string[]; namePatterns: string[] } }) {
    if (policy.vmSelection.folders.length > 0 || policy.vmSelection.namePatterns.length > 0) {
      throw new VbproxyError(
        'POLICY_SELECTION_UNRESOLVED',
        'this policy selects VMs by folder or name pattern, which needs the vSphere inventory (not wired into this build yet); run it with explicit vmMorefs',
      );
    }
    return policy.vmSelection.morefs.map((moref) => ({ moref }));
  },
};
