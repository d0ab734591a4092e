/**
 * Worker thread of the chunk pool: hashing, compression, encryption and their reverse run here so
 * that both cores work and the event loop stays free. Buffers arrive and leave by transfer.
 */
import { parentPort, threadId, workerData } from 'node:worker_threads';
import {
  closeSync,
  constants,
  mkdirSync,
  openSync,
  read,
  renameSync,
  rmSync,
  statSync,
  utimesSync,
  write,
  writeSync,
} from 'node:fs';
import { randomBytes } from 'node:crypto';
import { dirname, join } from 'node:path';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { TEMP_MARK } from '../repository/backend.js';
import { ChunkCodec } from '../repository/chunk-codec.js';
import { CorruptObjectError } from '../repository/errors.js';
import { CHUNK_HEADER_BYTES, NONCE_BYTES, TAG_BYTES, paths } from '../repository/format.js';
import { DIRECT_IO_ALIGNMENT, directIoAllowed } from './worker-pool.js';
import { alignedBuffer } from './aligned-buffer.js';
import type { WorkerRequest, WorkerResponse, WorkerInit, WorkerSetup } from './worker-pool.js';

const init = workerData as WorkerInit;
/** Set by the pool's setup message, which comes before any request. */
let codec: ChunkCodec | undefined;
const port = parentPort;
if (!port) throw new Error('chunk-worker must run in a worker thread');

/**
 * Every chunk leaves buffers behind in this isolate (the plaintext that arrived, the sealed or
 * read object, the decompressed plaintext): their memory lives outside the V8 heap, which V8 only
 * frees when it collects the small objects that hold it. With a 4 MiB young generation V8 would
 * collect rarely, and let up to its external-memory limit (64 MiB) of dead chunk buffers pile up
 * per worker before it does: with three workers that was most of the worker's peak RSS. So the
 * worker runs a minor collection (well under a millisecond here) after every GARBAGE_BUDGET bytes
 * of chunk buffers it let go of, which bounds that garbage to about GARBAGE_BUDGET per worker.
 */
const GARBAGE_BUDGET = 4 * 1024 * 1024;
let garbage = 0;
const collect = ((): ((options: { type: 'minor' }) => void) | undefined => {
  setFlagsFromString('--expose-gc');
  const gc: unknown = runInNewContext('typeof gc === "function" ? gc : undefined');
  return typeof gc === 'function' ? (gc as (options: { type: 'minor' }) => void) : undefined;
})();
function released(bytes: number): void {
  garbage += bytes;
  if (garbage >= GARBAGE_BUDGET) {
    garbage = 0;
    collect?.({ type: 'minor' });
  }
}

function asBuffer(u: Uint8Array): Buffer {
  return Buffer.from(u.buffer, u.byteOffset, u.byteLength);
}

/**
 * Whether this worker still tries O_DIRECT for chunk objects. The first EINVAL (a file system
 * without direct I/O) turns it off for the worker's life.
 */
let directIo = directIoAllowed();

/** Whether `err` is the EINVAL with which a file system refuses O_DIRECT. */
function refusesDirectIo(err: unknown): boolean {
  return (err as NodeJS.ErrnoException).code === 'EINVAL';
}

/**
 * Write of a chunk object: temporary name, then rename, so that a killed writer never leaves a
 * partial object under a chunk's name. No fsync here: the session makes all its chunk objects
 * durable at once (Backend.syncAll, one syncfs) before it writes the indexes and the manifest.
 *
 * `data` must start at a DIRECT_IO_ALIGNMENT boundary in memory: the object's whole 4 KiB blocks
 * go to the disk with O_DIRECT, past the page cache, and only the last partial block through it.
 * A backup writes each chunk object once and does not read it back, so caching it buys nothing,
 * and allocating page-cache pages for a whole disk's worth of chunks costs more CPU than the copy
 * (docs/repository-format.md, section 7).
 */
