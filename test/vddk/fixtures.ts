/**
 * Lab disks for the VDDK tests, written per docs/lab.md sections 1-5 (the lab vSphere's own writer
 * lives in src/lab/): a lab root with vddk.conf, base disks (descriptor + sparse flat extent),
 * deltas (descriptor + delta extent + grain map, copy-on-write of whole grains) and CBT journals.
 * Each disk file keeps the content its view should read, so tests compare bytes with it.
 */
import {
  mkdirSync,
  mkdtempSync,
  openSync,
  closeSync,
  writeSync,
  ftruncateSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join, basename, dirname } from 'node:path';
import { randomBytes } from 'node:crypto';

export const LAB_THUMBPRINT = '5E:1A:0C:33:92:7B:DE:21:49:0F:AA:13:6C:58:E2:90:4D:77:B1:0A';
export const GRAIN = 4096;

export interface LabOptions {
  readonly proxyVm?: string;
  readonly hotaddDatastores?: string;
  readonly thumbprint?: string;
  readonly extraConfig?: Readonly<Record<string, string>>;
}

export interface Lab {
  readonly root: string;
  readonly configFile: string;
  datastoreDir(ds: string): string;
  writeFaults(lines: Readonly<Record<string, string | number>>): void;
  clearFaults(): void;
  attachDir(vm: string): string;
  remove(): void;
}

export function createLab(options: LabOptions = {}): Lab {
  const root = mkdtempSync(join(tmpdir(), 'vbproxy-vddk-lab-'));
  mkdirSync(join(root, 'datastores', 'ds1'), { recursive: true });
  mkdirSync(join(root, 'faults'), { recursive: true });
  mkdirSync(join(root, 'attached'), { recursive: true });
  mkdirSync(join(root, 'state'), { recursive: true });
  const lines = [
    `vixDiskLib.lab.root = "${root}"`,
    `vixDiskLib.lab.serverThumbprint = "${options.thumbprint ?? LAB_THUMBPRINT}"`,
  ];
  if (options.proxyVm) lines.push(`vixDiskLib.lab.proxyVm = "${options.proxyVm}"`);
  if (options.hotaddDatastores !== undefined)
    lines.push(`vixDiskLib.lab.hotaddDatastores = "${options.hotaddDatastores}"`);
  for (const [k, v] of Object.entries(options.extraConfig ?? {})) lines.push(`${k} = "${v}"`);
  const configFile = join(root, 'vddk.conf');
  writeFileSync(configFile, `# lab VDDK configuration (test fixture)\n${lines.join('\n')}\n`);
  return {
    root,
    configFile,
    datastoreDir: (ds) => join(root, 'datastores', ds),
    writeFaults: (f) =>
      writeFileSync(
        join(root, 'faults', 'vddk.conf'),
        Object.entries(f)
          .map(([k, v]) => `${k} = "${v}"\n`)
          .join(''),
      ),
    clearFaults: () => rmSync(join(root, 'faults', 'vddk.conf'), { force: true }),
    attachDir: (vm) => join(root, 'attached', vm),
    remove: () => rmSync(root, { recursive: true, force: true }),
  };
}

export interface DiskFile {
  /** `[ds1] folder/name.vmdk` */
  readonly dsPath: string;
  /** The descriptor's file path. */
  readonly descriptor: string;
  readonly cid: string;
  readonly capacity: number;
  readonly uuid: string;
  /** The change journal's file path, when the disk has CBT. */
  readonly ctk: string | null;
  /** What this file's view reads (when kept). */
  readonly content: Buffer | null;
  /** The base disk's descriptor file name (for delta naming). */
  readonly baseName: string;
  /** Grains present in this delta (empty for a base disk). */
  readonly grains: ReadonlySet<number>;
}

export interface Write {
  readonly offset: number;
  readonly data: Buffer;
}

function cid(): string {
  return randomBytes(4).toString('hex');
}

function descriptorText(o: {
  cid: string;
  parentCid: string;
  createType: string;
  parentHint?: string;
  ctkName?: string | null;
  capacitySectors: number;
  extentType: string;
  extentName: string;
  uuid: string;
  grain?: number;
}): string {
  const lines = [
    '# Disk DescriptorFile',
    'version=1',
    'encoding="UTF-8"',
    `CID=${o.cid}`,
    `parentCID=${o.parentCid}`,
    `createType="${o.createType}"`,
  ];
  if (o.parentHint) lines.push(`parentFileNameHint="${o.parentHint}"`);
  if (o.ctkName) lines.push(`changeTrackPath="${o.ctkName}"`);
  lines.push('', '# Extent description', `RW ${o.capacitySectors} ${o.extentType} "${o.extentName}"`, '');
  lines.push('# The Disk Data Base', '#DDB', 'ddb.adapterType = "lsilogic"', `ddb.uuid = "${o.uuid}"`);
  lines.push('ddb.virtualHWVersion = "19"', `ddb.longContentID = "${o.cid}${'0'.repeat(24)}"`);
  lines.push('ddb.geometry.cylinders = "261"', 'ddb.geometry.heads = "255"', 'ddb.geometry.sectors = "63"');
  if (o.grain) lines.push(`ddb.grainSize = "${o.grain}"`);
  return `${lines.join('\n')}\n`;
}

