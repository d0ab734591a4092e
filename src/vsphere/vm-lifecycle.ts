import type { VimClient } from './client.js';
import { VimUsageError } from './errors.js';
import { getVm, listDatastores, listHosts, type VmInfo } from './inventory.js';
import { ETHERNET_CARD_TYPES, nicDeviceSpec, type PlacedNic } from './nics.js';
import { retrieveOne } from './property.js';
import { runTask, type WaitOptions } from './tasks.js';
import { isMoRef, type MoRef, type VimObject, type VimValue } from './wire/values.js';

/** A SCSI controller of a VM to create. `key` only links the disks to it within the spec. */
export interface NewVmController {
  readonly key: number;
  /** vim25 device type, e.g. `ParaVirtualSCSIController`, `VirtualLsiLogicController`. */
  readonly type: string;
  readonly busNumber: number;
}

/** A new, empty (thin) disk of a VM to create. */
export interface NewVmDisk {
  /** The `key` of its controller in `NewVmSpec.controllers`. */
  readonly controllerKey: number;
  readonly unitNumber: number;
  readonly capacityBytes: number;
  /** Default `persistent`. */
  readonly diskMode?: string | undefined;
}

export interface NewVmSpec extends WaitOptions {
  readonly name: string;
  /** The VM folder to create it in. */
  readonly folder: MoRef;
  /** The resource pool (vim25 requires one); see `placementFor`. */
  readonly pool: MoRef;
  readonly host?: MoRef | undefined;
  /** The datastore (by name) for the VM's files and its disks. */
  readonly datastore: string;
  readonly controllers: readonly NewVmController[];
  readonly disks: readonly NewVmDisk[];
  readonly guestId?: string | undefined;
  readonly numCPUs?: number | undefined;
  readonly memoryMB?: number | undefined;
  /** `bios` or `efi`; default: vCenter's for the guest OS type. */
  readonly firmware?: string | undefined;
  /**
   * Network cards (see `placeNics`), created with generated MAC addresses; one without a backing
   * is created not connected.
   */
  readonly nics?: readonly PlacedNic[] | undefined;
}

const SCSI_CONTROLLERS = new Set([
  'ParaVirtualSCSIController',
  'VirtualLsiLogicController',
  'VirtualLsiLogicSASController',
  'VirtualBusLogicController',
]);

/**
 * Creates a powered-off VM with empty thin disks and network cards (CreateVM_Task on the folder)
 * and returns it as read back from the server. vCenter assigns the device keys and the cards' MAC
 * addresses: map disks by controller bus number and unit number, never by key.
 */
