import type { Repository } from './repository.js';
import { CorruptObjectError, MissingObjectError, RepositoryError } from './errors.js';
import { ENTRIES_PER_BLOCK, ID_BYTES, ZERO_ID } from './format.js';
import { IndexReader } from './index-file.js';
import type { Manifest } from './manifest.js';
import { Semaphore } from '../pipeline/semaphore.js';
import type { ProgressListener } from '../pipeline/disk.js';

export interface VerifyOptions {
  /** Only this restore point (default: all). */
  pointId?: string;
  /** Fraction of chunks to re-read, 0 < f <= 1 (default 1: all). Indexes and manifests are always read. */
  sample?: number;
  onProgress?: ProgressListener;
  /** Chunks checked in parallel (default 16). */
  concurrency?: number;
}

export interface VerifyProblem {
  readonly kind: 'manifest' | 'index' | 'chunk';
  readonly disk?: number;
  /** Chunk number in the disk (kind chunk). */
  readonly chunk?: number;
  readonly chunkId?: string;
  readonly message: string;
}

export interface PointVerdict {
  readonly id: string;
  readonly name: string | null;
  readonly ok: boolean;
  readonly problems: VerifyProblem[];
  /** Problems beyond the first 100 are only counted. */
  readonly moreProblems: number;
}

export interface VerifyReport {
  readonly ok: boolean;
  readonly points: PointVerdict[];
  readonly chunksChecked: number;
  readonly damagedChunks: string[];
  readonly durationMs: number;
}

const PROBLEM_LIMIT = 100;
const CACHE_LIMIT = 200_000;

/** Verification: every manifest, every index block, and all (or a sample of) chunks. */
export async function runVerify(repo: Repository, options: VerifyOptions): Promise<VerifyReport> {
  const started = Date.now();
  const sample = options.sample ?? 1;
  const ids = options.pointId ? [options.pointId] : await repo.pointIds();
  if (options.pointId)
    await repo.getPoint(options.pointId).catch((err: unknown) => {
      if (!(err instanceof CorruptObjectError)) throw err;
    });
  const good = new Set<string>();
  const bad = new Map<string, string>();
  const window = new Semaphore(options.concurrency ?? 16);
  let chunksChecked = 0;
  const points: PointVerdict[] = [];

  let totalBytes = 0;
  let doneBytes = 0;
  const manifests = new Map<string, Manifest | RepositoryError>();
  for (const id of ids) {
    try {
      const m = await repo.getPoint(id);
      manifests.set(id, m);
      for (const d of m.disks) totalBytes += d.capacity;
    } catch (err) {
      if (err instanceof RepositoryError) manifests.set(id, err);
      else throw err;
    }
  }

  for (const id of ids) {
    const problems: VerifyProblem[] = [];
    let more = 0;
    const add = (p: VerifyProblem): void => {
      if (problems.length < PROBLEM_LIMIT) problems.push(p);
      else more++;
    };
    const m = manifests.get(id)!;
    if (m instanceof RepositoryError) {
      add({ kind: 'manifest', message: m.message });
      points.push({ id, name: null, ok: false, problems, moreProblems: 0 });
      continue;
    }
    for (const d of m.disks) {
      let index: IndexReader;
      try {
        index = await IndexReader.open(repo.backend, repo.keys.indexEnc, id, d.disk, {
          capacity: d.capacity,
          chunkSize: d.chunkSize,
        });
      } catch (err) {
        if (!(err instanceof RepositoryError)) throw err;
        add({ kind: 'index', disk: d.disk, message: err.message });
        doneBytes += d.capacity;
        continue;
      }
      const inFlight = new Set<Promise<void>>();
      for (let b = 0; b < index.blockCount; b++) {
        let entries: Buffer;
        try {
          entries = await index.block(b);
        } catch (err) {
          if (!(err instanceof RepositoryError)) throw err;
          add({ kind: 'index', disk: d.disk, message: err.message });
          continue;
        }
        for (let i = 0; i < entries.length / ID_BYTES; i++) {
          const n = b * ENTRIES_PER_BLOCK + i;
          const id32 = Buffer.from(entries.subarray(i * ID_BYTES, (i + 1) * ID_BYTES));
          const length = Math.min(d.chunkSize, d.capacity - n * d.chunkSize);
          if (id32.equals(ZERO_ID)) continue;
          const hex = id32.toString('hex');
          const known = bad.get(hex);
          if (known !== undefined) {
            add({ kind: 'chunk', disk: d.disk, chunk: n, chunkId: hex, message: known });
            continue;
          }
          if (good.has(hex) || (sample < 1 && Math.random() >= sample)) continue;
          await window.acquire();
          const p: Promise<void> = (async () => {
            try {
              await repo.openChunk(id32, hex, length, `restore point ${id} disk ${d.disk} chunk ${n}`);
              if (good.size >= CACHE_LIMIT) good.clear();
              good.add(hex);
            } catch (err) {
              if (!(err instanceof CorruptObjectError || err instanceof MissingObjectError)) throw err;
              bad.set(hex, err.message);
              add({ kind: 'chunk', disk: d.disk, chunk: n, chunkId: hex, message: err.message });
            } finally {
              chunksChecked++;
            }
          })().finally(() => {
            window.release();
            inFlight.delete(p);
          });
          inFlight.add(p);
        }
        doneBytes += Math.min(
          (entries.length / ID_BYTES) * d.chunkSize,
          d.capacity - b * ENTRIES_PER_BLOCK * d.chunkSize,
        );
        options.onProgress?.({ doneBytes, totalBytes });
      }
      await Promise.all(inFlight);
    }
    points.push({ id, name: m.name, ok: problems.length === 0, problems, moreProblems: more });
  }
  return {
    ok: points.every((p) => p.ok),
    points,
    chunksChecked,
    damagedChunks: [...bad.keys()],
    durationMs: Date.now() - started,
  };
}
