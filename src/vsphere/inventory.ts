import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { VimClient } from './client.js';
import { parseDisks, type DiskInfo } from './disks.js';
import { parseNics, type NicInfo } from './nics.js';
import {
  ManagedObjectNotFoundError,
  MethodNotFoundError,
  VimLookupError,
  VimProtocolError,
} from './errors.js';
import { listByType, retrieve, retrieveOne, type RetrieveOptions } from './property.js';
import {
  isMoRef,
  isVimObject,
  longToNumber,
  moref,
  type MoRef,
  type VimLong,
  type VimObject,
  type VimValue,
} from './wire/values.js';

/** The VM properties vbproxy reads before a backup. */
export const VM_PATHS = [
  'name',
  'config.uuid',
  'config.instanceUuid',
  'config.template',
  'config.changeTrackingEnabled',
  'config.guestId',
  'config.hardware.numCPU',
  'config.hardware.memoryMB',
  'config.hardware.device',
  'config.firmware',
  'capability.changeTrackingSupported',
  'runtime.powerState',
  'runtime.consolidationNeeded',
  'runtime.host',
  'snapshot',
];

export interface VmInfo {
  readonly ref: MoRef;
  readonly name: string;
  readonly biosUuid: string | undefined;
  readonly instanceUuid: string | undefined;
  readonly template: boolean;
  readonly cbtEnabled: boolean;
  readonly cbtSupported: boolean;
  readonly powerState: string;
  readonly consolidationNeeded: boolean;
  readonly host: MoRef | undefined;
  readonly disks: readonly DiskInfo[];
  /** Guest OS type (`config.guestId`), e.g. `ubuntu64Guest`. */
  readonly guestId: string | undefined;
  readonly numCPU: number | undefined;
  readonly memoryMB: number | undefined;
  /** `config.firmware`: `bios` or `efi`. */
  readonly firmware: string | undefined;
  /** The network cards (from `config.hardware.device`). */
  readonly nics: readonly NicInfo[];
  /** The raw `config.hardware.device` (for controller lookups). */
  readonly devices: VimValue | undefined;
  /** The raw `snapshot` (VirtualMachineSnapshotInfo), if any snapshot exists. */
  readonly snapshot: VimObject | undefined;
}

function s(v: VimValue | undefined): string | undefined {
  return typeof v === 'string' ? v : undefined;
}

function positive(v: VimValue | undefined): number | undefined {
  const n = typeof v === 'number' ? v : typeof v === 'bigint' ? Number(v) : undefined;
  return n !== undefined && n > 0 ? n : undefined;
}

export function toVmInfo(ref: MoRef, props: ReadonlyMap<string, VimValue>): VmInfo {
  const snap = props.get('snapshot');
  return {
    ref,
    name: s(props.get('name')) ?? ref.value,
    biosUuid: s(props.get('config.uuid')),
    instanceUuid: s(props.get('config.instanceUuid')),
    template: props.get('config.template') === true,
    cbtEnabled: props.get('config.changeTrackingEnabled') === true,
    cbtSupported: props.get('capability.changeTrackingSupported') === true,
    powerState: s(props.get('runtime.powerState')) ?? 'unknown',
    consolidationNeeded: props.get('runtime.consolidationNeeded') === true,
    host: isMoRef(props.get('runtime.host')) ? (props.get('runtime.host') as MoRef) : undefined,
    disks: parseDisks(props.get('config.hardware.device')),
    guestId: s(props.get('config.guestId')),
    numCPU: positive(props.get('config.hardware.numCPU')),
    memoryMB: positive(props.get('config.hardware.memoryMB')),
    firmware: s(props.get('config.firmware')),
    nics: parseNics(props.get('config.hardware.device')),
    devices: props.get('config.hardware.device'),
    snapshot: isVimObject(snap) ? snap : undefined,
  };
}

/** Reads a VM by moref; a missing VM is ManagedObjectNotFoundError naming it. */
export async function getVm(client: VimClient, ref: MoRef): Promise<VmInfo> {
  const { props } = await retrieveOne(client, ref, VM_PATHS, true);
  return toVmInfo(ref, props);
}

function searchIndex(client: VimClient): MoRef {
  const si = client.serviceContent.searchIndex;
  if (!si) throw new VimProtocolError('the server has no SearchIndex');
  return si;
}

/** Finds a VM by its instance UUID (vc.uuid), unique within one vCenter. */
export async function findVmByInstanceUuid(client: VimClient, uuid: string): Promise<MoRef> {
  const r = await client.call('FindByUuid', {
    _this: searchIndex(client),
    uuid: uuid.toLowerCase(),
    vmSearch: true,
    instanceUuid: true,
  });
  if (!isMoRef(r)) throw new VimLookupError(`no VM with instance UUID ${uuid} on ${client.transport.url}`);
  return r;
}

