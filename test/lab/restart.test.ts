import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { startLab } from '../../src/lab/lab.js';
import { VimClient } from '../../src/vsphere/client.js';
import { findVmByPath, getVm } from '../../src/vsphere/inventory.js';
import { createSnapshot, listSnapshots } from '../../src/vsphere/snapshots.js';
import { testDefinition } from './support.js';

test('a lab reopened on its root keeps its inventory, snapshots, password and certificate', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'vbproxy-labrestart-'));
  try {
    const first = await startLab({ dir, definition: testDefinition() });
    let c = await VimClient.connect({
      url: first.url,
      username: first.username,
      password: first.password,
      fingerprint256: first.fingerprint256,
    });
    const web = await findVmByPath(c, 'dc1/vm/web01');
    const snap = await createSnapshot(c, web, { name: 'kept', description: '', quiesce: false });
    first.guestWrite('web01', 2000, 0, Buffer.alloc(512, 9));
    await c.close();
    await first.stop();

    const second = await startLab({
      dir,
      definition: { hosts: [{ name: 'other' }], datastores: [{ name: 'other' }] },
    });
    try {
      assert.equal(second.password, first.password);
      assert.equal(second.fingerprint256, first.fingerprint256);
      c = await VimClient.connect({
        url: second.url,
        username: second.username,
        password: second.password,
        fingerprint256: second.fingerprint256,
      });
      const again = await findVmByPath(c, 'dc1/vm/web01');
      assert.equal(again.value, web.value);
      assert.deepEqual(
        (await listSnapshots(c, again)).map((s) => s.ref.value),
        [snap.ref.value],
      );
      assert.equal((await getVm(c, again)).disks[0]!.fileName, '[ds1] web01/web01-000001.vmdk');
      assert.deepEqual(second.world.readDisk('web01', 2000, 0, 512), Buffer.alloc(512, 9));
      await c.close();
    } finally {
      await second.stop();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
