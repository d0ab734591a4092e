import { VbproxyError } from '../errors.js';
import { connectEndpoint } from '../vsphere/connect.js';
import { InvalidLoginError, VimConnectionError, VimFaultError, VimTlsError } from '../vsphere/errors.js';
import type { VcenterConnectionParams, VcenterConnectionTester } from './deps.js';

/** Why a vCenter connection test failed; `code` says which step (unreachable, certificate, login). */
export class VcenterConnectionError extends VbproxyError {}

function rootCause(err: unknown): string {
  let cur: unknown = err;
  while (cur instanceof Error && cur.cause instanceof Error) cur = cur.cause;
  if (cur instanceof Error) return (cur as NodeJS.ErrnoException).code ?? cur.message;
  return String(cur);
}

/**
 * The connection test of `POST /vcenters`, `/vcenters/{id}/test` and `vbproxy vcenter add|test`:
 * a real vim25 session through the vSphere client. It pins the certificate (the SHA-256
 * fingerprint, or the SHA-1 thumbprint checked against the server), logs in with the credentials,
 * reads the server clock (CurrentTime) and logs out. Each failure names its step: the URL that is
 * unreachable, the expected and presented fingerprints, or the vim25 fault of the login
 * (InvalidLogin for a wrong user name or password). The password is never part of a message.
 */
export function vsphereConnectionTester(opts: { timeoutMs?: number } = {}): VcenterConnectionTester {
  const timeoutMs = opts.timeoutMs ?? 15_000;
  return {
    async test(p: VcenterConnectionParams) {
      let client;
      try {
        client = await connectEndpoint(p, { timeoutMs });
      } catch (err) {
        throw describeConnectFailure(p, err);
      }
      try {
        const time = await client.keepAlive();
        const a = client.serviceContent.about;
        return {
          message:
            `logged in to ${a.fullName || a.name || 'vSphere'} (API ${a.apiVersion || 'unknown'}) at ${p.url} ` +
            `as ${p.username}; server time ${time}`,
        };
      } catch (err) {
        throw describeConnectFailure(p, err);
      } finally {
        await client.close();
      }
    },
  };
}

/** Maps a connection failure to the specific step that failed. */
export function describeConnectFailure(p: VcenterConnectionParams, err: unknown): VcenterConnectionError {
  if (err instanceof VimConnectionError) {
    return new VcenterConnectionError(
      'VCENTER_UNREACHABLE',
      `cannot reach vCenter at ${p.url}: ${rootCause(err)}; check the URL and the proxy's network`,
      { cause: err, transient: true },
    );
  }
  if (err instanceof VimTlsError) {
    return new VcenterConnectionError('VCENTER_CERTIFICATE', `certificate check failed: ${err.message}`, {
      cause: err,
    });
  }
  if (err instanceof InvalidLoginError) {
    return new VcenterConnectionError(
      'VCENTER_LOGIN',
      `vCenter at ${p.url} refused the login of ${p.username} with InvalidLogin: the user name or password is wrong`,
      { cause: err },
    );
  }
  if (err instanceof VimFaultError) {
    return new VcenterConnectionError(
      'VCENTER_FAULT',
      `vCenter at ${p.url} answered ${err.method} with the vim25 fault ${err.faultType}: ${err.serverMessage || err.message}`,
      { cause: err },
    );
  }
  return new VcenterConnectionError(
    'VCENTER_CONNECTION',
    `the connection to vCenter at ${p.url} failed: ${err instanceof Error ? err.message : String(err)}`,
    { cause: err },
  );
}
