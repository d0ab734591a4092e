import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { VimClient } from '../../src/vsphere/client.js';
import { createAttachRecord, deleteAttachRecord, type AttachRecord } from '../../src/lab/attach.js';
import { attachDisk, detachDisk } from '../../src/vsphere/devices.js';
import {
  FileFaultError,
  FileLockedError,
  InvalidArgumentError,
  InvalidPowerStateError,
  InvalidStateError,
  ManagedObjectNotFoundError,
  RestrictedVersionError,
  TaskInProgressError,
  VimFaultError,
} from '../../src/vsphere/errors.js';
import { getVm, listVms } from '../../src/vsphere/inventory.js';
import { retrieveOne } from '../../src/vsphere/property.js';
import { runTask, waitForTask } from '../../src/vsphere/tasks.js';
import { isMoRef, moref, type MoRef, type VimObject, type VimValue } from '../../src/vsphere/wire/values.js';
import { testDefinition, withLab, type TestLab } from './support.js';

/**
 * CreateVM_Task and Destroy_Task in the lab vSphere (ComputeResource, ResourcePool, the VM created
 * and destroyed, their faults).
 */

const GiB = 1024 ** 3;
let t: TestLab;
let c: VimClient;
let esx1: MoRef;
let esx2: MoRef;
let prod: MoRef;
let pool1: MoRef;

const find = async (path: string): Promise<MoRef> => {
  const r = await c.call('FindByInventoryPath', {
    _this: c.serviceContent.searchIndex!,
    inventoryPath: path,
  });
  assert.ok(isMoRef(r), `nothing at ${path}`);
  return r;
};

const props = async (obj: MoRef, paths: string[]): Promise<ReadonlyMap<string, VimValue>> =>
  (await retrieveOne(c, obj, paths)).props;

const lsi = (key: number, busNumber: number): VimObject => ({
  _type: 'VirtualDeviceConfigSpec',
  operation: 'add',
  device: { _type: 'VirtualLsiLogicController', key, busNumber, sharedBus: 'noSharing' },
});

const disk = (
  controllerKey: number,
  capacity: { bytes?: number; kb?: number },
  fileName = '',
): VimObject => ({
  _type: 'VirtualDeviceConfigSpec',
  operation: 'add',
  fileOperation: 'create',
  device: {
    _type: 'VirtualDisk',
    key: -1,
    backing: {
      _type: 'VirtualDiskFlatVer2BackingInfo',
      fileName,
      diskMode: 'persistent',
      thinProvisioned: true,
    },
    controllerKey,
    capacityInKB: capacity.kb ?? 0,
    ...(capacity.bytes !== undefined ? { capacityInBytes: capacity.bytes } : {}),
  },
});

const config = (name: string, vmPathName: string, deviceChange: VimObject[] = []): VimObject => ({
  _type: 'VirtualMachineConfigSpec',
  name,
  files: { _type: 'VirtualMachineFileInfo', vmPathName },
  deviceChange,
});

const createVm = async (
  folder: MoRef,
  cfg: VimObject,
  pool: MoRef = pool1,
  host?: MoRef,
): Promise<VimValue | undefined> =>
  runTask(c, 'CreateVM_Task', { _this: folder, config: cfg, pool, ...(host ? { host } : {}) }, { pollMs: 5 });

const fault =
  (type: string, check: (f: VimObject, err: VimFaultError) => void = () => undefined) =>
  (err: unknown): boolean => {
    assert.ok(err instanceof VimFaultError, String(err));
    assert.equal(err.faultType, type, err.message);
    check(err.fault, err);
    return true;
  };

