import { Worker } from 'node:worker_threads';
import { availableParallelism } from 'node:os';
import { CorruptObjectError, NoSpaceError, RepositoryError } from '../repository/errors.js';
import { DiskIoError } from './errors.js';
import { ObjectNotFoundError } from '../repository/backend.js';
import type { ChunkIdAlgorithm, ChunkKeys } from '../repository/chunk-codec.js';

/** What a worker is started with (no keys: they come in the setup message). */
export interface WorkerInit {
  /**
   * Absolute directory of a local repository: workers then write and read chunk objects
   * themselves (temporary name, rename), off libuv's small thread pool.
   */
  readonly root?: string;
}

/**
 * Alignment of direct I/O (O_DIRECT) writes: of the memory, the file position and the length.
 * 4096 suits devices with 512-byte and 4 KiB logical blocks alike.
 */
export const DIRECT_IO_ALIGNMENT = 4096;

/**
 * Whether chunk objects and restored disks may use O_DIRECT. On by default (the file system is
 * still asked, and a refusal falls back to the page cache); VBPROXY_DIRECT_IO=off turns it off
 * for storage that accepts O_DIRECT but handles it badly. Any other value than on or off is a
 * RepositoryError naming the variable (the pool checks it before it starts its workers).
 */
export function directIoAllowed(): boolean {
  const value = process.env.VBPROXY_DIRECT_IO;
  if (value === undefined || value === '' || value === 'on') return true;
  if (value === 'off') return false;
  throw new RepositoryError(
    'REPO_SETTING',
    `VBPROXY_DIRECT_IO must be "on" or "off", not ${JSON.stringify(value)}`,
  );
}

/** Where a restore's chunk worker writes a chunk's plaintext bytes [sliceStart, sliceEnd) itself. */
export interface DirectWrite {
  readonly fd: number;
  /**
   * The same file opened with O_DIRECT, when the target has one: writes whose position, slice and
   * length are multiples of DIRECT_IO_ALIGNMENT go there, skipping the page cache.
   */
  readonly directFd?: number | undefined;
  readonly position: number;
  readonly sliceStart: number;
  readonly sliceEnd: number;
  /** The target, for error messages. */
  readonly description: string;
}

/** Where a backup's chunk worker reads a chunk's bytes itself (DiskSource.positionalReadFd). */
export interface DirectRead {
  readonly fd: number;
  /** The O_DIRECT descriptor of the same file, for aligned reads (DiskSource.directReadFd). */
  readonly directFd?: number | undefined;
  readonly position: number;
  readonly length: number;
}

/**
 * A chunk that a worker read and hashed and keeps in its memory until the pool tells it to store
 * it (`storeHeld`) or let it go (`dropHeld`); exactly one of the two must follow.
 */
export interface HeldChunk {
  readonly worker: number;
  readonly token: number;
}

/** The first message every worker gets: the repository's chunk parameters and keys (never logged). */
export interface WorkerSetup {
  readonly op: 'setup';
  readonly chunkId: Uint8Array;
  readonly chunkEnc: Uint8Array;
  readonly chunkSize: number;
  readonly idAlgorithm: ChunkIdAlgorithm;
}

export type WorkerRequest =
  | {
      seq: number;
      op: 'hash';
      data: Uint8Array;
      /**
       * Local pools: also touch the chunk object of the id (mtime = now) and report whether it
       * exists while no GC runs, unless the id equals `skipProbeFor` (the base point's entry).
       */
      probe?: { skipProbeFor: Uint8Array | null };
    }
  | ({
      seq: number;
      op: 'readHash';
      probe?: { skipProbeFor: Uint8Array | null };
    } & DirectRead)
  | { seq: number; op: 'storeHeld'; token: number; id: Uint8Array; path: string }
  | { seq: number; op: 'dropHeld'; token: number }
  | { seq: number; op: 'seal'; id: Uint8Array; data: Uint8Array }
  | { seq: number; op: 'open'; id: Uint8Array; data: Uint8Array; expectedLength: number | undefined }
  | {
      seq: number;
      op: 'sealStore';
      id: Uint8Array;
      data: Uint8Array;
      path: string;
      /** Send `data` back once sealed (the caller reuses the memory). */
      giveBack?: boolean;
    }
  | { seq: number; op: 'fetchOpen'; id: Uint8Array; path: string; expectedLength: number | undefined }
  | {
      seq: number;
      op: 'fetchOpenWrite';
      id: Uint8Array;
      path: string;
      expectedLength: number | undefined;
      /** Where the plaintext's bytes [sliceStart, sliceEnd) go: file descriptor and position. */
      fd: number;
      /** The O_DIRECT descriptor of the same file, for aligned writes (DirectWrite.directFd). */
      directFd?: number | undefined;
      position: number;
      sliceStart: number;
      sliceEnd: number;
    };

