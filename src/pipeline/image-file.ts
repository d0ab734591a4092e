import { promises as fsp, constants } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import koffi from 'koffi';
import type { DiskSource, DiskTarget, Extent } from './disk.js';
import { DiskIoError, ImageNotFoundError } from './errors.js';
import { NoSpaceError } from '../repository/errors.js';
import { directIoAllowed } from './worker-pool.js';

const SEEK_DATA = 3;
const SEEK_HOLE = 4;
const ENXIO = 6;

type LibcFn = ReturnType<ReturnType<typeof koffi.load>['func']>;
const libcFns = new Map<string, LibcFn | null>();

/**
 * A libc function through koffi, for the calls Node lacks (lseek with SEEK_DATA/SEEK_HOLE,
 * fallocate), loaded once per declaration; null when unavailable.
 */
function libc(declaration: string): LibcFn | null {
  let fn = libcFns.get(declaration);
  if (fn === undefined) {
    try {
      fn = koffi.load('libc.so.6').func(declaration);
    } catch {
      fn = null;
    }
    libcFns.set(declaration, fn);
  }
  return fn;
}

const LSEEK = 'int64_t lseek(int fd, int64_t offset, int whence)';
const FALLOCATE = 'int fallocate(int fd, int mode, int64_t offset, int64_t len)';

/**
 * The allocated extents of a file, from SEEK_DATA/SEEK_HOLE (like CBT's allocated-areas query):
 * holes are not listed. Falls back to one extent covering the file where the file system does
 * not support the calls.
 */
export function allocatedExtents(fd: number, size: number): Extent[] {
  const fn = libc(LSEEK);
  if (!fn || size === 0) return size === 0 ? [] : [{ offset: 0, length: size }];
  const out: Extent[] = [];
  let pos = 0;
  while (pos < size) {
    const data = Number(fn(fd, pos, SEEK_DATA));
    if (data < 0) {
      if (koffi.errno() === ENXIO) break;
      return [{ offset: 0, length: size }];
    }
    let hole = Number(fn(fd, data, SEEK_HOLE));
    if (hole < 0) hole = size;
    hole = Math.min(hole, size);
    if (hole > data) out.push({ offset: data, length: hole - data });
    pos = hole;
  }
  return out;
}

function errnoOf(err: unknown): string | undefined {
  return typeof err === 'object' && err !== null && 'code' in err
    ? String((err as { code: unknown }).code)
    : undefined;
}

/** A raw disk image file as a backup source; sparse-aware. */
export class RawImageSource implements DiskSource {
  readonly maxConcurrentReads = 4;
  get positionalReadFd(): number {
    return this.fh.fd;
  }
  get directReadFd(): number | undefined {
    return this.direct?.fd;
  }

  private constructor(
    private readonly fh: FileHandle,
    /** The same file opened with O_DIRECT, when the file system supports it. */
    private readonly direct: FileHandle | undefined,
    readonly capacity: number,
    readonly description: string,
  ) {}

  static async open(path: string): Promise<RawImageSource> {
    let fh: FileHandle;
    try {
      fh = await fsp.open(path, 'r');
    } catch (err) {
      if (errnoOf(err) === 'ENOENT') throw new ImageNotFoundError(path, err);
      throw new DiskIoError('IMAGE_OPEN', `cannot open image ${path}: ${(err as Error).message}`, {
        cause: err,
      });
    }
    const st = await fh.stat();
    if (!st.isFile() && !st.isBlockDevice()) {
      await fh.close();
      throw new DiskIoError('IMAGE_NOT_A_FILE', `image ${path} is not a regular file or block device`);
    }
    return new RawImageSource(fh, await openDirect(path, constants.O_RDONLY), st.size, path);
  }

  async extents(): Promise<readonly Extent[]> {
    return allocatedExtents(this.fh.fd, this.capacity);
  }

  async read(offset: number, length: number): Promise<Buffer> {
    const buf = Buffer.allocUnsafeSlow(length);
    let done = 0;
    try {
      while (done < length) {
        const { bytesRead } = await this.fh.read(buf, done, length - done, offset + done);
        if (bytesRead === 0) break;
        done += bytesRead;
      }
    } catch (err) {
      throw new DiskIoError(
        'IMAGE_READ',
        `read of ${length} bytes at ${offset} from ${this.description} failed: ${(err as Error).message}`,
        {
          cause: err,
          transient: true,
        },
      );
    }
    if (done < length) buf.fill(0, done);
    return buf;
  }