before(async () => {
  t = await withLab(
    testDefinition({
      hosts: [
        { name: 'esx1', datastores: ['ds1', 'ds2'] },
        { name: 'esx2', datastores: ['ds3'], networks: ['VM Network', 'backend'] },
        { name: 'esx3', datastores: ['ds3'], license: 'free' },
      ],
      datastores: [{ name: 'ds1' }, { name: 'ds2' }, { name: 'ds3' }],
      vms: [
        { name: 'old01', folder: 'prod', disks: [{ sizeMiB: 1 }] },
        { name: 'susp01', powerState: 'suspended', disks: [{ sizeMiB: 1 }] },
        { name: 'free01', host: 'esx3', powerState: 'poweredOff', disks: [{ sizeMiB: 1 }] },
      ],
      proxies: [
        { name: 'proxy01', disks: [{ sizeMiB: 1 }] },
        { name: 'proxy02', powerState: 'poweredOff', disks: [{ sizeMiB: 1 }] },
      ],
    }),
  );
  c = await t.connect();
  // A standalone host is below its ComputeResource of the same name, as in vCenter and vcsim.
  esx1 = await find('dc1/host/esx1/esx1');
  esx2 = await find('dc1/host/esx2/esx2');
  prod = await find('dc1/vm/prod');
  const cr = (await props(esx1, ['parent'])).get('parent');
  assert.ok(isMoRef(cr));
  const rp = (await props(cr, ['resourcePool'])).get('resourcePool');
  assert.ok(isMoRef(rp));
  pool1 = rp;
});
after(async () => {
  await t.close();
});

describe('ComputeResource and ResourcePool', () => {
  test('each host has a ComputeResource with a root pool "Resources"', async () => {
    const cr = (await props(esx1, ['parent'])).get('parent') as MoRef;
    assert.deepEqual(cr, moref('ComputeResource', `domain-s${esx1.value.slice(5)}`));
    const p = await props(cr, ['name', 'resourcePool', 'host', 'datastore', 'parent']);
    assert.equal(p.get('name'), 'esx1');
    assert.deepEqual(p.get('resourcePool'), moref('ResourcePool', `resgroup-${esx1.value.slice(5)}`));
    assert.deepEqual(p.get('host'), [esx1]);
    assert.deepEqual(p.get('datastore'), (await props(esx1, ['datastore'])).get('datastore'));
    assert.deepEqual(p.get('parent'), moref('Folder', 'group-h4'));
    const rp = await props(pool1, ['name', 'owner', 'parent']);
    assert.equal(rp.get('name'), 'Resources');
    assert.deepEqual(rp.get('owner'), cr);
    assert.deepEqual(rp.get('parent'), cr);
  });

  test('unknown ones are ManagedObjectNotFound', async () => {
    await assert.rejects(
      props(moref('ComputeResource', 'domain-s999'), ['name']),
      ManagedObjectNotFoundError,
    );
    await assert.rejects(props(moref('ResourcePool', 'resgroup-999'), ['name']), ManagedObjectNotFoundError);
  });
});

