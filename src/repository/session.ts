import { randomBytes } from 'node:crypto';
import { z } from 'zod';
import type { Backend } from './backend.js';
import { TEMP_MARK } from './backend.js';
import type { RepositoryKeys } from './keys.js';
import { paths, ENTRIES_PER_BLOCK } from './format.js';
import { IndexReader, IndexWriter } from './index-file.js';
import { encodeManifest, type DiskStats, type Manifest, type ManifestDisk } from './manifest.js';
import { Heartbeat, STALE_AFTER_MS, currentOwner, ownerSchema } from './locks.js';
import { InvalidRequestError, SessionError } from './errors.js';
import type { DiskSource, Extent, ProgressListener } from '../pipeline/disk.js';
import type { ChunkWorkerPool, HeldChunk } from '../pipeline/worker-pool.js';
import { runDiskBackup, type DiskBackupState } from '../pipeline/backup.js';
import { normaliseExtents } from '../pipeline/chunk-grid.js';

export const sessionRecordSchema = ownerSchema.extend({
  id: z.string(),
  pointId: z.string(),
  name: z.string(),
  /** Points whose indexes this session copies entries from; GC treats them as roots. */
  basePoints: z.array(z.string()),
});
export type SessionRecord = z.infer<typeof sessionRecordSchema>;

/** What a session needs from its repository. */
export interface SessionHost {
  readonly backend: Backend;
  readonly keys: RepositoryKeys;
  readonly chunkSize: number;
  pool(): ChunkWorkerPool;
  getPoint(pointId: string): Promise<Manifest>;
}

export interface BackupDiskOptions {
  /** The disk's number in the restore point (0, 1, ...). */
  disk: number;
  /** A label for the manifest (VMDK path, image file); defaults to the source description. */
  label?: string;
  /**
   * Make this an incremental: copy every chunk outside `changedExtents` from disk `base.disk` of
   * restore point `base.pointId` without reading it. The base disk must have the same capacity.
   */
  base?: { pointId: string; disk: number };
  /** Required with `base`: the areas changed since the base (what CBT reports), in bytes. */
  changedExtents?: readonly Extent[];
  /** The CBT changeId of the snapshot being read, recorded in the manifest. */
  changeId?: string | null;
  onProgress?: ProgressListener;
  signal?: AbortSignal;
}

export interface CommitOptions {
  /** What the snapshot achieved: application | filesystem | crash | image. */
  consistency: string;
  /** The VM configuration blob to store with the point (encrypted with the manifest). */
  vmConfig?: Buffer | null;
  tags?: Record<string, string>;
}

interface DiskEntry {
  state: DiskBackupState;
  label: string;
  basePoint: string | null;
  changeId: string | null;
  done: boolean;
}

/** Keep at most this many ids of chunks written in this session in memory (for in-session dedup). */
const WRITTEN_CACHE_LIMIT = 200_000;

/**
 * After this many bytes of new chunk objects, the session starts a flush of the file system in the
 * background (when none is running), so that the disk writes them while the pipeline goes on
 * instead of all at once in the commit's flush. It only moves work earlier: the commit still
 * flushes everything itself before anything references the chunks.
 */
const WRITEBACK_STEP = 64 * 1024 * 1024;

/**
 * A running backup: it owns a restore point id, protects what it writes and reuses from GC (see
 * docs/repository-format.md, "Garbage collection"), backs up disks one by one and commits them as
 * one restore point. A disk whose read failed can be retried with the same options: it resumes
 * from the first chunk that is not yet durable (`durableChunks`).
 */
export class BackupSession {
  readonly id: string;
  readonly pointId: string;
  readonly name: string;
  readonly startedAt: Date;
  private readonly record: SessionRecord;
  private readonly heartbeat: Heartbeat;
  private readonly disks = new Map<number, DiskEntry>();
  private readonly written = new Set<string>();
  private readonly storing = new Map<string, { promise: Promise<void>; resolve: () => void }>();
  private finished = false;
  /** Bytes of chunk objects stored since the last background flush started. */
  private unflushed = 0;
  /** The background flush in progress, if any (it never rejects). */
  private writeback: Promise<void> | undefined;
  /**
   * The first failure of a background flush. The commit fails with it: a later syncfs through a new
   * descriptor need not report a write error again (Linux reports it once per descriptor).
   */
  private writebackError: unknown;

