import type { Backend } from './backend.js';
import type { Repository } from './repository.js';
import { CorruptObjectError, RepositoryError } from './errors.js';
import { CHUNK_NAME_PATTERN, ID_BYTES, POINT_ID_PATTERN, ZERO_ID, paths } from './format.js';
import { IndexReader } from './index-file.js';
import { ChunkIdSet } from './id-set.js';
import { MaintenanceLock, currentOwner, ownerAlive } from './locks.js';
import { sessionRecordSchema, isTempName, type SessionRecord } from './session.js';

export interface GcOptions {
  /**
   * Safety margin subtracted from the cutoff (default 60 s): covers clock differences between the
   * hosts sharing the repository.
   */
  graceMs?: number;
  /** Report what would be deleted without deleting. */
  dryRun?: boolean;
  /** When prune or another gc holds the maintenance lock, wait this long for it (default 0). */
  lockWaitMs?: number;
}

export interface GcReport {
  readonly points: number;
  readonly referencedChunks: number;
  readonly chunksSeen: number;
  readonly chunksDeleted: number;
  readonly bytesDeleted: number;
  /** Unreferenced chunks kept because they are newer than the cutoff (running or recent backups). */
  readonly chunksKeptYoung: number;
  readonly indexesDeleted: number;
  readonly tempFilesDeleted: number;
  readonly staleSessionsRemoved: number;
  readonly cutoff: string;
  readonly dryRun: boolean;
  readonly durationMs: number;
}

/** Session objects and whether their owner is alive. */
export async function liveSessions(
  backend: Backend,
): Promise<Array<{ name: string; record: SessionRecord; mtimeMs: number }>> {
  const out: Array<{ name: string; record: SessionRecord; mtimeMs: number }> = [];
  for (const name of await backend.list(paths.sessionsDir)) {
    if (!name.endsWith('.json')) continue;
    const path = `${paths.sessionsDir}/${name}`;
    const info = await backend.stat(path);
    if (!info) continue;
    let record: SessionRecord;
    try {
      record = sessionRecordSchema.parse(JSON.parse((await backend.read(path)).toString('utf8')));
    } catch {
      // An unreadable session object protects nothing but is kept while it is young.
      continue;
    }
    if (ownerAlive(record, info.mtimeMs)) out.push({ name, record, mtimeMs: info.mtimeMs });
  }
  return out;
}

async function markIndex(reader: IndexReader, marked: ChunkIdSet): Promise<void> {
  for (let b = 0; b < reader.blockCount; b++) {
    const entries = await reader.block(b);
    for (let i = 0; i < entries.length; i += ID_BYTES) {
      const id = entries.subarray(i, i + ID_BYTES);
      if (!id.equals(ZERO_ID)) marked.add(id);
    }
  }
}

/**
 * Mark and sweep, safe while backups run (the argument is in docs/repository-format.md):
 *  1. take the maintenance lock (no prune or other gc meanwhile), create the gc marker;
 *  2. list live sessions; cutoff = min(now, oldest live session start) - grace;
 *  3. mark every chunk referenced by a committed point or by a live session's base point;
 *  4. delete unmarked chunks whose mtime is older than the cutoff, then orphaned indexes,
 *     old temporary files and dead sessions' objects;
 *  5. remove the marker, release the lock.
 * A damaged manifest or index stops GC before anything is deleted.
 */
