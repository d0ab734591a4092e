/**
 * The event-loop side of the VDDK binding. `Vddk.start()` starts the worker thread that owns the
 * library (src/vddk/worker.ts) and initialises it; connections and disks are handles to objects in
 * that worker. Nothing here blocks on VDDK: every call is a message, and the library reads into (and
 * writes from) buffers of this thread by address, without copies.
 */
import { Worker } from 'node:worker_threads';
import koffi from 'koffi';
import { createLogger, type Logger } from '../log.js';
import type { Extent } from '../pipeline/disk.js';
import { alignedBuffer } from '../pipeline/aligned-buffer.js';
import {
  connectParamsFields,
  DEFAULT_TRANSPORT_ORDER,
  type Transport,
  type VddkConnectionSpec,
} from './connect-params.js';
import {
  ruleViolation,
  vddkErrorFromFailure,
  VddkError,
  VddkLibraryError,
  VddkRuleViolationError,
  Vix,
  vixCode,
  type VixFailure,
} from './errors.js';
import { locateLibrary, LAB_LIBDIR, onLibraryPath } from './library-path.js';
import { vddkTypes, type Pointer, type VixResult } from './declarations.js';
import type {
  DiskInfo,
  LibraryIdentity,
  OpenResult,
  Request,
  WorkerBatch,
  WorkerMessage,
  WorkerStart,
} from './protocol.js';

export const SECTOR_SIZE = 512;
/** VIXDISKLIB_FLAG_OPEN_* */
export const OpenFlags = { UNBUFFERED: 1, SINGLE_LINK: 2, READ_ONLY: 4 } as const;
/** VIXDISKLIB_MIN_CHUNK_SIZE and VIXDISKLIB_MAX_CHUNK_NUMBER. */
const MIN_CHUNK_SECTORS = 128;
const MAX_CHUNKS_PER_QUERY = 512 * 1024;

export interface VddkStartOptions {
  /** The library file itself (overrides libDir). */
  readonly libraryPath?: string;
  /** VDDK's distribution directory (holding lib64/); default VBPROXY_VDDK_LIBDIR, else the lab build. */
  readonly libDir?: string;
  /** The InitEx configuration file (`key = "value"` lines); default VBPROXY_VDDK_CONFIG, else none. */
  readonly configFile?: string | null;
  readonly logger?: Logger;
  /**
   * Run VixDiskLib_Cleanup with these connection parameters right after InitEx (start-up cleanup of
   * hot-added disks a crashed process left on this proxy VM). The VM moref is ignored.
   */
  readonly cleanup?: VddkConnectionSpec;
}

export interface CleanupResult {
  readonly cleanedUp: number;
  readonly remaining: number;
}

interface Pending {
  resolve: (value: unknown) => void;
  reject: (err: Error) => void;
  /** For asynchronous I/O: what to name in an error. */
  io?: { operation: string; object: string };
}

/** Counts operations in flight and lets callers wait until none is. */
class InFlight {
  #n = 0;
  #waiters: (() => void)[] = [];
  begin(): void {
    this.#n++;
  }
  end(): void {
    if (--this.#n === 0) for (const w of this.#waiters.splice(0)) w();
  }
  idle(): Promise<void> {
    return this.#n === 0 ? Promise.resolve() : new Promise((resolve) => this.#waiters.push(resolve));
  }
}

/** The running instance, for the completion callback. */
let current: Vddk | undefined;
let completionCallback: bigint | undefined;

/**
 * The process's VixDiskLibCompletionCB, registered on this thread: VDDK's own threads call it for
 * every ReadAsync/WriteAsync, and koffi relays the call to this event loop (the library thread
 * waits until it has run). cbData is the request id.
 */
function completionCallbackPointer(): bigint {
  completionCallback ??= koffi.register(
    (cbData: Pointer, result: VixResult) => current?.completed(Number(cbData as bigint), result),
    koffi.pointer(vddkTypes().VixDiskLibCompletionCB),
  );
  return completionCallback;
}

/**
 * Buffers of requests that never got a reply because the worker died: library threads may still
 * touch them, so they are never freed.
 */
const quarantine: Uint8Array[] = [];

/** Bytes kept alive because a dead worker never answered for them (a diagnostic). */
export function quarantinedBytes(): number {
  return quarantine.reduce((n, b) => n + b.length, 0);
}

let started: Promise<Vddk> | undefined;
let exitedInProcess = false;

/** The VDDK library of this process (one per process: VDDK allows InitEx only once). */
export class Vddk {
  readonly identity: LibraryIdentity;
  /** What start-up cleanup did, when `cleanup` was given. */
  startupCleanup: CleanupResult | undefined;
  readonly #worker: Worker;
  readonly #pending = new Map<number, Pending>();
  readonly #log: Logger;
  /** @internal Reads and writes in flight, over all disks. */
  readonly io = new InFlight();
  #nextId = 1;
  #outbox: (Request & { id: number })[] = [];
  #dead: Error | undefined;
  #exited = false;

