import { test } from 'node:test';
import assert from 'node:assert/strict';
import { JobError } from '../../src/jobs/errors.js';
import {
  datastoreOf,
  newVmLayout,
  parseVmConfig,
  vmConfigOf,
  type VmConfig,
} from '../../src/jobs/vm-config.js';
import { toVmInfo } from '../../src/vsphere/inventory.js';
import { creatableNics, nicDeviceSpec, placeNics, type HostNetwork } from '../../src/vsphere/nics.js';
import { moref, type VimObject, type VimValue } from '../../src/vsphere/wire/values.js';

const stored = (c: unknown): string => Buffer.from(JSON.stringify(c)).toString('base64');

const disk = (key: number, controllerKey: number, unitNumber: number, capacityBytes: number) => ({
  key,
  label: `Hard disk ${key}`,
  controllerKey,
  unitNumber,
  capacityBytes,
  fileName: `[ds2] web/web_${key}.vmdk`,
  diskMode: 'persistent',
});

test('a new VM gets the kept controllers (type, bus) and each chosen disk at its unit', () => {
  const config: VmConfig = {
    name: 'web',
    controllers: [
      { key: 1000, type: 'ParaVirtualSCSIController', busNumber: 0 },
      { key: 1001, type: 'VirtualLsiLogicSASController', busNumber: 1 },
    ],
    disks: [disk(2000, 1000, 0, 1 << 30), disk(2016, 1001, 3, 10_000_000), disk(2001, 1000, 1, 1 << 20)],
  };
  const back = parseVmConfig('p1', stored(config));
  const layout = newVmLayout(back, [2000, 2016]);
  assert.deepEqual(layout.controllers, config.controllers);
  assert.deepEqual(
    layout.disks.map((d) => [d.sourceKey, d.controllerKey, d.unitNumber, d.capacityBytes]),
    [
      [2000, 1000, 0, 1 << 30],
      [2016, 1001, 3, 10_000_384], // rounded up to whole KiB, as vSphere sizes disks
    ],
  );
});

test('a point kept before controllers were recorded restores onto LSI Logic controllers by key', () => {
  const legacy = { name: 'old', biosUuid: null, instanceUuid: null, disks: [disk(2017, 1001, 1, 1 << 20)] };
  const layout = newVmLayout(parseVmConfig('p2', stored(legacy)), [2017]);
  assert.deepEqual(layout.controllers, [{ key: 1001, type: 'VirtualLsiLogicController', busNumber: 1 }]);
  assert.equal(datastoreOf(legacy.disks[0]!.fileName), 'ds2');
});