describe('CreateVM_Task', () => {
  let created: MoRef;

  test('creates a powered-off VM with an LSI Logic controller and two sparse disks', async () => {
    const uuid = '4A1C2B3D-1111-4000-8000-0000000000AA';
    const result = await createVm(prod, {
      ...config('new01', '[ds2]', [
        lsi(-100, 0),
        disk(-100, { bytes: GiB }),
        disk(-100, { kb: 64 * 1024 }, '[ds2]'),
      ]),
      uuid,
    });
    assert.ok(isMoRef(result) && result.type === 'VirtualMachine', JSON.stringify(result));
    created = result;
    const vm = await getVm(c, created);
    assert.equal(vm.name, 'new01');
    assert.equal(vm.powerState, 'poweredOff');
    assert.equal(vm.template, false);
    assert.equal(vm.cbtEnabled, false);
    assert.equal(vm.biosUuid, uuid.toLowerCase());
    assert.match(vm.instanceUuid ?? '', /^[0-9a-f-]{36}$/);
    assert.deepEqual(vm.host, esx1);
    assert.deepEqual(
      vm.disks.map((d) => [d.key, d.controllerKey, d.unitNumber, d.capacityBytes, d.fileName, d.label]),
      [
        [2000, 1000, 0, GiB, '[ds2] new01/new01.vmdk', 'Hard disk 1'],
        [2001, 1000, 1, 64 * 1024 ** 2, '[ds2] new01/new01_1.vmdk', 'Hard disk 2'],
      ],
    );
    const controllers = (vm.devices as VimObject[]).filter((d) => d._type === 'VirtualLsiLogicController');
    assert.deepEqual(
      controllers.map((d) => [d.key, d.busNumber, d.device]),
      [[1000, 0, [2000, 2001]]],
    );
    const dir = join(t.dir, 'datastores', 'ds2', 'new01');
    for (const f of ['new01.vmdk', 'new01_1.vmdk']) assert.ok(existsSync(join(dir, f)), f);
    // The flat extents are sparse: nothing close to 1 GiB was written.
    const flat = readFileSync(join(dir, 'new01.vmdk'), 'utf8').match(/"([^"]+-flat\.vmdk)"/)?.[1];
    assert.ok(flat, 'descriptor names its extent');
    const st = statSync(join(dir, flat));
    assert.equal(st.size, GiB);
    assert.ok(st.blocks * 512 < 1024 ** 2, `extent allocates ${st.blocks * 512} bytes`);
  });

  test('the new VM is in its folder, found by UUID, listed in views, and persisted', async () => {
    assert.deepEqual((await props(created, ['parent'])).get('parent'), prod);
    const p = await props(created, ['config.files.vmPathName', 'datastore', 'config.instanceUuid']);
    assert.equal(p.get('config.files.vmPathName'), '[ds2] new01/new01.vmx');
    assert.deepEqual((await props(prod, ['childEntity'])).get('childEntity'), [
      await find('dc1/vm/prod/old01'),
      created,
    ]);
    assert.deepEqual(await find('dc1/vm/prod/new01'), created);
    const byUuid = await c.call('FindByUuid', {
      _this: c.serviceContent.searchIndex!,
      uuid: '4a1c2b3d-1111-4000-8000-0000000000aa',
      vmSearch: true,
      instanceUuid: false,
    });
    assert.deepEqual(byUuid, created);
    const byInstance = await c.call('FindByUuid', {
      _this: c.serviceContent.searchIndex!,
      uuid: p.get('config.instanceUuid') as string,
      vmSearch: true,
      instanceUuid: true,
    });
    assert.deepEqual(byInstance, created);
    const saved = JSON.parse(readFileSync(join(t.dir, 'state', 'inventory.json'), 'utf8')) as {
      vms: { moref: string; name: string }[];
    };
    assert.ok(saved.vms.some((v) => v.moref === created.value && v.name === 'new01'));
  });

  test('a VM without devices, with the default host given explicitly, is valid', async () => {
    const vmFolder = moref('Folder', 'group-v3');
    const result = await createVm(vmFolder, config('empty01', '[ds1] empty01/empty01.vmx'), pool1, esx1);
    assert.ok(isMoRef(result));
    const vm = await getVm(c, result);
    assert.equal(vm.disks.length, 0);
    assert.deepEqual(vm.devices, []);
    assert.ok(existsSync(join(t.dir, 'datastores', 'ds1', 'empty01')));
  });

  test('the same name in the same folder is DuplicateName, before any task', async () => {
    await assert.rejects(
      createVm(prod, config('new01', '[ds1]')),
      fault('DuplicateName', (f, err) => {
        assert.equal(f.name, 'new01');
        assert.deepEqual(f.object, created);
        assert.equal(err.task, undefined);
      }),
    );
  });

  test('an unknown datastore is InvalidDatastorePath; one the host cannot see is InvalidDatastore', async () => {
    await assert.rejects(
      createVm(prod, config('x01', '[nods] x01/x01.vmx')),
      fault('InvalidDatastorePath', (f) => assert.equal(f.datastorePath, '[nods] x01/x01.vmx')),
    );
    await assert.rejects(
      createVm(prod, config('x01', '[ds3]')),
      fault('InvalidDatastore', (f) => assert.equal(f.name, 'ds3')),
    );
    assert.equal(existsSync(join(t.dir, 'datastores', 'ds3', 'x01')), false);
  });

  test('a disk on a controller the spec lacks, or a bad capacity, is InvalidDeviceSpec', async () => {
    await assert.rejects(
      createVm(prod, config('x02', '[ds1]', [lsi(-100, 0), disk(-101, { kb: 1024 })])),
      fault('InvalidDeviceSpec', (f) => {
        assert.equal(f.deviceIndex, 1);
        assert.equal(f.property, 'device.controllerKey');
      }),
    );
    await assert.rejects(
      createVm(prod, config('x02', '[ds1]', [lsi(-100, 0), disk(-100, { bytes: 1000 })])),
      fault('InvalidDeviceSpec', (f) => assert.equal(f.property, 'device.capacityInBytes')),
    );
    await assert.rejects(
      createVm(prod, config('x02', '[ds1]', [lsi(-100, 0), lsi(-101, 0)])),
      fault('InvalidDeviceSpec', (f) => assert.equal(f.property, 'device.busNumber')),
    );
    assert.equal(existsSync(join(t.dir, 'datastores', 'ds1', 'x02')), false);
  });

  test('an existing VM directory fails the task with FileAlreadyExists', async () => {
    mkdirSync(join(t.dir, 'datastores', 'ds1', 'stale01'));
    await assert.rejects(
      createVm(prod, config('stale01', '[ds1]', [lsi(-100, 0), disk(-100, { kb: 1024 })])),
      (err: unknown) => {
        assert.ok(err instanceof FileFaultError, String(err));
        assert.equal(err.faultType, 'FileAlreadyExists');
        assert.equal(err.fault.file, '[ds1] stale01');
        assert.ok(err.task !== undefined);
        return true;
      },
    );
  });

  test('placement: a host outside the pool, a missing name, a non-VM folder', async () => {
    await assert.rejects(
      createVm(prod, config('x03', '[ds1]'), pool1, esx2),
      (err: unknown) => err instanceof InvalidArgumentError && err.fault.invalidProperty === 'host',
    );
    await assert.rejects(
      createVm(prod, config('', '[ds1]')),
      (err: unknown) => err instanceof InvalidArgumentError && err.fault.invalidProperty === 'name',
    );
    await assert.rejects(
      createVm(moref('Folder', 'group-h4'), config('x03', '[ds1]')),
      fault('NotSupported'),
    );
  });
});

