/**
 * vSphere client benchmark on the lab vSphere: per-call latency of the calls a backup makes, and
 * the time to list 1,000 lab VMs with their disks. Run after a build:
 *   node dist/bench/vsphere.js [--vms 1000]
 * Prints figures; asserts nothing.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { startLab } from '../src/lab/lab.js';
import { queryChangedAreas } from '../src/vsphere/cbt.js';
import { VimClient } from '../src/vsphere/client.js';
import { findVmByInstanceUuid, findVmByPath, getVm, listVms } from '../src/vsphere/inventory.js';
import { createSnapshot, removeSnapshot } from '../src/vsphere/snapshots.js';
import { moref } from '../src/vsphere/wire/values.js';

const arg = process.argv.indexOf('--vms');
const vmCount = arg > 0 ? Number(process.argv[arg + 1]) : 1000;

function stats(samples: number[]): string {
  const s = [...samples].sort((a, b) => a - b);
  const q = (p: number): number => s[Math.min(s.length - 1, Math.floor(p * s.length))]!;
  return `p50 ${q(0.5).toFixed(2)} ms  p95 ${q(0.95).toFixed(2)} ms  (n=${s.length})`;
}

async function time<T>(fn: () => Promise<T>): Promise<[number, T]> {
  const t0 = performance.now();
  const r = await fn();
  return [performance.now() - t0, r];
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'vbproxy-bench-vsphere-'));
  const vms = Array.from({ length: vmCount }, (_, i) => ({
    name: `vm${String(i).padStart(4, '0')}`,
    cbt: i === 0,
    disks: [{ sizeMiB: 1024 }, ...(i % 4 === 0 ? [{ sizeMiB: 512 }] : [])],
  }));
  const [tBuild, lab] = await time(() =>
    startLab({
      dir,
      definition: {
        taskDurationMs: 0,
        hosts: [{ name: 'esx1' }],
        datastores: [{ name: 'ds1' }],
        vms,
        proxies: [{ name: 'proxy01', disks: [{ sizeMiB: 16 }] }],
      },
    }),
  );
  try {
    console.log(
      `lab with ${vmCount} VMs (${vms.reduce((n, v) => n + v.disks.length, 0)} disks) built in ${tBuild.toFixed(0)} ms`,
    );
    const [tConnect, c] = await time(() =>
      VimClient.connect({
        url: lab.url,
        username: lab.username,
        password: lab.password,
        fingerprint256: lab.fingerprint256,
      }),
    );
    console.log(`connect (ServiceContent + Login over TLS): ${tConnect.toFixed(1)} ms`);
    const vm = await findVmByPath(c, 'dc1/vm/vm0000');
    const info = await getVm(c, vm);
    const lat: Record<string, number[]> = {
      CurrentTime: [],
      'RetrievePropertiesEx (1 VM, 11 paths)': [],
      FindByUuid: [],
      'QueryChangedDiskAreas (*)': [],
      'CreateSnapshot_Task + wait': [],
      'RemoveSnapshot_Task + wait': [],
    };
    for (let i = 0; i < 50; i++) {
      lat.CurrentTime!.push((await time(() => c.keepAlive()))[0]);
      lat['RetrievePropertiesEx (1 VM, 11 paths)']!.push((await time(() => getVm(c, vm)))[0]);
      lat.FindByUuid!.push((await time(() => findVmByInstanceUuid(c, info.instanceUuid!)))[0]);
    }
    for (let i = 0; i < 10; i++) {
      const [tc, s] = await time(() =>
        createSnapshot(c, vm, { name: `b${i}`, description: '', quiesce: false, pollMs: 1 }),
      );
      lat['CreateSnapshot_Task + wait']!.push(tc);
      const d = s.disks[0]!;
      lat['QueryChangedDiskAreas (*)']!.push(
        (
          await time(() =>
            queryChangedAreas(c, {
              vm,
              snapshot: s.ref,
              deviceKey: d.key,
              capacityBytes: d.capacityBytes,
              changeId: '*',
            }),
          )
        )[0],
      );
      lat['RemoveSnapshot_Task + wait']!.push((await time(() => removeSnapshot(c, s.ref, { pollMs: 1 })))[0]);
    }
    console.log('per-call latency (client -> lab over HTTPS, same machine):');
    for (const [k, v] of Object.entries(lat)) console.log(`  ${k.padEnd(40)} ${stats(v)}`);
    for (const pageSize of [100, 500]) {
      const runs: number[] = [];
      let listed = 0;
      let disks = 0;
      for (let i = 0; i < 3; i++) {
        const before = c.transport.calls;
        const [t, all] = await time(() => listVms(c, { pageSize }));
        runs.push(t);
        listed = all.length;
        disks = all.reduce((n, v) => n + v.disks.length, 0);
        if (i === 0)
          console.log(`  (page size ${pageSize}: ${c.transport.calls - before} SOAP calls per listing)`);
      }
      console.log(`list ${listed} VMs with ${disks} disks, page size ${pageSize}: ${stats(runs)}`);
    }
    void moref;
    await c.close();
  } finally {
    await lab.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