export async function createVm(client: VimClient, spec: NewVmSpec): Promise<VmInfo> {
  const tempKey = new Map<number, number>();
  const deviceChange: VimObject[] = [];
  spec.controllers.forEach((c, i) => {
    if (!SCSI_CONTROLLERS.has(c.type)) {
      throw new VimUsageError(
        `controller type ${c.type} is not one vbproxy can create (SCSI controllers only)`,
      );
    }
    const key = -100 - i;
    tempKey.set(c.key, key);
    deviceChange.push({
      _type: 'VirtualDeviceConfigSpec',
      operation: 'add',
      device: { _type: c.type, key, busNumber: c.busNumber, sharedBus: 'noSharing' },
    });
  });
  spec.disks.forEach((d, i) => {
    const controllerKey = tempKey.get(d.controllerKey);
    if (controllerKey === undefined) {
      throw new VimUsageError(
        `disk ${i} of new VM ${spec.name} is on controller ${d.controllerKey}, which the spec lacks`,
      );
    }
    if (!(d.capacityBytes > 0) || d.capacityBytes % 1024 !== 0) {
      throw new VimUsageError(
        `disk ${i} of new VM ${spec.name}: capacity ${d.capacityBytes} is not a positive multiple of 1 KiB`,
      );
    }
    deviceChange.push({
      _type: 'VirtualDeviceConfigSpec',
      operation: 'add',
      fileOperation: 'create',
      device: {
        _type: 'VirtualDisk',
        key: -200 - i,
        backing: {
          _type: 'VirtualDiskFlatVer2BackingInfo',
          fileName: `[${spec.datastore}]`,
          diskMode: d.diskMode ?? 'persistent',
          thinProvisioned: true,
        },
        controllerKey,
        unitNumber: d.unitNumber,
        capacityInKB: d.capacityBytes / 1024,
        capacityInBytes: d.capacityBytes,
      },
    });
  });
  (spec.nics ?? []).forEach((n, i) => {
    if (!ETHERNET_CARD_TYPES.has(n.type)) {
      throw new VimUsageError(
        `network adapter ${i} (${n.label}) of new VM ${spec.name}: ${n.type} is not a card type vbproxy can create`,
      );
    }
    deviceChange.push(nicDeviceSpec(n, -300 - i));
  });
  const config: Record<string, VimValue> = {
    _type: 'VirtualMachineConfigSpec',
    name: spec.name,
    files: { _type: 'VirtualMachineFileInfo', vmPathName: `[${spec.datastore}]` },
    deviceChange,
  };
  if (spec.guestId !== undefined) config.guestId = spec.guestId;
  if (spec.numCPUs !== undefined) config.numCPUs = spec.numCPUs;
  if (spec.memoryMB !== undefined) config.memoryMB = spec.memoryMB;
  if (spec.firmware !== undefined) config.firmware = spec.firmware;
  const args: Record<string, VimValue> = { _this: spec.folder, config: config as VimObject, pool: spec.pool };
  if (spec.host) args.host = spec.host;
  const result = await runTask(client, 'CreateVM_Task', args, spec);
  if (!isMoRef(result) || result.type !== 'VirtualMachine') {
    throw new VimUsageError(`CreateVM_Task for ${spec.name} returned no VirtualMachine`);
  }
  return getVm(client, result);
}

/** Where a new VM goes: a host that sees the datastore, its resource pool, and a VM folder. */
export interface Placement {
  readonly host: MoRef;
  readonly pool: MoRef;
  readonly folder: MoRef;
}

async function parentOf(client: VimClient, ref: MoRef): Promise<MoRef> {
  const { props } = await retrieveOne(client, ref, ['parent']);
  const p = props.get('parent');
  if (!isMoRef(p)) throw new VimUsageError(`${ref.type} ${ref.value} has no parent`);
  return p;
}

/**
 * Places a new VM on `datastore` (by name): the first host that sees it, that host's resource
 * pool (its ComputeResource's `resourcePool`), and `folder`, or else the `vmFolder` of the host's
 * datacenter.
 */
export async function placementFor(client: VimClient, datastore: string, folder?: MoRef): Promise<Placement> {
  const ds = (await listDatastores(client)).find((d) => d.name === datastore);
  if (!ds) throw new VimUsageError(`there is no datastore named ${datastore}`);
  const host = (await listHosts(client)).find((h) => h.datastores.some((r) => r.value === ds.ref.value));
  if (!host) throw new VimUsageError(`no host sees datastore ${datastore}`);
  const compute = await parentOf(client, host.ref);
  const { props } = await retrieveOne(client, compute, ['resourcePool']);
  const pool = props.get('resourcePool');
  if (!isMoRef(pool))
    throw new VimUsageError(`${compute.type} ${compute.value} of host ${host.name} has no resource pool`);
  if (folder) return { host: host.ref, pool, folder };
  let cur: MoRef = compute;
  for (let i = 0; i < 32 && cur.type !== 'Datacenter'; i++) cur = await parentOf(client, cur);
  if (cur.type !== 'Datacenter') throw new VimUsageError(`host ${host.name} is in no datacenter`);
  const dc = await retrieveOne(client, cur, ['vmFolder']);
  const vmFolder = dc.props.get('vmFolder');
  if (!isMoRef(vmFolder)) throw new VimUsageError(`datacenter ${cur.value} has no vmFolder`);
  return { host: host.ref, pool, folder: vmFolder };
}

/**
 * Deletes a powered-off VM with its files (Destroy_Task). Used only on a VM this product created
 * and could not finish (a restore to a new VM that failed).
 */
export async function destroyVm(client: VimClient, vm: MoRef, opts: WaitOptions = {}): Promise<void> {
  await runTask(client, 'Destroy_Task', { _this: vm }, opts);
}
