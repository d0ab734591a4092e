import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, statSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import {
  createAttachRecord,
  deleteAttachRecord,
  listAttachRecords,
  SlotTakenError,
} from '../../src/lab/attach.js';
import {
  appendEpoch,
  appendWrite,
  changesBetween,
  readJournal,
  resetJournal,
  UnknownChangeIdError,
} from '../../src/lab/ctk.js';
import { parseLabDefinition, LabDefinitionError } from '../../src/lab/definition.js';
import {
  allocatedAreas,
  createBaseDisk,
  createDelta,
  mergeIntoParent,
  newDdbUuid,
  readChain,
  readDescriptor,
  readView,
  writeTop,
} from '../../src/lab/vmdk.js';

let dir: string;
const resolveDs = (p: string): string => join(dir, p.replace(/^\[[^\]]+\] /, ''));
before(() => {
  dir = mkdtempSync(join(tmpdir(), 'vbproxy-vmdk-'));
});
after(() => rmSync(dir, { recursive: true, force: true }));

test('a base disk is a descriptor plus a sparse flat extent of exactly the capacity (docs/lab.md 2.1)', () => {
  const uuid = newDdbUuid();
  createBaseDisk(join(dir, 'a.vmdk'), 1 << 20, { uuid, changeTrackPath: 'a-ctk.vmdk' });
  const text = readFileSync(join(dir, 'a.vmdk'), 'utf8');
  assert.match(text, /^# Disk DescriptorFile\n/);
  assert.match(text, /\nparentCID=ffffffff\n/);
  assert.match(text, /\ncreateType="vmfs"\n/);
  assert.match(text, /\nchangeTrackPath="a-ctk.vmdk"\n/);
  assert.match(text, /\nRW 2048 VMFS "a-flat.vmdk"\n/);
  assert.match(text, new RegExp(`\\nddb.uuid = "${uuid}"\\n`));
  assert.match(uuid, /^60 00 C2 [0-9a-f]{2}( [0-9a-f]{2}){4}-[0-9a-f]{2}( [0-9a-f]{2}){7}$/);
  assert.equal(statSync(join(dir, 'a-flat.vmdk')).size, 1 << 20);
  assert.ok(statSync(join(dir, 'a-flat.vmdk')).blocks < 64, 'the flat extent is sparse');
});

test('a delta has a grain map (LSB first), copies grains on write, and leaves its parent frozen', () => {
  createBaseDisk(join(dir, 'b.vmdk'), 64 * 1024, { uuid: newDdbUuid() });
  writeTop(readChain(join(dir, 'b.vmdk'), resolveDs), 0, Buffer.alloc(64 * 1024, 1));
  const d = createDelta(join(dir, 'b-000001.vmdk'), join(dir, 'b.vmdk'));
  assert.equal(d.parentCid, readDescriptor(join(dir, 'b.vmdk')).cid);
  assert.match(
    readFileSync(join(dir, 'b-000001.vmdk'), 'utf8'),
    /parentFileNameHint="b.vmdk"[\s\S]*RW 128 VMFSSPARSE "b-000001-delta.vmdk"[\s\S]*ddb.grainSize = "4096"/,
  );
  assert.equal(readFileSync(join(dir, 'b-000001-delta.map')).length, 2, '16 grains need 2 map bytes');
  const chain = readChain(join(dir, 'b-000001.vmdk'), resolveDs);
  writeTop(chain, 4096 * 9 + 100, Buffer.alloc(10, 2));
  const map = readFileSync(join(dir, 'b-000001-delta.map'));
  assert.deepEqual([...map], [0, 0b10], 'grain 9 is bit 1 of byte 1');
  const grain = readView(chain, 4096 * 9, 4096);
  assert.deepEqual(
    grain.subarray(0, 100),
    Buffer.alloc(100, 1),
    'copy-on-write kept the old bytes of the grain',
  );
  assert.deepEqual(grain.subarray(100, 110), Buffer.alloc(10, 2));
  assert.deepEqual(
    readView(chain.slice(1), 4096 * 9, 4096),
    Buffer.alloc(4096, 1),
    'the parent is unchanged',
  );
  assert.deepEqual(allocatedAreas(chain), [[0, 64 * 1024]]);
  const merged = mergeIntoParent(join(dir, 'b-000001.vmdk'), resolveDs);
  assert.equal(merged, join(dir, 'b.vmdk'));
  assert.equal(existsSync(join(dir, 'b-000001.vmdk')) || existsSync(join(dir, 'b-000001-delta.map')), false);
  assert.deepEqual(readView(readChain(merged, resolveDs), 4096 * 9 + 100, 10), Buffer.alloc(10, 2));
});

test('allocated areas are the base data regions plus delta grains', () => {
  createBaseDisk(join(dir, 'c.vmdk'), 1 << 20, { uuid: newDdbUuid() });
  writeTop(readChain(join(dir, 'c.vmdk'), resolveDs), 512 * 1024, Buffer.alloc(4096, 3));
  createDelta(join(dir, 'c-000001.vmdk'), join(dir, 'c.vmdk'));
  const chain = readChain(join(dir, 'c-000001.vmdk'), resolveDs);
  writeTop(chain, 8192, Buffer.alloc(1, 4));
  assert.deepEqual(allocatedAreas(chain), [
    [8192, 12288],
    [512 * 1024, 512 * 1024 + 4096],
  ]);
});

test('the CBT journal: epochs, writes between epochs, unknown uuid or epoch, reset', () => {
  const p = join(dir, 'j-ctk.vmdk');
  const uuid = resetJournal(p);
  assert.equal(readFileSync(p, 'utf8'), `uuid ${uuid}\nepoch 1\n`);
  appendWrite(p, 0, 10);
  assert.equal(appendEpoch(p), 2);
  appendWrite(p, 100, 10);
  appendWrite(p, 105, 10);
  assert.equal(appendEpoch(p), 3);
  const j = readJournal(p);
  assert.deepEqual(changesBetween(j, uuid, 1, 2), [[0, 10]]);
  assert.deepEqual(changesBetween(j, uuid, 2, 3), [[100, 115]]);
  assert.deepEqual(changesBetween(j, uuid, 1, 3), [
    [0, 10],
    [100, 115],
  ]);
  assert.deepEqual(changesBetween(j, uuid, 3, 3), []);
  assert.throws(() => changesBetween(j, 'other', 1, 3), UnknownChangeIdError);
  assert.throws(() => changesBetween(j, uuid, 7, 3), UnknownChangeIdError);
  const fresh = resetJournal(p);
  assert.notEqual(fresh, uuid);
  assert.throws(() => changesBetween(readJournal(p), uuid, 1, 1), UnknownChangeIdError);
});

test('attach records claim a slot atomically and are written in full (createdAt last)', () => {
  const base = {
    vm: 'vm-9',
    controllerKey: 1001,
    unitNumber: 0,
    fileName: '[ds1] web01/web01.vmdk',
    diskUuid: '60 00 C2 00 00 00 00 00-00 00 00 00 00 00 00 00',
    capacityBytes: 1024,
    diskMode: 'independent_nonpersistent',
    attachedBy: 'reconfigure',
    sourceVm: '',
    snapshot: '',
    pid: process.pid,
    connectionId: '',
  };
  const r = createAttachRecord(dir, base);
  assert.equal(r.deviceKey, 2016);
  assert.match(
    readFileSync(r.path, 'utf8'),
    /^vm=vm-9\ncontrollerKey=1001\nunitNumber=0\ndeviceKey=2016\n[\s\S]*\ncreatedAt=\S+\n$/,
  );
  assert.throws(() => createAttachRecord(dir, base), SlotTakenError);
  assert.equal(listAttachRecords(dir, 'vm-9').length, 1);
  deleteAttachRecord(r);
  assert.equal(listAttachRecords(dir, 'vm-9').length, 0);
});

test('lab definitions are validated with specific messages', () => {
  const ok = { hosts: [{ name: 'h' }], datastores: [{ name: 'd' }] };
  assert.throws(
    () => parseLabDefinition({ ...ok, vms: [{ name: 'a' }, { name: 'a' }] }),
    /VM name a is used twice/,
  );
  assert.throws(
    () => parseLabDefinition({ ...ok, vms: [{ name: 'a', datastore: 'x' }] }),
    /unknown datastore x/,
  );
  assert.throws(
    () => parseLabDefinition({ ...ok, vms: [{ name: 'a', disks: [{ sizeMiB: 1, unitNumber: 7 }] }] }),
    /unit 7 is the controller itself/,
  );
  assert.throws(() => parseLabDefinition({ datastores: [{ name: 'd' }] }), LabDefinitionError);
});
