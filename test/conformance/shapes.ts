import { VimClient } from '../../src/vsphere/client.js';
import { findVmByInstanceUuid, listDatastores, listHosts, listVms } from '../../src/vsphere/inventory.js';
import { createSnapshot, listSnapshots, removeSnapshot } from '../../src/vsphere/snapshots.js';
import { schemaOperations } from '../../src/vsphere/wire/schema.js';
import { moref } from '../../src/vsphere/wire/values.js';
import { bodyElement, shape, type XmlElement } from '../vsphere/xml-check.js';

/**
 * Runs the same sequence of calls against a vSphere endpoint and returns the shape of every answer
 * (element paths with their xsi:types, restricted to what the subset schema declares), keyed by a
 * label per call and, for property collection, per property.
 */
export interface Endpoint {
  readonly url: string;
  readonly username: string;
  readonly password: string;
  readonly fingerprint256: string;
}

export type Shapes = Map<string, Set<string>>;

function add(shapes: Shapes, label: string, entries: Iterable<string>): void {
  const s = shapes.get(label) ?? new Set<string>();
  for (const e of entries) s.add(e);
  shapes.set(label, s);
}

function faultDetail(xml: string): XmlElement | undefined {
  const body = bodyElement(xml);
  if (body.name !== 'Fault') return undefined;
  return body.children.find((c) => c.name === 'detail')?.children[0];
}

export async function collectShapes(ep: Endpoint): Promise<Shapes> {
  const shapes: Shapes = new Map();
  let step = '';
  const onExchange = (method: string, _req: string, res: string): void => {
    if (!res) return;
    const detail = faultDetail(res);
    if (detail) {
      add(shapes, `${step}:${method}:fault`, shape(detail, 'xsd:anyType'));
      return;
    }
    const body = bodyElement(res);
    const op = schemaOperations.get(method)!;
    for (const rv of body.children) {
      if (method === 'RetrievePropertiesEx' || method === 'ContinueRetrievePropertiesEx') {
        for (const oc of rv.children.filter((c) => c.name === 'objects')) {
          const type = oc.children.find((c) => c.name === 'obj')?.attrs.type ?? '?';
          for (const ps of oc.children.filter((c) => c.name === 'propSet')) {
            const name = ps.children.find((c) => c.name === 'name')?.text ?? '?';
            const val = ps.children.find((c) => c.name === 'val');
            if (val) add(shapes, `${step}:${type}.${name}`, shape(val, 'xsd:anyType'));
          }
        }
      } else if (op.returns) {
        add(shapes, `${step}:${method}`, shape(rv, op.returns.type));
      }
    }
  };
  step = 'connect';
  const c = await VimClient.connect({ ...ep, onExchange });
  try {
    step = 'inventory';
    const vms = await listVms(c);
    await listHosts(c);
    await listDatastores(c);
    const vm = vms.find((v) => v.disks.length > 0 && v.powerState === 'poweredOn')!;
    step = 'find';
    await findVmByInstanceUuid(c, vm.instanceUuid!);
    step = 'snapshot';
    const snap = await createSnapshot(c, vm.ref, {
      name: 'shape',
      description: 'shape test',
      quiesce: false,
    });
    await listSnapshots(c, vm.ref);
    step = 'remove';
    await removeSnapshot(c, snap.ref);
    step = 'missing';
    await c
      .call('RetrievePropertiesEx', {
        _this: c.serviceContent.propertyCollector,
        specSet: [
          {
            _type: 'PropertyFilterSpec',
            propSet: [{ _type: 'PropertySpec', type: 'VirtualMachine', pathSet: ['name'] }],
            objectSet: [{ _type: 'ObjectSpec', obj: moref('VirtualMachine', 'vm-987654') }],
          },
        ],
        options: { _type: 'RetrieveOptions' },
      })
      .catch(() => undefined);
  } finally {
    step = 'logout';
    await c.close();
  }
  step = 'unauthenticated';
  await c.transport
    .invoke('CurrentTime', { _this: moref('ServiceInstance', 'ServiceInstance') })
    .catch(() => undefined);
  return shapes;
}
