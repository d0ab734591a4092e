import { rm } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { mkdir } from 'node:fs/promises';

async function mkdirAll(root: string): Promise<void> {
  const names = Array.from({ length: 4096 }, (_, i) => i.toString(16).padStart(3, '0'));
  for (let i = 0; i < names.length; i += 64) {
    await Promise.all(names.slice(i, i + 64).map((n) => mkdir(join(root, n), { recursive: true })));
  }
}
import sodium from 'sodium-native';
import type { Backend } from './backend.js';
import { ObjectNotFoundError } from './backend.js';
import { LocalBackend } from './backends/local.js';
import { checkConfigMac, newConfig, readConfig, signConfig, type RepositoryConfig } from './config.js';
import {
  CorruptObjectError,
  InvalidRequestError,
  MissingObjectError,
  PointNotFoundError,
  RepositoryExistsError,
  RepositoryError,
} from './errors.js';
import { DEFAULT_CHUNK_SIZE, MAX_CHUNK_SIZE, MIN_CHUNK_SIZE, POINT_ID_PATTERN, paths } from './format.js';
import { IndexReader } from './index-file.js';
import {
  openManagerSeal,
  deriveKeys,
  keyFileSchema,
  newMasterKey,
  unwrapMasterKey,
  wrapMasterKey,
  type KeyFile,
  type RepositoryKeys,
} from './keys.js';
import { decodeManifest, type Manifest } from './manifest.js';
import { MaintenanceLock } from './locks.js';
import { BackupSession } from './session.js';
import { runVerify, type VerifyOptions, type VerifyReport } from './verify.js';
import { runPrune, type PruneOptions, type PruneReport } from './prune.js';
import { runGc, type GcOptions, type GcReport } from './gc.js';
import type { RetentionPolicy } from './retention.js';
import { ChunkWorkerPool, type DirectWrite } from '../pipeline/worker-pool.js';
import type { ChunkIdAlgorithm } from './chunk-codec.js';
import { runDiskRestore, type RestoreStats } from '../pipeline/restore.js';
import type { DiskTarget, ProgressListener } from '../pipeline/disk.js';
import { RawImageTarget } from '../pipeline/image-file.js';

export interface InitOptions {
  /** Chunk size in bytes, a power of two between 64 KiB and 8 MiB (default DEFAULT_CHUNK_SIZE). */
  chunkSize?: number;
  /** Also seal the master key to this X25519 public key (the manager's recovery path). */
  managerPublicKey?: Buffer;
  /** Argon2id cost; tests may lower it. */
  kdf?: { opslimit: number; memlimit: number };
  /** How chunk ids are computed (default HMAC-SHA256; keyed BLAKE2b is what format 1 repositories used). */
  chunkIdAlgorithm?: ChunkIdAlgorithm;
}

export interface RestoreOptions {
  /** Only this byte range of the disk (the target then receives `length` bytes from offset 0). */
  range?: { offset: number; length: number };
  onProgress?: ProgressListener;
  signal?: AbortSignal;
  /** Chunks in flight (default 16). */
  concurrency?: number;
}

/**
 * An encrypted, deduplicating repository of VM disk backups (docs/repository-format.md).
 *
 * ```ts
 * const repo = await Repository.open('/backup', passphrase);
 * const s = await repo.beginBackup({ name: 'vm-42' });
 * await s.backupDisk(source, { disk: 0, onProgress, signal });             // full
 * await s.backupDisk(source1, { disk: 1, base: { pointId, disk: 1 }, changedExtents }); // incremental
 * const point = await s.commit({ consistency: 'crash', vmConfig });
 * await repo.restoreToFile(point.id, 0, '/tmp/disk0.img');
 * await repo.close();
 * ```
 */
export class Repository {
  private workerPool: ChunkWorkerPool | undefined;

  private constructor(
    readonly backend: Backend,
    readonly config: RepositoryConfig,
    /** @internal */ readonly keys: RepositoryKeys,
    private keyFile: KeyFile,
    private warmPool?: ChunkWorkerPool,
  ) {}

  get location(): string {
    return this.backend.location;
  }
  get chunkSize(): number {
    return this.config.chunkSize;
  }

