import { randomBytes } from 'node:crypto';
import {
  closeSync,
  statSync,
  existsSync,
  openSync,
  readFileSync,
  readSync,
  renameSync,
  unlinkSync,
  writeFileSync,
  writeSync,
  fsyncSync,
  ftruncateSync,
} from 'node:fs';
import { basename, dirname, join } from 'node:path';
import koffi from 'koffi';

/**
 * The lab's virtual disk files, exactly as docs/lab.md section 2 defines them: a descriptor per
 * disk file, a flat extent for base disks, a sparse delta extent plus a grain map for deltas,
 * reads through the chain, copy-on-write writes into deltas, allocated areas, and merges.
 * All paths here are absolute file-system paths of descriptors.
 */

export const SECTOR = 512;
export const DEFAULT_GRAIN = 4096;

export interface Descriptor {
  readonly cid: string;
  readonly parentCid: string;
  readonly createType: 'vmfs' | 'vmfsSparse';
  /** Parent descriptor as written (a file name in the same folder or `[ds] path`). */
  readonly parentFileNameHint: string | undefined;
  readonly changeTrackPath: string | undefined;
  readonly capacitySectors: number;
  readonly extentFile: string;
  /** `ddb.*` entries in file order, keys without the `ddb.` prefix. */
  readonly ddb: ReadonlyArray<readonly [string, string]>;
}

export function ddbValue(d: Descriptor, key: string): string | undefined {
  return d.ddb.find(([k]) => k === key)?.[1];
}

export function capacityBytes(d: Descriptor): number {
  return d.capacitySectors * SECTOR;
}

export function grainSize(d: Descriptor): number {
  return Number(ddbValue(d, 'grainSize') ?? DEFAULT_GRAIN);
}

function unquote(v: string): string {
  const t = v.trim();
  return t.startsWith('"') && t.endsWith('"') ? t.slice(1, -1) : t;
}

export function parseDescriptor(text: string, where: string): Descriptor {
  const header = new Map<string, string>();
  const ddb: [string, string][] = [];
  let extent: { sectors: number; type: string; file: string } | undefined;
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    const ext = /^(RW|RDONLY|NOACCESS)\s+(\d+)\s+(\S+)\s+"([^"]+)"/.exec(line);
    if (ext) {
      extent = { sectors: Number(ext[2]), type: ext[3]!, file: ext[4]! };
      continue;
    }
    const eq = line.indexOf('=');
    if (eq < 0) continue;
    const key = line.slice(0, eq).trim();
    const value = unquote(line.slice(eq + 1));
    if (key.startsWith('ddb.')) ddb.push([key.slice(4), value]);
    else header.set(key, value);
  }
  if (!extent) throw new Error(`descriptor ${where} has no extent line`);
  const createType = header.get('createType') === 'vmfsSparse' ? 'vmfsSparse' : 'vmfs';
  return {
    cid: header.get('CID') ?? 'ffffffff',
    parentCid: header.get('parentCID') ?? 'ffffffff',
    createType,
    parentFileNameHint: header.get('parentFileNameHint'),
    changeTrackPath: header.get('changeTrackPath'),
    capacitySectors: extent.sectors,
    extentFile: extent.file,
    ddb,
  };
}

export function formatDescriptor(d: Descriptor): string {
  const lines = [
    '# Disk DescriptorFile',
    'version=1',
    'encoding="UTF-8"',
    `CID=${d.cid}`,
    `parentCID=${d.parentCid}`,
  ];
  lines.push(`createType="${d.createType}"`);
  if (d.parentFileNameHint) lines.push(`parentFileNameHint="${d.parentFileNameHint}"`);
  if (d.changeTrackPath) lines.push(`changeTrackPath="${d.changeTrackPath}"`);
  lines.push('', '# Extent description');
  lines.push(`RW ${d.capacitySectors} ${d.createType === 'vmfs' ? 'VMFS' : 'VMFSSPARSE'} "${d.extentFile}"`);
  lines.push('', '# The Disk Data Base', '#DDB');
  for (const [k, v] of d.ddb) lines.push(`ddb.${k} = "${v}"`);
  return lines.join('\n') + '\n';
}

const descriptorCache = new Map<string, { size: number; mtimeMs: number; ino: number; d: Descriptor }>();

/** Reads a descriptor; re-parsed only when the file changed (writes replace it by rename). */
export function readDescriptor(path: string): Descriptor {
  const st = statSync(path);
  const hit = descriptorCache.get(path);
  if (hit && hit.size === st.size && hit.mtimeMs === st.mtimeMs && hit.ino === st.ino) return hit.d;
  const d = parseDescriptor(readFileSync(path, 'utf8'), path);
  if (descriptorCache.size > 20_000) descriptorCache.clear();
  descriptorCache.set(path, { size: st.size, mtimeMs: st.mtimeMs, ino: st.ino, d });
  return d;
}