export type WorkerResponse =
  | {
      seq: number;
      ok: true;
      id: Uint8Array | null;
      data: Uint8Array | null;
      stored?: number;
      /** The probe's answer: the chunk object exists, was touched, and no GC is running. */
      exists?: boolean;
      /** readHash: the token under which the worker holds the chunk (absent for a zero chunk). */
      held?: number;
    }
  | {
      seq: number;
      ok: false;
      corrupt: boolean;
      message: string;
      errno?: string;
      path?: string;
      /** The failure was writing the restore target, not reading the repository. */
      targetWrite?: boolean;
      /** The failure was reading the backup's source disk (readHash). */
      sourceRead?: boolean;
    };

interface Result {
  id: Buffer | null;
  data: Buffer;
  stored: number;
  /** Set when the request probed the repository for the chunk (see `hash`). */
  exists?: boolean;
  /** readHash: the chunk the worker keeps for a storeHeld or dropHeld. */
  held?: HeldChunk;
}

interface Pending {
  resolve: (r: Result) => void;
  reject: (e: Error) => void;
  idHex: string | undefined;
  /** Description of the disk a worker reads (readHash: the backup's source) or writes (fetchOpenWrite: the restore target). */
  disk: string | undefined;
}

/** How `submit` sends a request, besides the request itself. */
interface SubmitOptions {
  /** Memory that moves to the worker with the request. */
  transfer?: ArrayBuffer;
  /** The chunk's id, for errors that name it. */
  idHex?: string;
  /** The disk the worker reads or writes, for errors that name it (Pending.disk). */
  disk?: string;
  /** The worker that must take the request (one that holds its chunk); else the least loaded. */
  worker?: number;
}

/**
 * One worker per core. Workers of a local pool read and write chunk objects themselves, but their
 * direct reads and writes run on libuv's thread pool while the worker goes on with the next chunk,
 * so no worker sits idle waiting for the disk and no extra worker is needed to cover for one.
 * VBPROXY_CHUNK_WORKERS overrides the count (1 to 64), for measurements and unusual machines.
 */
function defaultPoolSize(): number {
  const value = process.env.VBPROXY_CHUNK_WORKERS;
  if (value === undefined || value === '') return Math.max(1, Math.min(availableParallelism(), 8));
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1 || n > 64) {
    throw new RepositoryError(
      'REPO_SETTING',
      `VBPROXY_CHUNK_WORKERS must be a whole number from 1 to 64, not ${JSON.stringify(value)}`,
    );
  }
  return n;
}

/** `buf` itself when it owns its whole ArrayBuffer (it may be transferred), else a copy that does. */
function owned(buf: Buffer): Buffer {
  if (buf.byteOffset === 0 && buf.byteLength === buf.buffer.byteLength) return buf;
  const copy = Buffer.allocUnsafeSlow(buf.length);
  buf.copy(copy);
  return copy;
}

/**
 * A small byte array as its own exact-size ArrayBuffer. postMessage clones a view's whole backing
 * store: an id that is a view into a pooled 8 KiB slab or a 64 KiB index block would copy all of it.
 */
function compact(u: Uint8Array): Uint8Array {
  return u.byteOffset === 0 && u.byteLength === u.buffer.byteLength ? u : new Uint8Array(u);
}

function asBuffer(u: Uint8Array): Buffer {
  return Buffer.from(u.buffer, u.byteOffset, u.byteLength);
}

/**
 * A fixed pool of chunk workers (one per core by default). Each call transfers its buffer to a
 * worker (the caller must not use it afterwards) and resolves with a buffer the caller owns.
 * Callers bound the work in flight; the pool only spreads it.
 */
export class ChunkWorkerPool {
  private readonly workers: Worker[] = [];
  private readonly load: number[] = [];
  private readonly pending = new Map<number, Pending>();
  private seq = 0;
  private closed = false;
  private failure: Error | undefined;

  /** Whether workers read and write chunk objects of a local repository themselves. */
  readonly local: boolean;
  private readonly root: string | undefined;

  private configured = false;

