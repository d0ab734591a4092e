import type { DiskSource, Extent, ProgressListener } from './disk.js';
import type { ChunkWorkerPool, HeldChunk } from './worker-pool.js';
import { Semaphore } from './semaphore.js';
import { touchedChunks } from './chunk-grid.js';
import { ENTRIES_PER_BLOCK, ID_BYTES, ZERO_ID } from '../repository/format.js';
import { entriesInBlock, type IndexReader, type IndexWriter } from '../repository/index-file.js';
import type { DiskStats } from '../repository/manifest.js';
import { OperationAbortedError } from '../repository/errors.js';

/** What the backup pipeline needs from the repository session. */
export interface ChunkStoreAccess {
  readonly pool: ChunkWorkerPool;
  readonly chunkSize: number;
  /**
   * True when a chunk with this id is already durable and protected for this session. False
   * means the caller must store it; it then calls `settle` once the store succeeded or failed
   * (other chunks with the same id wait for that instead of storing it again). `probed` is the
   * chunk worker's answer to the same existence check, when the pool made it (local pools).
   */
  reuse(id: Buffer, hex: string, probed?: boolean): Promise<boolean>;
  settle?(hex: string): void;
  /** Durably store a sealed chunk. */
  store(id: Buffer, hex: string, sealed: Buffer): Promise<void>;
  /**
   * Seal and durably store in one step (in a worker); returns the stored size. Optional. `data` is
   * the pipeline's own (the hashed chunk): its memory may be transferred to the worker, and comes
   * back through `giveBack` once sealed, when given.
   */
  sealStore?(id: Buffer, hex: string, data: Buffer, giveBack?: (plain: Buffer) => void): Promise<number>;
  /** Seal and durably store a chunk that a worker read and holds (readHash); returns the stored size. Optional. */
  storeHeld?(held: HeldChunk, id: Buffer, hex: string): Promise<number>;
}

/** Per-disk state of a backup, kept by the session so that a failed read can resume. */
export interface DiskBackupState {
  readonly disk: number;
  readonly capacity: number;
  readonly writer: IndexWriter;
  readonly base: IndexReader | null;
  readonly stats: { -readonly [K in keyof DiskStats]: DiskStats[K] };
  /** Chunks touched (read) in all attempts so far, and how many of them were zero. */
  touched: number;
  touchedZero: number;
  zeroEntries: number;
}

/** A chunk after hashing: its id (null: all zeros) and either its bytes or the worker holding them. */
interface HashedChunk {
  readonly id: Buffer | null;
  readonly data: Buffer | undefined;
  readonly exists?: boolean | undefined;
  readonly held?: HeldChunk | undefined;
  /** Set once storeHeld took the held chunk, or sealStore the data (neither is given back then). */
  handedOver: boolean;
}

interface OpenBlock {
  entries: Buffer;
  pending: number;
  /** A chunk of this block failed: the block must never be written. */
  failed: boolean;
}

/**
 * Reads the chunks that `extents` touch from `source` (from the first chunk not yet durable),
 * runs each through zero-detect -> keyed id -> dedup -> compress+encrypt -> durable write, and
 * appends the disk's index block by block. Untouched chunks come from the base index (an
 * incremental) or are zero (a full backup of allocated areas). Work in flight is bounded.
 */