  private constructor(worker: Worker, identity: LibraryIdentity, log: Logger) {
    this.#worker = worker;
    this.identity = identity;
    this.#log = log;
    worker.on('message', (batch: WorkerBatch) => {
      for (const msg of batch) this.#onMessage(msg);
    });
    worker.on('error', (err) => this.#fail(err));
    worker.on('exit', (code) => {
      if (!this.#exited) this.#fail(new Error(`the VDDK worker thread exited with code ${code}`));
    });
    worker.unref();
  }

  /** True when the loaded library is vbproxy's lab VDDK rather than VMware's. */
  get isLab(): boolean {
    return this.identity.labIdentity !== null;
  }

  /**
   * Loads and initialises the library in its worker thread. Later calls in the same process return
   * the same instance; after `exit()` the library cannot be started again in this process.
   */
  static start(options: VddkStartOptions = {}): Promise<Vddk> {
    if (exitedInProcess) {
      return Promise.reject(
        new VddkRuleViolationError(
          'VDDK_EXITED',
          'VDDK was shut down (VixDiskLib_Exit) in this process and VDDK allows InitEx only once per process: start a new process',
          { vixCode: Vix.E_OBJECT_IS_BUSY, operation: 'VixDiskLib_InitEx' },
        ),
      );
    }
    started ??= Vddk.#start(options).catch((err: unknown) => {
      started = undefined;
      throw err;
    });
    return started;
  }

  static async #start(options: VddkStartOptions): Promise<Vddk> {
    const log = options.logger ?? createLogger('vddk');
    const located = locateLibrary(options);
    if (!located.libraryPath.startsWith(LAB_LIBDIR) && !onLibraryPath(`${located.libDir}/lib64`)) {
      log.warn(
        { libDir: located.libDir },
        "VDDK's lib64 directory is not in LD_LIBRARY_PATH: its bundled libraries may not load",
      );
    }
    const envConfig = process.env.VBPROXY_VDDK_CONFIG;
    const data: WorkerStart = {
      libraryPath: located.libraryPath,
      libDir: located.libDir,
      configFile: options.configFile !== undefined ? options.configFile : envConfig ? envConfig : null,
      completionCallback: completionCallbackPointer(),
    };
    const worker = new Worker(new URL('./worker.js', import.meta.url), { workerData: data });
    const identity = await new Promise<LibraryIdentity>((resolve, reject) => {
      const onMessage = (batch: WorkerBatch) => {
        for (const msg of batch) {
          if (msg.type === 'log') {
            logLibrary(log, msg.level, msg.message);
          } else if (msg.type === 'ready') {
            cleanup();
            resolve(msg.identity);
          } else if (msg.type === 'startFailed') {
            cleanup();
            void worker.terminate();
            reject(new VddkLibraryError(msg.code, msg.message));
          }
        }
      };
      const onError = (err: Error) => {
        cleanup();
        reject(
          new VddkLibraryError('VDDK_WORKER', `the VDDK worker thread failed to start: ${err.message}`, {
            cause: err,
          }),
        );
      };
      const onExit = (code: number) => {
        cleanup();
        reject(
          new VddkLibraryError(
            'VDDK_WORKER',
            `the VDDK worker thread exited with code ${code} while starting`,
          ),
        );
      };
      const cleanup = () => {
        worker.off('message', onMessage);
        worker.off('error', onError);
        worker.off('exit', onExit);
      };
      worker.on('message', onMessage);
      worker.on('error', onError);
      worker.on('exit', onExit);
    });
    const vddk = new Vddk(worker, identity, log);
    current = vddk;
    log.info(
      { library: identity.libraryPath, version: identity.version, lab: identity.labIdentity !== null },
      'VDDK initialised',
    );
    if (options.cleanup) {
      vddk.startupCleanup = await vddk.cleanup(options.cleanup);
      log.info(vddk.startupCleanup, 'VDDK start-up cleanup done');
    }
    return vddk;
  }