  /**
   * Starts the workers. They load their modules at once but do no work until `setup` gives them
   * the repository's keys, so a caller can start them before it has unlocked the key (the worker
   * start-up then overlaps the key derivation).
   */
  constructor(root?: string, size = defaultPoolSize()) {
    directIoAllowed(); // a bad VBPROXY_DIRECT_IO fails here, not in every worker
    const init: WorkerInit = { root };
    this.local = root !== undefined;
    this.root = root;
    for (let i = 0; i < size; i++) {
      const w = new Worker(new URL('./chunk-worker.js', import.meta.url), {
        workerData: init,
        // Small heaps: collect garbage (and the chunk buffers it holds) early, keeping RSS low.
        resourceLimits: { maxYoungGenerationSizeMb: 4, maxOldGenerationSizeMb: 64 },
      });
      w.unref();
      const index = i;
      w.on('message', (res: WorkerResponse) => this.settle(index, res));
      w.on('error', (err) => this.fail(err));
      w.on('exit', (code) => {
        if (!this.closed)
          this.fail(new RepositoryError('REPO_WORKER', `chunk worker exited with code ${code}`));
      });
      this.workers.push(w);
      this.load.push(0);
    }
  }

  /** Gives every worker the chunk parameters and keys; must come before any work. Returns the pool. */
  setup(keys: ChunkKeys, chunkSize: number, idAlgorithm: ChunkIdAlgorithm): this {
    const msg: WorkerSetup = {
      op: 'setup',
      chunkId: keys.chunkId,
      chunkEnc: keys.chunkEnc,
      chunkSize,
      idAlgorithm,
    };
    for (const w of this.workers) w.postMessage(msg);
    this.configured = true;
    return this;
  }

  get size(): number {
    return this.workers.length;
  }

  private fail(err: Error): void {
    this.failure = err;
    for (const p of this.pending.values()) p.reject(err);
    this.pending.clear();
  }

  private settle(index: number, res: WorkerResponse): void {
    this.load[index] = (this.load[index] ?? 1) - 1;
    const p = this.pending.get(res.seq);
    if (!p) return;
    this.pending.delete(res.seq);
    if (res.ok) {
      p.resolve({
        id: res.id ? Buffer.from(res.id) : null,
        data: res.data ? asBuffer(res.data) : Buffer.alloc(0),
        stored: res.stored ?? 0,
        ...(res.exists === undefined ? {} : { exists: res.exists }),
        ...(res.held === undefined ? {} : { held: { worker: index, token: res.held } }),
      });
    } else if (res.sourceRead) {
      p.reject(
        new DiskIoError('IMAGE_READ', `read from ${p.disk ?? 'the source disk'} failed: ${res.message}`, {
          transient: true,
        }),
      );
    } else if (res.targetWrite) {
      const where = p.disk ?? 'the restore target';
      p.reject(
        res.errno === 'ENOSPC' || res.errno === 'EDQUOT'
          ? new NoSpaceError(where)
          : new DiskIoError('IMAGE_WRITE', `write to ${where} failed: ${res.message}`),
      );
    } else if (res.corrupt) {
      p.reject(new CorruptObjectError('chunk', p.idHex ?? '?', res.message));
    } else if (res.errno === 'ENOENT' && res.path) {
      p.reject(new ObjectNotFoundError(this.root ?? '', res.path));
    } else if ((res.errno === 'ENOSPC' || res.errno === 'EDQUOT') && res.path) {
      p.reject(new NoSpaceError(`${this.root ?? ''}/${res.path}`));
    } else {
      p.reject(new RepositoryError('REPO_WORKER', `chunk worker failed: ${res.message}`));
    }
  }

  private submit(req: WorkerRequest, options: SubmitOptions = {}): Promise<Result> {
    const { transfer, idHex, disk, worker } = options;
    if (this.failure) return Promise.reject(this.failure);
    if (this.closed) return Promise.reject(new RepositoryError('REPO_WORKER', 'chunk worker pool is closed'));
    if (!this.configured) return Promise.reject(new Error('internal: chunk worker pool used before setup'));
    if ('id' in req) req.id = compact(req.id);
    if ((req.op === 'hash' || req.op === 'readHash') && req.probe?.skipProbeFor)
      req.probe = { skipProbeFor: compact(req.probe.skipProbeFor) };
    let best = worker ?? 0;
    if (worker === undefined)
      for (let i = 1; i < this.workers.length; i++)
        if ((this.load[i] ?? 0) < (this.load[best] ?? 0)) best = i;
    this.load[best] = (this.load[best] ?? 0) + 1;
    return new Promise((resolve, reject) => {
      this.pending.set(req.seq, { resolve, reject, idHex, disk });
      this.workers[best]!.postMessage(req, transfer ? [transfer] : []);
    });
  }

