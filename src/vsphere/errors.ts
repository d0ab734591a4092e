import { VbproxyError } from '../errors.js';
import { isSubtype, schemaTypes } from './wire/schema.js';
import { isMoRef, type MoRef, type VimObject, type VimValue } from './wire/values.js';

/** Any failure talking to vSphere. */
export class VimError extends VbproxyError {}

/** The server could not be reached, or the connection dropped mid-call. Retry with backoff. */
export class VimConnectionError extends VimError {
  constructor(url: string, detail: string, cause?: unknown) {
    super(
      'VIM_CONNECTION',
      `cannot talk to vSphere at ${url}: ${detail}; check the address and the network, then retry`,
      {
        cause,
        transient: true,
      },
    );
  }
}

/** The server's certificate is neither signed by the given CA nor the pinned one. */
export class VimTlsError extends VimError {
  constructor(message: string, cause?: unknown) {
    super('VIM_TLS', message, { cause });
  }
}

/** A response that is not valid vim25 (wrong XML, a missing element). */
export class VimProtocolError extends VimError {
  constructor(message: string, cause?: unknown) {
    super('VIM_PROTOCOL', message, { cause });
  }
}

export interface FaultContext {
  /** The vim25 method that failed, e.g. `CreateSnapshot_Task`. */
  readonly method: string;
  /** The managed object the call was about (the `_this`, or the task's entity). */
  readonly target?: MoRef | undefined;
  /** The property path, for a per-property fault reported in `missingSet`. */
  readonly propertyPath?: string | undefined;
  /** The task that carried the fault, for task errors. */
  readonly task?: MoRef | undefined;
}

function describeRef(ref: MoRef): string {
  return `${ref.type} ${ref.value}`;
}

/** The object a fault is about: its own reference field if it has one, else the call's target. */
function faultObject(fault: VimObject, ctx: FaultContext): string {
  for (const key of ['obj', 'object', 'entity']) {
    const v = fault[key];
    if (v !== undefined && isMoRef(v)) return describeRef(v);
  }
  const file = fault.file;
  if (typeof file === 'string' && file !== '') {
    return ctx.target ? `file ${file} of ${describeRef(ctx.target)}` : `file ${file}`;
  }
  return ctx.target ? describeRef(ctx.target) : 'the server';
}

const HINTS: Record<string, string> = {
  NotAuthenticated: 'the vSphere session is not (or no longer) authenticated; log in again',
  ManagedObjectNotFound: 'the object no longer exists; re-resolve it by UUID or path',
  InvalidState: 'the object is not in a state that allows this operation; retry when it is idle',
  InvalidPowerState: 'the VM is in the wrong power state for this operation',
  TaskInProgress: 'another task is running on this object; retry when it finishes',
  FileFault: 'a disk or configuration file could not be used',
  FileLocked: 'a file is locked, typically by a disk still hot-added to a proxy; detach it and retry',
  RestrictedVersion: 'the host licence forbids write operations (free ESXi); use a licensed host',
  ApplicationQuiesceFault:
    'quiescing the guest failed (a pre-freeze script or VSS writer); retry or lower the consistency level',
  FilesystemQuiesceFault:
    'the guest file systems could not be frozen in time; retry or lower the consistency level',
  ToolsUnavailable: 'VMware Tools are not running in the guest, so it cannot be quiesced',
  InvalidLogin: 'the user name or password is wrong',
  MethodNotFound: 'the server does not implement this method',
  InvalidArgument: 'the server rejected an argument',
  NotFound: 'the object asked for does not exist',
  DuplicateName: 'an object of that name exists there already; choose another name or remove it',
  FileAlreadyExists: 'the file or folder exists on the datastore already; choose another name or remove it',
  InvalidDatastore: 'the datastore cannot be used from that host',
  InvalidDatastorePath: 'the datastore path is malformed or names no datastore',
  InvalidDeviceSpec: 'a device in the configuration was refused',
};

/** A vim25 fault, from a SOAP fault, a task error or a `missingSet` entry. */
export class VimFaultError extends VimError {
  /** The vim25 fault type (`xsi:type`), e.g. `FileLocked`. */
  readonly faultType: string;
  /** The object the fault names, e.g. `VirtualMachine vm-42`. */
  readonly object: string;
  /** The server's own message. */
  readonly serverMessage: string;
  readonly method: string;
  readonly fault: VimObject;
  readonly propertyPath: string | undefined;
  readonly task: MoRef | undefined;

