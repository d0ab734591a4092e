import { test } from 'node:test';
import assert from 'node:assert/strict';
import { JobError } from '../../src/jobs/errors.js';
import { datastoreOf, newVmLayout, parseVmConfig, type VmConfig } from '../../src/jobs/vm-config.js';

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
