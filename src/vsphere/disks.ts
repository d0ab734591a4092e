import {
  isMoRef,
  isVimObject,
  longToNumber,
  type MoRef,
  type VimLong,
  type VimObject,
  type VimValue,
} from './wire/values.js';

/** A virtual disk as the job layer needs it. */
export interface DiskInfo {
  /** Device key (e.g. 2000): QueryChangedDiskAreas' deviceKey. */
  readonly key: number;
  readonly controllerKey: number;
  readonly unitNumber: number;
  readonly label: string;
  readonly capacityBytes: number;
  /** The backing file of this view (for a snapshot: the frozen file of that snapshot). */
  readonly fileName: string;
  /** The chain from this file down to the base disk: [fileName, parent, ..., base]. */
  readonly chain: readonly string[];
  /** The base disk's file name: a stable identity across snapshots. */
  readonly rootFileName: string;
  readonly datastore: MoRef | undefined;
  /** `backing.uuid` (the VMDK UUID), when reported. */
  readonly uuid: string | undefined;
  /** `backing.changeId` (`<cbt uuid>/<seq>`), when CBT is on and a stun cycle happened. */
  readonly changeId: string | undefined;
  readonly diskMode: string | undefined;
  readonly backingType: string;
  readonly independent: boolean;
  readonly rdm: boolean;
}

const CBT_BACKINGS = new Set([
  'VirtualDiskFlatVer2BackingInfo',
  'VirtualDiskSparseVer2BackingInfo',
  'VirtualDiskRawDiskMappingVer1BackingInfo',
  'VirtualDiskRawDiskVer2BackingInfo',
]);

function num(v: VimValue | undefined): number | undefined {
  return typeof v === 'number' ? v : undefined;
}

/** Extracts the disks from `config.hardware.device` (of a VM or of a snapshot). */
export function parseDisks(devices: VimValue | undefined): DiskInfo[] {
  if (!Array.isArray(devices)) return [];
  const disks: DiskInfo[] = [];
  for (const d of devices) {
    if (!isVimObject(d) || d._type !== 'VirtualDisk') continue;
    const backing = isVimObject(d.backing) ? d.backing : ({ _type: 'VirtualDeviceBackingInfo' } as VimObject);
    const chain: string[] = [];
    for (let b: VimObject | undefined = backing; b; b = isVimObject(b.parent) ? b.parent : undefined) {
      if (typeof b.fileName === 'string') chain.push(b.fileName);
      if (chain.length > 64) break;
    }
    const capBytes = d.capacityInBytes as VimLong | undefined;
    const capKb = d.capacityInKB as VimLong | undefined;
    const capacityBytes =
      capBytes !== undefined && capBytes !== 0
        ? longToNumber(capBytes, 'capacityInBytes')
        : longToNumber(capKb ?? 0, 'capacityInKB') * 1024;
    const diskMode = typeof backing.diskMode === 'string' ? backing.diskMode : undefined;
    const info = isVimObject(d.deviceInfo) ? d.deviceInfo : undefined;
    disks.push({
      key: num(d.key) ?? 0,
      controllerKey: num(d.controllerKey) ?? -1,
      unitNumber: num(d.unitNumber) ?? -1,
      label: typeof info?.label === 'string' ? info.label : `disk ${String(d.key)}`,
      capacityBytes,
      fileName: chain[0] ?? '',
      chain,
      rootFileName: chain[chain.length - 1] ?? '',
      datastore: isMoRef(backing.datastore) ? backing.datastore : undefined,
      uuid: typeof backing.uuid === 'string' && backing.uuid !== '' ? backing.uuid : undefined,
      changeId:
        CBT_BACKINGS.has(backing._type) && typeof backing.changeId === 'string' && backing.changeId !== ''
          ? backing.changeId
          : undefined,
      diskMode,
      backingType: backing._type,
      independent: diskMode === 'independent_persistent' || diskMode === 'independent_nonpersistent',
      rdm: backing._type.startsWith('VirtualDiskRawDisk'),
    });
  }
  return disks;
}

/** The controllers of a device list: key -> {type, busNumber, units in use}. */
export interface ControllerInfo {
  readonly key: number;
  readonly type: string;
  readonly busNumber: number;
  readonly usedUnits: ReadonlySet<number>;
  readonly scsi: boolean;
}

export function parseControllers(devices: VimValue | undefined): Map<number, ControllerInfo> {
  const out = new Map<number, ControllerInfo>();
  if (!Array.isArray(devices)) return out;
  const used = new Map<number, Set<number>>();
  for (const d of devices) {
    if (!isVimObject(d)) continue;
    const ck = num(d.controllerKey);
    const un = num(d.unitNumber);
    if (ck !== undefined && un !== undefined) {
      const s = used.get(ck) ?? new Set<number>();
      s.add(un);
      used.set(ck, s);
    }
  }
  for (const d of devices) {
    if (!isVimObject(d) || !/Controller$/.test(d._type)) continue;
    const key = num(d.key) ?? -1;
    const scsi = /SCSI|LsiLogic|BusLogic/.test(d._type);
    const units = used.get(key) ?? new Set<number>();
    out.set(key, {
      key,
      type: d._type,
      busNumber: num(d.busNumber) ?? 0,
      usedUnits: units,
      scsi,
    });
  }
  return out;
}

/** The lowest free unit of a SCSI controller, skipping 7 (the controller's own). */
export function freeUnit(ctrl: ControllerInfo): number | undefined {
  for (let u = 0; u < 16; u++) {
    if (u === 7) continue;
    if (!ctrl.usedUnits.has(u)) return u;
  }
  return undefined;
}