/** Writes a descriptor atomically (temp file, fsync, rename). */
export function writeDescriptor(path: string, d: Descriptor): void {
  const tmp = `${path}.tmp-${process.pid}`;
  const fd = openSync(tmp, 'w', 0o644);
  try {
    writeSync(fd, formatDescriptor(d));
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, path);
}

export function newCid(): string {
  return randomBytes(4).toString('hex');
}

/** A disk UUID in descriptor form: `60 00 C2 9a 6f 11 4e 2b-8d 0c 55 21 7a 90 13 ee`. */
export function newDdbUuid(): string {
  const b = randomBytes(16);
  b[0] = 0x60;
  b[1] = 0x00;
  b[2] = 0xc2;
  const h = [...b].map((x) => x.toString(16).padStart(2, '0'));
  h[2] = 'C2';
  return `${h.slice(0, 8).join(' ')}-${h.slice(8).join(' ')}`;
}

/** `60 00 C2 9a ...-...` -> `6000C29a-6f11-4e2b-8d0c-55217a9013ee` (how backing.uuid shows it). */
export function backingUuid(ddbUuid: string): string {
  const hex = ddbUuid.replace(/[\s-]/g, '');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

function geometry(capacitySectors: number): [string, string][] {
  const cyl = Math.max(1, Math.floor(capacitySectors / (255 * 63)));
  return [
    ['geometry.cylinders', String(cyl)],
    ['geometry.heads', '255'],
    ['geometry.sectors', '63'],
  ];
}

/** Creates a base disk (descriptor + sparse flat extent of exactly `capacity` bytes). */
export function createBaseDisk(
  descPath: string,
  capacity: number,
  opts: { uuid: string; changeTrackPath?: string | undefined },
): Descriptor {
  if (capacity % SECTOR !== 0)
    throw new Error(`capacity ${capacity} of ${descPath} is not a whole number of sectors`);
  const stem = basename(descPath, '.vmdk');
  const cid = newCid();
  const d: Descriptor = {
    cid,
    parentCid: 'ffffffff',
    createType: 'vmfs',
    parentFileNameHint: undefined,
    changeTrackPath: opts.changeTrackPath,
    capacitySectors: capacity / SECTOR,
    extentFile: `${stem}-flat.vmdk`,
    ddb: [
      ['adapterType', 'lsilogic'],
      ['uuid', opts.uuid],
      ['virtualHWVersion', '19'],
      ['longContentID', `${cid}${randomBytes(12).toString('hex')}`],
      ...geometry(capacity / SECTOR),
    ],
  };
  const fd = openSync(join(dirname(descPath), d.extentFile), 'wx', 0o644);
  try {
    ftruncateSync(fd, capacity);
  } finally {
    closeSync(fd);
  }
  writeDescriptor(descPath, d);
  return d;
}

/** Creates a delta on top of `parentPath` (docs/lab.md 2.1: vmfsSparse, grain map, same uuid and journal). */
export function createDelta(descPath: string, parentPath: string): Descriptor {
  const parent = readDescriptor(parentPath);
  const capacity = capacityBytes(parent);
  const stem = basename(descPath, '.vmdk');
  const grain = DEFAULT_GRAIN;
  const ddb: [string, string][] = parent.ddb
    .filter(([k]) => k !== 'grainSize' && k !== 'longContentID')
    .map(([k, v]) => [k, v] as [string, string]);
  const cid = newCid();
  ddb.push(['longContentID', `${cid}${randomBytes(12).toString('hex')}`], ['grainSize', String(grain)]);
  const d: Descriptor = {
    cid,
    parentCid: parent.cid,
    createType: 'vmfsSparse',
    parentFileNameHint: basename(parentPath),
    changeTrackPath: parent.changeTrackPath,
    capacitySectors: parent.capacitySectors,
    extentFile: `${stem}-delta.vmdk`,
    ddb,
  };
  const dir = dirname(descPath);
  const fd = openSync(join(dir, d.extentFile), 'wx', 0o644);
  try {
    ftruncateSync(fd, capacity);
  } finally {
    closeSync(fd);
  }
  writeFileSync(mapPath(descPath, d), Buffer.alloc(Math.ceil(Math.ceil(capacity / grain) / 8)), {
    mode: 0o644,
  });
  writeDescriptor(descPath, d);
  return d;
}

export function extentPath(descPath: string, d: Descriptor): string {
  return join(dirname(descPath), d.extentFile);
}

export function mapPath(descPath: string, d: Descriptor): string {
  return join(dirname(descPath), d.extentFile.replace(/\.vmdk$/, '.map'));
}

/** Resolves a descriptor's parent to an absolute path (same folder, or `[ds] path` via `resolveDs`). */
export function parentPath(
  descPath: string,
  d: Descriptor,
  resolveDs: (dsPath: string) => string,
): string | undefined {
  const hint = d.parentFileNameHint;
  if (!hint) return undefined;
  if (hint.startsWith('[')) return resolveDs(hint);
  return join(dirname(descPath), hint);
}

export interface ChainLink {
  readonly path: string;
  readonly d: Descriptor;
}

/** The chain from `descPath` down to its base: [top, ..., base]. */
export function readChain(descPath: string, resolveDs: (dsPath: string) => string): ChainLink[] {
  const chain: ChainLink[] = [];
  for (let p: string | undefined = descPath; p;) {
    const d = readDescriptor(p);
    chain.push({ path: p, d });
    p = parentPath(p, d, resolveDs);
    if (chain.length > 256) throw new Error(`disk chain of ${descPath} is too long (a loop?)`);
  }
  return chain;
}

function readMap(link: ChainLink): Buffer {
  return readFileSync(mapPath(link.path, link.d));
}

function hasGrain(map: Buffer, g: number): boolean {
  return ((map[g >> 3] ?? 0) & (1 << (g & 7))) !== 0;
}

function preadFull(path: string, buf: Buffer, bufOff: number, len: number, pos: number): void {
  const fd = openSync(path, 'r');
  try {
    let done = 0;
    while (done < len) {
      const n = readSync(fd, buf, bufOff + done, len - done, pos + done);
      if (n === 0) {
        buf.fill(0, bufOff + done, bufOff + len);
        break;
      }
      done += n;
    }
  } finally {
    closeSync(fd);
  }
}

/** Reads `[offset, offset+length)` of the view of `chain[0]` (docs/lab.md 2.2 "Reading"). */
export function readView(chain: ChainLink[], offset: number, length: number): Buffer {
  const out = Buffer.alloc(length);
  const base = chain[chain.length - 1];
  if (!base) return out;
  const maps = chain.slice(0, -1).map((l) => ({ link: l, map: readMap(l), grain: grainSize(l.d) }));
  let pos = offset;
  const end = offset + length;
  while (pos < end) {
    // Find the topmost delta holding pos's grain; stop the run at that grain's end.
    let src: string | undefined;
    let runEnd = end;
    for (const m of maps) {
      const g = Math.floor(pos / m.grain);
      const gEnd = (g + 1) * m.grain;
      runEnd = Math.min(runEnd, gEnd);
      if (hasGrain(m.map, g)) {
        src = extentPath(m.link.path, m.link.d);
        break;
      }
    }
    if (!src) src = extentPath(base.path, base.d);
    preadFull(src, out, pos - offset, runEnd - pos, pos);
    pos = runEnd;
  }
  return out;
}

function pwriteFull(path: string, data: Buffer, pos: number): void {
  const fd = openSync(path, 'r+');
  try {
    let done = 0;
    while (done < data.length) done += writeSync(fd, data, done, data.length - done, pos + done);
  } finally {
    closeSync(fd);
  }
}

/**
 * Writes into the topmost file of `chain` (docs/lab.md 2.2 "Writing"): in place on a base disk;
 * on a delta, copy-on-write of every touched grain that is not yet present, then the data, then
 * the grain bits.
 */
export function writeTop(chain: ChainLink[], offset: number, data: Buffer): void {
  const top = chain[0];
  if (!top) throw new Error('empty chain');
  const cap = capacityBytes(top.d);
  if (offset < 0 || offset + data.length > cap)
    throw new RangeError(`write ${offset}+${data.length} is beyond the disk (${cap} bytes)`);
  const ext = extentPath(top.path, top.d);
  if (top.d.createType === 'vmfs') {
    pwriteFull(ext, data, offset);
    return;
  }
  const grain = grainSize(top.d);
  const mp = mapPath(top.path, top.d);
  const map = readFileSync(mp);
  const first = Math.floor(offset / grain);
  const last = Math.floor((offset + data.length - 1) / grain);
  const newGrains: number[] = [];
  for (let g = first; g <= last; g++) {
    if (hasGrain(map, g)) continue;
    const gStart = g * grain;
    const gLen = Math.min(grain, cap - gStart);
    const fullyCovered = gStart >= offset && gStart + gLen <= offset + data.length;
    if (!fullyCovered) pwriteFull(ext, readView(chain.slice(1), gStart, gLen), gStart);
    newGrains.push(g);
  }
  pwriteFull(ext, data, offset);
  if (newGrains.length > 0) {
    for (const g of newGrains) map[g >> 3] = (map[g >> 3] ?? 0) | (1 << (g & 7));
    const lo = first >> 3;
    const hi = last >> 3;
    pwriteFull(mp, map.subarray(lo, hi + 1), lo);
  }
}

const libc = koffi.load('libc.so.6');
const lseek = libc.func('int64_t lseek(int fd, int64_t offset, int whence)') as (
  fd: number,
  off: number,
  whence: number,
) => number | bigint;
const SEEK_DATA = 3;
const SEEK_HOLE = 4;

/** Data regions of a sparse file (SEEK_DATA/SEEK_HOLE), as [start, end) pairs within `size`. */
export function dataRegions(path: string, size: number): [number, number][] {
  const fd = openSync(path, 'r');
  const out: [number, number][] = [];
  try {
    let pos = 0;
    while (pos < size) {
      const s = Number(lseek(fd, pos, SEEK_DATA));
      if (s < 0 || s >= size) break;
      const e = Math.min(Number(lseek(fd, s, SEEK_HOLE)), size);
      if (e <= s) break;
      out.push([s, e]);
      pos = e;
    }
  } finally {
    closeSync(fd);
  }
  return out;
}

/** Merges sorted-or-not [start,end) ranges into a sorted disjoint list. */
export function unionRanges(ranges: [number, number][]): [number, number][] {
  const sorted = ranges.filter(([s, e]) => e > s).sort((a, b) => a[0] - b[0]);
  const out: [number, number][] = [];
  for (const [s, e] of sorted) {
    const last = out[out.length - 1];
    if (last && s <= last[1]) last[1] = Math.max(last[1], e);
    else out.push([s, e]);
  }
  return out;
}

/** Allocated areas of the view of `chain[0]`: delta grains plus the base extent's data regions. */
export function allocatedAreas(chain: ChainLink[]): [number, number][] {
  const ranges: [number, number][] = [];
  const base = chain[chain.length - 1];
  if (!base) return [];
  const cap = capacityBytes(base.d);
  ranges.push(...dataRegions(extentPath(base.path, base.d), cap));
  for (const link of chain.slice(0, -1)) {
    const map = readMap(link);
    const grain = grainSize(link.d);
    const grains = Math.ceil(cap / grain);
    for (let g = 0; g < grains; g++) {
      if ((g & 7) === 0 && map[g >> 3] === 0) {
        g += 7;
        continue;
      }
      if (hasGrain(map, g)) ranges.push([g * grain, Math.min((g + 1) * grain, cap)]);
    }
  }
  return unionRanges(ranges);
}

/** Copies the grains present in delta `child` down into its parent file (docs/lab.md 2.3), then deletes the child. */
export function mergeIntoParent(childPath: string, resolveDs: (dsPath: string) => string): string {
  const child = readDescriptor(childPath);
  const pPath = parentPath(childPath, child, resolveDs);
  if (!pPath || child.createType !== 'vmfsSparse') throw new Error(`${childPath} is not a delta`);
  const parentChain = readChain(pPath, resolveDs);
  const cap = capacityBytes(child);
  const grain = grainSize(child);
  const map = readMap({ path: childPath, d: child });
  const ext = extentPath(childPath, child);
  const grains = Math.ceil(cap / grain);
  for (let g = 0; g < grains; g++) {
    if (!hasGrain(map, g)) continue;
    const start = g * grain;
    const len = Math.min(grain, cap - start);
    const buf = Buffer.alloc(len);
    preadFull(ext, buf, 0, len, start);
    writeTop(parentChain, start, buf);
  }
  deleteDiskFile(childPath);
  return pPath;
}

export function deleteDiskFile(descPath: string): void {
  const d = readDescriptor(descPath);
  for (const p of [
    extentPath(descPath, d),
    d.createType === 'vmfsSparse' ? mapPath(descPath, d) : undefined,
  ]) {
    if (p && existsSync(p)) unlinkSync(p);
  }
  unlinkSync(descPath);
}

/** Re-points a descriptor at a new parent file (after its old parent was merged away). */
export function reparent(descPath: string, newParentPath: string): void {
  const d = readDescriptor(descPath);
  const p = readDescriptor(newParentPath);
  writeDescriptor(descPath, { ...d, parentFileNameHint: basename(newParentPath), parentCid: p.cid });
}

/** Sets (or removes) `changeTrackPath` on a descriptor. */
export function setChangeTrackPath(descPath: string, ctk: string | undefined): void {
  const d = readDescriptor(descPath);
  writeDescriptor(descPath, { ...d, changeTrackPath: ctk });
}
