import { X509Certificate } from 'node:crypto';
import { VddkError } from './errors.js';

/** VDDK's transport mode names. */
export const TRANSPORTS = ['file', 'san', 'hotadd', 'nbdssl', 'nbd'] as const;
export type Transport = (typeof TRANSPORTS)[number];

/** How VDDK authenticates to vCenter: the job's vSphere session (preferred) or a user and password. */
export type VddkCredentials =
  | { readonly kind: 'session'; readonly cookie: string; readonly userName?: string }
  | { readonly kind: 'password'; readonly userName: string; readonly password: string };

/**
 * What VDDK needs to reach a VM's disks, all of it known from the vSphere session: the server,
 * its certificate's SHA-1 thumbprint, the session cookie (or credentials), the VM and snapshot
 * morefs, and the transport order of the policy.
 */
export interface VddkConnectionSpec {
  /** vCenter (or ESXi) host name or address. */
  readonly server: string;
  /** vim25 API port (default 443). */
  readonly port?: number;
  /** NFC port on the ESXi hosts (default 902). */
  readonly nfcHostPort?: number;
  /** SHA-1 thumbprint `AA:BB:...` (20 pairs); use `thumbprintFromPem` to derive it from the certificate. */
  readonly thumbprint: string;
  readonly credentials: VddkCredentials;
  /** The VM whose disks are opened, as a managed object reference (`vm-42`); absent for Cleanup. */
  readonly vmMoref?: string;
  /** The snapshot whose disks are read (`snapshot-17`); required for hotadd. */
  readonly snapshotMoref?: string;
  /** Transport modes in order of preference (default: hotadd, then nbdssl, then nbd). */
  readonly transports?: readonly Transport[];
  /** Read-only connections are cheaper and cannot write (backup); restore needs false. */
  readonly readOnly?: boolean;
}

export const DEFAULT_TRANSPORT_ORDER: readonly Transport[] = ['hotadd', 'nbdssl', 'nbd'];

/** The SHA-1 thumbprint of a PEM certificate, in VDDK's `AA:BB:...` form. */
export function thumbprintFromPem(pem: string | Buffer): string {
  try {
    return new X509Certificate(pem).fingerprint.toUpperCase();
  } catch (cause) {
    throw new VddkError('VDDK_BAD_CERTIFICATE', 'cannot read the vCenter certificate (expected PEM)', {
      cause,
    });
  }
}

const thumbprintPattern = /^[0-9A-F]{2}(:[0-9A-F]{2}){19}$/;

/** `moref=vm-42`: VDDK's vmxSpec for a VM known by its managed object reference. */
export function vmxSpecFor(vmMoref: string): string {
  return `moref=${vmMoref}`;
}

/** `vmware_soap_session="..."` from a Set-Cookie/Cookie header value or a bare session value. */
export function sessionCookie(cookie: string): string {
  const m = /vmware_soap_session="?([^";]+)"?/.exec(cookie);
  const value = m ? m[1] : cookie.trim().replace(/^"|"$/g, '');
  return `vmware_soap_session="${value}"`;
}

/** The fields of VixDiskLibConnectParams, validated; strings are what VDDK receives. */
export interface ConnectParamsFields {
  readonly vmxSpec: string | null;
  readonly serverName: string;
  readonly thumbPrint: string;
  readonly credType: 1 | 2;
  readonly userName: string | null;
  readonly password: string | null;
  readonly cookie: string | null;
  readonly key: string | null;
  readonly port: number;
  readonly nfcHostPort: number;
}

export function connectParamsFields(spec: VddkConnectionSpec, withVm = true): ConnectParamsFields {
  if (!spec.server) throw new VddkError('VDDK_BAD_SPEC', 'the VDDK connection has no server name');
  const thumb = spec.thumbprint.toUpperCase();
  if (!thumbprintPattern.test(thumb)) {
    throw new VddkError(
      'VDDK_BAD_THUMBPRINT',
      `the thumbprint for ${spec.server} is not a SHA-1 thumbprint (20 hex pairs separated by colons)`,
    );
  }
  const c = spec.credentials;
  if (c.kind === 'password' && (!c.userName || !c.password)) {
    throw new VddkError(
      'VDDK_BAD_SPEC',
      `the VDDK credentials for ${spec.server} need a user name and a password`,
    );
  }
  if (c.kind === 'session' && !c.cookie) {
    throw new VddkError('VDDK_BAD_SPEC', `the VDDK session credentials for ${spec.server} have no cookie`);
  }
  return {
    vmxSpec: withVm && spec.vmMoref ? vmxSpecFor(spec.vmMoref) : null,
    serverName: spec.server,
    thumbPrint: thumb,
    credType: c.kind === 'password' ? 1 : 2,
    userName: c.userName ?? null,
    password: c.kind === 'password' ? c.password : null,
    cookie: c.kind === 'session' ? sessionCookie(c.cookie) : null,
    key: c.kind === 'session' ? '' : null,
    port: spec.port ?? 443,
    nfcHostPort: spec.nfcHostPort ?? 902,
  };
}
