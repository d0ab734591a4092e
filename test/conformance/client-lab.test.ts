import { after, before } from 'node:test';
import { registerClientSuite } from './client-suite.js';
import { withLab, type TestLab } from '../lab/support.js';

let t: TestLab;
before(async () => {
  t = await withLab();
});
after(async () => {
  await t.close();
});

registerClientSuite({
  name: 'lab',
  connect: () => t.connect(),
  localFile: (dsPath) => t.lab.world.fsPath(dsPath),
});
