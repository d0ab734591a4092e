import assert from 'node:assert/strict';
import { readFile, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { getRestorePoint, listRestorePoints } from '../../src/catalog/restore-points.js';
import type { LabDefinitionInput } from '../../src/lab/definition.js';
import { fileHash, smallLab, startE2E, type E2E, type WorkerProcess } from './harness.js';

let e: E2E;
let worker: WorkerProcess;

/**
 * The small lab, with db01 on two networks of esx1 and EFI firmware, and a second host esx2 (with
 * datastore ds3) that has "VM Network" but not "backend".
 */
function labWithNetworks(): LabDefinitionInput {
  const def = smallLab();
  return {
    ...def,
    hosts: [
      { name: 'esx1', datastores: ['ds1', 'ds2'], networks: ['VM Network', 'backend'] },
      { name: 'esx2', datastores: ['ds3'], networks: ['VM Network'] },
    ],
    datastores: [...(def.datastores ?? []), { name: 'ds3' }],
    vms: (def.vms ?? []).map((vm) =>
      vm.name === 'db01'
        ? {
            ...vm,
            firmware: 'efi',
            nics: [
              { type: 'VirtualVmxnet3', network: 'VM Network' },
              { type: 'VirtualE1000e', network: 'backend', startConnected: false },
            ],
          }
        : vm,
    ),
  };
}

before(async () => {
  e = await startE2E(labWithNetworks());
  worker = e.startWorker('vbproxy01');
});
after(async () => {
  await e?.close();
});

test('full then incremental: the incremental reads only the changed chunks and both points restore byte for byte', async () => {
  const policy = await e.policy();
  const before0 = e.diskHash('db01', 2000);
  const before1 = e.diskHash('db01', 2001);
  const j1 = await e.backup(policy, 'db01');
  const job1 = await e.waitJob(j1);
  assert.equal(job1.state, 'succeeded', job1.errorMessage ?? '');
  const [p1] = await listRestorePoints(e.db.pool, { vmMoref: e.morefs.get('db01') });
  assert.ok(p1);
  const full = await getRestorePoint(e.db.pool, p1.id);
  assert.deepEqual(
    full.disks.map((d) => [d.diskKey, d.mode, d.transport]),
    [
      [2000, 'full', 'hotadd'],
      [2001, 'full', 'hotadd'],
    ],
  );
  assert.ok(full.disks.every((d) => d.changeId !== null));

  // Guest writes on disk 2000 only: one chunk-sized write straddling two chunks, one small write far away.
  const repo = await e.openRepo();
  const chunk = repo.chunkSize;
  await repo.close();
  e.lab.guestWrite('db01', 2000, 5 * chunk + 1024, Buffer.alloc(chunk, 0x5a)); // touches chunks 5 and 6
  e.lab.guestWrite('db01', 2000, 40 * chunk, Buffer.alloc(4096, 0xa5)); // chunk 40
  const after0 = e.diskHash('db01', 2000);
  assert.notEqual(after0, before0);

  const j2 = await e.backup(policy, 'db01');
  const job2 = await e.waitJob(j2);
  assert.equal(job2.state, 'succeeded', job2.errorMessage ?? '');
  const points = await listRestorePoints(e.db.pool, { vmMoref: e.morefs.get('db01') });
  assert.equal(points.length, 2);
  const inc = await getRestorePoint(e.db.pool, points[0]!.id);
  const d0 = inc.disks.find((d) => d.diskKey === 2000)!;
  const d1 = inc.disks.find((d) => d.diskKey === 2001)!;
  assert.equal(d0.mode, 'incremental');
  assert.equal(d1.mode, 'incremental');
  assert.equal(d0.bytesRead, 3 * chunk, 'only the three changed chunks are read');
  assert.equal(d1.bytesRead, 0, 'an unchanged disk reads nothing');
  assert.notEqual(d0.changeId, full.disks[0]!.changeId, 'the changeId advanced');

  // Restore both points through restore jobs to image files, compare with the disks at backup time.
  for (const [point, expect0] of [
    [full, before0],
    [inc, after0],
  ] as const) {
    const out = join(e.dir, `restore-${point.id}`);
    const r = await e.restore(point.id, { kind: 'file', directory: out });
    const rj = await e.waitJob(r);
    assert.equal(rj.state, 'succeeded', rj.errorMessage ?? '');
    assert.equal(fileHash(join(out, 'db01-disk2000.img')), expect0);
    assert.equal(fileHash(join(out, 'db01-disk2001.img')), before1);
  }

  // Nothing left behind in vSphere.
  assert.deepEqual(await e.hotAdded('vbproxy01'), []);
  assert.deepEqual(await e.ourSnapshots('db01'), []);
  assert.equal(await e.openLedger('vbproxy01'), 0);
  assert.ok(worker.output().includes('"jobId"'), 'logs carry the job id');
});

test('a restore point restored into the disks of an existing powered-off VM through VDDK', async () => {
  const [p] = await listRestorePoints(e.db.pool, { vmMoref: e.morefs.get('db01') });
  assert.ok(p, 'the previous test left restore points');
  const expect0 = e.diskHash('db01', 2000);
  const expect1 = e.diskHash('db01', 2001);
  const id = await e.restore(p.id, { kind: 'vm', vcenterId: e.vcenterId, vmMoref: e.morefs.get('spare01')! });
  const j = await e.waitJob(id);
  assert.equal(j.state, 'succeeded', j.errorMessage ?? '');
  assert.equal(e.diskHash('spare01', 2000), expect0);
  assert.equal(e.diskHash('spare01', 2001), expect1);

  // A powered-on target is refused with a message saying what to do.
  const bad = await e.waitJob(
    await e.restore(p.id, { kind: 'vm', vcenterId: e.vcenterId, vmMoref: e.morefs.get('web01')! }),
  );
  assert.equal(bad.state, 'failed');
  assert.equal(bad.errorCode, 'RESTORE_VM_POWERED_ON');
  assert.match(bad.errorMessage ?? '', /web01 .* is poweredOn: power it off before restoring/);
});

test('a restore point restored into a new VM created from the configuration it keeps', async () => {
  const [p] = await listRestorePoints(e.db.pool, { vmMoref: e.morefs.get('db01') });
  assert.ok(p, 'the first test left restore points');
  const expect0 = e.diskHash('db01', 2000);
  const expect1 = e.diskHash('db01', 2001);
  const id = await e.restore(p.id, { kind: 'new-vm', vcenterId: e.vcenterId, name: 'db01-restored' });
  const j = await e.waitJob(id);
  assert.equal(j.state, 'succeeded', j.errorMessage ?? '');
  // db01's hardware and disk layout (SCSI 0:0 and 0:1, same capacities), powered off, with its data.
  const vm = e.lab.world.vmByRefOrName('db01-restored');
  const source = e.lab.world.vmByRefOrName('db01');
  assert.equal(vm.powerState, 'poweredOff');
  assert.deepEqual(vm.hardware, source.hardware, 'the same guest OS type, vCPUs and memory');
  assert.deepEqual(
    vm.disks.map((d) => [d.controllerKey, d.unitNumber, d.capacity]),
    source.disks.map((d) => [d.controllerKey, d.unitNumber, d.capacity]),
  );
  assert.equal(e.diskHash('db01-restored', 2000), expect0);
  assert.equal(e.diskHash('db01-restored', 2001), expect1);
  const events = await e.events(id);
  assert.ok(events.some((ev) => /created VM db01-restored \(vm-\d+\)/.test(ev.message)));
  // The same firmware, and each NIC of the same type on the same network, with a new MAC address.
  assert.equal(vm.firmware, 'efi');
  assert.deepEqual(
    vm.nics?.map((n) => [n.type, n.network, n.startConnected, n.addressType]),
    [
      ['VirtualVmxnet3', 'VM Network', true, 'generated'],
      ['VirtualE1000e', 'backend', false, 'generated'],
    ],
  );
  for (const [i, n] of (vm.nics ?? []).entries()) {
    assert.match(n.macAddress, /^00:50:56:/);
    assert.notEqual(n.macAddress, source.nics?.[i]?.macAddress, 'never a copy of the original MAC');
  }
  assert.ok(!events.some((ev) => ev.level === 'warn'), 'every network was there');

  // On a host without "backend" (esx2, the only one that sees ds3) that NIC is created not
  // connected, and the job says so.
  const elsewhere = await e.waitJob(
    await e.restore(p.id, { kind: 'new-vm', vcenterId: e.vcenterId, name: 'db01-esx2', datastore: 'ds3' }),
  );
  assert.equal(elsewhere.state, 'succeeded', elsewhere.errorMessage ?? '');
  const moved = e.lab.world.vmByRefOrName('db01-esx2');
  assert.equal(e.lab.world.host(moved.host).name, 'esx2');
  assert.deepEqual(
    moved.nics?.map((n) => [n.type, n.network, n.startConnected]),
    [
      ['VirtualVmxnet3', 'VM Network', true],
      ['VirtualE1000e', undefined, false],
    ],
  );
  assert.equal(e.diskHash('db01-esx2', 2000), expect0);
  const warns = (await e.events(elsewhere.id)).filter((ev) => ev.level === 'warn');
  assert.equal(warns.length, 1, JSON.stringify(warns));
  assert.match(
    warns[0]!.message,
    /Network adapter 2 \(VirtualE1000e\) of VM db01-esx2 was created not connected: the placement host has no network "backend"; connect it before powering the VM on/,
  );

  // The name is taken now: the next restore to it fails before writing anything, naming the fault.
  const dup = await e.waitJob(
    await e.restore(p.id, { kind: 'new-vm', vcenterId: e.vcenterId, name: 'db01-restored' }),
  );
  assert.equal(dup.state, 'failed');
  assert.equal(dup.errorCode, 'RESTORE_NEW_VM_FAILED');
  assert.match(dup.errorMessage ?? '', /cannot create VM db01-restored .*DuplicateName/);

  // A restore that fails after creating its VM (here: damaged chunks) deletes that VM again.
  const repo = await e.openRepo();
  const chunkDir = join(repo.location, 'chunks');
  await repo.close();
  const chunks = (await readdir(chunkDir, { recursive: true, withFileTypes: true }))
    .filter((d) => d.isFile())
    .map((d) => join(d.parentPath, d.name));
  const flip = async () => {
    for (const f of chunks) {
      const b = await readFile(f);
      b[b.length - 1]! ^= 0xff;
      await writeFile(f, b);
    }
  };
  await flip();
  try {
    const bad = await e.waitJob(
      await e.restore(p.id, { kind: 'new-vm', vcenterId: e.vcenterId, name: 'db01-damaged' }),
    );
    assert.equal(bad.state, 'failed');
    assert.equal(bad.errorCode, 'RESTORE_NEW_VM_INCOMPLETE');
    assert.match(
      bad.errorMessage ?? '',
      /new VM db01-damaged \(vm-\d+\) failed, so the VM was deleted again: .*damaged chunk/,
    );
    assert.throws(() => e.lab.world.vmByRefOrName('db01-damaged'), /no VM db01-damaged/);
  } finally {
    await flip();
  }
});