/**
 * A base disk `[ds] folder/name.vmdk` of `capacity` bytes: a sparse flat extent holding `writes`.
 * `keepContent: false` for big disks (the content is then not tracked).
 */
export function createBaseDisk(
  lab: Lab,
  o: {
    ds?: string;
    folder: string;
    name: string;
    capacity: number;
    writes?: readonly Write[];
    ctk?: boolean;
    keepContent?: boolean;
  },
): DiskFile {
  const ds = o.ds ?? 'ds1';
  const dir = join(lab.datastoreDir(ds), o.folder);
  mkdirSync(dir, { recursive: true });
  const flat = join(dir, `${o.name}-flat.vmdk`);
  const fd = openSync(flat, 'w');
  ftruncateSync(fd, o.capacity);
  const content = o.keepContent === false ? null : Buffer.alloc(o.capacity);
  for (const w of o.writes ?? []) {
    writeSync(fd, w.data, 0, w.data.length, w.offset);
    content?.set(w.data, w.offset);
  }
  closeSync(fd);
  const id = cid();
  const uuid = '60 00 C2 9a 6f 11 4e 2b-8d 0c 55 21 7a 90 13 ee';
  let ctk: string | null = null;
  if (o.ctk) {
    ctk = join(dir, `${o.name}-ctk.vmdk`);
    writeFileSync(ctk, 'uuid 52 6f f7 d2 fd 27 ac b1-76 44 e2 ef 5f b6 1a 84\nepoch 1\n');
  }
  const descriptor = join(dir, `${o.name}.vmdk`);
  writeFileSync(
    descriptor,
    descriptorText({
      cid: id,
      parentCid: 'ffffffff',
      createType: 'vmfs',
      ctkName: ctk ? basename(ctk) : null,
      capacitySectors: o.capacity / 512,
      extentType: 'VMFS',
      extentName: `${o.name}-flat.vmdk`,
      uuid,
    }),
  );
  return {
    dsPath: `[${ds}] ${o.folder}/${o.name}.vmdk`,
    descriptor,
    cid: id,
    capacity: o.capacity,
    uuid,
    ctk,
    content,
    baseName: o.name,
    grains: new Set(),
  };
}

/**
 * A delta on top of `parent` (`<base>-00000N.vmdk`), holding `writes` with copy-on-write of whole
 * grains, as the lab vSphere writes guest data after a snapshot.
 */
export function createDelta(parent: DiskFile, o: { n: number; writes?: readonly Write[] }): DiskFile {
  if (!parent.content) throw new Error('createDelta needs the parent content');
  const dir = dirname(parent.descriptor);
  const name = `${parent.baseName}-${String(o.n).padStart(6, '0')}`;
  const extent = join(dir, `${name}-delta.vmdk`);
  const mapPath = join(dir, `${name}-delta.map`);
  const grains = Math.ceil(parent.capacity / GRAIN);
  const map = Buffer.alloc(Math.ceil(grains / 8));
  const content = Buffer.from(parent.content);
  const present = new Set<number>();
  const fd = openSync(extent, 'w');
  ftruncateSync(fd, parent.capacity);
  for (const w of o.writes ?? []) {
    const g0 = Math.floor(w.offset / GRAIN);
    const g1 = Math.floor((w.offset + w.data.length - 1) / GRAIN);
    for (let g = g0; g <= g1; g++) {
      if (present.has(g)) continue;
      const start = g * GRAIN;
      const end = Math.min(parent.capacity, start + GRAIN);
      writeSync(fd, content, start, end - start, start); // copy-on-write of the whole grain
      present.add(g);
    }
    writeSync(fd, w.data, 0, w.data.length, w.offset);
    content.set(w.data, w.offset);
  }
  closeSync(fd);
  for (const g of present) map[g >> 3]! |= 1 << (g & 7);
  writeFileSync(mapPath, map);
  const id = cid();
  const descriptor = join(dir, `${name}.vmdk`);
  writeFileSync(
    descriptor,
    descriptorText({
      cid: id,
      parentCid: parent.cid,
      createType: 'vmfsSparse',
      parentHint: basename(parent.descriptor),
      ctkName: parent.ctk ? basename(parent.ctk) : null,
      capacitySectors: parent.capacity / 512,
      extentType: 'VMFSSPARSE',
      extentName: `${name}-delta.vmdk`,
      uuid: parent.uuid,
      grain: GRAIN,
    }),
  );
  const ds = /^\[([^\]]+)\]/.exec(parent.dsPath)![1];
  const folder = parent.dsPath.replace(/^\[[^\]]+\] /, '').replace(/\/[^/]+$/, '');
  return {
    dsPath: `[${ds}] ${folder}/${name}.vmdk`,
    descriptor,
    cid: id,
    capacity: parent.capacity,
    uuid: parent.uuid,
    ctk: parent.ctk,
    content,
    baseName: parent.baseName,
    grains: present,
  };
}

/** Deterministic, non-repeating test data. */
export function pattern(length: number, seed: number): Buffer {
  const b = Buffer.alloc(length);
  let x = (seed * 2654435761) >>> 0 || 1;
  for (let i = 0; i < length; i += 4) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    b.writeUInt32LE(x, i);
  }
  return b;
}