async function store(path: string, data: Buffer, length: number): Promise<void> {
  const target = join(init.root!, path);
  const temp = `${target}${TEMP_MARK}${process.pid}.${threadId}.${randomBytes(4).toString('hex')}`;
  let fd: number;
  try {
    fd = openSync(temp, 'wx', 0o600);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    mkdirSync(dirname(temp), { recursive: true });
    fd = openSync(temp, 'wx', 0o600);
  }
  try {
    let done = 0;
    const whole = length - (length % DIRECT_IO_ALIGNMENT);
    if (directIo && whole > 0) {
      try {
        const dfd = openSync(temp, constants.O_WRONLY | constants.O_DIRECT);
        try {
          // On the thread pool: the worker seals the next chunk while the disk takes this one.
          await writeAllAtAsync(dfd, data, 0, whole, 0);
        } finally {
          closeSync(dfd);
        }
        done = whole;
      } catch (err) {
        if (!refusesDirectIo(err)) throw err;
        directIo = false;
      }
    }
    writeAllAt(fd, data, done, length, done);
  } catch (err) {
    closeSync(fd);
    rmSync(temp, { force: true });
    throw err;
  }
  closeSync(fd);
  renameSync(temp, target);
}

/** A chunk object is at most this much larger than its plaintext (header, nonce, tag). */
const OBJECT_OVERHEAD = CHUNK_HEADER_BYTES + NONCE_BYTES + TAG_BYTES;

function roundUp(n: number): number {
  return Math.ceil(n / DIRECT_IO_ALIGNMENT) * DIRECT_IO_ALIGNMENT;
}

function readAt(fd: number, buf: Buffer, offset: number, length: number, position: number): Promise<number> {
  return new Promise((resolve, reject) => {
    read(fd, buf, offset, length, position, (err, n) => (err ? reject(err) : resolve(n)));
  });
}

function writeAt(fd: number, buf: Buffer, offset: number, length: number, position: number): Promise<number> {
  return new Promise((resolve, reject) => {
    write(fd, buf, offset, length, position, (err, n) => (err ? reject(err) : resolve(n)));
  });
}

/** Bytes of a buffer that holds any chunk object of the repository, and one byte more. */
function objectBufferBytes(chunkSize: number): number {
  return roundUp(chunkSize + OBJECT_OVERHEAD + 1);
}

/**
 * Reads a whole chunk object into `buf` (objectBufferBytes long, aligned) and returns a view of
 * it. An object larger than any chunk of the repository is damaged. The reads run on libuv's
 * thread pool, so the worker opens one chunk while the disk reads the next; they use O_DIRECT
 * where the file system allows it: chunk objects are written past the page cache (see `store`),
 * and a restore or verify reads each once, so caching them would only cost memory.
 */
async function readObject(path: string, chunkSize: number, buf: Buffer): Promise<Buffer> {
  const cap = chunkSize + OBJECT_OVERHEAD;
  let fd: number | undefined;
  let direct = false;
  if (directIo) {
    try {
      fd = openSync(path, constants.O_RDONLY | constants.O_DIRECT);
      direct = true;
    } catch (err) {
      if (!refusesDirectIo(err)) throw err;
      directIo = false;
    }
  }
  fd ??= openSync(path, 'r');
  let n = 0;
  try {
    for (;;) {
      const r = await readAt(fd, buf, n, buf.length - n, n);
      n += r;
      // A direct read is short only at the end of the file, after which the offset is unaligned.
      if (r === 0 || n > cap || (direct && n % DIRECT_IO_ALIGNMENT !== 0)) break;
    }
  } finally {
    closeSync(fd);
  }
  if (n > cap) {
    const name = path.slice(path.lastIndexOf('/') + 1);
    throw new CorruptObjectError(
      'chunk',
      name,
      `object is larger than a ${chunkSize}-byte chunk can seal to`,
    );
  }
  return buf.subarray(0, n);
}

/** An aligned pair of buffers for one chunk being restored: the object read, the plaintext. */
interface RestoreSlot {
  readonly object: Buffer;
  readonly plain: Buffer;
}

/** The worker's idle restore slots: one per chunk in flight at most, reused. */
const restoreSlots: RestoreSlot[] = [];

function takeSlot(chunkSize: number): RestoreSlot {
  return (
    restoreSlots.pop() ?? {
      object: alignedBuffer(objectBufferBytes(chunkSize), DIRECT_IO_ALIGNMENT),
      plain: alignedBuffer(chunkSize, DIRECT_IO_ALIGNMENT),
    }
  );
}

