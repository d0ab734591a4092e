import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { VimClient } from '../../src/vsphere/client.js';
import { registerClientSuite } from './client-suite.js';
import { startVcsim, vcsimAvailability, type RunningVcsim } from './vcsim.js';

// With CI=true a missing Go toolchain or govmomi is a failure, never a skip.
const avail = vcsimAvailability();
if (!avail.ok && process.env.CI === 'true') {
  test('vcsim prerequisites', () => assert.fail(`vcsim cannot be built: ${avail.reason}`));
} else if (!avail.ok) {
  test('vcsim prerequisites', { skip: avail.reason }, () => undefined);
} else {
  let sim: RunningVcsim;
  const clients: VimClient[] = [];
  before(async () => {
    sim = await startVcsim();
  });
  after(async () => {
    for (const c of clients) await c.close().catch(() => undefined);
    await sim.stop();
  });
  registerClientSuite({
    name: 'vcsim',
    connect: async () => {
      const c = await VimClient.connect({ ...sim.info, fingerprint256: sim.info.fingerprint256 });
      clients.push(c);
      return c;
    },
    localFile: (dsPath, datastores) => {
      const m = /^\[([^\]]+)\] (.*)$/.exec(dsPath);
      const ds = datastores.find((d) => d.name === m?.[1]);
      return ds && m ? join(ds.url, m[2]!) : undefined;
    },
    // vcsim's VPX model; test/conformance/vcsim/main.go adds NESTED_FOLDER below DC0/vm.
    datacenter: 'DC0',
  });
}
