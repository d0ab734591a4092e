import type { Backend, ObjectWriter } from './backend.js';
import { openBlob, sealBlob } from './chunk-codec.js';
import { CorruptObjectError, MissingObjectError } from './errors.js';
import { ObjectNotFoundError } from './backend.js';
import {
  ENTRIES_PER_BLOCK,
  FORMAT_VERSION,
  ID_BYTES,
  INDEX_HEADER_BYTES,
  INDEX_MAGIC,
  NONCE_BYTES,
  TAG_BYTES,
  paths,
} from './format.js';

/**
 * The fixed index of one disk in one restore point: a 64-byte header, then the chunk ids in
 * order (32 bytes each, ZERO_ID for all-zero chunks), sealed in blocks of ENTRIES_PER_BLOCK ids so
 * that chunk n is found by arithmetic and each block is authenticated on its own. Neither the
 * whole index nor the whole list of ids is ever held in memory.
 */
export interface IndexGeometry {
  readonly capacity: number;
  readonly chunkSize: number;
}

export function chunkCountOf(g: IndexGeometry): number {
  return Math.ceil(g.capacity / g.chunkSize);
}
export function blockCountOf(chunkCount: number): number {
  return Math.ceil(chunkCount / ENTRIES_PER_BLOCK);
}
/** Number of entries in block `b`. */
export function entriesInBlock(chunkCount: number, b: number): number {
  return Math.min(ENTRIES_PER_BLOCK, chunkCount - b * ENTRIES_PER_BLOCK);
}
function sealedBlockBytes(entries: number): number {
  return NONCE_BYTES + entries * ID_BYTES + TAG_BYTES;
}
/** Byte offset of block `b` in the index object. */
function blockOffset(b: number): number {
  return INDEX_HEADER_BYTES + b * sealedBlockBytes(ENTRIES_PER_BLOCK);
}
export function indexObjectBytes(chunkCount: number): number {
  const blocks = blockCountOf(chunkCount);
  return blocks === 0
    ? INDEX_HEADER_BYTES
    : blockOffset(blocks - 1) + sealedBlockBytes(entriesInBlock(chunkCount, blocks - 1));
}

export function encodeIndexHeader(g: IndexGeometry): Buffer {
  const h = Buffer.alloc(INDEX_HEADER_BYTES);
  INDEX_MAGIC.copy(h, 0);
  h.writeUInt32LE(FORMAT_VERSION, 8);
  h.writeUInt32LE(ENTRIES_PER_BLOCK, 12);
  h.writeUInt32LE(g.chunkSize, 16);
  h.writeBigUInt64LE(BigInt(g.capacity), 24);
  h.writeBigUInt64LE(BigInt(chunkCountOf(g)), 32);
  return h;
}

function blockAd(header: Buffer, pointId: string, disk: number, b: number): Buffer {
  const tail = Buffer.alloc(12);
  tail.writeUInt32LE(disk, 0);
  tail.writeBigUInt64LE(BigInt(b), 4);
  return Buffer.concat([header, Buffer.from(pointId, 'latin1'), tail]);
}

/** Writes an index block by block, in order. */
export class IndexWriter {
  readonly header: Buffer;
  readonly chunkCount: number;
  readonly blockCount: number;
  private written = 0;

  private constructor(
    private readonly out: ObjectWriter,
    private readonly key: Uint8Array,
    private readonly pointId: string,
    private readonly disk: number,
    g: IndexGeometry,
  ) {
    this.header = encodeIndexHeader(g);
    this.chunkCount = chunkCountOf(g);
    this.blockCount = blockCountOf(this.chunkCount);
  }

  static async create(
    backend: Backend,
    key: Uint8Array,
    pointId: string,
    disk: number,
    g: IndexGeometry,
  ): Promise<IndexWriter> {
    const out = await backend.writer(paths.index(pointId, disk));
    const w = new IndexWriter(out, key, pointId, disk, g);
    await out.append(w.header);
    return w;
  }

  /** Blocks sealed and appended so far (all their chunks are durable). */
  get blocksWritten(): number {
    return this.written;
  }

  async appendBlock(entries: Buffer): Promise<void> {
    const b = this.written;
    if (entries.length !== entriesInBlock(this.chunkCount, b) * ID_BYTES) {
      throw new Error(`index block ${b} has ${entries.length / ID_BYTES} entries`);
    }
    await this.out.append(sealBlob(this.key, blockAd(this.header, this.pointId, this.disk, b), entries));
    this.written = b + 1;
  }