export async function runGc(repo: Repository, options: GcOptions): Promise<GcReport> {
  const started = Date.now();
  const backend = repo.backend;
  const grace = options.graceMs ?? 60_000;
  const lock = await MaintenanceLock.acquire(backend, 'gc', options.lockWaitMs);
  let marker = false;
  try {
    await backend.write(paths.gcMarker, Buffer.from(JSON.stringify(currentOwner('gc'))));
    await backend.syncDirs(['locks']);
    marker = true;
    const g = Date.now();
    const live = await liveSessions(backend);
    let cutoff = g;
    for (const s of live) cutoff = Math.min(cutoff, s.record.startedAt);
    cutoff -= grace;

    const marked = new ChunkIdSet();
    const pointIds = await repo.pointIds();
    for (const id of pointIds) {
      let m;
      try {
        m = await repo.getPoint(id);
      } catch (err) {
        if (err instanceof RepositoryError && !(err instanceof CorruptObjectError)) continue; // removed meanwhile
        throw new RepositoryError(
          'REPO_GC_STOPPED',
          `gc stopped before deleting anything: ${(err as Error).message}; run "vbproxy repo verify"`,
          { cause: err },
        );
      }
      for (const d of m.disks) {
        try {
          const reader = await IndexReader.open(backend, repo.keys.indexEnc, id, d.disk, {
            capacity: d.capacity,
            chunkSize: d.chunkSize,
          });
          await markIndex(reader, marked);
        } catch (err) {
          throw new RepositoryError(
            'REPO_GC_STOPPED',
            `gc stopped before deleting anything: ${(err as Error).message}; run "vbproxy repo verify"`,
            { cause: err },
          );
        }
      }
    }
    const protectedPoints = new Set<string>();
    for (const s of live) {
      protectedPoints.add(s.record.pointId);
      for (const base of s.record.basePoints) {
        protectedPoints.add(base);
        if (pointIds.includes(base)) continue;
        for (const f of await backend.list(paths.indexDir(base))) {
          const disk = /^(\d+)\.fidx$/.exec(f);
          if (!disk) continue;
          await markIndex(
            await IndexReader.openFromHeader(backend, repo.keys.indexEnc, base, Number(disk[1])),
            marked,
          );
        }
      }
    }

    let chunksSeen = 0;
    let chunksDeleted = 0;
    let bytesDeleted = 0;
    let chunksKeptYoung = 0;
    let tempFilesDeleted = 0;
    const dirty = new Set<string>();
    for (const dir of await backend.list('chunks')) {
      if (!/^[0-9a-f]{3}$/.test(dir)) continue;
      for (const name of await backend.list(`chunks/${dir}`)) {
        const path = `chunks/${dir}/${name}`;
        if (isTempName(name)) {
          const info = await backend.stat(path);
          if (info && info.mtimeMs < cutoff) {
            if (!options.dryRun) await backend.delete(path);
            tempFilesDeleted++;
          }
          continue;
        }
        if (!CHUNK_NAME_PATTERN.test(name)) continue;
        chunksSeen++;
        if (marked.hasHex(name)) continue;
        const info = await backend.stat(path);
        if (!info) continue;
        if (info.mtimeMs >= cutoff) {
          chunksKeptYoung++;
          continue;
        }
        if (!options.dryRun) await backend.delete(path);
        dirty.add(`chunks/${dir}`);
        chunksDeleted++;
        bytesDeleted += info.size;
      }
    }

    let indexesDeleted = 0;
    const committed = new Set(await repo.pointIds());
    for (const id of await backend.list('indexes')) {
      if (!POINT_ID_PATTERN.test(id) || committed.has(id) || protectedPoints.has(id)) continue;
      let newest = 0;
      for (const f of await backend.list(paths.indexDir(id))) {
        newest = Math.max(newest, (await backend.stat(`${paths.indexDir(id)}/${f}`))?.mtimeMs ?? 0);
      }
      if (newest >= cutoff) continue;
      if (!options.dryRun) await backend.deletePrefix(paths.indexDir(id));
      indexesDeleted++;
    }

    for (const dir of ['points', 'keys', 'locks']) {
      for (const name of await backend.list(dir)) {
        if (!isTempName(name)) continue;
        const info = await backend.stat(`${dir}/${name}`);
        if (info && info.mtimeMs < cutoff) {
          if (!options.dryRun) await backend.delete(`${dir}/${name}`);
          tempFilesDeleted++;
        }
      }
    }

    let staleSessionsRemoved = 0;
    const liveNames = new Set(live.map((s) => s.name));
    for (const name of await backend.list(paths.sessionsDir)) {
      if (name === '.keep' || liveNames.has(name)) continue;
      const info = await backend.stat(`${paths.sessionsDir}/${name}`);
      if (!info || info.mtimeMs >= cutoff) continue;
      if (!options.dryRun) await backend.delete(`${paths.sessionsDir}/${name}`);
      staleSessionsRemoved++;
    }
    if (!options.dryRun) await backend.syncDirs([...dirty, 'indexes', paths.sessionsDir]);

    return {
      points: pointIds.length,
      referencedChunks: marked.size,
      chunksSeen,
      chunksDeleted,
      bytesDeleted,
      chunksKeptYoung,
      indexesDeleted,
      tempFilesDeleted,
      staleSessionsRemoved,
      cutoff: new Date(cutoff).toISOString(),
      dryRun: options.dryRun ?? false,
      durationMs: Date.now() - started,
    };
  } finally {
    if (marker) await backend.delete(paths.gcMarker).catch(() => undefined);
    await lock.release();
  }
}