  /** Creates a repository in an empty or new directory and returns it opened. */
  static async init(location: string, passphrase: string, options: InitOptions = {}): Promise<Repository> {
    const chunkSize = options.chunkSize ?? DEFAULT_CHUNK_SIZE;
    if (chunkSize < MIN_CHUNK_SIZE || chunkSize > MAX_CHUNK_SIZE || (chunkSize & (chunkSize - 1)) !== 0) {
      throw new InvalidRequestError(
        `chunk size ${chunkSize} must be a power of two between ${MIN_CHUNK_SIZE} and ${MAX_CHUNK_SIZE}`,
      );
    }
    if (passphrase.length === 0) throw new InvalidRequestError('the repository passphrase must not be empty');
    const backend = new LocalBackend(location);
    if ((await backend.list('')).length > 0) throw new RepositoryExistsError(location);
    const master = newMasterKey();
    const keys = deriveKeys(master);
    const config = signConfig(newConfig(chunkSize, options.chunkIdAlgorithm), keys.configMac);
    const keyFile = await wrapMasterKey(master, passphrase, config.id, options);
    sodium.sodium_memzero(master);
    await backend.write(paths.key, Buffer.from(JSON.stringify(keyFile, null, 2)));
    for (const dir of ['chunks', 'indexes', 'points', 'sessions', 'locks']) {
      await backend.write(`${dir}/.keep`, Buffer.alloc(0));
    }
    // All 4096 chunk directories up front (like PBS), so that backups never pay for mkdir.
    await mkdirAll(join(location, 'chunks'));
    // The config is written last: a directory without it is not a repository yet.
    await backend.syncDirs(['keys', 'chunks', 'indexes', 'points', 'sessions', 'locks']);
    await backend.write(paths.config, Buffer.from(JSON.stringify(config, null, 2)));
    await backend.syncDirs(['']);
    return new Repository(backend, config, keys, keyFile);
  }

  /**
   * Opens a repository with its passphrase (WrongPassphraseError, RepositoryVersionError, ...).
   * `startWorkers` starts the chunk workers while the key is derived (for a caller that backs up,
   * restores or verifies next: a short command then does not wait for them afterwards).
   */
  static async open(
    location: string,
    passphrase: string,
    options: { startWorkers?: boolean } = {},
  ): Promise<Repository> {
    const backend = new LocalBackend(location);
    const warm = options.startWorkers ? new ChunkWorkerPool(resolve(location)) : undefined;
    try {
      const config = await readConfig(backend);
      const keyFile = await Repository.readKeyFile(backend);
      const master = await unwrapMasterKey(keyFile, passphrase, config.id, location);
      const keys = deriveKeys(master);
      sodium.sodium_memzero(master);
      checkConfigMac(config, keys.configMac, location);
      return new Repository(backend, config, keys, keyFile, warm);
    } catch (err) {
      await warm?.close();
      throw err;
    }
  }

  /**
   * Opens a repository with the manager's X25519 key pair instead of the passphrase (the
   * recovery path when the master key was sealed to the manager at init).
   */
  static async openWithManagerKey(
    location: string,
    publicKey: Buffer,
    secretKey: Buffer,
  ): Promise<Repository> {
    const backend = new LocalBackend(location);
    const config = await readConfig(backend);
    const keyFile = await Repository.readKeyFile(backend);
    const master = openManagerSeal(keyFile, publicKey, secretKey, location);
    const keys = deriveKeys(master);
    sodium.sodium_memzero(master);
    checkConfigMac(config, keys.configMac, location);
    return new Repository(backend, config, keys, keyFile);
  }

  private static async readKeyFile(backend: Backend): Promise<KeyFile> {
    let raw: Buffer;
    try {
      raw = await backend.read(paths.key);
    } catch (err) {
      if (err instanceof ObjectNotFoundError) {
        throw new MissingObjectError(
          'key',
          `${backend.location}/${paths.key}`,
          'the repository has no key file',
          err,
        );
      }
      throw err;
    }
    try {
      return keyFileSchema.parse(JSON.parse(raw.toString('utf8')));
    } catch (err) {
      throw new CorruptObjectError('key', `${backend.location}/${paths.key}`, 'not a valid key file', err);
    }
  }

  /** @internal The worker pool (started on first use). */
  pool(): ChunkWorkerPool {
    this.workerPool ??= (
      this.warmPool ??
      new ChunkWorkerPool(this.backend instanceof LocalBackend ? resolve(this.backend.location) : undefined)
    ).setup(this.keys, this.chunkSize, this.config.chunkId);
    this.warmPool = undefined;
    return this.workerPool;
  }