  /** Forget everything after the first `blocks` blocks (resuming after a failure). */
  async rewindTo(blocks: number): Promise<void> {
    await this.out.truncate(blockOffset(blocks));
    this.written = blocks;
  }

  async commit(): Promise<void> {
    if (this.written !== this.blockCount) {
      throw new Error(
        `index of disk ${this.disk} is incomplete: ${this.written} of ${this.blockCount} blocks`,
      );
    }
    await this.out.commit();
  }

  abort(): Promise<void> {
    return this.out.abort();
  }
}

/** Random access to a committed index, one authenticated block at a time. */
export class IndexReader {
  readonly chunkCount: number;
  readonly blockCount: number;
  private readonly name: string;
  private readonly path: string;

  private constructor(
    private readonly backend: Backend,
    private readonly key: Uint8Array,
    private readonly pointId: string,
    private readonly disk: number,
    private readonly header: Buffer,
    readonly geometry: IndexGeometry,
  ) {
    this.chunkCount = chunkCountOf(geometry);
    this.blockCount = blockCountOf(this.chunkCount);
    this.name = `${pointId}/disk ${disk}`;
    this.path = paths.index(pointId, disk);
  }

  /** Opens and checks the index of `disk` in `pointId` against the geometry its manifest states. */
  static async open(
    backend: Backend,
    key: Uint8Array,
    pointId: string,
    disk: number,
    expected: IndexGeometry,
  ): Promise<IndexReader> {
    const name = `${pointId}/disk ${disk}`;
    const path = paths.index(pointId, disk);
    let header: Buffer;
    let size: number;
    try {
      const info = await backend.stat(path);
      if (!info) throw new ObjectNotFoundError(backend.location, path);
      size = info.size;
      header = await backend.readRange(path, 0, INDEX_HEADER_BYTES);
    } catch (err) {
      if (err instanceof ObjectNotFoundError) {
        throw new MissingObjectError('index', name, `${backend.location}/${path} does not exist`, err);
      }
      throw err;
    }
    const expectedHeader = encodeIndexHeader(expected);
    if (header.length < INDEX_HEADER_BYTES) {
      throw new CorruptObjectError('index', name, `truncated header (${header.length} bytes)`);
    }
    if (!header.equals(expectedHeader)) {
      throw new CorruptObjectError(
        'index',
        name,
        'header does not match the restore point (magic, version, chunk size or capacity differ)',
      );
    }
    const want = indexObjectBytes(chunkCountOf(expected));
    if (size !== want) {
      throw new CorruptObjectError(
        'index',
        name,
        `object is ${size} bytes, expected ${want} (truncated or extended)`,
      );
    }
    return new IndexReader(backend, key, pointId, disk, header, expected);
  }

  /**
   * Opens an index whose manifest is gone (a pruned base of a running backup), taking the
   * geometry from its own header; every block is still authenticated against that header.
   */
  static async openFromHeader(
    backend: Backend,
    key: Uint8Array,
    pointId: string,
    disk: number,
  ): Promise<IndexReader> {
    const header = await backend.readRange(paths.index(pointId, disk), 0, INDEX_HEADER_BYTES);
    if (header.length < INDEX_HEADER_BYTES || !header.subarray(0, 8).equals(INDEX_MAGIC)) {
      throw new CorruptObjectError('index', `${pointId}/disk ${disk}`, 'bad or truncated header');
    }
    const geometry = { chunkSize: header.readUInt32LE(16), capacity: Number(header.readBigUInt64LE(24)) };
    return IndexReader.open(backend, key, pointId, disk, geometry);
  }

  /** The ids of block `b` (ENTRIES_PER_BLOCK * 32 bytes, fewer in the last block). */
  async block(b: number): Promise<Buffer> {
    const entries = entriesInBlock(this.chunkCount, b);
    const sealed = await this.backend.readRange(this.path, blockOffset(b), sealedBlockBytes(entries));
    const plain = openBlob(this.key, blockAd(this.header, this.pointId, this.disk, b), sealed);
    if (!plain || plain.length !== entries * ID_BYTES) {
      throw new CorruptObjectError(
        'index',
        this.name,
        `block ${b} (chunks ${b * ENTRIES_PER_BLOCK}..${b * ENTRIES_PER_BLOCK + entries - 1}) fails authentication`,
      );
    }
    return plain;
  }
}