  private constructor(
    private readonly host: SessionHost,
    record: SessionRecord,
  ) {
    this.record = record;
    this.id = record.id;
    this.pointId = record.pointId;
    this.name = record.name;
    this.startedAt = new Date(record.startedAt);
    this.heartbeat = new Heartbeat(host.backend, paths.session(record.id));
  }

  /** @internal Use Repository.beginBackup. */
  static async start(host: SessionHost, name: string, basePoints: readonly string[]): Promise<BackupSession> {
    const now = new Date();
    const stamp = now
      .toISOString()
      .replace(/[-:]/g, '')
      .replace(/\.\d+Z$/, 'Z');
    const record: SessionRecord = {
      ...currentOwner('backup'),
      id: `${stamp}-${randomBytes(6).toString('hex')}`,
      pointId: `${stamp}-${randomBytes(4).toString('hex')}`,
      name,
      basePoints: [],
    };
    await host.backend.write(paths.session(record.id), Buffer.from(JSON.stringify(record)));
    await host.backend.syncDirs([paths.sessionsDir]);
    const s = new BackupSession(host, record);
    for (const p of basePoints) await s.protectBase(p);
    return s;
  }

  /** Names `pointId` as a base in the session object (durably) before its index is used. */
  private async protectBase(pointId: string): Promise<void> {
    if (this.record.basePoints.includes(pointId)) return;
    this.record.basePoints.push(pointId);
    await this.host.backend.write(paths.session(this.id), Buffer.from(JSON.stringify(this.record)));
    await this.host.backend.syncDirs([paths.sessionsDir]);
    // The base must still be committed now that the session names it (prune may have run before).
    await this.host.getPoint(pointId);
  }

  /** Chunks of `disk` (from its start) that are durable and need not be read again on a retry. */
  durableChunks(disk: number): number {
    const e = this.disks.get(disk);
    if (!e) return 0;
    return e.done ? e.state.writer.chunkCount : e.state.writer.blocksWritten * ENTRIES_PER_BLOCK;
  }

  private assertOpen(): void {
    if (this.finished) throw new SessionError(`backup session ${this.id} is already committed or aborted`);
  }