  /** Ids of committed restore points, oldest first (from the object names; nothing decrypted). */
  async pointIds(): Promise<string[]> {
    return (await this.backend.list(paths.pointsDir)).filter((n) => POINT_ID_PATTERN.test(n));
  }

  /** The manifest of a restore point, authenticated. */
  async getPoint(pointId: string): Promise<Manifest> {
    if (!POINT_ID_PATTERN.test(pointId))
      throw new PointNotFoundError(this.location, `restore point ${JSON.stringify(pointId)}`);
    let raw: Buffer;
    try {
      raw = await this.backend.read(paths.point(pointId));
    } catch (err) {
      if (err instanceof ObjectNotFoundError)
        throw new PointNotFoundError(this.location, `restore point ${pointId}`);
      throw err;
    }
    return decodeManifest(this.keys.manifestEnc, pointId, raw);
  }

  /** All restore points (oldest first); damaged manifests are reported in `damaged`. */
  async listPoints(): Promise<{
    points: Manifest[];
    damaged: Array<{ id: string; error: RepositoryError }>;
  }> {
    const points: Manifest[] = [];
    const damaged: Array<{ id: string; error: RepositoryError }> = [];
    for (const id of await this.pointIds()) {
      try {
        points.push(await this.getPoint(id));
      } catch (err) {
        if (err instanceof CorruptObjectError) damaged.push({ id, error: err });
        else if (!(err instanceof PointNotFoundError)) throw err;
      }
    }
    return { points, damaged };
  }

  /**
   * Starts a backup session. `basePoints` are points the session will use as incremental bases
   * (they can also be named per disk later); the session protects them and everything it writes
   * from prune and GC until it commits or aborts.
   */
  beginBackup(options: { name: string; basePoints?: string[] }): Promise<BackupSession> {
    if (!options.name) throw new InvalidRequestError('a backup needs a name (the VM or image it is of)');
    return BackupSession.start(
      {
        backend: this.backend,
        keys: this.keys,
        chunkSize: this.chunkSize,
        pool: () => this.pool(),
        getPoint: (id) => this.getPoint(id),
      },
      options.name,
      options.basePoints ?? [],
    );
  }

  private async diskOf(pointId: string, disk: number): Promise<{ manifest: Manifest; index: IndexReader }> {
    const manifest = await this.getPoint(pointId);
    const d = manifest.disks.find((x) => x.disk === disk);
    if (!d) throw new PointNotFoundError(this.location, `disk ${disk} of restore point ${pointId}`);
    const index = await IndexReader.open(this.backend, this.keys.indexEnc, pointId, disk, {
      capacity: d.capacity,
      chunkSize: d.chunkSize,
    });
    return { manifest, index };
  }

  /** @internal Reads a chunk object; MissingObjectError naming the chunk and its user. */
  async fetchChunk(hex: string, where: string): Promise<Buffer> {
    try {
      return await this.backend.read(paths.chunk(hex));
    } catch (err) {
      if (err instanceof ObjectNotFoundError) {
        throw new MissingObjectError('chunk', hex, `referenced by ${where}, not in the repository`, err);
      }
      throw err;
    }
  }

  /** @internal Reads, authenticates and checks a chunk against its id; names it on failure. */
  async openChunk(id: Buffer, hex: string, length: number, where: string): Promise<Buffer> {
    const pool = this.pool();
    if (!pool.local) return pool.open(id, await this.fetchChunk(hex, where), length);
    return this.namingMissing(hex, where, () => pool.fetchOpen(id, paths.chunk(hex), length));
  }

  /** Runs a worker's read of chunk `hex`, turning "no such object" into MissingObjectError naming its user. */
  private async namingMissing<T>(hex: string, where: string, read: () => Promise<T>): Promise<T> {
    try {
      return await read();
    } catch (err) {
      if (err instanceof ObjectNotFoundError) {
        throw new MissingObjectError('chunk', hex, `referenced by ${where}, not in the repository`, err);
      }
      throw err;
    }
  }