/** The worker's idle aligned buffers that chunk objects are sealed into before `store`. */
const sealBuffers: Buffer[] = [];

/**
 * Seals a backup's chunk into one of the worker's aligned buffers and stores it; returns the
 * object's size. `sealed` runs once `data` is no longer needed (it is sealed, or sealing failed).
 */
async function sealAndStore(
  c: ChunkCodec,
  id: Uint8Array,
  data: Uint8Array,
  path: string,
  sealed?: () => void,
): Promise<number> {
  const out = sealBuffers.pop() ?? alignedBuffer(roundUp(c.sealBufferBytes), DIRECT_IO_ALIGNMENT);
  try {
    let length: number;
    try {
      length = c.sealInto(id, data, out);
    } finally {
      sealed?.();
    }
    await store(path, out, length);
    return length;
  } finally {
    sealBuffers.push(out);
  }
}

/** A backup's chunk sent by the event loop: seal and store it, and give its memory back if asked. */
async function sealStore(
  c: ChunkCodec,
  req: Extract<WorkerRequest, { op: 'sealStore' }>,
): Promise<{ res: WorkerResponse; transfer: ArrayBuffer[] }> {
  const length = await sealAndStore(c, req.id, req.data, req.path);
  const res: WorkerResponse = { seq: req.seq, ok: true, id: null, data: null, stored: length };
  if (!req.giveBack) {
    released(c.chunkSize); // the plaintext that came in is garbage now
    return { res, transfer: [] };
  }
  res.data = req.data; // its memory goes back to be read into again
  return { res, transfer: [req.data.buffer as ArrayBuffer] };
}

/** The worker's idle aligned chunk buffers that a backup reads the disk into (readHash). */
const chunkBuffers: Buffer[] = [];

/** Chunks read and hashed, kept until the pool says storeHeld or dropHeld, by token. */
const held = new Map<number, Buffer>();

/**
 * Reads a backup's chunk from the disk file itself: with O_DIRECT when the pool gave a direct
 * descriptor and the range is aligned (a disk's chunks are, but for a last one that ends at an
 * unaligned capacity), into `buf`; past the end of the file reads as zeros. Runs on libuv's
 * thread pool, so the worker hashes and seals other chunks while the disk reads this one.
 */
async function readSource(req: Extract<WorkerRequest, { op: 'readHash' }>, buf: Buffer): Promise<Buffer> {
  const a = DIRECT_IO_ALIGNMENT;
  const data = buf.subarray(0, req.length);
  let done = 0;
  if (req.directFd !== undefined && req.position % a === 0 && req.length % a === 0) {
    try {
      while (done < req.length) {
        const n = await readAt(req.directFd, data, done, req.length - done, req.position + done);
        if (n === 0) break;
        done += n;
        if (done % a !== 0) break; // a short direct read: the end of the file
      }
    } catch (err) {
      if (!refusesDirectIo(err)) throw err;
      done = 0;
    }
  }
  while (done < req.length) {
    const n = await readAt(req.fd, data, done, req.length - done, req.position + done);
    if (n === 0) break;
    done += n;
  }
  if (done < req.length) data.fill(0, done);
  return data;
}

/** A backup's chunk read by the worker: its id, the probe's answer, and the token it is held by. */
async function readHash(
  c: ChunkCodec,
  req: Extract<WorkerRequest, { op: 'readHash' }>,
): Promise<WorkerResponse> {
  const buf = chunkBuffers.pop() ?? alignedBuffer(c.chunkSize, DIRECT_IO_ALIGNMENT);
  let keep = false;
  try {
    let data: Buffer;
    try {
      data = await readSource(req, buf);
    } catch (err) {
      const f = failure(req, err);
      return f.ok
        ? f
        : { ...f, message: `${req.length} bytes at ${req.position}: ${f.message}`, sourceRead: true };
    }
    const id = c.id(data);
    const res: WorkerResponse = { seq: req.seq, ok: true, id, data: null };
    if (id) {
      if (req.probe && !(req.probe.skipProbeFor && id.equals(req.probe.skipProbeFor)))
        res.exists = probe(id.toString('hex'));
      held.set(req.seq, data);
      res.held = req.seq;
      keep = true;
    }
    return res;
  } finally {
    if (!keep) chunkBuffers.push(buf);
  }
}

