/**
 * The two interfaces that connect disks to the repository pipelines.
 *
 * A backup reads a `DiskSource` (a raw image file, a VDDK handle on a snapshot disk); a restore
 * writes a `DiskTarget` (a raw image file, a VDDK handle on a VM disk). All offsets and lengths are
 * in bytes. Disk sizes stay far below 2^53, so plain numbers are exact.
 */

/** A byte range of a disk. */
export interface Extent {
  readonly offset: number;
  readonly length: number;
}

export interface DiskSource {
  /** Size of the disk in bytes. Need not be a multiple of the chunk size. */
  readonly capacity: number;
  /**
   * The extents the backup must read, sorted by offset, not overlapping, inside the capacity.
   * For a full backup these are the allocated areas (holes are not listed and read as zeros);
   * for an incremental, the changed areas as CBT reports them.
   */
  extents(): Promise<readonly Extent[]>;
  /**
   * Read exactly `length` bytes at `offset`. The returned Buffer's memory is the pipeline's from
   * then on: it transfers the Buffer's whole ArrayBuffer to a worker thread without copying, so no
   * other view of that ArrayBuffer may be in use. The Buffer may start at an offset into its
   * ArrayBuffer (an aligned buffer for unbuffered VDDK reads).
   */
  read(offset: number, length: number): Promise<Buffer>;
  /**
   * Takes back a Buffer that `read` returned, once the pipeline no longer needs its bytes, so that
   * a later read can fill it again instead of touching fresh memory. Optional.
   */
  recycle?(buffer: Buffer): void;
  /** How many reads the source can usefully keep in flight (defaults to 1 when absent). */
  readonly maxConcurrentReads?: number;
  /**
   * A plain file's descriptor that the pipeline's worker threads may read the disk from
   * themselves with positional reads (pread), so that the data never passes through the event
   * loop. Only sources whose `read` is exactly a pread of the file set it (not VDDK handles).
   */
  readonly positionalReadFd?: number;
  /**
   * The same file opened with O_DIRECT (when the file system allows it), for the workers' aligned
   * reads: the disk's data then goes from the device to the worker's buffer without a copy
   * through the page cache, and a backup does not fill the appliance's cache with data it reads
   * once. Needs `positionalReadFd`.
   */
  readonly directReadFd?: number;
  /** A short description for progress lines and errors, e.g. the image path or the VMDK name. */
  readonly description: string;
  close(): Promise<void>;
}

export interface DiskTarget {
  /** Size of the disk in bytes; writes beyond it are refused. */
  readonly capacity: number;
  write(offset: number, data: Buffer): Promise<void>;
  /**
   * Make a range read back as zeros. Targets that can punch holes (sparse files) do so; others
   * write zeros. When absent, the restore writes zero buffers.
   */
  zero?(offset: number, length: number): Promise<void>;
  /**
   * Announces that [offset, offset + length) is about to be written in full, so the target can
   * allocate it up front (a sparse file's fallocate). Optional; best effort.
   */
  reserve?(offset: number, length: number): Promise<void>;
  /** How many writes the target can usefully keep in flight (defaults to 1 when absent). */
  readonly maxConcurrentWrites?: number;
  /**
   * A plain file's descriptor that the pipeline's worker threads may write to directly with
   * positional writes (pwrite), so that restored data never passes through the event loop.
   * Only targets whose `write` is exactly a pwrite of the file set it (not VDDK handles).
   */
  readonly positionalWriteFd?: number;
  /**
   * The same file opened with O_DIRECT (when the file system allows it), for the workers' aligned
   * writes: restored data then goes from the worker's buffer to the disk without a copy into the
   * page cache, and a restore does not evict the appliance's cache. Needs `positionalWriteFd`.
   */
  readonly directWriteFd?: number;
  readonly description: string;
  /** Make everything written durable. */
  flush(): Promise<void>;
  close(): Promise<void>;
}

/** Progress of a long operation, reported often enough for a progress bar. */
export interface Progress {
  /** Bytes of the work done so far and in total (total may grow while extents are discovered). */
  readonly doneBytes: number;
  readonly totalBytes: number;
}

export type ProgressListener = (progress: Progress) => void;
