import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startLab, type RunningLab } from '../../src/lab/lab.js';
import type { LabDefinitionInput } from '../../src/lab/definition.js';
import { VimClient } from '../../src/vsphere/client.js';

/** A small lab for tests: one host, one datastore, three VMs (one with CBT off) and a proxy. */
export function testDefinition(over: Partial<LabDefinitionInput> = {}): LabDefinitionInput {
  return {
    taskDurationMs: 20,
    hosts: [{ name: 'esx1', datastores: ['ds1'] }],
    datastores: [{ name: 'ds1' }],
    vms: [
      {
        name: 'web01',
        cbt: true,
        nics: [{ type: 'VirtualVmxnet3', network: 'VM Network' }],
        disks: [{ sizeMiB: 4, content: { seed: 1 } }],
      },
      {
        name: 'db01',
        cbt: false,
        powerState: 'poweredOn',
        firmware: 'efi',
        nics: [{ type: 'VirtualE1000e', network: 'VM Network' }],
        disks: [{ sizeMiB: 2 }, { sizeMiB: 1 }],
      },
      { name: 'notools', cbt: true, tools: false, disks: [{ sizeMiB: 1 }] },
    ],
    proxies: [{ name: 'proxy01', disks: [{ sizeMiB: 1 }] }],
    ...over,
  };
}

export interface TestLab {
  readonly lab: RunningLab;
  readonly dir: string;
  connect(): Promise<VimClient>;
  close(): Promise<void>;
}

export async function withLab(def: LabDefinitionInput = testDefinition()): Promise<TestLab> {
  const dir = mkdtempSync(join(tmpdir(), 'vbproxy-lab-'));
  const lab = await startLab({ dir, definition: def });
  const clients: VimClient[] = [];
  return {
    lab,
    dir,
    async connect() {
      const c = await VimClient.connect({
        url: lab.url,
        username: lab.username,
        password: lab.password,
        fingerprint256: lab.fingerprint256,
      });
      clients.push(c);
      return c;
    },
    async close() {
      for (const c of clients) await c.close().catch(() => undefined);
      await lab.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
