import { VbproxyError } from '../errors.js';

/** VixError codes vbproxy names (the low 16 bits of a VixError). */
export const Vix = {
  OK: 0,
  E_FAIL: 1,
  E_OUT_OF_MEMORY: 2,
  E_INVALID_ARG: 3,
  E_FILE_NOT_FOUND: 4,
  E_OBJECT_IS_BUSY: 5,
  E_NOT_SUPPORTED: 6,
  E_FILE_ERROR: 7,
  E_DISK_FULL: 8,
  E_FILE_READ_ONLY: 11,
  E_FILE_ACCESS_ERROR: 13,
  E_FILE_ALREADY_LOCKED: 15,
  E_BUFFER_TOOSMALL: 24,
  E_OBJECT_NOT_FOUND: 25,
  E_HOST_NOT_CONNECTED: 26,
  E_OPERATION_ALREADY_IN_PROGRESS: 31,
  E_AUTHENTICATION_FAIL: 35,
  E_HOST_CONNECTION_LOST: 36,
  E_INVALID_HANDLE: 1000,
  E_HOST_USER_PERMISSIONS: 3014,
  E_VM_NOT_FOUND: 4000,
  E_SNAPSHOT_NOTFOUND: 13003,
  E_SNAPSHOT_LOCKED: 13010,
  E_SNAPSHOT_DISKLOCKED: 13014,
  E_HOST_NETBLKDEV_HANDSHAKE: 14006,
  E_HOST_SOCKET_CREATION_ERROR: 14007,
  E_HOST_SERVER_NOT_FOUND: 14008,
  E_HOST_NETWORK_CONN_REFUSED: 14009,
  E_HOST_TCP_SOCKET_ERROR: 14010,
  E_HOST_TCP_CONN_LOST: 14011,
  E_HOST_SERVER_SHUTDOWN: 14014,
  E_HOST_SERVER_NOT_AVAILABLE: 14015,
  E_DISK_INVAL: 16000,
  E_DISK_NOINIT: 16001,
  E_DISK_NOIO: 16002,
  E_DISK_PARTIALCHAIN: 16003,
  E_DISK_NEEDSREPAIR: 16006,
  E_DISK_OUTOFRANGE: 16007,
  E_DISK_CID_MISMATCH: 16008,
  E_DISK_NOTSUPPORTED: 16013,
  E_DISK_NEEDKEY: 16014,
  E_DISK_NOKEY: 16017,
  E_DISK_TOOMANYOPENFILES: 16027,
  E_DISK_KEY_NOTFOUND: 16052,
  E_DISK_SUBSYSTEM_INIT_FAIL: 16053,
  E_DISK_INVALID_CONNECTION: 16054,
  E_DISK_NOLICENSE: 16064,
  E_CANNOT_CONNECT_TO_HOST: 18000,
  E_INVALID_HOSTNAME_SPECIFICATION: 18002,
  ASYNC: 25000,
  E_ASYNC_MIXEDMODE_UNSUPPORTED: 26000,
  E_NET_HTTP_COULDNT_RESOLVE_HOST: 30006,
  E_NET_HTTP_COULDNT_CONNECT: 30007,
  E_NET_HTTP_OPERATION_TIMEDOUT: 30028,
  E_NET_HTTP_SSL_CONNECT_ERROR: 30035,
  E_NET_HTTP_SSL_SECURITY: 30201,
  E_NET_HTTP_GENERIC: 30202,
} as const;

const names = new Map<number, string>(Object.entries(Vix).map(([name, code]) => [code, `VIX_${name}`]));

/** `err & 0xFFFF`: VDDK may set higher bits, only the low 16 carry the code. */
export function vixCode(raw: number | bigint): number {
  return typeof raw === 'bigint' ? Number(raw & 0xffffn) : Number(BigInt(raw) & 0xffffn);
}

export function vixName(code: number): string {
  return names.get(code) ?? `VixError ${code}`;
}

