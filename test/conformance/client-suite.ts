import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { test } from 'node:test';
import type { VimClient } from '../../src/vsphere/client.js';
import { attachDisk, detachDisk, readExtraConfig, writeExtraConfig } from '../../src/vsphere/devices.js';
import { createVm, destroyVm, placementFor } from '../../src/vsphere/vm-lifecycle.js';
import { parseControllers } from '../../src/vsphere/disks.js';
import { ManagedObjectNotFoundError } from '../../src/vsphere/errors.js';
import { hostNetworks, placeNics, type KeptNic } from '../../src/vsphere/nics.js';
import {
  findByInventoryPath,
  findSelfVm,
  findVmByInstanceUuid,
  findVmByMoref,
  findVmsByBiosUuid,
  getVm,
  listDatastores,
  listHosts,
  listVms,
  type VmInfo,
} from '../../src/vsphere/inventory.js';
import { retrieveOne } from '../../src/vsphere/property.js';
import {
  createSnapshot,
  listSnapshots,
  removeSnapshot,
  snapshotDescription,
  snapshotName,
} from '../../src/vsphere/snapshots.js';

/**
 * The vSphere client suite that runs unchanged against vcsim and against the lab vSphere, for
 * everything vcsim implements. Target-specific facts come in through `ClientTarget`.
 */
export interface ClientTarget {
  readonly name: string;
  connect(): Promise<VimClient>;
  /** Maps a datastore path to a local file path, to prove a detach kept the file. */
  localFile(dsPath: string, datastores: { name: string; url: string }[]): string | undefined;
  /** The datacenter's name; below its vm folder the target has the folder `NESTED_FOLDER`. */
  readonly datacenter: string;
}

/** A nested VM folder every target has below its datacenter's vm folder. */
export const NESTED_FOLDER = 'conformance/nested';

function serialOf(uuid: string): string {
  const hex = uuid.replace(/-/g, '');
  const bytes = hex.match(/../g)!;
  return `VMware-${bytes.slice(0, 8).join(' ')}-${bytes.slice(8).join(' ')}`;
}

function swapped(uuid: string): string {
  const [a, b, c, ...rest] = uuid.split('-') as [string, string, string, ...string[]];
  const rev = (h: string): string => h.match(/../g)!.reverse().join('');
  return [rev(a), rev(b), rev(c), ...rest].join('-').toUpperCase();
}

