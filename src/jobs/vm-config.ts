import { z } from 'zod';
import { formatIssues } from '../config/load.js';
import { parseControllers } from '../vsphere/disks.js';
import type { NewVmController, NewVmDisk } from '../vsphere/vm-lifecycle.js';
import type { VmInfo } from '../vsphere/inventory.js';
import { JobError } from './errors.js';

/**
 * The VM configuration a backup keeps (encrypted) in the restore point's manifest: what a restore
 * to a new VM needs to give it the same guest OS type, vCPUs, memory, firmware, network cards and
 * disk layout. Points written before `controllers` was kept have none: their disks' controllers
 * are then taken to be LSI Logic SCSI controllers, in controller key order (vSphere numbers SCSI
 * controller n's key 1000 + n).
 */
const vmConfigSchema = z.object({
  name: z.string(),
  biosUuid: z.string().nullable().optional(),
  instanceUuid: z.string().nullable().optional(),
  guestId: z.string().nullable().optional(),
  numCPU: z.number().int().positive().nullable().optional(),
  memoryMB: z.number().int().positive().nullable().optional(),
  controllers: z
    .array(z.object({ key: z.number().int(), type: z.string(), busNumber: z.number().int() }))
    .optional(),
  /**
   * `bios` or `efi`. Points written before it was kept have none: the new VM gets vCenter's
   * default firmware.
   */
  firmware: z.string().nullable().optional(),
  /**
   * The network cards: device type, key, label, whether they start connected, the MAC address
   * type (never the address: a new VM gets a generated one), and the network of their backing (a
   * standard network by name and moref, a distributed port group by switch UUID and port group
   * key, or only the type of any other backing). Points written before NICs were kept have none:
   * the new VM gets no NIC.
   */
  nics: z
    .array(
      z.object({
        key: z.number().int(),
        type: z.string(),
        label: z.string().optional(),
        startConnected: z.boolean().optional(),
        addressType: z.string().nullable().optional(),
        network: z
          .discriminatedUnion('kind', [
            z.object({ kind: z.literal('standard'), name: z.string(), moref: z.string().optional() }),
            z.object({
              kind: z.literal('distributed'),
              switchUuid: z.string(),
              portgroupKey: z.string().optional(),
            }),
            z.object({ kind: z.literal('other'), backingType: z.string() }),
          ])
          .nullable()
          .optional(),
      }),
    )
    .optional(),
  disks: z.array(
    z.object({
      key: z.number().int(),
      label: z.string().optional(),
      controllerKey: z.number().int(),
      unitNumber: z.number().int(),
      capacityBytes: z.number().int().positive(),
      fileName: z.string(),
      diskMode: z.string().nullable().optional(),
    }),
  ),
});

export type VmConfig = z.infer<typeof vmConfigSchema>;

/** The configuration of `info` as a backup records it. */
export function vmConfigOf(info: VmInfo): VmConfig {
  const controllers = [...parseControllers(info.devices).values()]
    .filter((c) => info.disks.some((d) => d.controllerKey === c.key))
    .map((c) => ({ key: c.key, type: c.type, busNumber: c.busNumber }));
  return {
    name: info.name,
    biosUuid: info.biosUuid ?? null,
    instanceUuid: info.instanceUuid ?? null,
    guestId: info.guestId ?? null,
    numCPU: info.numCPU ?? null,
    memoryMB: info.memoryMB ?? null,
    controllers,
    firmware: info.firmware ?? null,
    nics: info.nics.map((n) => ({
      key: n.key,
      type: n.type,
      label: n.label,
      startConnected: n.startConnected,
      addressType: n.addressType ?? null,
      network: n.network ?? null,
    })),
    disks: info.disks.map((d) => ({
      key: d.key,
      label: d.label,
      controllerKey: d.controllerKey,
      unitNumber: d.unitNumber,
      capacityBytes: d.capacityBytes,
      fileName: d.rootFileName,
      diskMode: d.diskMode ?? null,
    })),
  };
}

/** Reads the configuration kept in a restore point (base64 JSON, as the manifest holds it). */
export function parseVmConfig(pointId: string, stored: string | null): VmConfig {
  if (stored === null) {
    throw new JobError(
      'RESTORE_NO_VM_CONFIG',
      `restore point ${pointId} keeps no VM configuration (it was not made by a VM backup): restore it to image files, or into an existing VM`,
    );
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.from(stored, 'base64').toString('utf8'));
  } catch (err) {
    throw new JobError('RESTORE_NO_VM_CONFIG', `restore point ${pointId}: its VM configuration is not JSON`, {
      cause: err,
    });
  }
  const r = vmConfigSchema.safeParse(parsed);
  if (!r.success) {
    throw new JobError(
      'RESTORE_NO_VM_CONFIG',
      `restore point ${pointId}: its VM configuration is not one vbproxy understands (${formatIssues(r.error.issues)})`,
    );
  }
  return r.data;
}

/** The datastore name of a `[ds] path` file name. */
export function datastoreOf(fileName: string): string | undefined {
  return /^\[([^\]]+)\]/.exec(fileName)?.[1];
}

/**
 * The controllers and disks of a new VM with `config`'s layout, for the disks in `diskKeys` (the
 * original device keys). Controllers keep their type and bus number, disks their unit number.
 */
export function newVmLayout(
  config: VmConfig,
  diskKeys: readonly number[],
): { controllers: NewVmController[]; disks: (NewVmDisk & { sourceKey: number })[] } {
  const known = new Map((config.controllers ?? []).map((c) => [c.key, c]));
  const disks = config.disks.filter((d) => diskKeys.includes(d.key));
  const keys = [...new Set(disks.map((d) => d.controllerKey))].sort((a, b) => a - b);
  const controllers = keys.map(
    (key, i) =>
      known.get(key) ?? { key, type: 'VirtualLsiLogicController', busNumber: key >= 1000 ? key - 1000 : i },
  );
  return {
    controllers,
    disks: disks.map((d) => ({
      sourceKey: d.key,
      controllerKey: d.controllerKey,
      unitNumber: d.unitNumber,
      capacityBytes: Math.ceil(d.capacityBytes / 1024) * 1024,
      diskMode:
        d.diskMode === 'persistent' || d.diskMode === 'independent_persistent' ? d.diskMode : 'persistent',
    })),
  };
}