/** Takes the chunk held under `token` (an internal error when there is none). */
function takeHeld(token: number): Buffer {
  const data = held.get(token);
  if (!data) throw new Error(`internal: no chunk held under ${token}`);
  held.delete(token);
  return data;
}

/** Gives a held chunk's buffer back for the next read (its whole aligned allocation). */
function releaseHeld(data: Buffer, chunkSize: number): void {
  chunkBuffers.push(Buffer.from(data.buffer, data.byteOffset, chunkSize));
}

/** A held chunk: seal it and store it; returns the object's size. Its buffer is reused either way. */
function storeHeld(c: ChunkCodec, req: Extract<WorkerRequest, { op: 'storeHeld' }>): Promise<number> {
  const data = takeHeld(req.token);
  return sealAndStore(c, req.id, data, req.path, () => releaseHeld(data, c.chunkSize));
}

function writeAllAt(fd: number, data: Buffer, start: number, end: number, position: number): void {
  let done = start;
  while (done < end) done += writeSync(fd, data, done, end - done, position + done - start);
}

async function writeAllAtAsync(
  fd: number,
  data: Buffer,
  start: number,
  end: number,
  position: number,
): Promise<void> {
  let done = start;
  while (done < end) done += await writeAt(fd, data, done, end - done, position + done - start);
}

/**
 * Writes a restored chunk's bytes [start, end) at `position`, on libuv's thread pool: through the
 * O_DIRECT descriptor when there is one and everything is aligned (the file system may still
 * refuse with EINVAL, and then the page cache takes the write), else through the ordinary one.
 */
async function writeRestored(
  req: { fd: number; directFd?: number; position: number },
  data: Buffer,
  start: number,
  end: number,
): Promise<void> {
  const a = DIRECT_IO_ALIGNMENT;
  if (req.directFd !== undefined && req.position % a === 0 && start % a === 0 && (end - start) % a === 0) {
    try {
      await writeAllAtAsync(req.directFd, data, start, end, req.position);
      return;
    } catch (err) {
      if (!refusesDirectIo(err)) throw err;
    }
  }
  await writeAllAtAsync(req.fd, data, start, end, req.position);
}

/**
 * A restore's chunk: read its object, open it, write the plaintext slice to the target. Several
 * run at once in one worker: their reads and writes wait on the thread pool, not the worker.
 */
async function fetchOpenWrite(
  c: ChunkCodec,
  req: Extract<WorkerRequest, { op: 'fetchOpenWrite' }>,
): Promise<WorkerResponse> {
  const slot = takeSlot(c.chunkSize);
  try {
    const obj = await readObject(join(init.root!, req.path), c.chunkSize, slot.object);
    c.openInto(req.id, obj, slot.plain, req.expectedLength);
    try {
      await writeRestored(req, slot.plain, req.sliceStart, req.sliceEnd);
    } catch (err) {
      return {
        seq: req.seq,
        ok: false,
        corrupt: false,
        targetWrite: true,
        message: String((err as Error).message ?? err),
        errno: (err as NodeJS.ErrnoException).code,
      };
    }
    return { seq: req.seq, ok: true, id: null, data: null };
  } finally {
    restoreSlots.push(slot);
  }
}

/** A verify's or remote restore's chunk: read its object and return the verified plaintext. */
async function fetchOpen(
  c: ChunkCodec,
  req: Extract<WorkerRequest, { op: 'fetchOpen' }>,
): Promise<{ res: WorkerResponse; transfer: ArrayBuffer[] }> {
  const slot = takeSlot(c.chunkSize);
  try {
    const obj = await readObject(join(init.root!, req.path), c.chunkSize, slot.object);
    const plain = c.open(req.id, obj, req.expectedLength);
    return {
      res: { seq: req.seq, ok: true, id: null, data: plain },
      transfer: [plain.buffer as ArrayBuffer],
    };
  } finally {
    restoreSlots.push(slot);
  }
}

