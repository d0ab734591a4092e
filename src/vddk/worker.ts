/**
 * The worker thread that owns libvixDiskLib. Every VDDK call of the process happens here:
 * InitEx once, ConnectEx/Open/Close on this one thread (VDDK's rule), reads and writes through
 * ReadAsync/WriteAsync. Their completions are delivered by the library's own threads straight to
 * the event loop, which registered the completion callback (koffi relays a call from a foreign
 * thread to the thread that registered it). Buffers stay where the event loop allocated them: the worker only gets
 * their address, VDDK reads into them or writes from them, and nothing is copied.
 *
 * A library thread that calls back blocks until the event loop has run the callback. The event
 * loop never blocks on VDDK, so this worker may call Wait, Close or Exit at any time without a
 * deadlock; the event loop still waits for its reads and writes before it asks for them.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { realpathSync } from 'node:fs';
import { basename } from 'node:path';
import koffi from 'koffi';
import {
  bindLibrary,
  libraryErrorText,
  type BoundLibrary,
  type Pointer,
  type VixResult,
} from './declarations.js';
import { Vix, vixCode, VddkError, type VixFailure } from './errors.js';
import type { ConnectParamsFields } from './connect-params.js';
import type {
  DiskInfo,
  LibraryIdentity,
  Request,
  RequestMessage,
  WorkerMessage,
  WorkerStart,
} from './protocol.js';

const port = parentPort;
if (!port) throw new Error('src/vddk/worker.ts runs only as a worker thread');
const start = workerData as WorkerStart;

/**
 * Every message to the event loop goes through one ordered queue, flushed once per turn of this
 * thread's loop: I/O completions arrive in bursts, and under load each message costs a thread
 * wake-up on the other side. One queue keeps replies, logs and start-up messages in order.
 */
let outbox: WorkerMessage[] = [];
function post(msg: WorkerMessage): void {
  if (outbox.length === 0) {
    setImmediate(() => {
      const messages = outbox;
      outbox = [];
      port!.postMessage(messages);
    });
  }
  outbox.push(msg);
}

// ------------------------------------------------------------------------------------------------
// Log callbacks: VDDK passes a printf format and a va_list; libc's vsnprintf formats it here.

const libc = koffi.load('libc.so.6');
const vsnprintf = libc.func('int vsnprintf(void *buf, size_t size, void *fmt, void *ap)') as (
  buf: Buffer,
  size: number,
  fmt: Pointer,
  ap: Pointer,
) => number;
const logBuffer = Buffer.alloc(8192);
/** The library's last warning, attached to the error of the call that produced it. */
let lastWarning: string | undefined;

function formatLog(fmt: Pointer, ap: Pointer): string {
  const n = vsnprintf(logBuffer, logBuffer.length, fmt, ap);
  return logBuffer.toString('utf8', 0, Math.max(0, Math.min(n, logBuffer.length - 1))).trimEnd();
}

function makeLogger(level: 'info' | 'warn' | 'error') {
  return (fmt: Pointer, ap: Pointer): void => {
    const message = formatLog(fmt, ap);
    if (level !== 'info') lastWarning = message;
    post({ type: 'log', level, message });
  };
}

// ------------------------------------------------------------------------------------------------
// State

let lib: BoundLibrary;
const connections = new Map<number, { ptr: Pointer; label: string }>();
interface Disk {
  ptr: Pointer;
  conn: number;
  path: string;
}
const disks = new Map<number, Disk>();
let nextId = 1;
let callbacks: { log: bigint; warn: bigint; panic: bigint } | undefined;

function errorText(raw: VixResult): string {
  return libraryErrorText(lib, raw);
}

class Failure extends Error {
  constructor(readonly failure: VixFailure) {
    super(failure.text);
  }
}

function failure(operation: string, raw: VixResult, object?: string): Failure {
  const detail = lastWarning;
  return new Failure({ code: vixCode(raw), operation, text: errorText(raw), object, detail });
}