  /** Backs up one disk (or resumes it after a failure). Returns its statistics. */
  async backupDisk(source: DiskSource, options: BackupDiskOptions): Promise<DiskStats> {
    this.assertOpen();
    const { disk } = options;
    if (!Number.isInteger(disk) || disk < 0)
      throw new InvalidRequestError(`disk number ${disk} is not a non-negative integer`);
    if (options.base && !options.changedExtents) {
      throw new InvalidRequestError(
        `incremental of disk ${disk} needs changedExtents along with its base point`,
      );
    }
    let entry = this.disks.get(disk);
    if (entry?.done) throw new InvalidRequestError(`disk ${disk} is already backed up in session ${this.id}`);
    const where = `disk ${disk} (${source.description})`;
    let extents: Extent[];
    try {
      extents = normaliseExtents(options.changedExtents ?? (await source.extents()), source.capacity, where);
    } catch (err) {
      if (err instanceof RangeError) throw new InvalidRequestError(err.message);
      throw err;
    }
    if (!entry) {
      let base: IndexReader | null = null;
      if (options.base) {
        await this.protectBase(options.base.pointId);
        const m = await this.host.getPoint(options.base.pointId);
        const bd = m.disks.find((d) => d.disk === options.base!.disk);
        if (!bd) throw new InvalidRequestError(`restore point ${m.id} has no disk ${options.base.disk}`);
        if (bd.capacity !== source.capacity || bd.chunkSize !== this.host.chunkSize) {
          throw new InvalidRequestError(
            `disk ${bd.disk} of point ${m.id} has ${bd.capacity} bytes, ${source.description} has ${source.capacity}: an incremental needs the same size; run a full backup`,
          );
        }
        base = await IndexReader.open(this.host.backend, this.host.keys.indexEnc, m.id, bd.disk, {
          capacity: bd.capacity,
          chunkSize: bd.chunkSize,
        });
      }
      const writer = await IndexWriter.create(
        this.host.backend,
        this.host.keys.indexEnc,
        this.pointId,
        disk,
        {
          capacity: source.capacity,
          chunkSize: this.host.chunkSize,
        },
      );
      entry = {
        state: {
          disk,
          capacity: source.capacity,
          writer,
          base,
          stats: {
            readBytes: 0,
            chunks: 0,
            zeroChunks: 0,
            reusedChunks: 0,
            dedupChunks: 0,
            newChunks: 0,
            newBytes: 0,
            storedBytes: 0,
            durationMs: 0,
          },
          touched: 0,
          touchedZero: 0,
          zeroEntries: 0,
        },
        label: options.label ?? source.description,
        basePoint: options.base?.pointId ?? null,
        changeId: options.changeId ?? null,
        done: false,
      };
      this.disks.set(disk, entry);
    } else {
      if (entry.state.capacity !== source.capacity) {
        throw new InvalidRequestError(
          `resume of disk ${disk}: the source now has ${source.capacity} bytes, not ${entry.state.capacity}`,
        );
      }
      await entry.state.writer.rewindTo(entry.state.writer.blocksWritten);
      if (options.changeId !== undefined) entry.changeId = options.changeId;
    }
    const pool = this.host.pool();
    await runDiskBackup(
      {
        pool,
        chunkSize: this.host.chunkSize,
        reuse: (id, hex, probed) => this.reuse(hex, probed),
        store: (id, hex, sealed) => this.store(hex, sealed),
        settle: (hex) => this.settle(hex),
        sealStore: pool.local
          ? (id, hex, data, giveBack) => this.sealStore(pool, id, hex, data, giveBack)
          : undefined,
        storeHeld: pool.local ? (held, id, hex) => this.storeHeld(pool, held, id, hex) : undefined,
      },
      entry.state,
      source,
      extents,
      { onProgress: options.onProgress, signal: options.signal },
    );
    entry.done = true;
    return { ...entry.state.stats };
  }

  private remember(hex: string): void {
    if (this.written.size >= WRITTEN_CACHE_LIMIT) this.written.clear();
    this.written.add(hex);
  }

  /**
   * A chunk can be reused without writing when this session wrote it, or when it exists and was
   * touched (mtime = now) while no GC was running (the GC protocol in the format doc). `probed` is
   * that check already made by the chunk worker that hashed the chunk.
   */
  private async reuse(hex: string, probed?: boolean): Promise<boolean> {
    if (this.written.has(hex)) return true;
    const storing = this.storing.get(hex);
    if (storing) {
      await storing.promise;
      if (this.written.has(hex)) return true;
    }
    const claim = this.claim(hex);
    const b = this.host.backend;
    let reused: boolean;
    try {
      reused = probed ?? ((await b.touch(paths.chunk(hex))) && (await b.stat(paths.gcMarker)) === undefined);
    } catch (err) {
      this.settle(hex, claim);
      throw err;
    }
    if (reused) {
      this.remember(hex);
      this.settle(hex, claim);
    }
    return reused;
  }

  /** Marks `hex` as being stored by one chunk of this session; others with the same id wait. */
  private claim(hex: string): { promise: Promise<void>; resolve: () => void } {
    let resolve!: () => void;
    const promise = new Promise<void>((r) => (resolve = r));
    const c = { promise, resolve };
    this.storing.set(hex, c);
    return c;
  }

  /** The store of `hex` finished (or failed): release the chunks waiting for it. */
  settle(hex: string, claim = this.storing.get(hex)): void {
    if (claim && this.storing.get(hex) === claim) this.storing.delete(hex);
    claim?.resolve();
  }

  private async sealStore(
    pool: ChunkWorkerPool,
    id: Buffer,
    hex: string,
    data: Buffer,
    giveBack?: (plain: Buffer) => void,
  ): Promise<number> {
    // `data` is the backup pipeline's own buffer (ChunkStoreAccess.sealStore): the pool takes it.
    return this.stored(hex, await pool.sealStore(id, data, paths.chunk(hex), giveBack));
  }

