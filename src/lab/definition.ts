import { readFileSync } from 'node:fs';
import { z } from 'zod';
import { VbproxyError } from '../errors.js';

/**
 * The lab definition file (JSON): what `vbproxy lab --definition FILE` builds. Documented in
 * docs/lab.md section 6.1.
 */

const name = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]*$/, 'letters, digits, ".", "_" and "-" only');

const diskSchema = z.object({
  sizeMiB: z.number().positive(),
  controllerKey: z.number().int().min(1000).max(1003).default(1000),
  unitNumber: z
    .number()
    .int()
    .min(0)
    .max(15)
    .refine((u) => u !== 7, 'unit 7 is the controller itself')
    .optional(),
  /** Content of the disk: a seed for the sample-image generator, optionally a template name. */
  content: z.object({ seed: z.number().int(), template: z.string().optional() }).optional(),
});

/** A network name (a standard port group): what vCenter allows, without control characters. */
const networkName = z
  .string()
  .min(1)
  .max(80)
  .refine((n) => !/[/\\]/.test(n) && ![...n].some((ch) => ch.charCodeAt(0) < 0x20), {
    message: '1-80 characters, no "/", "\\" or control characters',
  });

/** The network card types the lab models (vim25 device types). */
export const LAB_NIC_TYPES = [
  'VirtualVmxnet3',
  'VirtualE1000',
  'VirtualE1000e',
  'VirtualVmxnet2',
  'VirtualPCNet32',
] as const;

const nicSchema = z.object({
  type: z.enum(LAB_NIC_TYPES).default('VirtualVmxnet3'),
  /** A network of the VM's host. */
  network: networkName.default('VM Network'),
  startConnected: z.boolean().default(true),
});

const vmSchema = z.object({
  name,
  host: name.optional(),
  datastore: name.optional(),
  powerState: z.enum(['poweredOn', 'poweredOff', 'suspended']).default('poweredOn'),
  cbt: z.boolean().default(false),
  template: z.boolean().default(false),
  /** VMware Tools running in the guest (needed for quiesced snapshots). */
  tools: z.boolean().default(true),
  biosUuid: z.string().uuid().optional(),
  instanceUuid: z.string().uuid().optional(),
  disks: z.array(diskSchema).default([]),
  /** Network cards (each gets a generated MAC address); default none. */
  nics: z.array(nicSchema).default([]),
  /** `config.firmware`. */
  firmware: z.enum(['bios', 'efi']).default('bios'),
  /** The VM folder, as a path below the datacenter's `vm` folder (`prod` or `prod/web`); default: `vm` itself. */
  folder: z
    .string()
    .regex(/^[A-Za-z0-9][A-Za-z0-9._-]*(\/[A-Za-z0-9][A-Za-z0-9._-]*)*$/, 'folder names separated by "/"')
    .optional(),
});

export const labDefinitionSchema = z.object({
  datacenter: name.default('dc1'),
  apiVersion: z.string().default('8.0.3.0'),
  username: z.string().default('administrator@vsphere.local'),
  /** Idle time after which a session is gone (vCenter default: 30 min). */
  sessionTimeoutSeconds: z.number().positive().default(1800),
  /** How long a task runs before it completes (it reports progress meanwhile). */
  taskDurationMs: z.number().int().min(0).default(200),
  /** Largest window one QueryChangedDiskAreas answer covers. */
  cbtWindowBytes: z
    .number()
    .int()
    .positive()
    .default(256 * 1024 * 1024),
  /** When set, each QueryChangedDiskAreas window is a random size from this seed (tests). */
  cbtWindowSeed: z.number().int().optional(),
  hosts: z
    .array(
      z.object({
        name,
        datastores: z.array(name).optional(),
        license: z.enum(['licensed', 'free']).default('licensed'),
        /** The standard networks (port groups) the host has, as vCenter and vcsim have "VM Network". */
        networks: z.array(networkName).default(['VM Network']),
      }),
    )
    .min(1),
  datastores: z.array(z.object({ name, capacityGiB: z.number().positive().default(1024) })).min(1),
  vms: z.array(vmSchema).default([]),
  /** Proxy VMs: like VMs, plus a ParaVirtual SCSI controller 1001 for hot-added disks. */
  proxies: z.array(vmSchema).default([]),
});