  /**
   * The chunk id of `data` (null for all zeros); `data` comes back in the result. Like `seal` and
   * `sealStore`, it takes `data`'s memory: the whole ArrayBuffer is transferred to the worker, even
   * when `data` is a view into part of it (an aligned read buffer), so the caller must use no other
   * view of that ArrayBuffer (the backup pipeline's buffers: DiskSource.read).
   */
  hash(data: Buffer, probe?: { skipProbeFor: Buffer | null }): Promise<Result> {
    const req: WorkerRequest = { seq: ++this.seq, op: 'hash', data };
    if (probe && this.local) req.probe = probe;
    return this.submit(req, { transfer: data.buffer as ArrayBuffer });
  }

  /**
   * Reads a chunk from a file in a worker (`from`), then as `hash`: its id (null for all zeros,
   * which the worker does not keep) and, for local pools, the probe's answer. A chunk with an id
   * stays in the worker's memory as `held`, for exactly one `storeHeld` or `dropHeld`.
   */
  readHash(
    from: DirectRead & { description: string },
    probe?: { skipProbeFor: Buffer | null },
  ): Promise<Result> {
    const { description, ...where } = from;
    const req: WorkerRequest = { seq: ++this.seq, op: 'readHash', ...where };
    if (probe && this.local) req.probe = probe;
    return this.submit(req, { disk: description });
  }

  /** Seals a held chunk and stores it as the chunk object at `path` (local pools only); returns its size. */
  async storeHeld(held: HeldChunk, id: Buffer, path: string): Promise<number> {
    const req: WorkerRequest = { seq: ++this.seq, op: 'storeHeld', token: held.token, id, path };
    return (await this.submit(req, { worker: held.worker })).stored;
  }

  /** Lets a held chunk go (it was a duplicate, or the backup failed). */
  async dropHeld(held: HeldChunk): Promise<void> {
    await this.submit({ seq: ++this.seq, op: 'dropHeld', token: held.token }, { worker: held.worker });
  }

  /** The sealed chunk object for `data` (whose memory it takes, as `hash` does). */
  async seal(id: Buffer, data: Buffer): Promise<Buffer> {
    const req: WorkerRequest = { seq: ++this.seq, op: 'seal', id, data };
    return (await this.submit(req, { transfer: data.buffer as ArrayBuffer })).data;
  }

  /** The verified plaintext of a chunk object; CorruptObjectError naming the chunk otherwise. */
  async open(id: Buffer, object: Buffer, expectedLength?: number): Promise<Buffer> {
    const d = owned(object);
    const req: WorkerRequest = { seq: ++this.seq, op: 'open', id, data: d, expectedLength };
    return (await this.submit(req, { transfer: d.buffer as ArrayBuffer, idHex: id.toString('hex') })).data;
  }

  /**
   * Seals `data` and stores it durably as the chunk object at `path` (local pools only); returns
   * its size. It takes data's memory, as `hash` does; `giveBack` gets it back once it is sealed.
   */
  async sealStore(
    id: Buffer,
    data: Buffer,
    path: string,
    giveBack?: (plain: Buffer) => void,
  ): Promise<number> {
    const req: WorkerRequest = { seq: ++this.seq, op: 'sealStore', id, data, path };
    if (giveBack) req.giveBack = true;
    const r = await this.submit(req, { transfer: data.buffer as ArrayBuffer });
    if (giveBack && r.data.length > 0) giveBack(r.data);
    return r.stored;
  }

  /** Reads the chunk object at `path` and returns its verified plaintext (local pools only). */
  async fetchOpen(id: Buffer, path: string, expectedLength?: number): Promise<Buffer> {
    const req: WorkerRequest = { seq: ++this.seq, op: 'fetchOpen', id, path, expectedLength };
    return (await this.submit(req, { idHex: id.toString('hex') })).data;
  }

  /**
   * Reads the chunk object at `path`, verifies it, and writes its bytes [sliceStart, sliceEnd) to
   * file descriptor `fd` at `position` from the worker (local pools only); nothing comes back.
   */
  async fetchOpenWrite(
    id: Buffer,
    path: string,
    expectedLength: number | undefined,
    out: DirectWrite,
  ): Promise<void> {
    const { description, ...where } = out;
    const req: WorkerRequest = { seq: ++this.seq, op: 'fetchOpenWrite', id, path, expectedLength, ...where };
    await this.submit(req, { idHex: id.toString('hex'), disk: description });
  }

  async close(): Promise<void> {
    this.closed = true;
    await Promise.all(this.workers.map((w) => w.terminate()));
  }
}