  constructor(fault: VimObject, serverMessage: string, ctx: FaultContext, transient = false) {
    const object = faultObject(fault, ctx);
    const where = ctx.propertyPath ? ` (property ${ctx.propertyPath})` : '';
    const via = ctx.task ? `task ${ctx.task.value} of ${ctx.method}` : ctx.method;
    const hint = hintFor(fault._type);
    const msg = serverMessage ? `: ${serverMessage}` : '';
    super(
      `VIM_${fault._type.replace(/[A-Z]/g, (c, i: number) => (i ? '_' : '') + c).toUpperCase()}`,
      `${via} on ${object}${where} failed with ${fault._type}${msg}${hint ? ` (${hint})` : ''}`,
      { transient },
    );
    this.faultType = fault._type;
    this.object = object;
    this.serverMessage = serverMessage;
    this.method = ctx.method;
    this.fault = fault;
    this.propertyPath = ctx.propertyPath;
    this.task = ctx.task;
  }

  /** True when the fault is `type` or a subtype of it (e.g. FileLocked is a FileFault). */
  is(type: string): boolean {
    return schemaTypes.has(this.faultType) ? isSubtype(this.faultType, type) : this.faultType === type;
  }
}

function hintFor(type: string): string | undefined {
  for (let cur: string | undefined = type; cur; cur = schemaTypes.get(cur)?.base) {
    const h = HINTS[cur];
    if (h) return h;
  }
  return undefined;
}

export class NotAuthenticatedError extends VimFaultError {}
export class InvalidLoginError extends VimFaultError {}
export class ManagedObjectNotFoundError extends VimFaultError {}
export class InvalidStateError extends VimFaultError {}
export class InvalidPowerStateError extends InvalidStateError {}
export class TaskInProgressError extends VimFaultError {}
export class FileFaultError extends VimFaultError {}
export class FileLockedError extends FileFaultError {}
export class RestrictedVersionError extends VimFaultError {}
/** Quiescing the guest failed (ApplicationQuiesceFault, FilesystemQuiesceFault, ToolsUnavailable). */
export class QuiesceFaultError extends VimFaultError {}
export class MethodNotFoundError extends VimFaultError {}
export class InvalidArgumentError extends VimFaultError {}
export class NotFoundError extends VimFaultError {}

type FaultClass = new (
  fault: VimObject,
  msg: string,
  ctx: FaultContext,
  transient?: boolean,
) => VimFaultError;

const CLASSES: [string, FaultClass, boolean][] = [
  ['NotAuthenticated', NotAuthenticatedError, true],
  ['InvalidLogin', InvalidLoginError, false],
  ['ManagedObjectNotFound', ManagedObjectNotFoundError, false],
  ['InvalidPowerState', InvalidPowerStateError, false],
  ['InvalidState', InvalidStateError, true],
  ['TaskInProgress', TaskInProgressError, true],
  ['FileLocked', FileLockedError, true],
  ['FileFault', FileFaultError, false],
  ['RestrictedVersion', RestrictedVersionError, false],
  ['ApplicationQuiesceFault', QuiesceFaultError, true],
  ['FilesystemQuiesceFault', QuiesceFaultError, true],
  ['ToolsUnavailable', QuiesceFaultError, true],
  ['MethodNotFound', MethodNotFoundError, false],
  ['InvalidArgument', InvalidArgumentError, false],
  ['NotFound', NotFoundError, false],
  ['HostCommunication', VimFaultError, true],
  ['ConcurrentAccess', VimFaultError, true],
];

/** Builds the typed error for a decoded fault. Unknown subtypes map through their known ancestors. */
export function faultToError(fault: VimObject, serverMessage: string, ctx: FaultContext): VimFaultError {
  for (const [type, cls, transient] of CLASSES) {
    if (fault._type === type || (schemaTypes.has(fault._type) && isSubtype(fault._type, type))) {
      return new cls(fault, serverMessage, ctx, transient);
    }
  }
  return new VimFaultError(fault, serverMessage, ctx, false);
}

/** Reads `localizedMessage`/`faultMessage` text from a decoded LocalizedMethodFault. */
export function localizedFaultToError(lmf: VimValue | undefined, ctx: FaultContext): VimFaultError {
  const obj = (lmf ?? {}) as VimObject;
  const fault = (obj.fault ?? { _type: 'MethodFault' }) as VimObject;
  let message = typeof obj.localizedMessage === 'string' ? obj.localizedMessage : '';
  if (!message && Array.isArray(fault.faultMessage)) {
    message = (fault.faultMessage as VimObject[])
      .map((m) => (typeof m.message === 'string' ? m.message : String(m.key ?? '')))
      .join('; ');
  }
  return faultToError(fault, message, ctx);
}

/** The CBT loop did not cover the disk exactly. */
export class CbtCoverageError extends VimError {
  constructor(message: string) {
    super('VIM_CBT_COVERAGE', message);
  }
}

/** A VM, disk or object asked for by the caller does not exist. */
export class VimLookupError extends VimError {
  constructor(message: string) {
    super('VIM_LOOKUP', message);
  }
}

/** A request the caller built is not possible (no free controller unit, a disk that is not a disk). */
export class VimUsageError extends VimError {
  constructor(message: string) {
    super('VIM_USAGE', message);
  }
}
