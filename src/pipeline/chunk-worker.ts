/**
 * Worker thread of the chunk pool: hashing, compression, encryption and their reverse run here so
 * that both cores work and the event loop stays free. Buffers arrive and leave by transfer.
 */
import { parentPort, threadId, workerData } from 'node:worker_threads';
import { closeSync, mkdirSync, openSync, readFileSync, renameSync, rmSync, writeSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { dirname, join } from 'node:path';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { TEMP_MARK } from '../repository/backend.js';
import { ChunkCodec } from '../repository/chunk-codec.js';
import { CorruptObjectError } from '../repository/errors.js';
import type { WorkerRequest, WorkerResponse, WorkerInit } from './worker-pool.js';

const init = workerData as WorkerInit;
const codec = new ChunkCodec(
  { chunkId: init.chunkId, chunkEnc: init.chunkEnc },
  init.chunkSize,
  init.idAlgorithm,
);
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

port.on('message', (req: WorkerRequest) => {
  let res: WorkerResponse = { seq: req.seq, ok: false, corrupt: false, message: 'unknown operation' };
  const transfer: ArrayBuffer[] = [];
  try {
    switch (req.op) {
      case 'hash': {
        const id = codec.id(req.data);
        res = { seq: req.seq, ok: true, id, data: req.data };
        transfer.push(req.data.buffer as ArrayBuffer);
        break;
      }
      case 'seal': {
        const sealed = codec.seal(req.id, req.data);
        res = { seq: req.seq, ok: true, id: null, data: sealed };
        transfer.push(sealed.buffer as ArrayBuffer);
        break;
      }
      case 'open': {
        const plain = codec.open(req.id, asBuffer(req.data), req.expectedLength);
        res = { seq: req.seq, ok: true, id: null, data: plain };
        transfer.push(plain.buffer as ArrayBuffer);
        break;
      }
      case 'sealStore': {
        const sealed = codec.seal(req.id, req.data);
        store(req.path, sealed);
        res = { seq: req.seq, ok: true, id: null, data: null, stored: sealed.length };
        break;
      }
      case 'fetchOpenWrite': {
        const obj = readFileSync(join(init.root!, req.path));
        const plain = codec.open(req.id, obj, req.expectedLength);
        try {
          let done = req.sliceStart;
          while (done < req.sliceEnd) {
            done += writeSync(req.fd, plain, done, req.sliceEnd - done, req.position + done - req.sliceStart);
          }
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
        const obj = readFileSync(join(init.root!, req.path));
        const plain = codec.open(req.id, obj, req.expectedLength);
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
  if (req.op !== 'hash') released(2 * init.chunkSize);
});
