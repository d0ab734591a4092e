import type { VimClient } from './client.js';
import { freeUnit, parseControllers, type DiskInfo } from './disks.js';
import { VimUsageError } from './errors.js';
import { getVm, listVms, type VmInfo } from './inventory.js';
import { retrieveOne } from './property.js';
import { runTask, type WaitOptions } from './tasks.js';
import { isVimObject, type MoRef, type VimObject, type VimValue } from './wire/values.js';

/** extraConfig key prefix of vbproxy's hot-add markers on the proxy VM. */
export const HOTADD_MARKER_PREFIX = 'vbproxy.hotadd.';

export interface AttachOptions extends WaitOptions {
  /** The disk file to attach, e.g. the snapshot's `[ds1] web01/web01.vmdk`. */
  readonly fileName: string;
  /** The controller to use; default: the first SCSI controller with a free unit. */
  readonly controllerKey?: number;
  /** Default `independent_nonpersistent`: the source chain is only ever read. */
  readonly diskMode?: 'independent_nonpersistent' | 'nonpersistent';
  /** An extraConfig marker written in the same reconfigure (key without the prefix, value). */
  readonly marker?: { readonly key: string; readonly value: string } | undefined;
}

export interface AttachedDisk {
  readonly vm: MoRef;
  readonly controllerKey: number;
  readonly unitNumber: number;
  readonly disk: DiskInfo;
}

/**
 * Attaches an EXISTING disk file to a VM (no fileOperation, so nothing is created or deleted),
 * on the chosen SCSI controller at its lowest free unit other than 7.
 */
export async function attachDisk(client: VimClient, vm: MoRef, opts: AttachOptions): Promise<AttachedDisk> {
  const info = await getVm(client, vm);
  const controllers = parseControllers(info.devices);
  const candidates =
    opts.controllerKey !== undefined
      ? [controllers.get(opts.controllerKey)].filter((c) => c !== undefined)
      : [...controllers.values()].filter((c) => c.scsi).sort((a, b) => a.key - b.key);
  if (opts.controllerKey !== undefined && candidates.length === 0) {
    throw new VimUsageError(`VM ${info.name} (${vm.value}) has no controller with key ${opts.controllerKey}`);
  }
  let chosen: { key: number; unit: number } | undefined;
  for (const c of candidates) {
    if (!c.scsi)
      throw new VimUsageError(`controller ${c.key} of ${vm.value} is a ${c.type}: hot-add needs SCSI`);
    const u = freeUnit(c);
    if (u !== undefined) {
      chosen = { key: c.key, unit: u };
      break;
    }
  }
  if (!chosen)
    throw new VimUsageError(`VM ${info.name} (${vm.value}) has no free SCSI unit for another disk`);
  const device: VimObject = {
    _type: 'VirtualDisk',
    key: -100 - chosen.unit,
    backing: {
      _type: 'VirtualDiskFlatVer2BackingInfo',
      fileName: opts.fileName,
      diskMode: opts.diskMode ?? 'independent_nonpersistent',
    },
    controllerKey: chosen.key,
    unitNumber: chosen.unit,
    capacityInKB: 0,
  };
  const spec: Record<string, VimValue> = {
    _type: 'VirtualMachineConfigSpec',
    deviceChange: [{ _type: 'VirtualDeviceConfigSpec', operation: 'add', device }],
  };
  if (opts.marker) {
    spec.extraConfig = [
      { _type: 'OptionValue', key: HOTADD_MARKER_PREFIX + opts.marker.key, value: opts.marker.value },
    ];
  }
  await runTask(client, 'ReconfigVM_Task', { _this: vm, spec: spec as VimObject }, opts);
  const after = await getVm(client, vm);
  const disk = after.disks.find((d) => d.controllerKey === chosen.key && d.unitNumber === chosen.unit);
  if (!disk)
    throw new VimUsageError(`the disk ${opts.fileName} did not appear on ${vm.value} after the reconfigure`);
  return { vm, controllerKey: chosen.key, unitNumber: chosen.unit, disk };
}

/**
 * Detaches a disk from a VM WITHOUT deleting its files (operation=remove, no fileOperation), and
 * clears its marker in the same reconfigure.
 */