/** Runs one synchronous library call, turning a non-OK VixError into a Failure. */
function check(operation: string, raw: VixResult, object?: string): void {
  if (vixCode(raw) !== Vix.OK) throw failure(operation, raw, object);
}

function diskOf(id: number): Disk {
  const d = disks.get(id);
  if (!d) throw new VddkError('VDDK_NO_SUCH_DISK', `disk ${id} is not open`);
  return d;
}

function connOf(id: number): { ptr: Pointer; label: string } {
  const c = connections.get(id);
  if (!c) throw new VddkError('VDDK_NO_SUCH_CONNECTION', `connection ${id} is not open`);
  return c;
}

/** A VixDiskLibConnectParams from AllocateConnectParams, filled field by field. */
function withParams<T>(fields: ConnectParamsFields | null, use: (params: Pointer | null) => T): T {
  if (!fields) return use(null);
  const t = lib.types.VixDiskLibConnectParams;
  const params = lib.fn.VixDiskLib_AllocateConnectParams();
  if (params === null)
    throw new VddkError('VDDK_OUT_OF_MEMORY', 'VixDiskLib_AllocateConnectParams returned NULL');
  try {
    const off = (field: string) => koffi.offsetof(t, field);
    const credsOff = off('creds');
    koffi.encode(params, off('vmxSpec'), 'char *', fields.vmxSpec);
    koffi.encode(params, off('serverName'), 'char *', fields.serverName);
    koffi.encode(params, off('thumbPrint'), 'char *', fields.thumbPrint);
    koffi.encode(params, off('credType'), 'int', fields.credType);
    if (fields.credType === 1) {
      const u = lib.types.VixDiskLibUidPasswdCreds;
      koffi.encode(params, credsOff + koffi.offsetof(u, 'userName'), 'char *', fields.userName);
      koffi.encode(params, credsOff + koffi.offsetof(u, 'password'), 'char *', fields.password);
    } else {
      const s = lib.types.VixDiskLibSessionIdCreds;
      koffi.encode(params, credsOff + koffi.offsetof(s, 'cookie'), 'char *', fields.cookie);
      koffi.encode(params, credsOff + koffi.offsetof(s, 'userName'), 'char *', fields.userName);
      koffi.encode(params, credsOff + koffi.offsetof(s, 'key'), 'char *', fields.key);
    }
    koffi.encode(params, off('port'), 'uint32_t', fields.port);
    koffi.encode(params, off('nfcHostPort'), 'uint32_t', fields.nfcHostPort);
    koffi.encode(params, off('specType'), 'int', 0);
    return use(params);
  } finally {
    // Overwrite the secrets before the block goes back to the library.
    const credsOff = koffi.offsetof(t, 'creds');
    koffi.encode(params, credsOff, koffi.array('uint8_t', 24), new Array<number>(24).fill(0));
    lib.fn.VixDiskLib_FreeConnectParams(params);
  }
}

function readInfo(ptr: Pointer): DiskInfo {
  const out: [Pointer | null] = [null];
  lastWarning = undefined;
  check('VixDiskLib_GetInfo', lib.fn.VixDiskLib_GetInfo(ptr, out));
  const infoPtr = out[0];
  try {
    const i = koffi.decode(infoPtr, lib.types.VixDiskLibInfo) as {
      capacity: number | bigint;
      numLinks: number;
      adapterType: number;
      uuid: string | null;
      parentFileNameHint: string | null;
      logicalSectorSize: number;
      physicalSectorSize: number;
      biosGeo: { cylinders: number; heads: number; sectors: number };
    };
    return {
      capacitySectors: Number(i.capacity),
      numLinks: i.numLinks,
      adapterType: i.adapterType,
      uuid: i.uuid,
      parentFileNameHint: i.parentFileNameHint,
      logicalSectorSize: i.logicalSectorSize,
      physicalSectorSize: i.physicalSectorSize,
      geometry: { cylinders: i.biosGeo.cylinders, heads: i.biosGeo.heads, sectors: i.biosGeo.sectors },
    };
  } finally {
    lib.fn.VixDiskLib_FreeInfo(infoPtr);
  }
}

