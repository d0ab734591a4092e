/**
 * A process SIGKILLed during a hotadd read leaves the disk attached to the proxy VM (its attach
 * record stays), and VixDiskLib_Cleanup at the next start removes it without touching the disks
 * live processes hold.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { createLogger } from '../../src/log.js';
import { Vddk, type VddkConnectionSpec } from '../../src/vddk/index.js';
import { createLab, createBaseDisk, LAB_THUMBPRINT } from './fixtures.js';

const child = new URL('./hotadd-child.js', import.meta.url).pathname;

test('SIGKILL during a hotadd read leaves the disk attached; Cleanup at start-up removes it', async () => {
  const lab = createLab({ proxyVm: 'vm-9' });
  try {
    const disk = createBaseDisk(lab, { folder: 'web01', name: 'web01', capacity: 1024 * 1024 });
    lab.writeFaults({ 'read.delay.nth': '*', 'read.delay.ms': 5000 });
    const proc = spawn(process.execPath, [child, lab.configFile, disk.dsPath, LAB_THUMBPRINT], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    proc.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const lines = createInterface({ input: proc.stdout });
    const seen: string[] = [];
    for await (const line of lines) {
      seen.push(line);
      if (line === 'READING') break;
    }
    assert.deepEqual(seen, ['ATTACHED hotadd', 'READING'], stderr);
    const exited = new Promise((resolve) => proc.once('exit', resolve));
    proc.kill('SIGKILL');
    assert.equal(await exited, null);
    lab.clearFaults();

    const records = readdirSync(lab.attachDir('vm-9'));
    assert.deepEqual(records, ['1001-0.attach'], 'the killed process left its disk attached');
    const record = readFileSync(`${lab.attachDir('vm-9')}/1001-0.attach`, 'utf8');
    assert.match(record, new RegExp(`\\npid=${proc.pid}\\n`));
    assert.match(record, /\nfileName=\[ds1\] web01\/web01.vmdk\n/);

    const spec: VddkConnectionSpec = {
      server: 'vcenter.lab',
      thumbprint: LAB_THUMBPRINT,
      credentials: { kind: 'password', userName: 'backup', password: 'secret' },
      vmMoref: 'vm-42',
      snapshotMoref: 'snapshot-6',
      transports: ['hotadd'],
    };
    const vddk = await Vddk.start({
      configFile: lab.configFile,
      logger: createLogger('t', { level: 'silent' }),
      cleanup: spec,
    });
    try {
      assert.deepEqual(vddk.startupCleanup, { cleanedUp: 1, remaining: 0 });
      assert.deepEqual(readdirSync(lab.attachDir('vm-9')), []);
      // A disk this (live) process holds is not cleaned up.
      const conn = await vddk.connect(spec);
      const open = await conn.open(disk.dsPath);
      assert.equal(open.transport, 'hotadd');
      assert.deepEqual(await vddk.cleanup(spec), { cleanedUp: 0, remaining: 0 });
      assert.deepEqual(readdirSync(lab.attachDir('vm-9')), ['1001-0.attach']);
      await open.close();
      assert.deepEqual(readdirSync(lab.attachDir('vm-9')), []);
      // exit() closes (and so detaches) what the process left open, in VDDK's order.
      await conn.open(disk.dsPath);
      assert.deepEqual(readdirSync(lab.attachDir('vm-9')), ['1001-0.attach']);
    } finally {
      await vddk.exit();
    }
    assert.deepEqual(readdirSync(lab.attachDir('vm-9')), []);
    await assert.rejects(Vddk.start(), /InitEx only once per process/);
  } finally {
    lab.remove();
  }
});