  async close(): Promise<void> {
    await this.direct?.close();
    await this.fh.close();
  }
}

/** A raw image file as a restore target: created sparse, zero chunks stay holes. */
export class RawImageTarget implements DiskTarget {
  readonly maxConcurrentWrites = 8;
  get positionalWriteFd(): number {
    return this.fh.fd;
  }
  get directWriteFd(): number | undefined {
    return this.direct?.fd;
  }
  private zeroBuf: Buffer | undefined;
  /** Whether `reserve` still calls fallocate (it stops after the first refusal). */
  private preallocate = true;

  private constructor(
    private readonly fh: FileHandle,
    /** The same file opened with O_DIRECT, when the file system supports it. */
    private readonly direct: FileHandle | undefined,
    readonly capacity: number,
    readonly description: string,
    private readonly fresh: boolean,
  ) {}

  /** Creates (or truncates) `path` as a sparse file of `capacity` bytes. */
  static async create(path: string, capacity: number): Promise<RawImageTarget> {
    let fh: FileHandle;
    try {
      fh = await fsp.open(path, constants.O_RDWR | constants.O_CREAT | constants.O_TRUNC, 0o600);
      await fh.truncate(capacity);
    } catch (err) {
      if (errnoOf(err) === 'ENOSPC') throw new NoSpaceError(path, err);
      throw new DiskIoError('IMAGE_CREATE', `cannot create ${path}: ${(err as Error).message}`, {
        cause: err,
      });
    }
    return new RawImageTarget(fh, await openDirect(path, constants.O_WRONLY), capacity, path, true);
  }

  async write(offset: number, data: Buffer): Promise<void> {
    if (offset + data.length > this.capacity) {
      throw new DiskIoError('IMAGE_WRITE', `write beyond the end of ${this.description}`);
    }
    try {
      let done = 0;
      while (done < data.length) {
        done += (await this.fh.write(data, done, data.length - done, offset + done)).bytesWritten;
      }
    } catch (err) {
      if (errnoOf(err) === 'ENOSPC') throw new NoSpaceError(this.description, err);
      throw new DiskIoError('IMAGE_WRITE', `write to ${this.description} failed: ${(err as Error).message}`, {
        cause: err,
      });
    }
  }

  /**
   * Allocates the blocks of [offset, offset + length) without writing them (fallocate, mode 0:
   * they read as zeros). A restore reserves the ranges it is about to fill: on ext4 and XFS,
   * direct writes into a hole allocate under the file's exclusive lock, one at a time, while
   * writes into allocated blocks run in parallel. Holes elsewhere stay holes. Best effort: a file
   * system without fallocate just gets the writes (and reports ENOSPC on them).
   */
  async reserve(offset: number, length: number): Promise<void> {
    const fn = this.preallocate ? libc(FALLOCATE) : null;
    if (!fn || length <= 0) return;
    const rc = await new Promise<number>((resolve) => {
      fn.async(this.fh.fd, 0, offset, length, (err: unknown, res: number) => resolve(err ? -1 : res));
    });
    if (rc !== 0) this.preallocate = false;
  }

  async zero(offset: number, length: number): Promise<void> {
    if (this.fresh) return; // a freshly truncated file reads zeros there already (a hole)
    this.zeroBuf ??= Buffer.alloc(1 << 20);
    for (let o = 0; o < length; o += this.zeroBuf.length) {
      await this.write(offset + o, this.zeroBuf.subarray(0, Math.min(this.zeroBuf.length, length - o)));
    }
  }

  async flush(): Promise<void> {
    await this.fh.sync();
  }

  async close(): Promise<void> {
    await this.direct?.close();
    await this.fh.close();
  }
}

/**
 * A second descriptor of `path` with O_DIRECT, for the workers' aligned whole-chunk reads of a
 * backup (DiskSource.directReadFd) and writes of a restore (DiskTarget.directWriteFd); undefined
 * where the file system refuses O_DIRECT (tmpfs, some network file systems) or the platform has no
 * such flag: everything then goes through the page cache.
 */
async function openDirect(path: string, access: number): Promise<FileHandle | undefined> {
  const flag = (constants as { O_DIRECT?: number }).O_DIRECT;
  if (flag === undefined || !directIoAllowed()) return undefined;
  try {
    return await fsp.open(path, access | flag);
  } catch {
    return undefined;
  }
}