function readMetadata(ptr: Pointer, path: string): Record<string, string> {
  const required: [number] = [0];
  lastWarning = undefined;
  let raw = lib.fn.VixDiskLib_GetMetadataKeys(ptr, null, 0, required);
  if (vixCode(raw) !== Vix.E_BUFFER_TOOSMALL) check('VixDiskLib_GetMetadataKeys', raw, path);
  const keysBuf = Buffer.alloc(required[0]);
  check(
    'VixDiskLib_GetMetadataKeys',
    lib.fn.VixDiskLib_GetMetadataKeys(ptr, keysBuf, keysBuf.length, required),
    path,
  );
  const keys = keysBuf
    .toString('utf8')
    .split('\0')
    .filter((k) => k.length > 0);
  const result: Record<string, string> = {};
  for (const key of keys) {
    raw = lib.fn.VixDiskLib_ReadMetadata(ptr, key, null, 0, required);
    if (vixCode(raw) !== Vix.E_BUFFER_TOOSMALL) check('VixDiskLib_ReadMetadata', raw, `${path} ${key}`);
    const buf = Buffer.alloc(required[0]);
    check(
      'VixDiskLib_ReadMetadata',
      lib.fn.VixDiskLib_ReadMetadata(ptr, key, buf, buf.length, required),
      path,
    );
    result[key] = buf.toString('utf8', 0, Math.max(0, required[0] - 1));
  }
  return result;
}

function allocated(
  ptr: Pointer,
  path: string,
  startSector: number,
  numSectors: number,
  chunk: number,
): number[][] {
  const out: [Pointer | null] = [null];
  lastWarning = undefined;
  check(
    'VixDiskLib_QueryAllocatedBlocks',
    lib.fn.VixDiskLib_QueryAllocatedBlocks(ptr, startSector, numSectors, chunk, out),
    path,
  );
  const list = out[0];
  try {
    const n = koffi.decode(list, 'uint32_t') as number;
    const blockOff = koffi.offsetof(lib.types.VixDiskLibBlockList, 'blocks');
    const blocks: number[][] = [];
    for (let i = 0; i < n; i++) {
      const b = koffi.decode(list, blockOff + i * 16, lib.types.VixDiskLibBlock) as {
        offset: number | bigint;
        length: number | bigint;
      };
      blocks.push([Number(b.offset), Number(b.length)]);
    }
    return blocks;
  } finally {
    check('VixDiskLib_FreeBlockList', lib.fn.VixDiskLib_FreeBlockList(list), path);
  }
}

// ------------------------------------------------------------------------------------------------
// Asynchronous I/O

/**
 * Queues one read or write. The completion callback is the event loop's (registered there, passed
 * in WorkerStart): VDDK's thread delivers the result straight to the event loop, with the request
 * id as cbData, and this worker never waits for it. Only an immediate result is replied here.
 */
function startIo(
  requestId: number,
  d: Disk,
  sector: number,
  count: number,
  address: bigint,
  isRead: boolean,
) {
  lastWarning = undefined;
  const fn = isRead ? lib.fn.VixDiskLib_ReadAsync : lib.fn.VixDiskLib_WriteAsync;
  const raw = fn(d.ptr, sector, count, address, start.completionCallback, requestId);
  if (vixCode(raw) === Vix.ASYNC) return undefined;
  // VIX_OK: completed at once without calling back (VDDK allows it for some transports).
  if (vixCode(raw) === Vix.OK) return null;
  throw failure(isRead ? 'VixDiskLib_ReadAsync' : 'VixDiskLib_WriteAsync', raw, d.path);
}

// ------------------------------------------------------------------------------------------------
// Requests