test('a point without a VM configuration, or with one not understood, is refused with what to do', () => {
  assert.throws(
    () => parseVmConfig('p3', null),
    (e: unknown) =>
      e instanceof JobError &&
      e.code === 'RESTORE_NO_VM_CONFIG' &&
      /restore it to image files/.test(e.message),
  );
  assert.throws(
    () => parseVmConfig('p4', stored({ name: 'x', disks: [{ key: 'a' }] })),
    (e: unknown) =>
      e instanceof JobError &&
      /p4: its VM configuration is not one vbproxy understands \(disks\.0\.key/.test(e.message),
  );
});

const nic = (
  type: string,
  key: number,
  backing: VimObject | undefined,
  startConnected = true,
): VimObject => ({
  _type: type,
  key,
  deviceInfo: { _type: 'Description', label: `Network adapter ${key - 3999}`, summary: '' },
  backing,
  connectable: {
    _type: 'VirtualDeviceConnectInfo',
    startConnected,
    allowGuestControl: true,
    connected: startConnected,
  },
  controllerKey: 100,
  unitNumber: key - 3993,
  addressType: 'assigned',
  macAddress: `00:50:56:80:00:${String(key - 3990)}`,
});

test('a backup keeps each NIC (type, key, network, startConnected, address type, never the MAC) and the firmware', () => {
  const devices = [
    nic('VirtualVmxnet3', 4000, {
      _type: 'VirtualEthernetCardNetworkBackingInfo',
      deviceName: 'VM Network',
      network: moref('Network', 'network-7'),
    }),
    nic(
      'VirtualE1000e',
      4001,
      {
        _type: 'VirtualEthernetCardDistributedVirtualPortBackingInfo',
        port: {
          _type: 'DistributedVirtualSwitchPortConnection',
          switchUuid: '50 1f 2a',
          portgroupKey: 'dvportgroup-9',
          portKey: '12',
        },
      },
      false,
    ),
    nic('VirtualVmxnet2', 4002, { _type: 'VirtualEthernetCardOpaqueNetworkBackingInfo' }),
    { _type: 'VirtualLsiLogicController', key: 1000, busNumber: 0, sharedBus: 'noSharing' },
  ];
  const info = toVmInfo(
    moref('VirtualMachine', 'vm-1'),
    new Map<string, VimValue>([
      ['name', 'web'],
      ['config.firmware', 'efi'],
      ['config.hardware.device', devices],
    ]),
  );
  const config = parseVmConfig('p5', stored(vmConfigOf(info)));
  assert.equal(config.firmware, 'efi');
  assert.deepEqual(config.nics, [
    {
      key: 4000,
      type: 'VirtualVmxnet3',
      label: 'Network adapter 1',
      startConnected: true,
      addressType: 'assigned',
      network: { kind: 'standard', name: 'VM Network', moref: 'network-7' },
    },
    {
      key: 4001,
      type: 'VirtualE1000e',
      label: 'Network adapter 2',
      startConnected: false,
      addressType: 'assigned',
      network: { kind: 'distributed', switchUuid: '50 1f 2a', portgroupKey: 'dvportgroup-9' },
    },
    {
      key: 4002,
      type: 'VirtualVmxnet2',
      label: 'Network adapter 3',
      startConnected: true,
      addressType: 'assigned',
      network: { kind: 'other', backingType: 'VirtualEthernetCardOpaqueNetworkBackingInfo' },
    },
  ]);
  assert.ok(!JSON.stringify(config).includes('00:50:56'), 'no MAC address is kept');
});

test('a point kept before NICs and firmware were recorded still parses, with none of either', () => {
  const legacy = {
    name: 'old',
    guestId: 'debian11_64Guest',
    numCPU: 2,
    memoryMB: 2048,
    controllers: [{ key: 1000, type: 'ParaVirtualSCSIController', busNumber: 0 }],
    disks: [disk(2000, 1000, 0, 1 << 20)],
  };
  const config = parseVmConfig('p6', stored(legacy));
  assert.equal(config.nics, undefined);
  assert.equal(config.firmware, undefined);
  assert.throws(
    () =>
      parseVmConfig(
        'p7',
        stored({ ...legacy, nics: [{ key: 1, type: 'VirtualE1000', network: { kind: 'x' } }] }),
      ),
    /p7: its VM configuration is not one vbproxy understands \(nics\.0\.network/,
  );
});

test('NICs are matched to the placement host: standard by name, distributed by key and switch, else unconnected', () => {
  const networks: HostNetwork[] = [
    { ref: moref('Network', 'network-1'), name: 'VM Network' },
    {
      ref: moref('DistributedVirtualPortgroup', 'dvportgroup-9'),
      name: 'DPortGroup',
      portgroupKey: 'dvportgroup-9',
      switchUuid: '50 1f 2a',
    },
  ];
  const placed = placeNics(
    [
      {
        type: 'VirtualVmxnet3',
        label: 'a',
        startConnected: false,
        network: { kind: 'standard', name: 'VM Network' },
      },
      { type: 'VirtualE1000', label: 'b', network: { kind: 'standard', name: 'backend' } },
      {
        type: 'VirtualE1000e',
        label: 'c',
        network: { kind: 'distributed', switchUuid: '50 1f 2a', portgroupKey: 'dvportgroup-9' },
      },
      {
        type: 'VirtualE1000e',
        label: 'd',
        network: { kind: 'distributed', switchUuid: '99', portgroupKey: 'dvportgroup-9' },
      },
      { type: 'VirtualE1000e', label: 'e', network: { kind: 'standard', name: 'DPortGroup' } },
      {
        type: 'VirtualVmxnet3',
        label: 'f',
        network: { kind: 'other', backingType: 'VirtualEthernetCardOpaqueNetworkBackingInfo' },
      },
      { type: 'VirtualVmxnet3', label: 'g', network: null },
    ],
    networks,
  );
  assert.deepEqual(
    placed.map((p) => [p.label, p.backing?.kind, p.startConnected]),
    [
      ['a', 'standard', false],
      ['b', undefined, false],
      ['c', 'distributed', true],
      ['d', undefined, false],
      ['e', undefined, false],
      ['f', undefined, false],
      ['g', undefined, false],
    ],
  );
  assert.match(placed[1]!.unconnected!, /placement host has no network "backend"/);
  assert.match(placed[3]!.unconnected!, /no distributed port group dvportgroup-9 of switch 99/);
  assert.match(placed[5]!.unconnected!, /does not rebuild a VirtualEthernetCardOpaqueNetworkBackingInfo/);
  // The device spec: a generated MAC, the same type, the backing, and never connected without a network.
  const spec = nicDeviceSpec(placed[0]!, -300);
  assert.deepEqual(spec.device, {
    _type: 'VirtualVmxnet3',
    key: -300,
    backing: {
      _type: 'VirtualEthernetCardNetworkBackingInfo',
      deviceName: 'VM Network',
      network: moref('Network', 'network-1'),
    },
    connectable: {
      _type: 'VirtualDeviceConnectInfo',
      startConnected: false,
      allowGuestControl: true,
      connected: false,
    },
    addressType: 'generated',
  });
  const none = nicDeviceSpec(placed[1]!, -301).device as VimObject;
  assert.equal(none.backing, undefined);
  assert.equal((none.connectable as VimObject).startConnected, false);
});

test('an SR-IOV card is left out of a new VM (and reported), the other cards are created in order', () => {
  const nics = [
    { key: 4000, type: 'VirtualVmxnet3', label: 'Network adapter 1' },
    { key: 4001, type: 'VirtualSriovEthernetCard', label: 'Network adapter 2' },
    { key: 4002, type: 'VirtualE1000e', label: 'Network adapter 3' },
  ];
  const { create, skip } = creatableNics(nics);
  assert.deepEqual(
    create.map((n) => n.key),
    [4000, 4002],
  );
  assert.deepEqual(
    skip.map((n) => n.label),
    ['Network adapter 2'],
  );
});
