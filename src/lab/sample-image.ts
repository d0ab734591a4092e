/**
 * Deterministic generator of VM-like raw disk images for the lab, the demo and the benchmarks.
 *
 * An image is a partition-table-like start followed by regions of six kinds, laid out by a seeded
 * PRNG at file-system-block (4 KiB) alignment: unallocated holes (never written: the file stays
 * sparse), written zeros, text-like data (logs, configs: ~3x compressible), binary-like data
 * (executables, databases: semi-compressible), random data (compressed media, encrypted files:
 * incompressible) and duplicates of earlier regions (copied files). A clone of a template is the
 * template's image with a given fraction of its 64 KiB blocks rewritten, which is how VMs cloned
 * from one template share most blocks at identical offsets. The same options give the same bytes.
 */
import { createCipheriv, createHash } from 'node:crypto';
import { constants, promises as fsp } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import { mulberry32 } from './prng.js';

export interface Extent {
  readonly offset: number;
  readonly length: number;
}

export interface SampleImageOptions {
  /** Image size in bytes (need not be a multiple of anything). */
  sizeBytes: number;
  /** Seed of this image's content. */
  seed: number;
  /**
   * Make this image a clone of the template generated with this seed (same size): the
   * template's content with `divergence` of its 64 KiB blocks rewritten from `seed`.
   */
  template?: number;
  /** Fraction of 64 KiB blocks a clone differs in (default 0.05). */
  divergence?: number;
  /** Share of bytes per region kind (defaults below); normalised. */
  mix?: Partial<Record<RegionKind, number>>;
}

export type RegionKind = 'hole' | 'zero' | 'text' | 'binary' | 'random' | 'duplicate';

export const DEFAULT_MIX: Record<RegionKind, number> = {
  hole: 0.25,
  zero: 0.08,
  text: 0.25,
  binary: 0.17,
  random: 0.15,
  duplicate: 0.1,
};

const KiB = 1024;
const MiB = 1024 * KiB;
const PIECE = 8 * MiB;

/** A chacha20 keystream (node:crypto) as a fast seeded source of random bytes. */
class Keystream {
  private readonly cipher;
  private readonly zeros = Buffer.alloc(PIECE);
  constructor(seed: number, label: string) {
    const key = createHash('sha256').update(`vbproxy-sample:${label}:${seed}`).digest();
    this.cipher = createCipheriv('chacha20', key, Buffer.alloc(16));
  }
  bytes(n: number): Buffer {
    const out = Buffer.allocUnsafe(n);
    for (let o = 0; o < n; o += PIECE) {
      const len = Math.min(PIECE, n - o);
      this.cipher.update(this.zeros.subarray(0, len)).copy(out, o);
    }
    return out;
  }
}

const WORDS = [
  'kernel',
  'systemd',
  'started',
  'session',
  'user',
  'root',
  'network',
  'interface',
  'eth0',
  'link',
  'up',
  'down',
  'GET',
  'POST',
  '/api/v1/items',
  '/var/log/syslog',
  'error',
  'warning',
  'info',
  'debug',
  'connection',
  'accepted',
  'closed',
  'timeout',
  'retry',
  'config',
  'value',
  'enabled',
  'disabled',
  'true',
  'false',
  'null',
  'cron',
  'backup',
  'database',
  'query',
  'select',
  'from',
  'where',
  'update',
];

