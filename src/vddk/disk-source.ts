import type { DiskSource, DiskTarget, Extent } from '../pipeline/disk.js';
import type { VddkDisk } from './vddk.js';

export interface VddkDiskSourceOptions {
  /**
   * The extents to read: the changed areas CBT reported (incremental), or absent for a full backup,
   * where the allocated areas come from QueryAllocatedBlocks.
   */
  readonly extents?: readonly Extent[];
  /** Reads kept in flight on the disk (ReadAsync). Default 4. */
  readonly maxConcurrentReads?: number;
  /** Close the connection too when the source is closed. Default false. */
  readonly disconnectOnClose?: boolean;
}

/** Spare read buffers a source keeps: more than the pipeline has in flight is never needed. */
const MAX_SPARE = 64;

/** A backup's view of a snapshot disk through VDDK (the pipeline's DiskSource). */
export class VddkDiskSource implements DiskSource {
  readonly capacity: number;
  readonly maxConcurrentReads: number;
  readonly description: string;
  readonly #disk: VddkDisk;
  readonly #extents: readonly Extent[] | undefined;
  readonly #disconnect: boolean;
  /** Buffers the pipeline gave back (`recycle`), read into again: fresh memory costs page faults. */
  readonly #spare: Buffer[] = [];

  constructor(disk: VddkDisk, options: VddkDiskSourceOptions = {}) {
    this.#disk = disk;
    this.capacity = disk.capacity;
    this.maxConcurrentReads = options.maxConcurrentReads ?? 4;
    this.description = `${disk.path} (VDDK ${disk.transport})`;
    this.#extents = options.extents;
    this.#disconnect = options.disconnectOnClose ?? false;
  }

  async extents(): Promise<readonly Extent[]> {
    if (!this.#extents) return this.#disk.allocatedExtents();
    const out: Extent[] = [];
    for (const e of [...this.#extents].sort((a, b) => a.offset - b.offset)) {
      const start = Math.max(0, e.offset);
      const end = Math.min(this.capacity, e.offset + e.length);
      if (end <= start) continue;
      const last = out[out.length - 1];
      if (last && last.offset + last.length >= start) {
        out[out.length - 1] = {
          offset: last.offset,
          length: Math.max(last.offset + last.length, end) - last.offset,
        };
      } else {
        out.push({ offset: start, length: end - start });
      }
    }
    return out;
  }

  read(offset: number, length: number): Promise<Buffer> {
    const spare = this.#spare.length > 0 && this.#spare[this.#spare.length - 1]!.length === length;
    return this.#disk.read(offset, length, spare ? { into: this.#spare.pop()! } : {});
  }

  /** Keeps a buffer that `read` returned for a later read of the same length (up to MAX_SPARE). */
  recycle(buffer: Buffer): void {
    if (this.#spare.length < MAX_SPARE && buffer.length > 0) this.#spare.push(buffer);
  }

  async close(): Promise<void> {
    await this.#disk.close();
    if (this.#disconnect) await this.#disk.connection.disconnect();
  }
}

export interface VddkDiskTargetOptions {
  /** Writes kept in flight on the disk (WriteAsync). Default 4. */
  readonly maxConcurrentWrites?: number;
  readonly disconnectOnClose?: boolean;
}

/** A restore's VM disk through VDDK (the pipeline's DiskTarget). Open the disk with readOnly: false. */
export class VddkDiskTarget implements DiskTarget {
  readonly capacity: number;
  readonly maxConcurrentWrites: number;
  readonly description: string;
  readonly #disk: VddkDisk;
  readonly #disconnect: boolean;

  constructor(disk: VddkDisk, options: VddkDiskTargetOptions = {}) {
    this.#disk = disk;
    this.capacity = disk.capacity;
    this.maxConcurrentWrites = options.maxConcurrentWrites ?? 4;
    this.description = `${disk.path} (VDDK ${disk.transport})`;
    this.#disconnect = options.disconnectOnClose ?? false;
  }

  write(offset: number, data: Buffer): Promise<void> {
    return this.#disk.write(offset, data);
  }

  flush(): Promise<void> {
    return this.#disk.flush();
  }

  async close(): Promise<void> {
    await this.#disk.close();
    if (this.#disconnect) await this.#disk.connection.disconnect();
  }
}