/** The response that reports `err` for request `req`. */
function failure(req: WorkerRequest, err: unknown): WorkerResponse {
  const corrupt = err instanceof CorruptObjectError;
  return {
    seq: req.seq,
    ok: false,
    corrupt,
    message: corrupt
      ? err.message.replace(/^damaged chunk [0-9a-f]+: /, '')
      : String((err as Error).message ?? err),
    errno: (err as NodeJS.ErrnoException).code,
    path: 'path' in req ? req.path : undefined,
  };
}

/**
 * Touches the chunk object `hex` (mtime = now, what protects it from a GC that starts later) and
 * tells whether the backup may reuse it: it exists and no GC is running (docs/repository-format.md,
 * "Garbage collection"). The same check the session would make, without two event-loop round trips.
 */
function probe(hex: string): boolean {
  const now = new Date();
  try {
    utimesSync(join(init.root!, paths.chunk(hex)), now, now);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw err;
  }
  return statSync(join(init.root!, paths.gcMarker), { throwIfNoEntry: false }) === undefined;
}

port.on('message', (msg: WorkerRequest | WorkerSetup) => {
  if (msg.op === 'setup') {
    codec = new ChunkCodec({ chunkId: msg.chunkId, chunkEnc: msg.chunkEnc }, msg.chunkSize, msg.idAlgorithm);
    return;
  }
  const req = msg;
  const c = codec;
  if (
    c &&
    (req.op === 'fetchOpenWrite' ||
      req.op === 'fetchOpen' ||
      req.op === 'sealStore' ||
      req.op === 'readHash' ||
      req.op === 'storeHeld')
  ) {
    // Asynchronous: the next request starts while this one waits for the disk.
    let done: Promise<{ res: WorkerResponse; transfer: ArrayBuffer[] }>;
    if (req.op === 'readHash') {
      done = readHash(c, req).then((res) => ({ res, transfer: [] }));
    } else if (req.op === 'storeHeld') {
      done = storeHeld(c, req).then((stored) => ({
        res: { seq: req.seq, ok: true, id: null, data: null, stored },
        transfer: [],
      }));
    } else if (req.op === 'fetchOpenWrite') {
      done = fetchOpenWrite(c, req).then((res) => ({ res, transfer: [] }));
    } else if (req.op === 'fetchOpen') {
      done = fetchOpen(c, req).then((r) => {
        released(c.chunkSize);
        return r;
      });
    } else {
      done = sealStore(c, req);
    }
    void done
      .catch((err: unknown) => ({ res: failure(req, err), transfer: [] }))
      .then(({ res, transfer }) => port.postMessage(res, transfer));
    return;
  }
  let res: WorkerResponse = { seq: req.seq, ok: false, corrupt: false, message: 'unknown operation' };
  const transfer: ArrayBuffer[] = [];
  try {
    if (!c) throw new Error('internal: chunk worker got a request before its setup');
    switch (req.op) {
      case 'dropHeld': {
        releaseHeld(takeHeld(req.token), c.chunkSize);
        res = { seq: req.seq, ok: true, id: null, data: null };
        break;
      }
      case 'hash': {
        const id = c.id(req.data);
        res = { seq: req.seq, ok: true, id, data: req.data };
        if (id && req.probe && !(req.probe.skipProbeFor && id.equals(req.probe.skipProbeFor)))
          res.exists = probe(id.toString('hex'));
        transfer.push(req.data.buffer as ArrayBuffer);
        break;
      }
      case 'seal': {
        const sealed = c.seal(req.id, req.data);
        res = { seq: req.seq, ok: true, id: null, data: sealed };
        transfer.push(sealed.buffer as ArrayBuffer);
        break;
      }
      case 'open': {
        const plain = c.open(req.id, asBuffer(req.data), req.expectedLength);
        res = { seq: req.seq, ok: true, id: null, data: plain };
        transfer.push(plain.buffer as ArrayBuffer);
        break;
      }
    }
  } catch (err) {
    res = failure(req, err);
  }
  port.postMessage(res, transfer);
  // 'seal' and 'open' leave about two chunks of garbage here: the buffer that came in and the one
  // made. 'hash' sends its buffer back; 'dropHeld' reuses its buffer.
  if ((req.op === 'seal' || req.op === 'open') && codec) released(2 * codec.chunkSize);
});