/** A failure that came from the library, before it is mapped to a class (crosses the worker boundary). */
export interface VixFailure {
  readonly code: number;
  /** The VixDiskLib function that failed, e.g. `VixDiskLib_Open`. */
  readonly operation: string;
  /** VDDK's text for the code (VixDiskLib_GetErrorText). */
  readonly text: string;
  /** The disk or connection concerned, for the message. */
  readonly object?: string;
  /** The library's last warning during the call, when it explained itself. */
  readonly detail?: string;
}

/** The root of every error from the VDDK binding. `vixCode` is `err & 0xFFFF` (0 for binding errors). */
export class VddkError extends VbproxyError {
  readonly vixCode: number;
  readonly operation: string;
  readonly vixText: string;

  constructor(
    code: string,
    message: string,
    options: {
      cause?: unknown;
      transient?: boolean;
      vixCode?: number;
      operation?: string;
      vixText?: string;
    } = {},
  ) {
    super(code, message, options);
    this.vixCode = options.vixCode ?? 0;
    this.operation = options.operation ?? '';
    this.vixText = options.vixText ?? '';
  }
}

/** The library cannot be loaded, lacks a symbol, or cannot be initialised. */
export class VddkLibraryError extends VddkError {}
/** The host cannot be reached, the connection dropped, or the server's identity does not match. */
export class VddkConnectionError extends VddkError {}
/** Credentials, permissions, licence or encryption keys refuse the access. */
export class VddkPermissionError extends VddkError {}
/** The disk, VM, snapshot or metadata key does not exist. */
export class VddkNotFoundError extends VddkError {}
/** An I/O beyond the disk's capacity. */
export class VddkOutOfRangeError extends VddkError {}
/** No transport mode in the list can open the disk (hotadd refused, SAN not visible...). */
export class VddkTransportError extends VddkError {}
/** The caller broke one of VDDK's rules (thread, concurrency, alignment, call order): a bug, never retried. */
export class VddkRuleViolationError extends VddkError {}

type Family = {
  cls: new (code: string, message: string, options: ConstructorParameters<typeof VddkError>[2]) => VddkError;
  transient: boolean;
  hint: string;
};

const connectionTransient: Family = {
  cls: VddkConnectionError,
  transient: true,
  hint: 'the host or the network failed; the job retries with backoff',
};
const connectionPermanent: Family = {
  cls: VddkConnectionError,
  transient: false,
  hint: "check the server name and the vCenter certificate's SHA-1 thumbprint",
};
const permission: Family = {
  cls: VddkPermissionError,
  transient: false,
  hint: 'check the vCenter user, its privileges and the licence',
};
const notFound: Family = {
  cls: VddkNotFoundError,
  transient: false,
  hint: 'the disk, VM or snapshot does not exist (any more)',
};
const outOfRange: Family = {
  cls: VddkOutOfRangeError,
  transient: false,
  hint: "the request lies beyond the disk's capacity",
};
const transport: Family = {
  cls: VddkTransportError,
  transient: false,
  hint: 'no transport mode in the list can reach this disk; allow nbdssl as a fallback',
};
const rule: Family = {
  cls: VddkRuleViolationError,
  transient: false,
  hint: 'the binding broke a VDDK calling rule: this is a vbproxy bug',
};
const otherTransient: Family = { cls: VddkError, transient: true, hint: 'a temporary failure; retried' };
const otherPermanent: Family = { cls: VddkError, transient: false, hint: '' };