/** Every VM whose BIOS UUID (config.uuid) is `uuid` (copies of a VM share it). */
export async function findVmsByBiosUuid(client: VimClient, uuid: string): Promise<MoRef[]> {
  const args = { _this: searchIndex(client), uuid: uuid.toLowerCase(), vmSearch: true, instanceUuid: false };
  try {
    const r = await client.call('FindAllByUuid', args);
    return Array.isArray(r) ? r.filter(isMoRef) : [];
  } catch (err) {
    // Servers without FindAllByUuid (old hosts, vcsim 0.24): FindByUuid cannot see duplicates.
    if (!(err instanceof MethodNotFoundError)) throw err;
    const r = await client.call('FindByUuid', args);
    return isMoRef(r) ? [r] : [];
  }
}

/**
 * The managed object at an inventory path (`SearchIndex.FindByInventoryPath`), e.g.
 * `/dc1/vm/prod/web01` (govc's notation; vCenter also takes it without the leading `/`), or
 * undefined when nothing is there (the server answers with no value, not a fault).
 */
export async function findByInventoryPath(client: VimClient, path: string): Promise<MoRef | undefined> {
  const r = await client.call('FindByInventoryPath', { _this: searchIndex(client), inventoryPath: path });
  return isMoRef(r) ? r : undefined;
}

/** Finds a VM by inventory path, e.g. `dc1/vm/web01`. */
export async function findVmByPath(client: VimClient, path: string): Promise<MoRef> {
  const r = await findByInventoryPath(client, path);
  if (r?.type !== 'VirtualMachine') {
    throw new VimLookupError(`no VM at inventory path ${path} on ${client.transport.url}`);
  }
  return r;
}

/** Resolves a VM moref given as text (`vm-42`), checking that it exists. */
export async function findVmByMoref(client: VimClient, id: string): Promise<MoRef> {
  const ref = moref('VirtualMachine', id);
  await retrieveOne(client, ref, ['name']);
  return ref;
}