export type LabDefinition = z.infer<typeof labDefinitionSchema>;
export type LabDefinitionInput = z.input<typeof labDefinitionSchema>;
export type LabVmDefinition = z.infer<typeof vmSchema>;

export class LabDefinitionError extends VbproxyError {
  constructor(message: string, cause?: unknown) {
    super('LAB_DEFINITION', message, { cause });
  }
}

export function parseLabDefinition(input: unknown, where = 'lab definition'): LabDefinition {
  const r = labDefinitionSchema.safeParse(input);
  if (!r.success) {
    const issues = r.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ');
    throw new LabDefinitionError(`${where} is invalid: ${issues}`);
  }
  const def = r.data;
  const ds = new Set(def.datastores.map((d) => d.name));
  const hosts = new Set(def.hosts.map((h) => h.name));
  const vmNames = new Set<string>();
  for (const vm of [...def.vms, ...def.proxies]) {
    if (vmNames.has(vm.name)) throw new LabDefinitionError(`${where}: VM name ${vm.name} is used twice`);
    vmNames.add(vm.name);
    if (vm.host && !hosts.has(vm.host))
      throw new LabDefinitionError(`${where}: VM ${vm.name} names unknown host ${vm.host}`);
    if (vm.datastore && !ds.has(vm.datastore)) {
      throw new LabDefinitionError(`${where}: VM ${vm.name} names unknown datastore ${vm.datastore}`);
    }
    const host = def.hosts.find((h) => h.name === (vm.host ?? def.hosts[0]?.name));
    for (const n of vm.nics) {
      if (host && !host.networks.includes(n.network)) {
        throw new LabDefinitionError(
          `${where}: VM ${vm.name} has a NIC on network "${n.network}", which its host ${host.name} does not have`,
        );
      }
    }
    const slots = new Set<string>();
    for (const d of vm.disks) {
      if (d.controllerKey === 1001) {
        throw new LabDefinitionError(
          `${where}: VM ${vm.name} puts a disk on controller 1001, which is reserved for hot-add`,
        );
      }
      const slot = `${d.controllerKey}:${d.unitNumber ?? ''}`;
      if (d.unitNumber !== undefined && slots.has(slot))
        throw new LabDefinitionError(`${where}: VM ${vm.name} uses slot ${slot} twice`);
      slots.add(slot);
    }
  }
  for (const h of def.hosts) {
    for (const d of h.datastores ?? []) {
      if (!ds.has(d)) throw new LabDefinitionError(`${where}: host ${h.name} names unknown datastore ${d}`);
    }
  }
  return def;
}

export function loadLabDefinition(path: string): LabDefinition {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new LabDefinitionError(`cannot read the lab definition ${path}: ${(err as Error).message}`, err);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new LabDefinitionError(
      `the lab definition ${path} is not valid JSON: ${(err as Error).message}`,
      err,
    );
  }
  return parseLabDefinition(json, path);
}

/** The built-in definition `vbproxy lab` uses without --definition: 3 sample VMs and one proxy. */
export function defaultLabDefinition(): LabDefinition {
  return parseLabDefinition({
    hosts: [{ name: 'esx1', datastores: ['ds1'] }],
    datastores: [{ name: 'ds1' }],
    vms: [
      {
        name: 'web01',
        cbt: true,
        nics: [{ type: 'VirtualVmxnet3', network: 'VM Network' }],
        disks: [{ sizeMiB: 64, content: { seed: 1, template: 'debian' } }],
      },
      {
        name: 'web02',
        cbt: true,
        nics: [{ type: 'VirtualVmxnet3', network: 'VM Network' }],
        disks: [{ sizeMiB: 64, content: { seed: 2, template: 'debian' } }],
      },
      {
        name: 'db01',
        cbt: true,
        nics: [{ type: 'VirtualVmxnet3', network: 'VM Network' }],
        disks: [
          { sizeMiB: 64, content: { seed: 3 } },
          { sizeMiB: 32, content: { seed: 4 } },
        ],
      },
    ],
    proxies: [
      {
        name: 'vbproxy01',
        nics: [{ type: 'VirtualVmxnet3', network: 'VM Network' }],
        disks: [{ sizeMiB: 16 }],
      },
    ],
  });
}