async function handle(req: Request, id: number): Promise<unknown> {
  lastWarning = undefined;
  switch (req.op) {
    case 'connect': {
      const out: [Pointer | null] = [null];
      withParams(req.fields, (params) =>
        check(
          'VixDiskLib_ConnectEx',
          lib.fn.VixDiskLib_ConnectEx(params, req.readOnly ? 1 : 0, req.snapshotRef, req.transports, out),
          req.label,
        ),
      );
      const connId = nextId++;
      connections.set(connId, { ptr: out[0], label: req.label });
      return connId;
    }
    case 'disconnect': {
      const c = connOf(req.conn);
      for (const [diskId, d] of disks) {
        if (d.conn === req.conn) disks.delete(diskId); // Disconnect closes the disks still open on it
      }
      check('VixDiskLib_Disconnect', lib.fn.VixDiskLib_Disconnect(c.ptr), c.label);
      connections.delete(req.conn);
      return null;
    }
    case 'open': {
      const c = connOf(req.conn);
      const out: [Pointer | null] = [null];
      check('VixDiskLib_Open', lib.fn.VixDiskLib_Open(c.ptr, req.path, req.flags, out), req.path);
      const ptr = out[0];
      try {
        const transport = lib.fn.VixDiskLib_GetTransportMode(ptr) ?? 'unknown';
        const info = readInfo(ptr);
        const diskId = nextId++;
        disks.set(diskId, { ptr, conn: req.conn, path: req.path });
        return { disk: diskId, transport, info };
      } catch (err) {
        lib.fn.VixDiskLib_Close(ptr);
        throw err;
      }
    }
    case 'close': {
      const d = diskOf(req.disk);
      check('VixDiskLib_Wait', lib.fn.VixDiskLib_Wait(d.ptr), d.path);
      check('VixDiskLib_Close', lib.fn.VixDiskLib_Close(d.ptr), d.path);
      disks.delete(req.disk);
      return null;
    }
    case 'info':
      return readInfo(diskOf(req.disk).ptr);
    case 'metadata': {
      const d = diskOf(req.disk);
      return readMetadata(d.ptr, d.path);
    }
    case 'allocated': {
      const d = diskOf(req.disk);
      return allocated(d.ptr, d.path, req.startSector, req.numSectors, req.chunkSectors);
    }
    case 'read':
    case 'write':
      return startIo(id, diskOf(req.disk), req.sector, req.count, req.address, req.op === 'read');
    case 'readSync':
    case 'writeSync': {
      const d = diskOf(req.disk);
      const read = req.op === 'readSync';
      const raw = read
        ? lib.fn.VixDiskLib_Read(d.ptr, req.sector, req.count, req.address)
        : lib.fn.VixDiskLib_Write(d.ptr, req.sector, req.count, req.address);
      check(read ? 'VixDiskLib_Read' : 'VixDiskLib_Write', raw, d.path);
      return null;
    }
    case 'flush': {
      const d = diskOf(req.disk);
      check('VixDiskLib_Wait', lib.fn.VixDiskLib_Wait(d.ptr), d.path);
      check('VixDiskLib_Flush', lib.fn.VixDiskLib_Flush(d.ptr), d.path);
      return null;
    }
    case 'cleanup': {
      const cleaned: [number] = [0];
      const remaining: [number] = [0];
      withParams(req.fields, (params) =>
        check(
          'VixDiskLib_Cleanup',
          lib.fn.VixDiskLib_Cleanup(params, cleaned, remaining),
          req.fields?.serverName,
        ),
      );
      return { cleanedUp: cleaned[0], remaining: remaining[0] };
    }
    case 'prepareForAccess':
      withParams(req.fields, (params) =>
        check(
          'VixDiskLib_PrepareForAccess',
          lib.fn.VixDiskLib_PrepareForAccess(params, req.identity),
          req.fields.vmxSpec ?? '',
        ),
      );
      return null;
    case 'endAccess':
      withParams(req.fields, (params) =>
        check(
          'VixDiskLib_EndAccess',
          lib.fn.VixDiskLib_EndAccess(params, req.identity),
          req.fields.vmxSpec ?? '',
        ),
      );
      return null;
    case 'errorText':
      return errorText(req.code);
    case 'failure':
      return failure(req.operation, req.code, req.object).failure;
    case 'exit': {
      // VDDK's order: Close, Disconnect, then Exit; disks left open are closed (and detached) here.
      for (const [diskId, d] of disks) {
        lib.fn.VixDiskLib_Wait(d.ptr);
        lib.fn.VixDiskLib_Close(d.ptr);
        disks.delete(diskId);
      }
      for (const [connId, c] of connections) {
        lib.fn.VixDiskLib_Disconnect(c.ptr);
        connections.delete(connId);
      }
      lib.fn.VixDiskLib_Exit();
      if (callbacks) for (const cb of Object.values(callbacks)) koffi.unregister(cb);
      callbacks = undefined;
      return null;
    }
  }
}

