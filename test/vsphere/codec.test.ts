import assert from 'node:assert/strict';
import { test } from 'node:test';
import { loadWsdl } from '../../src/vsphere/transport.js';
import { decodeReturn, encodeRequest, VimEncodeError } from '../../src/vsphere/wire/codec.js';
import { schemaOperations } from '../../src/vsphere/wire/schema.js';
import { moref, type VimObject } from '../../src/vsphere/wire/values.js';

const ENV = (body: string): string =>
  '<?xml version="1.0"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" ' +
  'xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">' +
  `<soapenv:Body>${body}</soapenv:Body></soapenv:Envelope>`;

async function decode(op: string, inner: string): Promise<unknown> {
  const wsdl = await loadWsdl();
  const parsed = wsdl.xmlToObject(ENV(`<${op}Response xmlns="urn:vim25">${inner}</${op}Response>`)) as {
    Body: Record<string, unknown>;
  };
  return decodeReturn(parsed.Body[`${op}Response`], schemaOperations.get(op)!.returns, op);
}

test('longs beyond 2^53 stay exact, safe ones are numbers', async () => {
  const r = (await decode(
    'QueryChangedDiskAreas',
    '<returnval><startOffset>0</startOffset><length>9007199254740993</length>' +
      '<changedArea><start>4096</start><length>512</length></changedArea></returnval>',
  )) as VimObject;
  assert.equal(r.length, 9007199254740993n);
  assert.equal(r.startOffset, 0);
  const [area] = r.changedArea as VimObject[];
  assert.deepEqual(area, { _type: 'DiskChangeExtent', start: 4096, length: 512 });
  const req = encodeRequest('QueryChangedDiskAreasRequestType', {
    _this: moref('VirtualMachine', 'vm-1'),
    deviceKey: 2000,
    startOffset: 9007199254740993n,
    changeId: '*',
  });
  assert.deepEqual(req.startOffset, '9007199254740993');
});

test('a single item of an array field is still an array; anyType primitives and enums are typed', async () => {
  const r = (await decode(
    'RetrievePropertiesEx',
    '<returnval><objects><obj type="VirtualMachine">vm-1</obj>' +
      '<propSet><name>config.hardware.device</name><val xsi:type="ArrayOfVirtualDevice">' +
      '<VirtualDevice xsi:type="VirtualDisk"><key>2000</key><backing xsi:type="VirtualDiskFlatVer2BackingInfo">' +
      '<fileName>[ds1] a/a.vmdk</fileName><diskMode>persistent</diskMode></backing><capacityInKB>1024</capacityInKB></VirtualDevice></val></propSet>' +
      '<propSet><name>n</name><val xsi:type="xsd:int">4</val></propSet>' +
      '<propSet><name>b</name><val xsi:type="xsd:boolean">true</val></propSet>' +
      '<propSet><name>p</name><val xsi:type="VirtualMachinePowerState">poweredOn</val></propSet>' +
      '<propSet><name>h</name><val type="HostSystem" xsi:type="ManagedObjectReference">host-1</val></propSet>' +
      '</objects></returnval>',
  )) as VimObject;
  const objects = r.objects as VimObject[];
  assert.equal(objects.length, 1);
  const props = objects[0]!.propSet as VimObject[];
  const val = (name: string): unknown => props.find((p) => p.name === name)!.val;
  const devices = val('config.hardware.device') as VimObject[];
  assert.ok(Array.isArray(devices) && devices.length === 1);
  assert.equal(devices[0]!._type, 'VirtualDisk');
  assert.equal((devices[0]!.backing as VimObject)._type, 'VirtualDiskFlatVer2BackingInfo');
  assert.equal(val('n'), 4);
  assert.equal(val('b'), true);
  assert.equal(val('p'), 'poweredOn');
  assert.deepEqual(val('h'), moref('HostSystem', 'host-1'));
});

test('requests refuse unknown fields, missing required fields and wrong subtypes', () => {
  const vm = moref('VirtualMachine', 'vm-1');
  assert.throws(
    () =>
      encodeRequest('CreateSnapshotRequestType', {
        _this: vm,
        name: 'x',
        memory: false,
        quiesce: false,
        bogus: 1,
      }),
    VimEncodeError,
  );
  assert.throws(
    () => encodeRequest('CreateSnapshotRequestType', { _this: vm, name: 'x', memory: false }),
    /quiesce: required/,
  );
  assert.throws(
    () =>
      encodeRequest('ReconfigVMRequestType', {
        _this: vm,
        spec: {
          _type: 'VirtualMachineConfigSpec',
          deviceChange: [{ _type: 'VirtualDeviceConfigSpec', device: { _type: 'OptionValue', key: 'k' } }],
        },
      }),
    /OptionValue is not a VirtualDevice/,
  );
});