export async function runDiskBackup(
  access: ChunkStoreAccess,
  state: DiskBackupState,
  source: DiskSource,
  extents: readonly Extent[],
  options: { onProgress?: ProgressListener; signal?: AbortSignal } = {},
): Promise<void> {
  const { chunkSize, pool } = access;
  const { writer, base, stats, capacity } = state;
  const chunkCount = writer.chunkCount;
  const startBlock = writer.blocksWritten;
  const startChunk = startBlock * ENTRIES_PER_BLOCK;
  const started = Date.now();

  let totalBytes = 0;
  for (const n of touchedChunks(extents, chunkSize, startChunk))
    totalBytes += Math.min(chunkSize, capacity - n * chunkSize);
  let doneBytes = 0;
  options.onProgress?.({ doneBytes, totalBytes });

  const blocks = new Map<number, Promise<OpenBlock>>();
  const loadBlock = (b: number): Promise<OpenBlock> => {
    let p = blocks.get(b);
    if (!p) {
      p = (async () => {
        const entries = base
          ? Buffer.from(await base.block(b))
          : Buffer.alloc(entriesInBlock(chunkCount, b) * ID_BYTES);
        return { entries, pending: 0, failed: false };
      })();
      blocks.set(b, p);
    }
    return p;
  };

  let nextFlush = startBlock;
  let producerBlock = startBlock;
  let flushing: Promise<void> = Promise.resolve();
  const flushReady = (all: boolean): Promise<void> => {
    flushing = flushing.then(async () => {
      while (nextFlush < writer.blockCount && (all || nextFlush < producerBlock)) {
        const blk = await loadBlock(nextFlush);
        if (blk.pending > 0 || blk.failed) break;
        for (let i = 0; i < blk.entries.length; i += ID_BYTES) {
          if (blk.entries.subarray(i, i + ID_BYTES).equals(ZERO_ID)) state.zeroEntries++;
        }
        await writer.appendBlock(blk.entries);
        blocks.delete(nextFlush);
        nextFlush++;
      }
    });
    return flushing;
  };

  const window = new Semaphore(Math.max(16, pool.size * 8));
  const reads = new Semaphore(Math.max(1, source.maxConcurrentReads ?? 1));
  let failure: unknown;
  const inFlight = new Set<Promise<void>>();

  // A plain file whose chunks the workers can read themselves, into buffers they keep: the data
  // then never crosses to this thread, and a new chunk goes from the disk to the repository in
  // the worker that read it (readHash, then storeHeld or dropHeld).
  const fd = source.positionalReadFd;
  const workerReads = fd !== undefined && pool.local && access.storeHeld !== undefined;

  /** Hands a read buffer back to the source (DiskSource.recycle), when it takes them. */
  const recycle = source.recycle?.bind(source);

  const processChunk = async (n: number, blk: OpenBlock): Promise<void> => {
    const offset = n * chunkSize;
    const length = Math.min(chunkSize, capacity - offset);
    const pos = (n % ENTRIES_PER_BLOCK) * ID_BYTES;
    const probe = { skipProbeFor: base === null ? null : blk.entries.subarray(pos, pos + ID_BYTES) };
    let chunk: HashedChunk;
    if (workerReads) {
      const from = {
        fd,
        directFd: source.directReadFd,
        position: offset,
        length,
        description: source.description,
      };
      chunk = { ...(await pool.readHash(from, probe)), data: undefined, handedOver: false };
    } else {
      const raw = await reads.run(() => source.read(offset, length));
      // The source's buffer is the pipeline's (DiskSource.read): the pool takes it, view or not.
      chunk = { ...(await pool.hash(raw, probe)), held: undefined, handedOver: false };
    }
    stats.readBytes += length;
    try {
      await settleChunk(blk, pos, length, chunk);
    } finally {
      // A held chunk that is not being stored (a duplicate, or a failure) is let go; a read buffer
      // that is not being stored goes back to the source.
      if (chunk.held && !chunk.handedOver) void pool.dropHeld(chunk.held).catch(() => undefined);
      if (chunk.data && chunk.data.length > 0 && !chunk.handedOver) recycle?.(chunk.data);
    }
  };

  /** Zero check, dedup and store of one hashed chunk; its id goes into the index block. */
  const settleChunk = async (
    blk: OpenBlock,
    pos: number,
    length: number,
    chunk: HashedChunk,
  ): Promise<void> => {
    const { id, data, exists, held } = chunk;
    if (!id) {
      state.touchedZero++;
      ZERO_ID.copy(blk.entries, pos);
    } else {
      const hex = id.toString('hex');
      const unchanged = base !== null && blk.entries.subarray(pos, pos + ID_BYTES).equals(id);
      if (unchanged || (await access.reuse(id, hex, exists))) {
        stats.dedupChunks++;
      } else {
        let storedBytes: number;
        try {
          if (held && access.storeHeld) {
            chunk.handedOver = true;
            storedBytes = await access.storeHeld(held, id, hex);
          } else if (!data) {
            throw new Error('internal: a chunk to store has neither data nor a holding worker');
          } else if (access.sealStore) {
            chunk.handedOver = true; // its memory is the worker's now (and comes back to `recycle`)
            storedBytes = await access.sealStore(id, hex, data, recycle);
          } else {
            chunk.handedOver = true; // transferred to the worker
            const sealed = await pool.seal(id, data);
            await access.store(id, hex, sealed);
            storedBytes = sealed.length;
          }
        } finally {
          access.settle?.(hex);
        }
        stats.newChunks++;
        stats.newBytes += length;
        stats.storedBytes += storedBytes;
      }
      id.copy(blk.entries, pos);
    }
    state.touched++;
    doneBytes += length;
    options.onProgress?.({ doneBytes, totalBytes });
  };

  try {
    for (const n of touchedChunks(extents, chunkSize, startChunk)) {
      if (failure) break;
      if (options.signal?.aborted)
        throw new OperationAbortedError(`backup of ${source.description}`, options.signal.reason);
      const b = Math.floor(n / ENTRIES_PER_BLOCK);
      if (b > producerBlock) {
        producerBlock = b;
        void flushReady(false).catch((err: unknown) => (failure ??= err));
      }
      const blk = await loadBlock(b);
      blk.pending++;
      await window.acquire();
      const p = processChunk(n, blk)
        .catch((err: unknown) => {
          blk.failed = true;
          failure ??= err;
        })
        .finally(() => {
          blk.pending--;
          window.release();
          inFlight.delete(p);
          if (blk.pending === 0 && b < producerBlock)
            void flushReady(false).catch((err: unknown) => (failure ??= err));
        });
      inFlight.add(p);
    }
    await Promise.all(inFlight);
    if (failure) throw failure;
    if (options.signal?.aborted)
      throw new OperationAbortedError(`backup of ${source.description}`, options.signal.reason);
    producerBlock = writer.blockCount;
    await flushReady(true);
    if (nextFlush !== writer.blockCount)
      throw new Error(`internal: index flushed ${nextFlush} of ${writer.blockCount} blocks`);
  } catch (err) {
    // Keep what is complete: every block before the failure whose chunks are all durable.
    await Promise.allSettled(inFlight);
    await flushReady(false).catch(() => undefined);
    throw err;
  } finally {
    stats.durationMs += Date.now() - started;
  }
  stats.chunks = chunkCount;
  stats.zeroChunks = state.zeroEntries;
  stats.reusedChunks = base ? chunkCount - state.touched - (state.zeroEntries - state.touchedZero) : 0;
}