  /** Restores disk `disk` of a point (or a byte range of it) to a DiskTarget. */
  async restoreDisk(
    pointId: string,
    disk: number,
    target: DiskTarget,
    options: RestoreOptions = {},
  ): Promise<RestoreStats> {
    const { index } = await this.diskOf(pointId, disk);
    const capacity = index.geometry.capacity;
    const want = options.range ? options.range.length : capacity;
    if (options.range) {
      const { offset, length } = options.range;
      if (
        !Number.isSafeInteger(offset) ||
        !Number.isSafeInteger(length) ||
        offset < 0 ||
        length < 0 ||
        offset + length > capacity
      ) {
        throw new InvalidRequestError(
          `byte range ${offset}+${length} is outside disk ${disk} of point ${pointId} (${capacity} bytes)`,
        );
      }
    }
    if (target.capacity < want) {
      throw new InvalidRequestError(
        `target ${target.description} holds ${target.capacity} bytes, the restore needs ${want}`,
      );
    }
    const pool = this.pool();
    return runDiskRestore(
      {
        pool,
        chunkSize: index.geometry.chunkSize,
        fetch: (_id, hex, where) => this.fetchChunk(hex, where),
        ...(pool.local
          ? {
              fetchOpen: (id: Buffer, hex: string, length: number, where: string) =>
                this.openChunk(id, hex, length, where),
              fetchOpenWrite: (id: Buffer, hex: string, length: number, where: string, out: DirectWrite) =>
                this.namingMissing(hex, where, () => pool.fetchOpenWrite(id, paths.chunk(hex), length, out)),
            }
          : {}),
      },
      index,
      target,
      `restore point ${pointId} disk ${disk}`,
      options,
    );
  }

  /** Restores a disk (or range) into a new sparse raw image file; removes the file on failure. */
  async restoreToFile(
    pointId: string,
    disk: number,
    path: string,
    options: RestoreOptions = {},
  ): Promise<RestoreStats> {
    const { index } = await this.diskOf(pointId, disk);
    const target = await RawImageTarget.create(
      path,
      options.range ? options.range.length : index.geometry.capacity,
    );
    try {
      const stats = await this.restoreDisk(pointId, disk, target, options);
      await target.close();
      return stats;
    } catch (err) {
      await target.close().catch(() => undefined);
      await rm(path, { force: true });
      throw err;
    }
  }

  /** Bytes [offset, offset+length) of a disk in a restore point. */
  async readRange(pointId: string, disk: number, offset: number, length: number): Promise<Buffer> {
    const out = Buffer.alloc(length);
    const target: DiskTarget = {
      capacity: length,
      description: `memory buffer for ${pointId} disk ${disk}`,
      maxConcurrentWrites: 8,
      write: async (o, data) => {
        data.copy(out, o);
      },
      zero: async (o, l) => {
        out.fill(0, o, o + l);
      },
      flush: async () => undefined,
      close: async () => undefined,
    };
    await this.restoreDisk(pointId, disk, target, { range: { offset, length } });
    return out;
  }

  /** Re-reads and authenticates points, indexes and chunks; names the damaged ones. */
  verify(options: VerifyOptions = {}): Promise<VerifyReport> {
    return runVerify(this, options);
  }

  /** Removes restore points the policy does not keep (their chunks go at the next gc). */
  async prune(policy: RetentionPolicy, options: PruneOptions = {}): Promise<PruneReport> {
    return runPrune(this, policy, options);
  }

  /** Deletes chunks and indexes no committed point and no running backup references. */
  gc(options: GcOptions = {}): Promise<GcReport> {
    return runGc(this, options);
  }

  /**
   * Re-wraps the master key under a new passphrase (the current one must unlock it); no data is
   * rewritten and the manager seal is kept.
   */
  async changePassphrase(currentPassphrase: string, newPassphrase: string): Promise<void> {
    if (newPassphrase.length === 0) throw new InvalidRequestError('the new passphrase must not be empty');
    const lock = await MaintenanceLock.acquire(this.backend, 'change-passphrase');
    try {
      const current = await Repository.readKeyFile(this.backend);
      const master = await unwrapMasterKey(current, currentPassphrase, this.config.id, this.location);
      const next = await wrapMasterKey(master, newPassphrase, this.config.id, {
        kdf: { opslimit: current.kdf.opslimit, memlimit: current.kdf.memlimit },
      });
      sodium.sodium_memzero(master);
      if (current.managerSeal) next.managerSeal = current.managerSeal;
      await this.backend.write(paths.key, Buffer.from(JSON.stringify(next, null, 2)));
      await this.backend.syncDirs(['keys']);
      this.keyFile = next;
    } finally {
      await lock.release();
    }
  }

  async close(): Promise<void> {
    await this.workerPool?.close();
    await this.warmPool?.close();
    this.workerPool = undefined;
    this.warmPool = undefined;
  }
}