/** `VMware-42 1f 24 5c 7f a8 60 fa-6a f6 a4 63 51 ce d0 eb` -> `421f245c-7fa8-60fa-6af6-a46351ced0eb`. */
export function uuidFromProductSerial(serial: string): string | undefined {
  const hex = serial
    .trim()
    .replace(/^VMware-/i, '')
    .replace(/[\s-]/g, '')
    .toLowerCase();
  if (!/^[0-9a-f]{32}$/.test(hex)) return undefined;
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/** Swaps the byte order of the first three UUID groups (SMBIOS 2.6+ little-endian encoding). */
export function byteSwapUuid(uuid: string): string | undefined {
  const m = /^([0-9a-f]{8})-([0-9a-f]{4})-([0-9a-f]{4})-([0-9a-f]{4}-[0-9a-f]{12})$/i.exec(uuid.trim());
  if (!m) return undefined;
  const rev = (h: string): string => h.match(/../g)!.reverse().join('');
  return `${rev(m[1]!)}-${rev(m[2]!)}-${rev(m[3]!)}-${m[4]!}`.toLowerCase();
}

export interface SelfIdentity {
  /** Contents of /sys/class/dmi/id/product_serial, if readable. */
  readonly productSerial?: string | undefined;
  /** Contents of /sys/class/dmi/id/product_uuid, if readable. */
  readonly productUuid?: string | undefined;
}

/**
 * Reads the guest's DMI identity (root only: the files are mode 0400). Unreadable files are left
 * out; `findSelfVm` then says what is missing.
 */
export function readSelfIdentity(dir = '/sys/class/dmi/id'): SelfIdentity {
  const read = (name: string): string | undefined => {
    try {
      const v = readFileSync(join(dir, name), 'utf8').trim();
      return v === '' ? undefined : v;
    } catch {
      return undefined;
    }
  };
  return { productSerial: read('product_serial'), productUuid: read('product_uuid') };
}

/**
 * Finds the VM this appliance runs in: product_serial first (no byte-order ambiguity), then
 * product_uuid as is and byte-swapped. More than one match is refused as ambiguous.
 */
export async function findSelfVm(client: VimClient, id: SelfIdentity): Promise<MoRef> {
  const candidates: string[] = [];
  const fromSerial = id.productSerial ? uuidFromProductSerial(id.productSerial) : undefined;
  if (fromSerial) candidates.push(fromSerial);
  if (id.productUuid) {
    const raw = id.productUuid.trim().toLowerCase();
    candidates.push(raw);
    const swapped = byteSwapUuid(raw);
    if (swapped) candidates.push(swapped);
  }
  if (candidates.length === 0) {
    throw new VimLookupError(
      'cannot identify the appliance VM: neither product_serial nor product_uuid was readable (run as root)',
    );
  }
  for (const uuid of [...new Set(candidates)]) {
    const found = await findVmsByBiosUuid(client, uuid);
    if (found.length === 1 && found[0]) return found[0];
    if (found.length > 1) {
      throw new VimLookupError(
        `BIOS UUID ${uuid} matches ${found.length} VMs (${found.map((f) => f.value).join(', ')}): the appliance VM is ambiguous; give its moref explicitly`,
      );
    }
  }
  throw new VimLookupError(
    `no VM has BIOS UUID ${candidates.join(' or ')}: is this appliance running in this vCenter?`,
  );
}

export interface HostInfo {
  readonly ref: MoRef;
  readonly name: string;
  readonly datastores: readonly MoRef[];
}

export interface DatastoreInfo {
  readonly ref: MoRef;
  readonly name: string;
  readonly url: string;
  readonly type: string;
  readonly capacityBytes: number;
  readonly freeBytes: number;
  readonly accessible: boolean;
}

export async function listHosts(client: VimClient): Promise<HostInfo[]> {
  const objs = await listByType(client, 'HostSystem', ['name', 'datastore']);
  return objs.map((o) => ({
    ref: o.obj,
    name: s(o.props.get('name')) ?? o.obj.value,
    datastores: ((o.props.get('datastore') as VimValue[] | undefined) ?? []).filter(isMoRef),
  }));
}

export async function listDatastores(client: VimClient): Promise<DatastoreInfo[]> {
  const objs = await listByType(client, 'Datastore', ['summary']);
  return objs.map((o) => {
    const sum = o.props.get('summary') as VimObject | undefined;
    return {
      ref: o.obj,
      name: s(sum?.name) ?? o.obj.value,
      url: s(sum?.url) ?? '',
      type: s(sum?.type) ?? '',
      capacityBytes: longToNumber((sum?.capacity as VimLong | undefined) ?? 0, 'capacity'),
      freeBytes: longToNumber((sum?.freeSpace as VimLong | undefined) ?? 0, 'freeSpace'),
      accessible: sum?.accessible === true,
    };
  });
}

/** The datastores the proxy's host can see (the candidates for hot-add). */
export async function datastoresVisibleTo(client: VimClient, proxyVm: MoRef): Promise<DatastoreInfo[]> {
  const { props } = await retrieveOne(client, proxyVm, ['runtime.host']);
  const host = props.get('runtime.host');
  const all = await listDatastores(client);
  if (!isMoRef(host)) return all;
  const h = await retrieveOne(client, host, ['datastore']);
  const visible = new Set(
    ((h.props.get('datastore') as VimValue[] | undefined) ?? []).filter(isMoRef).map((r) => r.value),
  );
  return all.filter((d) => visible.has(d.ref.value));
}

/** Lists every VM with its disks (paged). */
export async function listVms(client: VimClient, opts: RetrieveOptions = {}): Promise<VmInfo[]> {
  const objs = await listByType(client, 'VirtualMachine', VM_PATHS, opts);
  return objs.map((o) => toVmInfo(o.obj, o.props));
}

export interface FolderVm {
  readonly ref: MoRef;
  readonly name: string;
  readonly template: boolean;
}

/**
 * Every VM below a folder, recursively: one RetrievePropertiesEx whose TraversalSpec follows
 * `Folder.childEntity` into sub-folders (a named SelectionSpec recurses). A folder that does not
 * exist is a VimLookupError naming it.
 */
export async function listVmsInFolder(client: VimClient, folderId: string): Promise<FolderVm[]> {
  const folder = moref('Folder', folderId);
  let objs;
  try {
    objs = await retrieve(client, [
      {
        _type: 'PropertyFilterSpec',
        propSet: [
          { _type: 'PropertySpec', type: 'Folder', pathSet: ['name'] },
          { _type: 'PropertySpec', type: 'VirtualMachine', pathSet: ['name', 'config.template'] },
        ],
        objectSet: [
          {
            _type: 'ObjectSpec',
            obj: folder,
            skip: false,
            selectSet: [
              {
                _type: 'TraversalSpec',
                name: 'folderChildren',
                type: 'Folder',
                path: 'childEntity',
                skip: false,
                selectSet: [{ _type: 'SelectionSpec', name: 'folderChildren' }],
              },
            ],
          },
        ],
      },
    ]);
  } catch (err) {
    if (err instanceof ManagedObjectNotFoundError) {
      throw new VimLookupError(`no folder ${folderId} on ${client.transport.url}`);
    }
    throw err;
  }
  if (!objs.some((o) => o.obj.type === 'Folder' && o.obj.value === folderId)) {
    throw new VimLookupError(`no folder ${folderId} on ${client.transport.url}`);
  }
  return objs
    .filter((o) => o.obj.type === 'VirtualMachine')
    .map((o) => ({
      ref: o.obj,
      name: s(o.props.get('name')) ?? o.obj.value,
      template: o.props.get('config.template') === true,
    }));
}