/** A pool of log- and config-like text, from which text regions take slices at random offsets. */
function textPool(seed: number): Buffer {
  const r = mulberry32(seed ^ 0x7e57);
  const lines: string[] = [];
  let size = 0;
  while (size < 4 * MiB) {
    const ts = `2026-${String(1 + Math.floor(r() * 12)).padStart(2, '0')}-${String(1 + Math.floor(r() * 28)).padStart(2, '0')}T${String(Math.floor(r() * 24)).padStart(2, '0')}:${String(Math.floor(r() * 60)).padStart(2, '0')}:${String(Math.floor(r() * 60)).padStart(2, '0')}.${String(Math.floor(r() * 1000)).padStart(3, '0')}Z`;
    const n = 4 + Math.floor(r() * 10);
    const words: string[] = [];
    for (let i = 0; i < n; i++) words.push(WORDS[Math.floor(r() * WORDS.length)]!);
    const id = Math.floor(r() * 0xffffffff).toString(16);
    const line = `${ts} host${Math.floor(r() * 50)} ${words.join(' ')} pid=${Math.floor(r() * 65536)} id=${id}\n`;
    lines.push(line);
    size += line.length;
  }
  return Buffer.from(lines.join(''), 'latin1');
}

interface Generator {
  rand: () => number;
  stream: Keystream;
  pool: Buffer;
}

function textBytes(g: Generator, n: number): Buffer {
  const out = Buffer.allocUnsafe(n);
  let o = 0;
  while (o < n) {
    const take = Math.min(n - o, 4 * KiB + Math.floor(g.rand() * 60 * KiB));
    const start = Math.floor(g.rand() * (g.pool.length - take));
    g.pool.copy(out, o, start, start + take);
    o += take;
  }
  return out;
}

function binaryBytes(g: Generator, n: number): Buffer {
  const out = g.stream.bytes(n);
  const words = new Uint32Array(out.buffer, out.byteOffset, Math.floor(n / 4));
  // Small integers and aligned fields: every other 32-bit word keeps only its low 10 bits.
  for (let i = 1; i < words.length; i += 2) words[i]! &= 0x3ff;
  return out;
}

function contentFor(g: Generator, kind: 'text' | 'binary' | 'random', n: number): Buffer {
  if (kind === 'text') return textBytes(g, n);
  if (kind === 'binary') return binaryBytes(g, n);
  return g.stream.bytes(n);
}

async function writeAll(fh: FileHandle, buf: Buffer, offset: number): Promise<void> {
  let done = 0;
  while (done < buf.length)
    done += (await fh.write(buf, done, buf.length - done, offset + done)).bytesWritten;
}

function pickKind(r: number, mix: Record<RegionKind, number>): RegionKind {
  const kinds = Object.keys(mix) as RegionKind[];
  const total = kinds.reduce((s, k) => s + mix[k], 0);
  let acc = 0;
  for (const k of kinds) {
    acc += mix[k] / total;
    if (r < acc) return k;
  }
  return 'random';
}

const SIZES = [64 * KiB, 256 * KiB, 1 * MiB, 4 * MiB, 16 * MiB];

async function writeLayout(
  fh: FileHandle,
  size: number,
  seed: number,
  mixIn: SampleImageOptions['mix'],
): Promise<void> {
  const mix = { ...DEFAULT_MIX, ...mixIn };
  const g: Generator = { rand: mulberry32(seed), stream: new Keystream(seed, 'data'), pool: textPool(seed) };
  // Partition-table-like start: an MBR with a protective entry and the boot signature, a GPT header.
  const head = Buffer.alloc(Math.min(size, 1 * MiB));
  if (head.length >= 1024) {
    head[446 + 4] = 0xee;
    head.writeUInt32LE(1, 446 + 8);
    head[510] = 0x55;
    head[511] = 0xaa;
    head.write('EFI PART', 512, 'latin1');
    g.stream.bytes(128).copy(head, 1024);
  }
  await writeAll(fh, head, 0);
  const written: Extent[] = [];
  let pos = head.length;
  while (pos < size) {
    const kind = pickKind(g.rand(), mix);
    // Region sizes: mostly aligned to the file-system block (4 KiB), of 64 KiB to 16 MiB.
    let len = SIZES[Math.floor(g.rand() * SIZES.length)]! + Math.floor(g.rand() * 16) * 4 * KiB;
    len = Math.min(len, size - pos);
    if (kind === 'hole') {
      // not written: stays a hole of the sparse file
    } else if (kind === 'zero') {
      const z = Buffer.alloc(Math.min(len, PIECE));
      for (let o = 0; o < len; o += z.length)
        await writeAll(fh, z.subarray(0, Math.min(z.length, len - o)), pos + o);
    } else if (kind === 'duplicate' && written.length > 0) {
      // A copy of earlier data: half at the same 1 MiB phase (copied disk images, clones of files
      // laid out alike), half at an arbitrary 4 KiB-aligned source.
      const src = written[Math.floor(g.rand() * written.length)]!;
      let from = src.offset;
      if (g.rand() < 0.5) from = Math.ceil(src.offset / MiB) * MiB + (pos % MiB);
      const n = Math.max(0, Math.min(len, src.offset + src.length - from));
      if (n >= 4 * KiB) {
        const buf = Buffer.allocUnsafe(Math.min(n, PIECE));
        for (let o = 0; o < n; o += buf.length) {
          const l = Math.min(buf.length, n - o);
          await fh.read(buf, 0, l, from + o);
          await writeAll(fh, buf.subarray(0, l), pos + o);
        }
        written.push({ offset: pos, length: n });
        len = n;
      }
    } else {
      const k = kind === 'duplicate' ? 'random' : kind;
      for (let o = 0; o < len; o += PIECE) {
        await writeAll(fh, contentFor(g, k, Math.min(PIECE, len - o)), pos + o);
      }
      written.push({ offset: pos, length: len });
    }
    pos += Math.max(len, 4 * KiB);
  }
}