  #onMessage(msg: WorkerMessage): void {
    if (msg.type === 'log') {
      logLibrary(this.#log, msg.level, msg.message);
      return;
    }
    if (msg.type !== 'reply') return;
    const p = this.#settle(msg.id);
    if (!p) return;
    if (msg.failure) p.reject(vddkErrorFromFailure(msg.failure));
    else if (msg.message !== undefined) p.reject(new VddkError('VDDK_BINDING', msg.message));
    else p.resolve(msg.result);
  }

  #settle(id: number): Pending | undefined {
    const p = this.#pending.get(id);
    if (!p) return undefined;
    this.#pending.delete(id);
    if (this.#pending.size === 0) this.#worker.unref();
    return p;
  }

  /** @internal The completion of asynchronous I/O request `id`, from VDDK's thread via koffi. */
  completed(id: number, result: VixResult): void {
    const p = this.#pending.get(id);
    if (!p?.io) return;
    if (vixCode(result) === Vix.OK) {
      this.#settle(id)?.resolve(null);
      return;
    }
    // The worker owns the library: it turns the code into VDDK's text.
    const { operation, object } = p.io;
    this.call<VixFailure>({ op: 'failure', operation, code: result, object }).then(
      (f) => this.#settle(id)?.reject(vddkErrorFromFailure(f)),
      (err: unknown) => this.#settle(id)?.reject(err as Error),
    );
  }

