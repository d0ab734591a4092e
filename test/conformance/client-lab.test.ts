import { after, before } from 'node:test';
import { NESTED_FOLDER, registerClientSuite } from './client-suite.js';
import { testDefinition, withLab, type TestLab } from '../lab/support.js';

let t: TestLab;
before(async () => {
  // The lab makes VM folders for its VMs: one in NESTED_FOLDER gives the suite its nested folder.
  const def = testDefinition();
  t = await withLab({ ...def, vms: [...(def.vms ?? []), { name: 'nested01', folder: NESTED_FOLDER }] });
});
after(async () => {
  await t.close();
});

registerClientSuite({
  name: 'lab',
  connect: () => t.connect(),
  localFile: (dsPath) => t.lab.world.fsPath(dsPath),
  datacenter: 'dc1',
});