/** Writes a sample image to `path` (created or replaced, sparse). Returns its size. */
export async function writeSampleImage(path: string, options: SampleImageOptions): Promise<number> {
  const { sizeBytes, seed } = options;
  const fh = await fsp.open(path, constants.O_RDWR | constants.O_CREAT | constants.O_TRUNC, 0o644);
  try {
    await fh.truncate(sizeBytes);
    await writeLayout(fh, sizeBytes, options.template ?? seed, options.mix);
  } finally {
    await fh.close();
  }
  if (options.template !== undefined) {
    await mutateImage(path, { fraction: options.divergence ?? 0.05, blockSize: 64 * KiB, seed });
  }
  return sizeBytes;
}

export interface MutateOptions {
  /** Fraction of blocks to rewrite (0..1), chosen uniformly at random. */
  fraction: number;
  /** Block size in bytes (default 64 KiB). */
  blockSize?: number;
  seed: number;
}

/**
 * Rewrites `fraction` of the image's blocks with new text-like or random content, as a guest
 * would, and returns the changed extents (sorted, adjacent blocks merged) — what CBT would report.
 */
export async function mutateImage(path: string, options: MutateOptions): Promise<Extent[]> {
  const blockSize = options.blockSize ?? 64 * KiB;
  const fh = await fsp.open(path, 'r+');
  try {
    const size = (await fh.stat()).size;
    const blocks = Math.ceil(size / blockSize);
    const want = Math.min(blocks, Math.round(blocks * options.fraction));
    const rand = mulberry32(options.seed ^ 0x5eed);
    const chosen = new Uint8Array(blocks);
    let picked = 0;
    while (picked < want) {
      const b = Math.floor(rand() * blocks);
      if (!chosen[b]) {
        chosen[b] = 1;
        picked++;
      }
    }
    const g: Generator = {
      rand,
      stream: new Keystream(options.seed, 'mutate'),
      pool: textPool(options.seed),
    };
    const extents: Extent[] = [];
    for (let b = 0; b < blocks; b++) {
      if (!chosen[b]) continue;
      const offset = b * blockSize;
      const length = Math.min(blockSize, size - offset);
      await writeAll(fh, contentFor(g, rand() < 0.5 ? 'text' : 'random', length), offset);
      const last = extents[extents.length - 1];
      if (last && last.offset + last.length === offset)
        extents[extents.length - 1] = { offset: last.offset, length: last.length + length };
      else extents.push({ offset, length });
    }
    return extents;
  } finally {
    await fh.close();
  }
}