describe('Destroy_Task', () => {
  const destroy = (vm: MoRef): Promise<VimValue | undefined> =>
    runTask(c, 'Destroy_Task', { _this: vm }, { pollMs: 5 });
  const newVm = async (name: string, folder = prod): Promise<MoRef> => {
    const r = await createVm(folder, config(name, '[ds1]', [lsi(-100, 0), disk(-100, { kb: 1024 })]));
    assert.ok(isMoRef(r));
    return r;
  };
  const dirOf = (name: string): string => join(t.dir, 'datastores', 'ds1', name);
  const synchronous =
    (type: string, check: (f: VimObject) => void = () => undefined) =>
    (err: unknown): boolean => {
      assert.ok(err instanceof VimFaultError, String(err));
      assert.equal(err.faultType, type, err.message);
      assert.equal(err.task, undefined, 'refused before a task');
      check(err.fault);
      return true;
    };

  test('deletes the VM with its directory and forgets it everywhere; the name can be created again', async () => {
    const vm = await newVm('gone01');
    await runTask(
      c,
      'ReconfigVM_Task',
      { _this: vm, spec: { _type: 'VirtualMachineConfigSpec', changeTrackingEnabled: true } },
      { pollMs: 5 },
    );
    const snap = await runTask(
      c,
      'CreateSnapshot_Task',
      { _this: vm, name: 's1', memory: false, quiesce: false },
      { pollMs: 5 },
    );
    assert.ok(isMoRef(snap));
    const dir = dirOf('gone01');
    for (const f of ['gone01.vmdk', 'gone01-ctk.vmdk', 'gone01-000001.vmdk'])
      assert.ok(existsSync(join(dir, f)), f);
    const { biosUuid } = await getVm(c, vm);

    const task = await c.call('Destroy_Task', { _this: vm });
    assert.ok(isMoRef(task) && task.type === 'Task');
    assert.equal(await waitForTask(c, task, 'Destroy_Task', { pollMs: 5 }), undefined);
    const info = (await props(task, ['info'])).get('info') as VimObject;
    assert.equal(info.descriptionId, 'VirtualMachine.destroy');
    assert.deepEqual(info.entity, vm);
    assert.equal(info.entityName, 'gone01');
    assert.equal(info.state, 'success');

    assert.equal(existsSync(dir), false, 'the directory is gone');
    await assert.rejects(getVm(c, vm), ManagedObjectNotFoundError);
    await assert.rejects(props(snap, ['vm']), ManagedObjectNotFoundError);
    await assert.rejects(destroy(vm), ManagedObjectNotFoundError);
    const children = (await props(prod, ['childEntity'])).get('childEntity') as MoRef[];
    assert.ok(!children.some((r) => r.value === vm.value));
    assert.ok(!(await listVms(c)).some((v) => v.ref.value === vm.value), 'gone from container views');
    const byUuid = await c.call('FindByUuid', {
      _this: c.serviceContent.searchIndex!,
      uuid: biosUuid!,
      vmSearch: true,
      instanceUuid: false,
    });
    assert.equal(byUuid, undefined);
    await assert.rejects(find('dc1/vm/prod/gone01'));
    const saved = JSON.parse(readFileSync(join(t.dir, 'state', 'inventory.json'), 'utf8')) as {
      vms: { moref: string }[];
    };
    assert.ok(!saved.vms.some((v) => v.moref === vm.value), 'saved without it');

    const again = await newVm('gone01');
    assert.notDeepEqual(again, vm);
    assert.equal((await getVm(c, again)).disks[0]!.fileName, '[ds1] gone01/gone01.vmdk');
    assert.equal(existsSync(join(dir, 'gone01-ctk.vmdk')), false, 'a fresh VM without the old files');
    await destroy(again);
  });

  test('a powered-on or suspended VM is InvalidPowerState, before any task', async () => {
    const old01 = await find('dc1/vm/prod/old01');
    await assert.rejects(
      destroy(old01),
      (err: unknown) =>
        err instanceof InvalidPowerStateError &&
        synchronous('InvalidPowerState', (f) => {
          assert.equal(f.requestedState, 'poweredOff');
          assert.equal(f.existingState, 'poweredOn');
        })(err),
    );
    await assert.rejects(
      destroy(await find('dc1/vm/susp01')),
      synchronous('InvalidPowerState', (f) => assert.equal(f.existingState, 'suspended')),
    );
    assert.equal((await getVm(c, old01)).name, 'old01');
    assert.ok(existsSync(dirOf('old01')));
  });

  test('a proxy VM is InvalidState; a VM on a free-licence host is RestrictedVersion', async () => {
    await assert.rejects(
      destroy(await find('dc1/vm/proxy02')),
      (err: unknown) =>
        err instanceof InvalidStateError &&
        !(err instanceof InvalidPowerStateError) &&
        synchronous('InvalidState')(err),
    );
    assert.ok(existsSync(dirOf('proxy02')));
    await assert.rejects(
      destroy(await find('dc1/vm/free01')),
      (err: unknown) => err instanceof RestrictedVersionError && synchronous('RestrictedVersion')(err),
    );
    assert.ok(existsSync(join(t.dir, 'datastores', 'ds3', 'free01')));
    await assert.rejects(destroy(prod), synchronous('NotSupported'));
  });

  test('a disk of the VM hot-added to the proxy is FileLocked; after the detach it is destroyed', async () => {
    const vm = await newVm('locked01');
    const snap = await runTask(
      c,
      'CreateSnapshot_Task',
      { _this: vm, name: 'backup', memory: false, quiesce: false },
      { pollMs: 5 },
    );
    assert.ok(isMoRef(snap));
    const proxy = await find('dc1/vm/proxy01');
    // The snapshot's frozen base, as a backup attaches it.
    const att = await attachDisk(c, proxy, { fileName: '[ds1] locked01/locked01.vmdk', controllerKey: 1001 });
    await assert.rejects(
      destroy(vm),
      (err: unknown) =>
        err instanceof FileLockedError &&
        synchronous('FileLocked', (f) => assert.equal(f.file, '[ds1] locked01/locked01.vmdk'))(err),
    );
    assert.ok(existsSync(join(dirOf('locked01'), 'locked01-000001.vmdk')));
    assert.equal((await getVm(c, vm)).name, 'locked01');
    await detachDisk(c, proxy, att.disk.key);
    await destroy(vm);
    assert.equal(existsSync(dirOf('locked01')), false);
    await assert.rejects(getVm(c, vm), ManagedObjectNotFoundError);
  });

  test('a lock taken while the task runs fails the task with FileLocked', async () => {
    const vm = await newVm('locked02');
    const proxy = await find('dc1/vm/proxy01');
    const world = t.lab.world;
    const duration = world.taskDurationMs;
    // Long enough that the task still runs after the two steps below however slow the machine
    // (each a call or two); the test then waits the rest of it out.
    world.taskDurationMs = 3000;
    let record: AttachRecord | undefined;
    let task: VimValue | undefined;
    try {
      task = await c.call('Destroy_Task', { _this: vm });
      assert.ok(isMoRef(task));
      // Another task on the VM meanwhile is TaskInProgress.
      await assert.rejects(destroy(vm), (err: unknown) => err instanceof TaskInProgressError);
      // The lab VDDK hot-adds the disk while the task runs.
      record = createAttachRecord(t.dir, {
        vm: proxy.value,
        controllerKey: 1001,
        unitNumber: 0,
        fileName: '[ds1] locked02/locked02.vmdk',
        diskUuid: '',
        capacityBytes: 1024 * 1024,
        diskMode: 'independent_nonpersistent',
        attachedBy: 'vddk-hotadd',
        sourceVm: vm.value,
        snapshot: '',
        pid: process.pid,
        connectionId: 'test',
      });
      await assert.rejects(waitForTask(c, task, 'Destroy_Task', { pollMs: 5 }), (err: unknown) => {
        assert.ok(err instanceof FileLockedError, String(err));
        assert.equal(err.fault.file, '[ds1] locked02/locked02.vmdk');
        assert.deepEqual(err.task, task);
        return true;
      });
    } finally {
      world.taskDurationMs = duration;
    }
    assert.ok(existsSync(join(dirOf('locked02'), 'locked02.vmdk')));
    assert.equal((await getVm(c, vm)).name, 'locked02');
    deleteAttachRecord(record!);
    await destroy(vm);
    assert.equal(existsSync(dirOf('locked02')), false);
  });

  test('a VM with disks of other VMs attached is InvalidState until they are detached', async () => {
    const vm = await newVm('holder01');
    const att = await attachDisk(c, vm, { fileName: '[ds1] old01/old01.vmdk', controllerKey: 1000 });
    await assert.rejects(
      destroy(vm),
      synchronous('InvalidState', (f) => assert.equal(f._type, 'InvalidState')),
    );
    await assert.rejects(destroy(vm), /detach them first/);
    await detachDisk(c, vm, att.disk.key);
    await destroy(vm);
    assert.equal(existsSync(dirOf('holder01')), false);
    assert.ok(existsSync(join(dirOf('old01'), 'old01.vmdk')), 'the attached disk is not deleted');
    assert.equal(existsSync(join(t.dir, 'attached', vm.value)), false);
  });
});

