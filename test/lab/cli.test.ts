import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { test } from 'node:test';
import { VimClient } from '../../src/vsphere/client.js';
import { RestrictedVersionError } from '../../src/vsphere/errors.js';
import { findVmByPath } from '../../src/vsphere/inventory.js';
import { createSnapshot } from '../../src/vsphere/snapshots.js';

const cli = new URL('../../src/cli/main.js', import.meta.url).pathname;

test('vbproxy lab runs a lab, prints where its secrets are, and takes guest writes from `lab write`', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'vbproxy-labcli-'));
  const def = join(dir, 'def.json');
  writeFileSync(
    def,
    JSON.stringify({
      hosts: [{ name: 'esx1' }],
      datastores: [{ name: 'ds1' }],
      vms: [{ name: 'vm1', cbt: true, disks: [{ sizeMiB: 1 }] }],
    }),
  );
  const root = join(dir, 'lab');
  const child = spawn(process.execPath, [cli, 'lab', '--dir', root, '--definition', def], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  try {
    const lines: string[] = [];
    await new Promise<void>((resolve, reject) => {
      const rl = createInterface({ input: child.stdout });
      rl.on('line', (l) => {
        lines.push(l);
        if (l.includes('VMs:')) resolve();
      });
      child.once('exit', (code) => reject(new Error(`lab exited early (${code})`)));
    });
    const out = lines.join('\n');
    const password = readFileSync(join(root, 'state', 'password'), 'utf8').trim();
    assert.match(out, /url: +https:\/\/127\.0\.0\.1:\d+\/sdk/);
    assert.match(out, /password: +in .*state\/password \(mode 0600\)/);
    assert.ok(!out.includes(password), 'the password itself is never printed');
    assert.equal(statSync(join(root, 'state', 'password')).mode & 0o077, 0);
    assert.match(out, /sha1 \(VDDK\): +([0-9A-F]{2}:){19}[0-9A-F]{2}/);
    assert.match(
      readFileSync(join(root, 'vddk.conf'), 'utf8'),
      /vixDiskLib\.lab\.datastore\.ds1 = ".*datastores\/ds1"/,
    );

    const w = spawnSync(
      process.execPath,
      [
        cli,
        'lab',
        '--dir',
        root,
        'write',
        '--vm',
        'vm1',
        '--disk',
        '2000',
        '--offset',
        '4096',
        '--fill',
        '171',
        '--length',
        '1024',
      ],
      {
        encoding: 'utf8',
      },
    );
    assert.equal(w.status, 0, w.stderr);
    const flat = readFileSync(join(root, 'datastores', 'ds1', 'vm1', 'vm1-flat.vmdk'));
    assert.deepEqual(flat.subarray(4096, 5120), Buffer.alloc(1024, 171));
    assert.match(
      readFileSync(join(root, 'datastores', 'ds1', 'vm1', 'vm1-ctk.vmdk'), 'utf8'),
      /\nw 4096 1024\n$/,
    );

    const rule = JSON.stringify({
      method: 'CreateSnapshot_Task',
      action: 'fault',
      fault: 'RestrictedVersion',
      object: 'vm1',
    });
    const f = spawnSync(process.execPath, [cli, 'lab', '--dir', root, 'fault', '--rule', rule], {
      encoding: 'utf8',
    });
    assert.equal(f.status, 0, f.stderr);
    const ep = JSON.parse(readFileSync(join(root, 'state', 'endpoint.json'), 'utf8')) as {
      url: string;
      username: string;
      fingerprint256: string;
    };
    const client = await VimClient.connect({ ...ep, password });
    try {
      const vm1 = await findVmByPath(client, 'dc1/vm/vm1');
      await assert.rejects(
        createSnapshot(client, vm1, { name: 's', description: '', quiesce: false }),
        RestrictedVersionError,
      );
      const s = await createSnapshot(client, vm1, { name: 's', description: '', quiesce: false });
      const before = s.disks[0]!.changeId!;
      const r = spawnSync(process.execPath, [cli, 'lab', '--dir', root, 'cbt-reset', '--vm', 'vm1'], {
        encoding: 'utf8',
      });
      assert.equal(r.status, 0, r.stderr);
      const s2 = await createSnapshot(client, vm1, { name: 's2', description: '', quiesce: false });
      assert.notEqual(s2.disks[0]!.changeId!.split('/')[0], before.split('/')[0]);
    } finally {
      await client.close();
    }

    const bad = spawnSync(
      process.execPath,
      [
        cli,
        'lab',
        '--dir',
        root,
        'write',
        '--vm',
        'nope',
        '--disk',
        '2000',
        '--offset',
        '0',
        '--fill',
        '1',
        '--length',
        '1',
      ],
      {
        encoding: 'utf8',
      },
    );
    assert.equal(bad.status, 1);
    assert.match(bad.stderr, /no VM nope in the lab/);
    const usage = spawnSync(
      process.execPath,
      [cli, 'lab', '--dir', root, 'write', '--vm', 'vm1', '--disk', '2000', '--offset', '0'],
      { encoding: 'utf8' },
    );
    assert.equal(usage.status, 2);
    assert.match(usage.stderr, /--file, or --fill with --length/);
  } finally {
    child.kill('SIGTERM');
    await new Promise((r) => child.once('exit', r));
    rmSync(dir, { recursive: true, force: true });
  }
});

test('vbproxy lab with an invalid definition says what is wrong', () => {
  const dir = mkdtempSync(join(tmpdir(), 'vbproxy-labcli-'));
  try {
    const def = join(dir, 'def.json');
    writeFileSync(
      def,
      JSON.stringify({
        hosts: [{ name: 'esx1' }],
        datastores: [{ name: 'ds1' }],
        vms: [{ name: 'vm1', disks: [{ sizeMiB: 1, controllerKey: 1001 }] }],
      }),
    );
    const r = spawnSync(process.execPath, [cli, 'lab', '--dir', join(dir, 'lab'), '--definition', def], {
      encoding: 'utf8',
    });
    assert.equal(r.status, 1);
    assert.match(r.stderr, /controller 1001, which is reserved for hot-add/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