  #fail(err: Error): void {
    this.#dead = new VddkError('VDDK_WORKER_DIED', `the VDDK worker thread stopped: ${err.message}`, {
      cause: err,
    });
    for (const p of this.#pending.values()) p.reject(this.#dead);
    this.#pending.clear();
  }

  /** @internal Sends one request to the worker. */
  call<T>(req: Request, io?: { operation: string; object: string }): Promise<T> {
    if (this.#exited) {
      return Promise.reject(
        new VddkRuleViolationError(
          'VDDK_EXITED',
          'VDDK has been shut down in this process (VixDiskLib_Exit)',
          { vixCode: Vix.E_DISK_NOINIT },
        ),
      );
    }
    if (this.#dead) return Promise.reject(this.#dead);
    const id = this.#nextId++;
    return new Promise<T>((resolve, reject) => {
      if (this.#pending.size === 0) this.#worker.ref();
      this.#pending.set(id, { resolve: resolve as (v: unknown) => void, reject, io });
      // Requests made in one turn of the event loop go to the worker in one message: under load,
      // every message costs a thread wake-up, and the pipeline issues its next reads in bursts.
      if (this.#outbox.length === 0) setImmediate(() => this.#flush());
      this.#outbox.push({ ...req, id });
    });
  }

  #flush(): void {
    const batch = this.#outbox;
    this.#outbox = [];
    if (batch.length > 0 && !this.#dead) this.#worker.postMessage(batch);
  }

  /** ConnectEx to vCenter for one VM (and snapshot), with the policy's transport order. */
  async connect(spec: VddkConnectionSpec): Promise<VddkConnection> {
    const fields = connectParamsFields(spec);
    const transports = (spec.transports ?? DEFAULT_TRANSPORT_ORDER).join(':');
    const label = `${spec.server}${spec.vmMoref ? ` ${spec.vmMoref}` : ''}${spec.snapshotMoref ? `/${spec.snapshotMoref}` : ''}`;
    const id = await this.call<number>({
      op: 'connect',
      fields,
      readOnly: spec.readOnly ?? true,
      snapshotRef: spec.snapshotMoref ?? null,
      transports,
      label,
    });
    return new VddkConnection(this, id, label);
  }

  /** ConnectEx for local files (transport `file`; paths are absolute file paths). */
  async connectLocal(options: { readOnly?: boolean } = {}): Promise<VddkConnection> {
    const id = await this.call<number>({
      op: 'connect',
      fields: null,
      readOnly: options.readOnly ?? true,
      snapshotRef: null,
      transports: null,
      label: 'local files',
    });
    return new VddkConnection(this, id, 'local files');
  }

  /** VixDiskLib_Cleanup: removes what connections of dead processes left (hot-added disks). */
  cleanup(spec: VddkConnectionSpec): Promise<CleanupResult> {
    return this.call<CleanupResult>({ op: 'cleanup', fields: connectParamsFields(spec, false) });
  }

  /** VixDiskLib_PrepareForAccess: Storage vMotion off for the VM while it is backed up (needs vmMoref). */
  prepareForAccess(spec: VddkConnectionSpec, identity: string): Promise<void> {
    return this.call<void>({ op: 'prepareForAccess', fields: connectParamsFields(spec), identity });
  }

  /** VixDiskLib_EndAccess: the matching call after the snapshot is removed. */
  endAccess(spec: VddkConnectionSpec, identity: string): Promise<void> {
    return this.call<void>({ op: 'endAccess', fields: connectParamsFields(spec), identity });
  }

  /** VDDK's text for an error code. */
  errorText(code: number): Promise<string> {
    return this.call<string>({ op: 'errorText', code });
  }

  /** VixDiskLib_Exit, then the worker ends. Disks and connections must be closed first. */
  async exit(): Promise<void> {
    if (this.#exited) return;
    await this.io.idle();
    await this.call<void>({ op: 'exit' });
    this.#exited = true;
    exitedInProcess = true;
    current = undefined;
    if (completionCallback !== undefined) koffi.unregister(completionCallback);
    completionCallback = undefined;
    await this.#worker.terminate();
  }
}

/**
 * Alignment of the buffers that reads of an unbuffered disk get: VDDK needs sector-aligned memory
 * there (512 bytes); 4 KiB also suits a hot-added disk's device with 4 KiB sectors, and the lab's
 * direct I/O.
 */
export const READ_ALIGNMENT = 4096;

/** The address of a byte array's first byte (it never moves: ArrayBuffer memory is not relocated). */
function addressOf(data: Uint8Array): bigint {
  const view = Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  return koffi.address(view);
}

/** VDDK 7+ logs spurious "phone home" (CEIP) failures as warnings; nbdkit demotes them too. */
const NOISE = /Get CEIP status failed|VDDK_PhoneHome/;

function logLibrary(log: Logger, level: 'info' | 'warn' | 'error', message: string): void {
  if (level === 'info' || (level === 'warn' && NOISE.test(message))) log.debug({ vddk: message }, 'VDDK log');
  else if (level === 'warn') log.warn({ vddk: message }, 'VDDK warning');
  else log.error({ vddk: message }, 'VDDK panic');
}

export interface OpenOptions {
  /** Open read-only (backups); writes are refused with VIX_E_FILE_READ_ONLY. Default true. */
  readonly readOnly?: boolean;
  /** VIXDISKLIB_FLAG_OPEN_UNBUFFERED: no host caching; buffers must be sector-aligned. */
  readonly unbuffered?: boolean;
}

/** A VDDK connection (ConnectEx): opens disks of one VM/snapshot, or local files. */
export class VddkConnection {
  #closed = false;
  /** @internal Disks open on this connection. */
  readonly disks = new Set<VddkDisk>();

  constructor(
    readonly vddk: Vddk,
    readonly id: number,
    readonly label: string,
  ) {}

  /** VixDiskLib_Open: `[datastore] folder/disk.vmdk` (or an absolute path on a local connection). */
  async open(path: string, options: OpenOptions = {}): Promise<VddkDisk> {
    let flags = 0;
    if (options.readOnly ?? true) flags |= OpenFlags.READ_ONLY;
    if (options.unbuffered) flags |= OpenFlags.UNBUFFERED;
    const r = await this.vddk.call<OpenResult>({ op: 'open', conn: this.id, path, flags });
    const readOnly = (flags & OpenFlags.READ_ONLY) !== 0;
    const unbuffered = (flags & OpenFlags.UNBUFFERED) !== 0;
    const disk = new VddkDisk(this, r.disk, path, r.transport as Transport, r.info, readOnly, unbuffered);
    this.disks.add(disk);
    return disk;
  }

  /** Waits for the I/O of its disks, then VixDiskLib_Disconnect (which closes disks still open). */
  async disconnect(): Promise<void> {
    if (this.#closed) return;
    for (const d of this.disks) await d.idle();
    await this.vddk.call<void>({ op: 'disconnect', conn: this.id });
    this.disks.clear();
    this.#closed = true;
  }
}

/** An open disk (VixDiskLib_Open). Offsets and lengths are bytes, whole 512-byte sectors. */
export class VddkDisk {
  #closed = false;
  readonly #io = new InFlight();

  constructor(
    readonly connection: VddkConnection,
    readonly id: number,
    readonly path: string,
    /** The transport VDDK chose (GetTransportMode). */
    readonly transport: Transport,
    readonly info: DiskInfo,
    readonly readOnly: boolean,
    /** Opened with VIXDISKLIB_FLAG_OPEN_UNBUFFERED: `read` then allocates aligned buffers. */
    readonly unbuffered = false,
  ) {}

  /** Capacity in bytes. */
  get capacity(): number {
    return this.info.capacitySectors * SECTOR_SIZE;
  }

  /** Resolves when no read or write of this disk is in flight. */
  idle(): Promise<void> {
    return this.#io.idle();
  }

  #sectors(operation: string, offset: number, length: number): { sector: number; count: number } {
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0) {
      throw ruleViolation(operation, `offset ${offset} and length ${length} must be non-negative integers`);
    }
    if (offset % SECTOR_SIZE !== 0 || length % SECTOR_SIZE !== 0) {
      throw ruleViolation(
        operation,
        `${this.path}: VDDK reads and writes whole 512-byte sectors; offset ${offset} length ${length} is not aligned`,
      );
    }
    return { sector: offset / SECTOR_SIZE, count: length / SECTOR_SIZE };
  }

  async #io_(
    op: 'read' | 'readSync' | 'write' | 'writeSync',
    offset: number,
    data: Uint8Array,
  ): Promise<void> {
    const operation = {
      read: 'VixDiskLib_ReadAsync',
      readSync: 'VixDiskLib_Read',
      write: 'VixDiskLib_WriteAsync',
      writeSync: 'VixDiskLib_Write',
    }[op];
    const { sector, count } = this.#sectors(operation, offset, data.length);
    const vddk = this.connection.vddk;
    this.#io.begin();
    vddk.io.begin();
    // `data` must stay allocated until the reply: this frame keeps it (the catch below refers to
    // it). It is deliberately not stored in the long-lived pending map: buffers referenced from there
    // were promoted to V8's old generation, and 2 GiB of 1 MiB reads then cost about 20 major GCs
    // (npm run bench:vddk went from 0.6x to about 0.87x of fs without them).
    try {
      await vddk.call<null>(
        { op, disk: this.id, sector, count, address: addressOf(data) },
        {
          operation,
          object: this.path,
        },
      );
    } catch (err) {
      // The worker died with this request in flight: a library thread may still write into or read
      // from `data`, so it is never freed.
      if (err instanceof VddkError && err.code === 'VDDK_WORKER_DIED') quarantine.push(data);
      throw err;
    } finally {
      this.#io.end();
      vddk.io.end();
    }
  }

  /**
   * Reads `length` bytes at `offset` (ReadAsync; several may be in flight). The Buffer is allocated
   * here (or is `into`, a buffer an earlier read returned), and nothing else uses its ArrayBuffer;
   * the worker gets only its address and VDDK reads into it: no copy. `synchronous` uses
   * VixDiskLib_Read instead (one at a time).
   */
  async read(
    offset: number,
    length: number,
    options: { synchronous?: boolean; into?: Buffer } = {},
  ): Promise<Buffer> {
    // Uninitialised (VDDK overwrites all of it), allocated in the isolate that keeps it; on an
    // unbuffered disk at a READ_ALIGNMENT boundary (VDDK wants sector-aligned memory there). `into`:
    // a buffer an earlier read returned, of this length, read into again.
    const { into } = options;
    if (into && into.length !== length) throw new RangeError(`read into ${into.length} bytes, not ${length}`);
    const buffer =
      into ?? (this.unbuffered ? alignedBuffer(length, READ_ALIGNMENT) : Buffer.allocUnsafeSlow(length));
    await this.#io_(options.synchronous ? 'readSync' : 'read', offset, buffer);
    return buffer;
  }

  /**
   * Writes `data` at `offset` (WriteAsync; several may be in flight). VDDK reads the caller's memory
   * directly: do not change `data` until the promise settles.
   */
  write(offset: number, data: Uint8Array, options: { synchronous?: boolean } = {}): Promise<void> {
    return this.#io_(options.synchronous ? 'writeSync' : 'write', offset, data);
  }

  /** Waits for the writes in flight, then Wait and VixDiskLib_Flush. */
  async flush(): Promise<void> {
    await this.#io.idle();
    await this.connection.vddk.call<void>({ op: 'flush', disk: this.id });
  }

  /** The disk's `ddb.*` metadata (GetMetadataKeys + ReadMetadata). */
  metadata(): Promise<Record<string, string>> {
    return this.connection.vddk.call<Record<string, string>>({ op: 'metadata', disk: this.id });
  }

  /**
   * The allocated areas (QueryAllocatedBlocks) of `[offset, offset+length)` at `chunkBytes`
   * granularity, as byte extents sorted and merged. The tail after the last whole chunk is reported
   * as allocated, as VDDK's sample does.
   */
  async allocatedExtents(
    options: { chunkBytes?: number; offset?: number; length?: number } = {},
  ): Promise<Extent[]> {
    const chunkSectors = Math.max(
      MIN_CHUNK_SECTORS,
      Math.floor((options.chunkBytes ?? 64 * 1024) / SECTOR_SIZE),
    );
    const startSector = Math.floor((options.offset ?? 0) / SECTOR_SIZE);
    const endSector = Math.min(
      this.info.capacitySectors,
      Math.ceil(((options.offset ?? 0) + (options.length ?? this.capacity)) / SECTOR_SIZE),
    );
    if (startSector % chunkSectors !== 0) {
      throw ruleViolation(
        'VixDiskLib_QueryAllocatedBlocks',
        `offset must be a multiple of the chunk size (${chunkSectors * SECTOR_SIZE} bytes)`,
      );
    }
    const out: Extent[] = [];
    const push = (offset: number, length: number) => {
      const last = out[out.length - 1];
      if (last && last.offset + last.length === offset)
        out[out.length - 1] = { offset: last.offset, length: last.length + length };
      else out.push({ offset, length });
    };
    const wholeEnd = startSector + Math.floor((endSector - startSector) / chunkSectors) * chunkSectors;
    for (let s = startSector; s < wholeEnd;) {
      const n = Math.min(wholeEnd - s, MAX_CHUNKS_PER_QUERY * chunkSectors);
      const blocks = await this.connection.vddk.call<number[][]>({
        op: 'allocated',
        disk: this.id,
        startSector: s,
        numSectors: n,
        chunkSectors,
      });
      for (const [off, len] of blocks) push(off! * SECTOR_SIZE, len! * SECTOR_SIZE);
      s += n;
    }
    if (wholeEnd < endSector) push(wholeEnd * SECTOR_SIZE, (endSector - wholeEnd) * SECTOR_SIZE);
    return out;
  }

  /** Waits for I/O in flight, then VixDiskLib_Close (a hot-added disk is detached). */
  async close(): Promise<void> {
    if (this.#closed) return;
    await this.#io.idle();
    await this.connection.vddk.call<void>({ op: 'close', disk: this.id });
    this.connection.disks.delete(this);
    this.#closed = true;
  }
}
