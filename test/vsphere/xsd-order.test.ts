import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { after, before, test } from 'node:test';
import { queryChangedAreas } from '../../src/vsphere/cbt.js';
import { VimClient } from '../../src/vsphere/client.js';
import { createVm, destroyVm, placementFor } from '../../src/vsphere/vm-lifecycle.js';
import { hostNetworks, placeNics } from '../../src/vsphere/nics.js';
import { attachDisk, detachDisk, readExtraConfig, writeExtraConfig } from '../../src/vsphere/devices.js';
import {
  findByInventoryPath,
  findSelfVm,
  findVmByInstanceUuid,
  findVmByPath,
  getVm,
  listDatastores,
  listHosts,
  listVms,
} from '../../src/vsphere/inventory.js';
import { consolidateDisks, createSnapshot, enableCbt, removeSnapshot } from '../../src/vsphere/snapshots.js';
import { schemaOperations, schemaTypes } from '../../src/vsphere/wire/schema.js';
import { withLab, type TestLab } from '../lab/support.js';
import { bodyElement, checkOrder, checkRequest, typesUsed } from './xml-check.js';

/**
 * vcsim does not check element order; vCenter does. This drives every operation the client can
 * send against the lab, records the XML node-soap put on the wire, and checks each request
 * against the WSDL's XSD sequences (and each lab answer too).
 */

let t: TestLab;
const requests: { method: string; xml: string }[] = [];
const responses: { method: string; xml: string }[] = [];

before(async () => {
  t = await withLab();
  const c = await VimClient.connect({
    url: t.lab.url,
    username: t.lab.username,
    password: t.lab.password,
    fingerprint256: t.lab.fingerprint256,
    onExchange: (method, req, res) => {
      requests.push({ method, xml: req });
      responses.push({ method, xml: res });
    },
  });
  const web = await findVmByPath(c, 'dc1/vm/web01');
  const db = await findVmByPath(c, 'dc1/vm/db01');
  const proxy = await findVmByPath(c, 'dc1/vm/proxy01');
  // A policy's folder by inventory path (govc's notation), and a path that leads nowhere (no returnval).
  assert.equal((await findByInventoryPath(c, '/dc1/vm'))?.type, 'Folder');
  assert.equal(await findByInventoryPath(c, '/dc1/vm/no-such-folder'), undefined);
  const info = await getVm(c, web);
  await findVmByInstanceUuid(c, info.instanceUuid!);
  await findSelfVm(c, { productUuid: info.biosUuid! });
  await listVms(c, { pageSize: 2 });
  await listHosts(c);
  await listDatastores(c);
  await enableCbt(c, db);
  await writeExtraConfig(c, web, { 'vbproxy.x': '1' });
  await readExtraConfig(c, web);
  const s = await createSnapshot(c, web, { name: 'n', description: 'd', quiesce: true });
  const d = s.disks[0]!;
  await queryChangedAreas(c, {
    vm: web,
    snapshot: s.ref,
    deviceKey: d.key,
    capacityBytes: d.capacityBytes,
    changeId: '*',
  });
  const att = await attachDisk(c, proxy, {
    fileName: d.fileName,
    controllerKey: 1001,
    marker: { key: 'scsi1:0', value: 'job|vm|snap|t' },
  });
  await detachDisk(c, proxy, att.disk.key, { markerKey: 'scsi1:0' });
  await removeSnapshot(c, s.ref);
  await consolidateDisks(c, web);
  const ds = /^\[([^\]]+)\]/.exec(info.disks[0]!.fileName)![1]!;
  const place = await placementFor(c, ds);
  const nics = placeNics(
    [
      ...info.nics,
      { type: 'VirtualE1000e', label: 'gone', network: { kind: 'standard', name: 'no-such-network' } },
    ],
    await hostNetworks(c, place.host),
  );
  const copy = await createVm(c, {
    name: 'web01-copy',
    ...place,
    datastore: ds,
    firmware: 'efi',
    controllers: [{ key: 1000, type: 'VirtualLsiLogicController', busNumber: 0 }],
    disks: [{ controllerKey: 1000, unitNumber: 0, capacityBytes: 1024 * 1024 }],
    nics,
  });
  await destroyVm(c, copy.ref);
  // A distributed port group backing goes on the wire too (the lab has no distributed switch).
  await assert.rejects(
    createVm(c, {
      name: 'web01-dvs',
      ...place,
      datastore: ds,
      controllers: [],
      disks: [],
      nics: [
        {
          type: 'VirtualVmxnet3',
          label: 'dvs',
          startConnected: true,
          backing: { kind: 'distributed', switchUuid: '50 1f 2a', portgroupKey: 'dvportgroup-9' },
          unconnected: undefined,
        },
      ],
    }),
    /NotFound/,
  );
  await c.keepAlive();
  await c.close();
  c.transport.onExchange = undefined;
});
after(async () => {
  await t.close();
});

