import type { DiskTarget, ProgressListener } from './disk.js';
import type { ChunkWorkerPool, DirectWrite } from './worker-pool.js';
import { Semaphore } from './semaphore.js';
import { ENTRIES_PER_BLOCK, ID_BYTES, ZERO_ID } from '../repository/format.js';
import type { IndexReader } from '../repository/index-file.js';
import { OperationAbortedError } from '../repository/errors.js';

/** What the restore pipeline needs from the repository. */
export interface ChunkFetchAccess {
  readonly pool: ChunkWorkerPool;
  readonly chunkSize: number;
  /** The sealed object of a chunk; MissingObjectError naming it when absent. */
  fetch(id: Buffer, hex: string, where: string): Promise<Buffer>;
  /** Fetch and open in one step (in a worker); optional. */
  fetchOpen?(id: Buffer, hex: string, length: number, where: string): Promise<Buffer>;
  /**
   * Fetch, open and write a slice of the plaintext to a file descriptor, all in a worker
   * (local repositories restoring to plain files); optional.
   */
  fetchOpenWrite?(id: Buffer, hex: string, length: number, where: string, out: DirectWrite): Promise<void>;
}

export interface RestoreStats {
  readonly bytes: number;
  readonly chunks: number;
  readonly zeroChunks: number;
  readonly durationMs: number;
}

/** Reserves in `target` the runs of chunks lo..hi (of one index block) that hold data. */
async function reserveData(
  reserve: (offset: number, length: number) => Promise<void>,
  entries: Buffer,
  lo: number,
  hi: number,
  sliceOf: (n: number) => { s: number; e: number },
  rangeStart: number,
): Promise<void> {
  let runStart = -1;
  let runEnd = -1;
  for (let n = lo; n <= hi + 1; n++) {
    const pos = (n % ENTRIES_PER_BLOCK) * ID_BYTES;
    const data = n <= hi && !ZERO_ID.equals(entries.subarray(pos, pos + ID_BYTES));
    if (data) {
      const { s, e } = sliceOf(n);
      if (runStart < 0) runStart = s;
      runEnd = e;
    } else if (runStart >= 0) {
      await reserve(runStart - rangeStart, runEnd - runStart);
      runStart = -1;
    }
  }
}

/**
 * Writes the disk described by `index` (or the byte range `range` of it) to `target`: chunks are
 * fetched with many in flight, each authenticated and checked against its id in a worker before a
 * byte of it is written; zero chunks become `target.zero` (holes in a fresh sparse file).
 */
export async function runDiskRestore(
  access: ChunkFetchAccess,
  index: IndexReader,
  target: DiskTarget,
  where: string,
  options: {
    range?: { offset: number; length: number };
    onProgress?: ProgressListener;
    signal?: AbortSignal;
    concurrency?: number;
  } = {},
): Promise<RestoreStats> {
  const started = Date.now();
  const { chunkSize, pool } = access;
  const capacity = index.geometry.capacity;
  const rangeStart = options.range?.offset ?? 0;
  const rangeEnd = options.range ? options.range.offset + options.range.length : capacity;
  const firstChunk = Math.floor(rangeStart / chunkSize);
  const lastChunk = rangeEnd > rangeStart ? Math.floor((rangeEnd - 1) / chunkSize) : firstChunk - 1;
  const totalBytes = rangeEnd - rangeStart;
  let doneBytes = 0;
  let chunks = 0;
  let zeroChunks = 0;
  const window = new Semaphore(options.concurrency ?? 16);
  const writes = new Semaphore(Math.max(1, target.maxConcurrentWrites ?? 1));
  let failure: unknown;
  const inFlight = new Set<Promise<void>>();
  let zeroBuf: Buffer | undefined;

  /** Chunk n's start, and the part [s, e) of it that the restored range holds (disk offsets). */
  const sliceOf = (n: number): { cStart: number; s: number; e: number } => {
    const cStart = n * chunkSize;
    return {
      cStart,
      s: Math.max(cStart, rangeStart),
      e: Math.min(cStart + chunkSize, capacity, rangeEnd),
    };
  };
  const advance = (bytes: number): void => {
    doneBytes += bytes;
    options.onProgress?.({ doneBytes, totalBytes });
  };

  const place = async (n: number, data: Buffer | null): Promise<void> => {
    const { cStart, s, e } = sliceOf(n);
    if (data) {
      await writes.run(() => target.write(s - rangeStart, data.subarray(s - cStart, e - cStart)));
    } else if (target.zero) {
      await target.zero(s - rangeStart, e - s);
    } else {
      zeroBuf ??= Buffer.alloc(chunkSize);
      await writes.run(() => target.write(s - rangeStart, zeroBuf!.subarray(0, e - s)));
    }
    advance(e - s);
  };

  try {
    options.onProgress?.({ doneBytes, totalBytes });
    for (
      let b = Math.floor(firstChunk / ENTRIES_PER_BLOCK);
      b * ENTRIES_PER_BLOCK <= lastChunk && !failure;
      b++
    ) {
      const entries = await index.block(b);
      const lo = Math.max(firstChunk, b * ENTRIES_PER_BLOCK);
      const hi = Math.min(lastChunk, (b + 1) * ENTRIES_PER_BLOCK - 1);
      if (target.reserve)
        await reserveData((o, l) => target.reserve!(o, l), entries, lo, hi, sliceOf, rangeStart);
      for (let n = lo; n <= hi && !failure; n++) {
        if (options.signal?.aborted)
          throw new OperationAbortedError(`restore of ${where}`, options.signal.reason);
        const pos = (n % ENTRIES_PER_BLOCK) * ID_BYTES;
        const id = Buffer.from(entries.subarray(pos, pos + ID_BYTES));
        chunks++;
        await window.acquire();
        let job: Promise<void>;
        if (id.equals(ZERO_ID)) {
          zeroChunks++;
          job = place(n, null);
        } else {
          const length = Math.min(chunkSize, capacity - n * chunkSize);
          const hex = id.toString('hex');
          const fd = target.positionalWriteFd;
          const direct = fd !== undefined && access.fetchOpenWrite !== undefined;
          job = (async () => {
            if (direct) {
              const { cStart, s, e } = sliceOf(n);
              await access.fetchOpenWrite!(id, hex, length, `${where} chunk ${n}`, {
                fd,
                directFd: target.directWriteFd,
                position: s - rangeStart,
                sliceStart: s - cStart,
                sliceEnd: e - cStart,
                description: target.description,
              });
              advance(e - s);
              return;
            }
            let plain: Buffer;
            if (access.fetchOpen) {
              plain = await access.fetchOpen(id, hex, length, `${where} chunk ${n}`);
            } else {
              const sealed = await access.fetch(id, hex, `${where} chunk ${n}`);
              plain = await pool.open(id, sealed, length);
            }
            await place(n, plain);
          })();
        }
        const p: Promise<void> = job
          .catch((err: unknown) => {
            failure ??= err;
          })
          .finally(() => {
            window.release();
            inFlight.delete(p);
          });
        inFlight.add(p);
      }
    }
    await Promise.all(inFlight);
    if (failure) throw failure;
    await target.flush();
  } catch (err) {
    await Promise.allSettled(inFlight);
    throw err;
  }
  return { bytes: totalBytes, chunks, zeroChunks, durationMs: Date.now() - started };
}