export function registerClientSuite(target: ClientTarget): void {
  let client: VimClient;
  let vms: VmInfo[];

  test(`${target.name}: connect, negotiate the API version, list VMs with disks`, async () => {
    client = await target.connect();
    assert.match(client.serviceContent.about.apiVersion, /^\d+\.\d+/);
    assert.equal(client.serviceContent.about.apiType, 'VirtualCenter');
    vms = await listVms(client);
    assert.ok(vms.length >= 2, 'at least two VMs');
    const withDisk = vms.filter((v) => v.disks.length > 0);
    assert.ok(withDisk.length >= 2);
    for (const d of withDisk.flatMap((v) => v.disks)) {
      assert.ok(d.capacityBytes > 0);
      assert.match(d.fileName, /^\[[^\]]+\] .+\.vmdk$/);
      assert.ok(d.controllerKey >= 0 && d.unitNumber >= 0 && d.unitNumber !== 7);
    }
  });

  test(`${target.name}: paging returns the same VMs as one page`, async () => {
    const paged = await listVms(client, { pageSize: 1 });
    assert.deepEqual(paged.map((v) => v.ref.value).sort(), vms.map((v) => v.ref.value).sort());
  });

  test(`${target.name}: find a VM by instance UUID, BIOS UUID, moref, and itself by DMI data`, async () => {
    const vm = vms.find((v) => v.disks.length > 0 && v.instanceUuid && v.biosUuid)!;
    assert.equal((await findVmByInstanceUuid(client, vm.instanceUuid!)).value, vm.ref.value);
    assert.deepEqual(
      (await findVmsByBiosUuid(client, vm.biosUuid!)).map((r) => r.value),
      [vm.ref.value],
    );
    assert.equal((await findVmByMoref(client, vm.ref.value)).value, vm.ref.value);
    assert.equal((await findSelfVm(client, { productSerial: serialOf(vm.biosUuid!) })).value, vm.ref.value);
    assert.equal((await findSelfVm(client, { productUuid: swapped(vm.biosUuid!) })).value, vm.ref.value);
  });

  test(`${target.name}: FindByInventoryPath finds a datacenter, its folders, a nested folder and a VM; an unknown path is no value`, async () => {
    const dc = `/${target.datacenter}`;
    const dcRef = await findByInventoryPath(client, dc);
    assert.equal(dcRef?.type, 'Datacenter');
    const dcProps = await retrieveOne(client, dcRef, [
      'vmFolder',
      'hostFolder',
      'datastoreFolder',
      'networkFolder',
    ]);
    for (const [name, prop] of [
      ['vm', 'vmFolder'],
      ['host', 'hostFolder'],
      ['datastore', 'datastoreFolder'],
      ['network', 'networkFolder'],
    ] as const) {
      assert.deepEqual(
        await findByInventoryPath(client, `${dc}/${name}`),
        dcProps.props.get(prop),
        `${dc}/${name}`,
      );
    }
    // Without the leading slash (vim25's own notation) and with a trailing one: the same object.
    assert.deepEqual(
      await findByInventoryPath(client, `${target.datacenter}/vm/`),
      dcProps.props.get('vmFolder'),
    );

    const nested = await findByInventoryPath(client, `${dc}/vm/${NESTED_FOLDER}`);
    assert.equal(nested?.type, 'Folder');
    const nestedProps = await retrieveOne(client, nested, ['name', 'parent']);
    assert.equal(nestedProps.props.get('name'), NESTED_FOLDER.split('/').pop());
    const parent = await findByInventoryPath(client, `${dc}/vm/${NESTED_FOLDER.split('/')[0]!}`);
    assert.deepEqual(nestedProps.props.get('parent'), parent);

    const vm = vms.find((v) => !v.template)!;
    const vmParent = (await retrieveOne(client, vm.ref, ['parent'])).props.get('parent');
    assert.deepEqual(vmParent, dcProps.props.get('vmFolder'), `${vm.name} is directly in the vm folder`);
    assert.deepEqual(await findByInventoryPath(client, `${dc}/vm/${vm.name}`), vm.ref);

    for (const unknown of [
      `${dc}/vm/no-such-folder`,
      `${dc}/vm/${vm.name}/below-a-vm`,
      '/no-such-datacenter',
      '/',
    ]) {
      assert.equal(await findByInventoryPath(client, unknown), undefined, unknown);
    }
  });

  test(`${target.name}: a missing VM is ManagedObjectNotFound naming it`, async () => {
    await assert.rejects(findVmByMoref(client, 'vm-999999'), (err: unknown) => {
      assert.ok(err instanceof ManagedObjectNotFoundError);
      assert.match(err.message, /VirtualMachine vm-999999/);
      return true;
    });
  });

  test(`${target.name}: hosts and datastores`, async () => {
    const hosts = await listHosts(client);
    const ds = await listDatastores(client);
    assert.ok(hosts.length >= 1 && ds.length >= 1);
    assert.ok(hosts.every((h) => h.datastores.length >= 1));
    assert.ok(ds.every((d) => d.capacityBytes > 0 && d.name !== ''));
  });

  test(`${target.name}: tagged snapshot with quiesce, tree walk, removal`, async () => {
    const vm = vms.find((v) => v.disks.length > 0 && v.powerState === 'poweredOn')!;
    const tag = { jobId: 'job-42', proxy: 'vm-1', created: '2026-11-21T00:00:00Z' };
    const states: string[] = [];
    const snap = await createSnapshot(client, vm.ref, {
      name: snapshotName(tag),
      description: snapshotDescription(tag),
      quiesce: true,
      onProgress: (p) => states.push(p.state),
    });
    assert.equal(states[states.length - 1], 'success');
    assert.equal(snap.quiesced, true);
    assert.equal(snap.disks.length, vm.disks.length);
    const tree = await listSnapshots(client, vm.ref);
    const node = tree.find((n) => n.ref.value === snap.ref.value)!;
    assert.deepEqual(node.tag, tag);
    assert.equal(node.current, true);
    await removeSnapshot(client, snap.ref);
    assert.equal(
      (await listSnapshots(client, vm.ref)).some((n) => n.ref.value === snap.ref.value),
      false,
    );
  });

  test(`${target.name}: extraConfig markers are written, read and removed`, async () => {
    const vm = vms[0]!;
    await writeExtraConfig(client, vm.ref, { 'vbproxy.test.marker': 'job-7|vm-1' });
    assert.equal((await readExtraConfig(client, vm.ref)).get('vbproxy.test.marker'), 'job-7|vm-1');
    await writeExtraConfig(client, vm.ref, { 'vbproxy.test.marker': '' });
    assert.equal((await readExtraConfig(client, vm.ref)).has('vbproxy.test.marker'), false);
  });

  test(`${target.name}: attach another VM's disk on a free unit (never 7), detach keeping the file`, async () => {
    const [a, b] = vms.filter((v) => v.disks.length > 0);
    const target0 = a!;
    const source = b!.disks[0]!;
    const attached = await attachDisk(client, target0.ref, {
      fileName: source.fileName,
      diskMode: 'independent_nonpersistent',
      marker: { key: 'test', value: 'job-1' },
    });
    assert.notEqual(attached.unitNumber, 7);
    assert.equal(attached.disk.fileName, source.fileName);
    const after = await getVm(client, target0.ref);
    assert.ok(after.disks.some((d) => d.key === attached.disk.key));
    await detachDisk(client, target0.ref, attached.disk.key, { markerKey: 'test' });
    const detached = await getVm(client, target0.ref);
    assert.equal(
      detached.disks.some((d) => d.key === attached.disk.key),
      false,
    );
    const ds = await listDatastores(client);
    const local = target.localFile(source.fileName, ds);
    if (local !== undefined) assert.ok(existsSync(local), `${local} still exists after the detach`);
  });

  test(`${target.name}: create a VM with a SCSI controller and two thin disks, laid out as asked, and destroy it`, async () => {
    const MiB = 1024 * 1024;
    const ds = /^\[([^\]]+)\]/.exec(vms.find((v) => v.disks.length > 0)!.disks[0]!.fileName)![1]!;
    const place = await placementFor(client, ds);
    const spec = {
      name: `vbproxy-created-${process.pid}`,
      ...place,
      datastore: ds,
      guestId: 'otherLinux64Guest',
      numCPUs: 2,
      memoryMB: 1024,
      controllers: [{ key: 1, type: 'ParaVirtualSCSIController', busNumber: 0 }],
      disks: [
        { controllerKey: 1, unitNumber: 0, capacityBytes: 64 * MiB },
        { controllerKey: 1, unitNumber: 1, capacityBytes: 8 * MiB },
      ],
    };
    const vm = await createVm(client, spec);
    assert.equal(vm.name, spec.name);
    assert.equal(vm.powerState, 'poweredOff');
    assert.deepEqual([vm.guestId, vm.numCPU, vm.memoryMB], ['otherLinux64Guest', 2, 1024]);
    const ctrl = [...parseControllers(vm.devices).values()].find((c) => c.scsi && c.busNumber === 0);
    assert.ok(ctrl, 'a SCSI controller on bus 0');
    assert.equal(ctrl.type, 'ParaVirtualSCSIController');
    assert.deepEqual(
      vm.disks
        .filter((d) => d.controllerKey === ctrl.key)
        .map((d) => [d.unitNumber, d.capacityBytes, d.fileName.startsWith(`[${ds}]`)]),
      [
        [0, 64 * MiB, true],
        [1, 8 * MiB, true],
      ],
    );
    assert.ok(
      (await listVms(client)).some((v) => v.ref.value === vm.ref.value),
      'listed with the other VMs',
    );
    await destroyVm(client, vm.ref);
    await assert.rejects(getVm(client, vm.ref), ManagedObjectNotFoundError);
    assert.ok(!(await listVms(client)).some((v) => v.ref.value === vm.ref.value), 'gone after Destroy_Task');
  });

  test(`${target.name}: VMs report their network cards (type, network, MAC) and firmware`, async () => {
    const withNic = vms.filter((v) => v.nics.length > 0);
    assert.ok(withNic.length >= 2, 'at least two VMs with a NIC');
    for (const v of vms) assert.match(v.firmware ?? '', /^(bios|efi)$/, `${v.name} firmware`);
    for (const n of withNic.flatMap((v) => v.nics)) {
      assert.match(n.type, /^Virtual(E1000e?|Vmxnet[23]?|PCNet32)$/);
      assert.match(n.macAddress ?? '', /^([0-9a-f]{2}:){5}[0-9a-f]{2}$/);
      assert.ok(n.network?.kind === 'standard' || n.network?.kind === 'distributed', n.label);
    }
    const hosts = await listHosts(client);
    const nets = await hostNetworks(client, hosts[0]!.ref);
    assert.ok(
      nets.some((n) => n.name === 'VM Network' && n.ref.type === 'Network' && n.portgroupKey === undefined),
      'every host has "VM Network"',
    );
    for (const pg of nets.filter((n) => n.ref.type === 'DistributedVirtualPortgroup')) {
      assert.ok(pg.portgroupKey && pg.switchUuid, `${pg.name} has its key and switch UUID`);
    }
  });

  test(`${target.name}: create a VM with network cards (same type and network, new MAC) and EFI firmware`, async () => {
    const source = vms.find((v) => v.nics.some((n) => n.network?.kind === 'standard'));
    const ds = /^\[([^\]]+)\]/.exec(vms.find((v) => v.disks.length > 0)!.disks[0]!.fileName)![1]!;
    const place = await placementFor(client, ds);
    const nets = await hostNetworks(client, place.host);
    // A VM port group, not the switch's uplink port group (vcsim lists it first; vCenter refuses it).
    const dvpg = nets.find(
      (n) => n.portgroupKey !== undefined && n.switchUuid !== undefined && !/uplink/i.test(n.name),
    );
    const kept: KeptNic[] = [
      {
        type: 'VirtualVmxnet3',
        label: 'Network adapter 1',
        network: { kind: 'standard', name: 'VM Network' },
      },
      {
        type: 'VirtualE1000e',
        label: 'Network adapter 2',
        network: { kind: 'standard', name: 'no-such-net' },
      },
    ];
    if (dvpg) {
      kept.push({
        type: 'VirtualE1000',
        label: 'Network adapter 3',
        network: { kind: 'distributed', switchUuid: dvpg.switchUuid!, portgroupKey: dvpg.portgroupKey },
      });
    }
    const placed = placeNics(kept, nets);
    assert.deepEqual(
      placed.map((p) => [p.type, p.backing?.kind, p.startConnected]),
      [
        ['VirtualVmxnet3', 'standard', true],
        ['VirtualE1000e', undefined, false],
        ...(dvpg ? [['VirtualE1000', 'distributed', true]] : []),
      ],
    );
    assert.match(placed[1]!.unconnected ?? '', /no network "no-such-net"/);
    const vm = await createVm(client, {
      name: `vbproxy-nics-${process.pid}`,
      ...place,
      datastore: ds,
      firmware: 'efi',
      controllers: [{ key: 1, type: 'VirtualLsiLogicController', busNumber: 0 }],
      disks: [{ controllerKey: 1, unitNumber: 0, capacityBytes: 1024 * 1024 }],
      nics: placed,
    });
    try {
      assert.equal(vm.firmware, 'efi');
      assert.deepEqual(
        vm.nics.map((n) => [n.type, n.network?.kind === 'standard' ? n.network.name : n.network?.kind]),
        [
          ['VirtualVmxnet3', 'VM Network'],
          ['VirtualE1000e', undefined],
          ...(dvpg ? [['VirtualE1000', 'distributed']] : []),
        ],
      );
      const std = vm.nics[0]!.network;
      assert.equal(
        std?.kind === 'standard' ? std.moref : undefined,
        nets.find((n) => n.name === 'VM Network')!.ref.value,
      );
      assert.equal(vm.nics[0]!.startConnected, true);
      assert.equal(vm.nics[1]!.startConnected, false, 'a NIC without its network does not start connected');
      const macs = vm.nics.map((n) => n.macAddress);
      assert.ok(
        macs.every((m) => m !== undefined && /^([0-9a-f]{2}:){5}[0-9a-f]{2}$/.test(m)),
        macs.join(),
      );
      assert.equal(new Set(macs).size, macs.length, 'each NIC its own MAC');
      if (source) {
        for (const m of source.nics.map((n) => n.macAddress)) assert.ok(!macs.includes(m), `${m} copied`);
      }
      if (dvpg) {
        const d = vm.nics[2]!.network;
        assert.deepEqual(d?.kind === 'distributed' ? [d.switchUuid, d.portgroupKey] : [], [
          dvpg.switchUuid,
          dvpg.portgroupKey,
        ]);
      }
    } finally {
      await destroyVm(client, vm.ref);
    }
  });
}
