/**
 * Worker thread of the chunk pool: hashing, compression, encryption and their reverse run here so
 * that both cores work and the event loop stays free. Buffers arrive and leave by transfer.
 */
import { parentPort, threadId, workerData } from 'node:worker_threads';
import {
  closeSync,
  mkdirSync,
  openSync,
  readSync,
  renameSync,
  rmSync,
  statSync,
  utimesSync,
  writeSync,
} from 'node:fs';
import { randomBytes } from 'node:crypto';
import { dirname, join } from 'node:path';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { createRequire } from 'node:module';
import { TEMP_MARK } from '../repository/backend.js';
import { ChunkCodec } from '../repository/chunk-codec.js';
import { CorruptObjectError } from '../repository/errors.js';
import { CHUNK_HEADER_BYTES, NONCE_BYTES, TAG_BYTES, paths } from '../repository/format.js';
import { DIRECT_IO_ALIGNMENT } from './worker-pool.js';
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
 * Write of a chunk object: temporary name, then rename, so that a killed writer never leaves a
 * partial object under a chunk's name. No fsync here: the session makes all its chunk objects
 * durable at once (Backend.syncAll, one syncfs) before it writes the indexes and the manifest.
 */
function store(path: string, data: Buffer): void {
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
    while (done < data.length) done += writeSync(fd, data, done, data.length - done);
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
let readBuffer: Buffer | undefined;

/**
 * Reads a whole chunk object into this worker's reusable buffer and returns a view of it (valid
 * until the next call). An object larger than any chunk of the repository is damaged.
 */
function readObject(path: string, chunkSize: number): Buffer {
  const cap = chunkSize + OBJECT_OVERHEAD;
  if (!readBuffer || readBuffer.length < cap + 1) readBuffer = Buffer.allocUnsafeSlow(cap + 1);
  const fd = openSync(path, 'r');
  let n = 0;
  try {
    for (;;) {
      const r = readSync(fd, readBuffer, n, readBuffer.length - n, null);
      if (r === 0) break;
      n += r;
      if (n === readBuffer.length) break;
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
  return readBuffer.subarray(0, n);
}

let restoreBuffer: Buffer | undefined;

/**
 * This worker's reusable chunk-sized buffer for restored plaintext, aligned for direct I/O (the
 * address comes from koffi: Node has no aligned allocation). Valid until the next restored chunk.
 */
function restoreOutput(chunkSize: number): Buffer {
  if (!restoreBuffer || restoreBuffer.length < chunkSize) {
    // koffi is loaded here, on a restore's first chunk: backups do not pay for loading it.
    const koffi = createRequire(import.meta.url)('koffi') as { address(b: Buffer): bigint };
    const raw = Buffer.allocUnsafeSlow(chunkSize + DIRECT_IO_ALIGNMENT);
    const skew = Number(koffi.address(raw) % BigInt(DIRECT_IO_ALIGNMENT));
    const start = skew === 0 ? 0 : DIRECT_IO_ALIGNMENT - skew;
    restoreBuffer = raw.subarray(start, start + chunkSize);
  }
  return restoreBuffer;
}

function writeAllAt(fd: number, data: Buffer, start: number, end: number, position: number): void {
  let done = start;
  while (done < end) done += writeSync(fd, data, done, end - done, position + done - start);
}

/**
 * Writes a restored chunk's bytes [start, end) at `position`: through the O_DIRECT descriptor when
 * there is one and everything is aligned (the file system may still refuse with EINVAL, and then
 * the page cache takes the write), else through the ordinary one.
 */
function writeRestored(
  req: { fd: number; directFd?: number; position: number },
  data: Buffer,
  start: number,
  end: number,
): void {
  const a = DIRECT_IO_ALIGNMENT;
  if (req.directFd !== undefined && req.position % a === 0 && start % a === 0 && (end - start) % a === 0) {
    try {
      writeAllAt(req.directFd, data, start, end, req.position);
      return;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EINVAL') throw err;
    }
  }
  writeAllAt(req.fd, data, start, end, req.position);
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
  let res: WorkerResponse = { seq: req.seq, ok: false, corrupt: false, message: 'unknown operation' };
  const transfer: ArrayBuffer[] = [];
  try {
    const c = codec;
    if (!c) throw new Error('internal: chunk worker got a request before its setup');
    switch (req.op) {
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
      case 'sealStore': {
        const sealed = c.seal(req.id, req.data);
        store(req.path, sealed);
        res = { seq: req.seq, ok: true, id: null, data: null, stored: sealed.length };
        break;
      }
      case 'fetchOpenWrite': {
        const obj = readObject(join(init.root!, req.path), c.chunkSize);
        const out = restoreOutput(c.chunkSize);
        c.openInto(req.id, obj, out, req.expectedLength);
        try {
          writeRestored(req, out, req.sliceStart, req.sliceEnd);
        } catch (err) {
          res = {
            seq: req.seq,
            ok: false,
            corrupt: false,
            targetWrite: true,
            message: String((err as Error).message ?? err),
            errno: (err as NodeJS.ErrnoException).code,
          };
          break;
        }
        res = { seq: req.seq, ok: true, id: null, data: null };
        break;
      }
      case 'fetchOpen': {
        const obj = readObject(join(init.root!, req.path), c.chunkSize);
        const plain = c.open(req.id, obj, req.expectedLength);
        res = { seq: req.seq, ok: true, id: null, data: plain };
        transfer.push(plain.buffer as ArrayBuffer);
        break;
      }
    }
  } catch (err) {
    const corrupt = err instanceof CorruptObjectError;
    res = {
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
  port.postMessage(res, transfer);
  // Every operation but 'hash' (whose buffer goes back) leaves about two chunks of garbage here:
  // its input or the object read, and the compressed, sealed or opened buffer it made.
  if (req.op !== 'hash' && codec) released(2 * codec.chunkSize);
});
