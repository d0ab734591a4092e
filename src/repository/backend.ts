import { RepositoryError } from './errors.js';

/** Size and modification time of a stored object. */
export interface ObjectInfo {
  readonly size: number;
  readonly mtimeMs: number;
}

/** A large object written in pieces (disk indexes), invisible under its name until commit. */
export interface ObjectWriter {
  /** Bytes appended so far. */
  readonly length: number;
  append(data: Buffer): Promise<void>;
  /** Cut the pending object back to `length` bytes (to resume after a failed append). */
  truncate(length: number): Promise<void>;
  /** Make the object durable and visible under its name (atomically). */
  commit(): Promise<void>;
  /** Drop the pending object. */
  abort(): Promise<void>;
}

/**
 * The narrow interface between the repository and where its objects live. Paths are relative,
 * '/'-separated. Local directories (and NFS/SMB mounts) implement it in backends/local.ts; an
 * S3-compatible backend can implement the same calls later.
 *
 * Durability contract: `write` and `ObjectWriter.commit` return once the object's bytes are
 * durable and the object is visible under its name, atomically (never half written). The name
 * itself becomes durable no later than the next `syncDirs` covering its directory.
 */
export interface Backend {
  /** Where the repository lives, for messages. */
  readonly location: string;
  /** The whole object; ObjectNotFoundError when it does not exist. */
  read(path: string): Promise<Buffer>;
  /** `length` bytes at `offset` (fewer at the end of the object). */
  readRange(path: string, offset: number, length: number): Promise<Buffer>;
  stat(path: string): Promise<ObjectInfo | undefined>;
  write(path: string, data: Buffer): Promise<void>;
  /** Create the object only if it does not exist; false when it does. Durable on return. */
  createExclusive(path: string, data: Buffer): Promise<boolean>;
  /** Set the modification time to now; false when the object does not exist. */
  touch(path: string): Promise<boolean>;
  /** Delete the object; false when it did not exist. */
  delete(path: string): Promise<boolean>;
  /** Delete a directory-like prefix and everything under it. */
  deletePrefix(path: string): Promise<void>;
  /** Names directly under a directory-like prefix ([] when there is none). */
  list(dir: string): Promise<string[]>;
  writer(path: string): Promise<ObjectWriter>;
  /** Make the names created or removed in these directories durable. */
  syncDirs(dirs: Iterable<string>): Promise<void>;
  /**
   * Make everything written to the repository so far durable, data and names: chunk objects that
   * the chunk workers wrote without an fsync of their own become durable here, once per commit.
   */
  syncAll(): Promise<void>;
}

/** Raised by backends for an object that does not exist. */
export class ObjectNotFoundError extends RepositoryError {
  readonly path: string;
  constructor(location: string, path: string, cause?: unknown) {
    super('REPO_OBJECT_NOT_FOUND', `${location}/${path} does not exist`, { cause });
    this.path = path;
  }
}

/** Marks temporary names; GC removes old ones. */
export const TEMP_MARK = '.tmp.';