describe('CreateVM_Task with network cards and firmware', () => {
  const nic = (type: string, backing?: VimObject, extra: Record<string, VimValue> = {}): VimObject => ({
    _type: 'VirtualDeviceConfigSpec',
    operation: 'add',
    device: {
      _type: type,
      key: -300,
      backing,
      connectable: {
        _type: 'VirtualDeviceConnectInfo',
        startConnected: true,
        allowGuestControl: true,
        connected: false,
      },
      addressType: 'generated',
      ...extra,
    },
  });
  const net = (deviceName: string, network?: MoRef): VimObject => ({
    _type: 'VirtualEthernetCardNetworkBackingInfo',
    deviceName,
    ...(network ? { network } : {}),
  });

  test('each host has "VM Network" (HostSystem.network, Network.name and .host)', async () => {
    const nets = (await props(esx1, ['network'])).get('network') as MoRef[];
    assert.equal(nets.length, 1);
    const p = await props(nets[0]!, ['name', 'host']);
    assert.equal(p.get('name'), 'VM Network');
    assert.ok((p.get('host') as MoRef[]).some((h) => h.value === esx1.value));
    const two = (await props(esx2, ['network'])).get('network') as MoRef[];
    assert.deepEqual(await Promise.all(two.map(async (n) => (await props(n, ['name'])).get('name'))), [
      'VM Network',
      'backend',
    ]);
  });

  test('a NIC on a network of the host gets a generated MAC; one without a backing is not connected; EFI is kept', async () => {
    const vmNet = ((await props(esx1, ['network'])).get('network') as MoRef[])[0]!;
    const result = await createVm(prod, {
      ...config('nic01', '[ds1]', [
        nic('VirtualVmxnet3', net('VM Network', vmNet)),
        nic('VirtualE1000e', net('VM Network')),
        nic('VirtualE1000'),
      ]),
      firmware: 'efi',
    });
    assert.ok(isMoRef(result));
    const vm = await getVm(c, result);
    assert.equal(vm.firmware, 'efi');
    assert.deepEqual(
      vm.nics.map((n) => [
        n.type,
        n.network?.kind === 'standard' ? [n.network.name, n.network.moref] : n.network,
        n.startConnected,
        n.addressType,
      ]),
      [
        ['VirtualVmxnet3', ['VM Network', vmNet.value], true, 'generated'],
        ['VirtualE1000e', ['VM Network', vmNet.value], true, 'generated'],
        ['VirtualE1000', undefined, false, 'generated'],
      ],
    );
    const macs = vm.nics.map((n) => n.macAddress ?? '');
    assert.ok(
      macs.every((m) => /^00:50:56:[89ab][0-9a-f]:[0-9a-f]{2}:[0-9a-f]{2}$/.test(m)),
      macs.join(),
    );
    assert.equal(new Set(macs).size, 3);
    const others = (await listVms(c)).filter((v) => v.ref.value !== result.value).flatMap((v) => v.nics);
    assert.ok(!others.some((n) => macs.includes(n.macAddress ?? '')), 'MACs are unique in the lab');
    // Without firmware in the spec: bios, as vCenter's default for the lab's guest types.
    const plain = await createVm(prod, config('nic02', '[ds1]', []));
    assert.equal((await getVm(c, plain as MoRef)).firmware, 'bios');
  });

  test('a network the host does not have, or a moref of another network, is InvalidDeviceSpec naming both', async () => {
    await assert.rejects(
      createVm(prod, config('nic03', '[ds1]', [nic('VirtualVmxnet3', net('backend'))])),
      fault('InvalidDeviceSpec', (f, err) => {
        assert.equal(f.deviceIndex, 0);
        assert.equal(f.property, 'device.backing.deviceName');
        assert.match(err.message, /host esx1 has no network "backend"/);
      }),
    );
    await assert.rejects(
      createVm(
        prod,
        config('nic03', '[ds1]', [nic('VirtualVmxnet3', net('VM Network', moref('Network', 'network-999')))]),
      ),
      fault('InvalidDeviceSpec', (f) => assert.equal(f.property, 'device.backing.network')),
    );
    await assert.rejects(
      createVm(
        prod,
        config('nic03', '[ds1]', [
          nic('VirtualVmxnet3', undefined, { addressType: 'manual', macAddress: '01:00:5e:00:00:01' }),
        ]),
      ),
      fault('InvalidDeviceSpec', (f) => assert.equal(f.property, 'device.macAddress')),
    );
    await assert.rejects(
      createVm(prod, { ...config('nic03', '[ds1]', []), firmware: 'uefi' }),
      fault('InvalidArgument', (f) => assert.equal(f.invalidProperty, 'firmware')),
    );
    assert.equal(existsSync(join(t.dir, 'datastores', 'ds1', 'nic03')), false);
  });

  test('a distributed port group backing is NotFound: the lab has no distributed switch (as vcsim for an unknown one)', async () => {
    const dvs: VimObject = {
      _type: 'VirtualEthernetCardDistributedVirtualPortBackingInfo',
      port: {
        _type: 'DistributedVirtualSwitchPortConnection',
        switchUuid: '50 1f',
        portgroupKey: 'dvportgroup-9',
      },
    };
    await assert.rejects(
      createVm(prod, config('nic04', '[ds1]', [nic('VirtualVmxnet3', dvs)])),
      fault('NotFound', (_f, err) => assert.match(err.message, /DVS 50 1f cannot be found/)),
    );
  });
});
