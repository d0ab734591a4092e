/**
 * The two sides of docs/lab.md were written independently: the lab vSphere's disk code in
 * TypeScript (src/lab/vmdk.ts, src/lab/ctk.ts) and the lab VDDK in C (native/). Backups read
 * through the C side what the TypeScript side wrote, and restores write through the C side what
 * the TypeScript side later reads, so both must agree byte for byte on chains, copy-on-write
 * grains, allocated areas and the CBT journal.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { createHash, randomBytes } from 'node:crypto';
import { createLogger } from '../../src/log.js';
import { Vddk, type VddkConnectionSpec } from '../../src/vddk/index.js';
import {
  allocatedAreas,
  createBaseDisk,
  createDelta,
  readChain,
  readView,
  writeTop,
  newDdbUuid,
  type ChainLink,
} from '../../src/lab/vmdk.js';
import { readJournal, resetJournal } from '../../src/lab/ctk.js';
import { createLab, LAB_THUMBPRINT, type Lab } from '../vddk/fixtures.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const CAPACITY = 8 * MiB;

let lab: Lab;
let vddk: Vddk;
let folder: string;

function spec(over: Partial<VddkConnectionSpec> = {}): VddkConnectionSpec {
  return {
    server: 'vcenter.lab',
    thumbprint: LAB_THUMBPRINT,
    credentials: { kind: 'password', userName: 'backup@vsphere.local', password: 'lab-password' },
    vmMoref: 'vm-42',
    snapshotMoref: 'snapshot-1',
    transports: ['nbdssl'],
    ...over,
  };
}

const fsPath = (name: string): string => join(folder, name);
const resolveDs = (dsPath: string): string => {
  const m = /^\[([^\]]+)\] (.*)$/.exec(dsPath);
  if (!m) throw new Error(`not a datastore path: ${dsPath}`);
  return join(lab.datastoreDir(m[1] ?? ''), m[2] ?? '');
};
const chainOf = (name: string): ChainLink[] => readChain(fsPath(name), resolveDs);
const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

/** Sector-aligned writes that straddle grain (4 KiB) boundaries and partly overlap each other. */
function scatterWrites(chain: ChainLink[], seed: number, count: number): void {
  let x = seed;
  const next = (n: number): number => {
    x = (x * 1103515245 + 12345) % 2 ** 31;
    return x % n;
  };
  for (let i = 0; i < count; i++) {
    const sectors = 1 + next(40);
    const offset = next(CAPACITY / 512 - sectors) * 512;
    writeTop(chain, offset, randomBytes(sectors * 512));
  }
}

async function readAllThroughVddk(file: string): Promise<{ data: Buffer; extents: [number, number][] }> {
  const conn = await vddk.connect(spec());
  try {
    const disk = await conn.open(`[ds1] web/${file}`);
    const data = Buffer.alloc(disk.capacity);
    for (let off = 0; off < disk.capacity; off += MiB) {
      (await disk.read(off, Math.min(MiB, disk.capacity - off))).copy(data, off);
    }
    const extents = (await disk.allocatedExtents()).map(
      (e) => [e.offset, e.offset + e.length] as [number, number],
    );
    await disk.close();
    return { data, extents };
  } finally {
    await conn.disconnect();
  }
}

before(async () => {
  lab = createLab({ proxyVm: 'vm-9', hotaddDatastores: 'ds1' });
  folder = join(lab.datastoreDir('ds1'), 'web');
  mkdirSync(folder, { recursive: true });
  vddk = await Vddk.start({
    configFile: lab.configFile,
    logger: createLogger('interop-test', { level: 'silent' }),
  });
  // A base disk with a journal, two snapshots' worth of deltas, each written by the TS side.
  resetJournal(fsPath('web-ctk.vmdk'));
  createBaseDisk(fsPath('web.vmdk'), CAPACITY, { uuid: newDdbUuid(), changeTrackPath: 'web-ctk.vmdk' });
  scatterWrites(chainOf('web.vmdk'), 1, 200);
  createDelta(fsPath('web-000001.vmdk'), fsPath('web.vmdk'));
  scatterWrites(chainOf('web-000001.vmdk'), 2, 150);
  createDelta(fsPath('web-000002.vmdk'), fsPath('web-000001.vmdk'));
  scatterWrites(chainOf('web-000002.vmdk'), 3, 100);
});

after(async () => {
  await vddk?.exit();
  lab?.remove();
});

test('every level of a chain written by the lab vSphere reads identically through the lab VDDK', async () => {
  for (const file of ['web.vmdk', 'web-000001.vmdk', 'web-000002.vmdk']) {
    const expected = readView(chainOf(file), 0, CAPACITY);
    const { data } = await readAllThroughVddk(file);
    assert.equal(sha(data), sha(expected), `${file}: VDDK's view differs from the lab vSphere's`);
  }
});

test("VDDK's allocated blocks cover every area the lab vSphere counts as allocated", async () => {
  for (const file of ['web.vmdk', 'web-000002.vmdk']) {
    const ts = allocatedAreas(chainOf(file));
    const { extents } = await readAllThroughVddk(file);
    assert.ok(ts.length > 0);
    for (const [start, end] of ts) {
      const covered = extents.some(([s, e]) => s <= start && end <= e);
      assert.ok(covered, `${file}: allocated [${start}, ${end}) is not within VDDK's allocated blocks`);
    }
  }
});

test('writes through the lab VDDK read back identically through the lab vSphere, and are journalled', async () => {
  const top = 'web-000002.vmdk';
  const expected = readView(chainOf(top), 0, CAPACITY);
  const writes: [number, Buffer][] = [
    [3 * 512, randomBytes(5 * 512)], // inside one grain, not present in the delta yet
    [4096 * 7 - 1024, randomBytes(4096 + 2048)], // straddles two grains
    [CAPACITY - 8 * KiB, randomBytes(8 * KiB)], // the last grains
  ];
  const conn = await vddk.connect(spec({ readOnly: false }));
  try {
    const disk = await conn.open(`[ds1] web/${top}`, { readOnly: false });
    for (const [offset, data] of writes) {
      await disk.write(offset, data);
      data.copy(expected, offset);
    }
    await disk.close();
  } finally {
    await conn.disconnect();
  }
  assert.equal(sha(readView(chainOf(top), 0, CAPACITY)), sha(expected));
  // The frozen parent is untouched.
  const parentView = readView(chainOf('web-000001.vmdk'), 0, CAPACITY);
  const { data: parentThroughVddk } = await readAllThroughVddk('web-000001.vmdk');
  assert.equal(sha(parentThroughVddk), sha(parentView));
  // Every VDDK write is a `w` line the lab vSphere's journal reader understands.
  const journal = readJournal(fsPath('web-ctk.vmdk'));
  const logged = journal.entries.flatMap((e) => ('w' in e ? [e.w] : []));
  for (const [offset, data] of writes) {
    assert.ok(
      logged.some(([o, l]) => o <= offset && offset + data.length <= o + l),
      `write at ${offset} (+${data.length}) is missing from the CBT journal`,
    );
  }
});