port.on('message', (batch: RequestMessage[]) => {
  for (const msg of batch) dispatch(msg);
});

function dispatch(msg: RequestMessage): void {
  handle(msg, msg.id).then(
    (result) => {
      if (result === undefined) return;
      post({ type: 'reply', id: msg.id, result });
    },
    (err: unknown) => {
      if (err instanceof Failure) post({ type: 'reply', id: msg.id, failure: err.failure });
      else post({ type: 'reply', id: msg.id, message: err instanceof Error ? err.message : String(err) });
    },
  );
}

// ------------------------------------------------------------------------------------------------
// Start: bind, InitEx, report the library's identity

function versionOf(path: string): string {
  let name = basename(path);
  try {
    name = basename(realpathSync(path));
  } catch {
    // keep the name given
  }
  const m = /\.so\.(\d+(?:\.\d+)*)/.exec(name);
  return m ? m[1]! : 'unknown';
}

/**
 * Pins the library in memory: VDDK runs threads of its own, and if the library were unmapped when
 * this worker's isolate is torn down (process.exit() without Vddk.exit()), those threads would
 * crash the process. RTLD_NODELETE makes the loader ignore the later dlclose.
 */
function pinLibrary(path: string): void {
  const dlopen = libc.func('void *dlopen(const char *file, int mode)') as (
    file: string,
    mode: number,
  ) => unknown;
  const RTLD_NOW = 0x2;
  const RTLD_NODELETE = 0x1000;
  dlopen(path, RTLD_NOW | RTLD_NODELETE);
}

try {
  lib = bindLibrary(start.libraryPath);
  pinLibrary(start.libraryPath);
  const t = lib.types;
  callbacks = {
    log: koffi.register(makeLogger('info'), koffi.pointer(t.VixDiskLibGenericLogFunc)),
    warn: koffi.register(makeLogger('warn'), koffi.pointer(t.VixDiskLibGenericLogFunc)),
    panic: koffi.register(makeLogger('error'), koffi.pointer(t.VixDiskLibGenericLogFunc)),
  };
  const raw = lib.fn.VixDiskLib_InitEx(
    7,
    0,
    callbacks.log,
    callbacks.warn,
    callbacks.panic,
    start.libDir,
    start.configFile,
  );
  if (vixCode(raw) !== Vix.OK) {
    const f = failure('VixDiskLib_InitEx', raw, start.configFile ?? undefined).failure;
    post({
      type: 'startFailed',
      code: `VDDK_INIT_${vixCode(raw)}`,
      message: `VixDiskLib_InitEx failed: ${f.text} [${f.code}]${f.detail ? `; ${f.detail}` : ''}`,
    });
  } else {
    const identity: LibraryIdentity = {
      libraryPath: start.libraryPath,
      version: versionOf(start.libraryPath),
      transports: lib.fn.VixDiskLib_ListTransportModes().split(':').filter(Boolean),
      labIdentity: lib.fn.VixDiskLibLab_Identify ? lib.fn.VixDiskLibLab_Identify() : null,
    };
    post({ type: 'ready', identity });
  }
} catch (err) {
  post({
    type: 'startFailed',
    code: err instanceof VddkError ? err.code : 'VDDK_LIBRARY_LOAD',
    message: err instanceof Error ? err.message : String(err),
  });
}
