import type { DiskSource, Extent, ProgressListener } from './disk.js';
import type { ChunkWorkerPool } from './worker-pool.js';
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
  /** Seal and durably store in one step (in a worker); returns the stored size. Optional. */
  sealStore?(id: Buffer, hex: string, data: Buffer): Promise<number>;
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

  const processChunk = async (n: number, blk: OpenBlock): Promise<void> => {
    const offset = n * chunkSize;
    const length = Math.min(chunkSize, capacity - offset);
    const raw = await reads.run(() => source.read(offset, length));
    stats.readBytes += length;
    const pos = (n % ENTRIES_PER_BLOCK) * ID_BYTES;
    const { id, data, exists } = await pool.hash(raw, {
      skipProbeFor: base === null ? null : blk.entries.subarray(pos, pos + ID_BYTES),
    });
    if (!id) {
      state.touchedZero++;
      ZERO_ID.copy(blk.entries, pos);
    } else {
      const hex = id.toString('hex');
      const unchanged = base !== null && blk.entries.subarray(pos, pos + ID_BYTES).equals(id);
      if (unchanged || (await access.reuse(id, hex, exists))) {
        stats.dedupChunks++;
      } else {
        let stored: number;
        try {
          if (access.sealStore) {
            stored = await access.sealStore(id, hex, data);
          } else {
            const sealed = await pool.seal(id, data);
            await access.store(id, hex, sealed);
            stored = sealed.length;
          }
        } finally {
          access.settle?.(hex);
        }
        stats.newChunks++;
        stats.newBytes += length;
        stats.storedBytes += stored;
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