test('every operation of the subset WSDL was sent', () => {
  const sent = new Set(requests.map((r) => r.method));
  assert.deepEqual(
    [...schemaOperations.keys()].filter((m) => !sent.has(m)),
    [],
  );
});

test('every request follows the XSD sequence order of its types', () => {
  for (const r of requests) {
    const { errors } = checkRequest(r.xml);
    assert.deepEqual(errors, [], `${r.method}: ${r.xml}`);
  }
});

test('the requests cover every polymorphic request type the client sends', () => {
  const used = new Set<string>();
  for (const r of requests) {
    const el = bodyElement(r.xml);
    typesUsed(el, schemaOperations.get(el.name)!.requestType, used);
  }
  for (const type of [
    'VirtualMachineConfigSpec',
    'VirtualDeviceConfigSpec',
    'VirtualDisk',
    'VirtualDiskFlatVer2BackingInfo',
    'VirtualMachineFileInfo',
    'VirtualLsiLogicController',
    'VirtualVmxnet3',
    'VirtualE1000e',
    'VirtualEthernetCardNetworkBackingInfo',
    'VirtualEthernetCardDistributedVirtualPortBackingInfo',
    'DistributedVirtualSwitchPortConnection',
    'VirtualDeviceConnectInfo',
    'OptionValue',
    'PropertyFilterSpec',
    'PropertySpec',
    'ObjectSpec',
    'TraversalSpec',
    'RetrieveOptions',
    ...[...schemaOperations.values()].map((o) => o.requestType),
  ]) {
    assert.ok(used.has(type), `no request used ${type}`);
  }
});

test('the checker itself rejects out-of-order and unknown elements', () => {
  const bad =
    '<Envelope><Body><ReconfigVM_Task><_this type="VirtualMachine">vm-1</_this><spec>' +
    '<extraConfig><key>a</key><value xsi:type="xsd:string">b</value></extraConfig>' +
    '<deviceChange><operation>add</operation><device xsi:type="VirtualDisk"><key>1</key><controllerKey>1</controllerKey>' +
    '<backing xsi:type="VirtualDiskFlatVer2BackingInfo"><diskMode>persistent</diskMode><fileName>x</fileName></backing>' +
    '<capacityInKB>0</capacityInKB><bogus/></device></deviceChange></spec></ReconfigVM_Task></Body></Envelope>';
  const { errors } = checkRequest(bad);
  assert.ok(
    errors.some((e) => /deviceChange is out of XSD order/.test(e)),
    errors.join('\n'),
  );
  assert.ok(
    errors.some((e) => /backing is out of XSD order/.test(e)),
    errors.join('\n'),
  );
  assert.ok(
    errors.some((e) => /fileName is out of XSD order/.test(e)),
    errors.join('\n'),
  );
  assert.ok(
    errors.some((e) => /bogus is not a field/.test(e)),
    errors.join('\n'),
  );
});

test('every lab answer follows the XSD sequence order too', () => {
  for (const r of responses) {
    if (!r.xml.includes('Response')) continue;
    const el = bodyElement(r.xml);
    const op = schemaOperations.get(el.name.replace(/Response$/, ''))!;
    for (const child of el.children) {
      assert.equal(child.name, op.returns?.name);
      assert.deepEqual(checkOrder(child, op.returns!.type, `${el.name}.returnval`), [], r.xml.slice(0, 2000));
    }
  }
});

test('govmomi field order: every type of the subset is a subsequence of vim25 (govmomi types.go)', (tc) => {
  const path = '/usr/share/gocode/src/github.com/vmware/govmomi/vim25/types/types.go';
  if (!existsSync(path)) {
    if (process.env.CI === 'true')
      assert.fail(`${path} is missing (Debian package golang-github-vmware-govmomi-dev)`);
    tc.skip('govmomi sources are not installed');
    return;
  }
  const go = readFileSync(path, 'utf8');
  let checked = 0;
  for (const def of schemaTypes.values()) {
    if (def.name.startsWith('ArrayOf')) continue;
    const m = new RegExp(`\\ntype ${def.name} struct \\{\\n([\\s\\S]*?)\\n\\}`).exec(go);
    if (!m) continue;
    const order = [...m[1]!.matchAll(/xml:"([^",]+)/g)].map((x) => x[1]!);
    let pos = -1;
    for (const f of def.own) {
      const i = order.indexOf(f.name);
      assert.ok(i >= 0, `${def.name}.${f.name} is not a vim25 field`);
      assert.ok(i > pos, `${def.name}.${f.name} is out of vim25 order`);
      pos = i;
    }
    checked++;
  }
  assert.ok(checked > 60, `only ${checked} types checked`);
});