  private async storeHeld(pool: ChunkWorkerPool, held: HeldChunk, id: Buffer, hex: string): Promise<number> {
    return this.stored(hex, await pool.storeHeld(held, id, paths.chunk(hex)));
  }

  private async store(hex: string, sealed: Buffer): Promise<void> {
    await this.host.backend.write(paths.chunk(hex), sealed);
    this.stored(hex, sealed.length);
  }

  /** Records a chunk object this session wrote, of `bytes` bytes; returns `bytes`. */
  private stored(hex: string, bytes: number): number {
    this.remember(hex);
    this.wrote(bytes);
    return bytes;
  }

  /** Counts stored bytes and starts a background flush every WRITEBACK_STEP (see there). */
  private wrote(bytes: number): void {
    this.unflushed += bytes;
    if (this.unflushed < WRITEBACK_STEP || this.writeback) return;
    this.unflushed = 0;
    this.writeback = this.host.backend
      .syncAll()
      .catch((err: unknown) => void (this.writebackError ??= err))
      .finally(() => (this.writeback = undefined));
  }

  /**
   * Commits the disks backed up so far as one restore point: chunk directories synced, indexes
   * committed, then the manifest (last). Returns the manifest.
   */
  async commit(options: CommitOptions): Promise<Manifest> {
    this.assertOpen();
    if (this.disks.size === 0) throw new SessionError(`backup session ${this.id} has no disk to commit`);
    for (const [disk, e] of this.disks) {
      if (!e.done)
        throw new SessionError(
          `disk ${disk} of session ${this.id} is incomplete; retry backupDisk for it or abort`,
        );
    }
    if (this.heartbeat.lastError !== undefined || Date.now() - this.heartbeat.lastBeat > STALE_AFTER_MS / 2) {
      throw new SessionError(
        `backup session ${this.id} could not refresh its session object in time, so GC may no longer protect its chunks; run the backup again`,
        this.heartbeat.lastError,
      );
    }
    const b = this.host.backend;
    // Chunk objects written by the chunk workers were not fsynced one by one: flush them all now,
    // before anything that references them (indexes, then the manifest) is committed.
    await this.writeback;
    if (this.writebackError !== undefined) {
      throw new SessionError(
        `backup session ${this.id}: flushing its chunk objects to disk failed, so they may not be durable; fix the repository's disk and run the backup again`,
        this.writebackError,
      );
    }
    await b.syncAll();
    for (const e of this.disks.values()) await e.state.writer.commit();
    await b.syncDirs([paths.indexDir(this.pointId), 'indexes']);
    const disks: ManifestDisk[] = [...this.disks.entries()]
      .sort((x, y) => x[0] - y[0])
      .map(([disk, e]) => ({
        disk,
        capacity: e.state.capacity,
        chunkSize: this.host.chunkSize,
        mode: e.basePoint ? 'incremental' : 'full',
        basePoint: e.basePoint,
        changeId: e.changeId,
        label: e.label,
        stats: { ...e.state.stats },
      }));
    const manifest: Manifest = {
      version: 1,
      id: this.pointId,
      name: this.name,
      startedAt: this.startedAt.toISOString(),
      createdAt: new Date().toISOString(),
      consistency: options.consistency,
      vmConfig: options.vmConfig ? options.vmConfig.toString('base64') : null,
      disks,
      tags: options.tags ?? {},
    };
    await b.write(paths.point(this.pointId), encodeManifest(this.host.keys.manifestEnc, manifest));
    await b.syncDirs([paths.pointsDir]);
    await this.finish();
    return manifest;
  }

  /** Drops everything this session wrote that is not shared (its index files; chunks go to GC). */
  async abort(): Promise<void> {
    if (this.finished) return;
    for (const e of this.disks.values()) await e.state.writer.abort().catch(() => undefined);
    await this.host.backend.deletePrefix(paths.indexDir(this.pointId));
    await this.finish();
  }

  private async finish(): Promise<void> {
    this.finished = true;
    this.heartbeat.stop();
    await this.host.backend.delete(paths.session(this.id));
  }
}

export function isTempName(name: string): boolean {
  return name.includes(TEMP_MARK);
}