export async function detachDisk(
  client: VimClient,
  vm: MoRef,
  deviceKey: number,
  opts: WaitOptions & { readonly markerKey?: string } = {},
): Promise<void> {
  const { props } = await retrieveOne(client, vm, ['config.hardware.device']);
  const devices = (props.get('config.hardware.device') as VimValue[] | undefined) ?? [];
  const device = devices.find((d) => isVimObject(d) && d._type === 'VirtualDisk' && d.key === deviceKey) as
    VimObject | undefined;
  if (!device) throw new VimUsageError(`VM ${vm.value} has no disk with device key ${deviceKey}`);
  const backing = device.backing as VimObject | undefined;
  const spec: Record<string, VimValue> = {
    _type: 'VirtualMachineConfigSpec',
    deviceChange: [
      {
        _type: 'VirtualDeviceConfigSpec',
        operation: 'remove',
        device: {
          _type: 'VirtualDisk',
          key: deviceKey,
          backing: {
            _type: backing?._type ?? 'VirtualDiskFlatVer2BackingInfo',
            fileName: typeof backing?.fileName === 'string' ? backing.fileName : '',
            diskMode: typeof backing?.diskMode === 'string' ? backing.diskMode : 'persistent',
          },
          controllerKey: device.controllerKey as number,
          unitNumber: device.unitNumber as number,
          capacityInKB: 0,
        },
      },
    ],
  };
  if (opts.markerKey)
    spec.extraConfig = [{ _type: 'OptionValue', key: HOTADD_MARKER_PREFIX + opts.markerKey, value: '' }];
  await runTask(client, 'ReconfigVM_Task', { _this: vm, spec: spec as VimObject }, opts);
}

/** Reads the VM's extraConfig as a map; keys set to an empty value count as removed (as on vCenter). */
export async function readExtraConfig(client: VimClient, vm: MoRef): Promise<Map<string, string>> {
  const { props } = await retrieveOne(client, vm, ['config.extraConfig'], true);
  const out = new Map<string, string>();
  for (const ov of (props.get('config.extraConfig') as VimValue[] | undefined) ?? []) {
    if (!isVimObject(ov) || typeof ov.key !== 'string') continue;
    // Later entries win and an empty value removes the key (servers that append, like vcsim, included).
    const value = ov.value !== undefined ? String(ov.value) : '';
    if (value === '') out.delete(ov.key);
    else out.set(ov.key, value);
  }
  return out;
}

/** Sets extraConfig keys; an empty value removes the key (vSphere semantics). */
export async function writeExtraConfig(
  client: VimClient,
  vm: MoRef,
  entries: Record<string, string>,
  opts: WaitOptions = {},
): Promise<void> {
  const extraConfig = Object.entries(entries).map(([key, value]) => ({ _type: 'OptionValue', key, value }));
  await runTask(
    client,
    'ReconfigVM_Task',
    { _this: vm, spec: { _type: 'VirtualMachineConfigSpec', extraConfig } },
    opts,
  );
}

export interface ProxyDisk {
  readonly disk: DiskInfo;
  /** The VM whose disk chain contains this file, if one does (undefined: the proxy's own or unknown). */
  readonly owner: VmInfo | undefined;
  /** The snapshot of the owner whose disk this is, if it is a snapshot's frozen file. */
  readonly ownerSnapshotFile: boolean;
  /** True when the file lives outside the proxy's own disks (a hot-added disk). */
  readonly foreign: boolean;
}

/**
 * The disks attached to the proxy VM, each with the VM that owns the file (by matching the file
 * against every other VM's disk chains). A disk no other VM owns is the proxy's own.
 */
export async function listProxyDisks(
  client: VimClient,
  proxyVm: MoRef,
  ownDiskKeys?: ReadonlySet<number>,
): Promise<ProxyDisk[]> {
  const proxy = await getVm(client, proxyVm);
  const vms = (await listVms(client)).filter((v) => v.ref.value !== proxyVm.value);
  const owners = new Map<string, { vm: VmInfo; top: boolean }>();
  for (const v of vms) {
    for (const d of v.disks) {
      d.chain.forEach((f, i) => {
        if (!owners.has(f)) owners.set(f, { vm: v, top: i === 0 });
      });
    }
  }
  return proxy.disks.map((disk) => {
    const o = owners.get(disk.fileName);
    return {
      disk,
      owner: o?.vm,
      ownerSnapshotFile: o !== undefined && !o.top,
      foreign: o !== undefined || (ownDiskKeys !== undefined && !ownDiskKeys.has(disk.key)),
    };
  });
}