const families = new Map<number, Family>();
function assign(f: Family, codes: number[]): void {
  for (const c of codes) families.set(c, f);
}
assign(connectionTransient, [
  Vix.E_HOST_NOT_CONNECTED,
  Vix.E_HOST_CONNECTION_LOST,
  Vix.E_HOST_NETBLKDEV_HANDSHAKE,
  Vix.E_HOST_SOCKET_CREATION_ERROR,
  Vix.E_HOST_NETWORK_CONN_REFUSED,
  Vix.E_HOST_TCP_SOCKET_ERROR,
  Vix.E_HOST_TCP_CONN_LOST,
  Vix.E_HOST_SERVER_SHUTDOWN,
  Vix.E_HOST_SERVER_NOT_AVAILABLE,
  Vix.E_CANNOT_CONNECT_TO_HOST,
  Vix.E_NET_HTTP_COULDNT_CONNECT,
  Vix.E_NET_HTTP_OPERATION_TIMEDOUT,
  Vix.E_NET_HTTP_GENERIC,
]);
assign(connectionPermanent, [
  Vix.E_FAIL,
  Vix.E_HOST_SERVER_NOT_FOUND,
  Vix.E_INVALID_HOSTNAME_SPECIFICATION,
  Vix.E_NET_HTTP_COULDNT_RESOLVE_HOST,
  Vix.E_NET_HTTP_SSL_CONNECT_ERROR,
  Vix.E_NET_HTTP_SSL_SECURITY,
  Vix.E_DISK_INVALID_CONNECTION,
]);
assign(permission, [
  Vix.E_FILE_READ_ONLY,
  Vix.E_FILE_ACCESS_ERROR,
  Vix.E_AUTHENTICATION_FAIL,
  Vix.E_HOST_USER_PERMISSIONS,
  Vix.E_DISK_NEEDKEY,
  Vix.E_DISK_NOKEY,
  Vix.E_DISK_NOLICENSE,
]);
assign(notFound, [
  Vix.E_FILE_NOT_FOUND,
  Vix.E_OBJECT_NOT_FOUND,
  Vix.E_VM_NOT_FOUND,
  Vix.E_SNAPSHOT_NOTFOUND,
  Vix.E_DISK_PARTIALCHAIN,
  Vix.E_DISK_KEY_NOTFOUND,
]);
assign(outOfRange, [Vix.E_DISK_OUTOFRANGE]);
assign(transport, [Vix.E_NOT_SUPPORTED]);
assign(rule, [
  Vix.E_INVALID_ARG,
  Vix.E_OBJECT_IS_BUSY,
  Vix.E_OPERATION_ALREADY_IN_PROGRESS,
  Vix.E_INVALID_HANDLE,
  Vix.E_DISK_NOINIT,
  Vix.E_ASYNC_MIXEDMODE_UNSUPPORTED,
]);
assign(otherTransient, [
  Vix.E_OUT_OF_MEMORY,
  Vix.E_FILE_ALREADY_LOCKED,
  Vix.E_SNAPSHOT_LOCKED,
  Vix.E_SNAPSHOT_DISKLOCKED,
  Vix.E_DISK_NOIO,
  Vix.E_DISK_TOOMANYOPENFILES,
]);

/** The typed error for a library failure: class and transient flag from the code, VDDK's own text. */
export function vddkErrorFromFailure(f: VixFailure): VddkError {
  const family = families.get(f.code) ?? otherPermanent;
  let hint = family.hint;
  if (f.code === Vix.E_FAIL && f.operation === 'VixDiskLib_Open') {
    hint = "VDDK reports a wrong SHA-1 thumbprint this way: check the vCenter certificate's thumbprint";
  }
  const parts = [
    `${f.operation}${f.object ? ` (${f.object})` : ''} failed: ${f.text} [${vixName(f.code)}, ${f.code}]`,
  ];
  if (f.detail) parts.push(f.detail.trim());
  if (hint) parts.push(hint);
  return new family.cls(`VDDK_${vixName(f.code).replace(/^VIX_/, '')}`, parts.join('; '), {
    transient: family.transient,
    vixCode: f.code,
    operation: f.operation,
    vixText: f.text,
  });
}

/** A rule the binding checks itself before calling the library (same class and code as the library's). */
export function ruleViolation(operation: string, message: string): VddkRuleViolationError {
  return new VddkRuleViolationError('VDDK_E_INVALID_ARG', `${operation}: ${message}`, {
    vixCode: Vix.E_INVALID_ARG,
    operation,
    vixText: 'One of the parameters was invalid',
  });
}
