import { randomUUID } from 'node:crypto';
import {
  existsSync,
  mkdirSync,
  readFileSync,
  renameSync,
  rmdirSync,
  rmSync,
  unlinkSync,
  writeFileSync,
} from 'node:fs';
import { basename, dirname, join, sep } from 'node:path';
import {
  arrayOf,
  isMoRef as isMoRefValue,
  moref,
  typed,
  type MoRef,
  type VimObject,
  type VimValue,
} from '../vsphere/wire/values.js';
import {
  attachDir,
  createAttachRecord,
  deleteAttachRecord,
  listAllAttachRecords,
  listAttachRecords,
  SlotTakenError,
  type AttachRecord,
} from './attach.js';
import { writeDiskContent } from './content.js';
import {
  appendEpoch,
  appendWrite,
  changesBetween,
  readJournal,
  resetJournal,
  UnknownChangeIdError,
} from './ctk.js';
import { LAB_NIC_TYPES, type LabDefinition, type LabVmDefinition } from './definition.js';
import { LabFault } from './fault.js';
import {
  allocatedAreas,
  backingUuid,
  capacityBytes,
  createBaseDisk,
  createDelta,
  ddbValue,
  deleteDiskFile,
  grainSize,
  mergeIntoParent,
  newDdbUuid,
  readChain,
  readDescriptor,
  readView,
  reparent,
  setChangeTrackPath,
  writeTop,
  type ChainLink,
} from './vmdk.js';
import { mulberry32 } from './prng.js';

/** The lab's inventory and the vim25 semantics of every operation (docs/lab.md 2-4 and 6). */

interface DiskState {
  key: number;
  controllerKey: number;
  unitNumber: number;
  capacity: number;
  label: string;
  /** Base disk `[ds] vm/vm.vmdk`. */
  base: string;
  /** Current topmost file (what the VM writes to). */
  top: string;
}

interface SnapDisk {
  key: number;
  /** The file that was topmost when the snapshot was taken (frozen since). */
  frozen: string;
  /** The delta created on top of it by this snapshot. */
  delta: string;
  changeId: string | undefined;
}

interface SnapState {
  moref: string;
  id: number;
  name: string;
  description: string;
  createTime: string;
  quiesced: boolean;
  state: string;
  parent: string | undefined;
  disks: SnapDisk[];
}

interface VmState {
  moref: string;
  name: string;
  /** The Folder the VM is in (a VM folder of the datacenter). */
  folder: string;
  host: string;
  datastore: string;
  biosUuid: string;
  instanceUuid: string;
  powerState: string;
  template: boolean;
  tools: boolean;
  proxy: boolean;
  cbtEnabled: boolean;
  cbtPendingStun: boolean;
  controllers: { key: number; type: string; busNumber: number }[];
  disks: DiskState[];
  extraConfig: [string, string][];
  snapshots: SnapState[];
  currentSnapshot: string | undefined;
  pendingMerges: { child: string; parent: string }[];
  /** Guest OS type, vCPUs and memory; absent in lab states saved before they were kept. */
  hardware?: VmHardware;
  /** Network cards; absent in lab states saved before they were kept (none). */
  nics?: NicState[];
  /** `bios` or `efi`; absent in lab states saved before it was kept (`bios`). */
  firmware?: string;
}

interface NicState {
  key: number;
  type: string;
  /** The network's name (a standard network of the VM's host); undefined: no backing. */
  network: string | undefined;
  macAddress: string;
  addressType: string;
  startConnected: boolean;
}

/** A network card of a CreateVM spec; `macAddress` only when the spec sets one (manual). */
type PlannedNic = Omit<NicState, 'key' | 'macAddress'> & { macAddress?: string };

/** The PCI controller network cards hang off (vCenter and vcsim: key 100, units from 7). */
const PCI_CONTROLLER = 100;

interface VmHardware {
  guestId: string;
  numCPU: number;
  memoryMB: number;
}

/** What the lab's own VMs report (and a lab saved before VMs had hardware). */
const DEFAULT_HARDWARE: VmHardware = { guestId: 'otherLinux64Guest', numCPU: 2, memoryMB: 4096 };

interface HostState {
  moref: string;
  name: string;
  datastores: string[];
  license: 'licensed' | 'free';
  uuid: string;
  /** Names of the standard networks the host has; absent in states saved before ("VM Network"). */
  networks?: string[];
}

interface NetworkState {
  moref: string;
  name: string;
}

interface DatastoreState {
  moref: string;
  name: string;
  capacity: number;
}

/** A folder of the inventory; `parent` is a Folder or (for the datacenter's own folders) the Datacenter. */
export interface FolderState {
  moref: string;
  name: string;
  parent: MoRef | undefined;
}

/** The fixed folders of vCenter's inventory (the same morefs as a fresh vCenter and vcsim). */
export const ROOT_FOLDER = 'group-d1';
export const VM_FOLDER = 'group-v3';
export const HOST_FOLDER = 'group-h4';
export const DATASTORE_FOLDER = 'group-s5';
export const NETWORK_FOLDER = 'group-n6';

interface WorldState {
  version: 1;
  next: number;
  instanceUuid: string;
  datacenter: { moref: string; name: string };
  folders: FolderState[];
  hosts: HostState[];
  datastores: DatastoreState[];
  vms: VmState[];
  /** One Network object per network name of any host; absent in states saved before networks. */
  networks?: NetworkState[];
}

export interface TaskState {
  moref: string;
  descriptionId: string;
  entity: MoRef | undefined;
  entityName: string | undefined;
  state: 'queued' | 'running' | 'success' | 'error';
  progress: number | undefined;
  error: LabFault | undefined;
  result: VimValue | undefined;
  queueTime: string;
  startTime: string | undefined;
  completeTime: string | undefined;
  eventChainId: number;
}

export const HOTADD_CONTROLLER = 1001;

/** The SCSI controller types CreateVM_Task accepts. */
const SCSI_CONTROLLERS = new Set([
  'VirtualLsiLogicController',
  'VirtualLsiLogicSASController',
  'ParaVirtualSCSIController',
  'VirtualBusLogicController',
]);

/** Options of a QueryChangedDiskAreas window. */
export interface CbtWindowing {
  readonly maxWindow: number;
  readonly seed: number | undefined;
}

export class LabWorld {
  private state!: WorldState;
  readonly tasks = new Map<string, TaskState>();
  private readonly busy = new Map<string, string>();
  private random: () => number;
  private cbtWindow: CbtWindowing;
  private readonly timers = new Set<NodeJS.Timeout>();
  private closed = false;
  /** How long tasks run (from the definition; tests may change it). */
  taskDurationMs: number;

  constructor(
    readonly root: string,
    readonly def: LabDefinition,
  ) {
    this.random = mulberry32(def.cbtWindowSeed ?? 1);
    this.cbtWindow = { maxWindow: def.cbtWindowBytes, seed: def.cbtWindowSeed };
    this.taskDurationMs = def.taskDurationMs;
  }

  /** Changes how QueryChangedDiskAreas windows are sized (tests: random windows per seed). */
  setCbtWindowing(w: CbtWindowing): void {
    this.cbtWindow = w;
    this.random = mulberry32(w.seed ?? 1);
  }

  // --- Construction and persistence ----------------------------------------------------------

  private get statePath(): string {
    return join(this.root, 'state', 'inventory.json');
  }

  /** Loads the saved inventory, or builds it (and the disk files) from the definition. */
  async open(): Promise<void> {
    mkdirSync(join(this.root, 'state'), { recursive: true, mode: 0o700 });
    if (existsSync(this.statePath)) {
      this.state = JSON.parse(readFileSync(this.statePath, 'utf8')) as WorldState;
      // Inventories saved before folders existed: every VM is in the datacenter's vm folder.
      if (this.state.folders === undefined) {
        this.state.folders = this.baseFolders();
        for (const vm of this.state.vms) vm.folder ??= VM_FOLDER;
      }
      // Inventories saved before the network folder existed.
      if (!this.state.folders.some((f) => f.moref === NETWORK_FOLDER)) {
        this.state.folders.push(this.baseFolders().find((f) => f.moref === NETWORK_FOLDER)!);
      }
      this.ensureNetworks();
      return;
    }
    await this.build();
    this.save();
  }

  /** Stops pending task timers; later saves are skipped. */
  close(): void {
    this.save();
    this.closed = true;
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
  }

  private timer(fn: () => void, ms: number): void {
    const t = setTimeout(() => {
      this.timers.delete(t);
      fn();
    }, ms);
    t.unref();
    this.timers.add(t);
  }

  save(): void {
    if (this.closed) return;
    const tmp = `${this.statePath}.tmp`;
    writeFileSync(tmp, JSON.stringify(this.state), { mode: 0o600 });
    renameSync(tmp, this.statePath);
  }

  private id(prefix: string): string {
    return `${prefix}-${this.state.next++}`;
  }

  private async build(): Promise<void> {
    const def = this.def;
    this.state = {
      version: 1,
      next: 10,
      instanceUuid: randomUUID(),
      datacenter: { moref: 'datacenter-2', name: def.datacenter },
      folders: this.baseFolders(),
      hosts: [],
      datastores: [],
      vms: [],
    };
    for (const d of def.datastores) {
      this.state.datastores.push({
        moref: this.id('datastore'),
        name: d.name,
        capacity: d.capacityGiB * 1024 ** 3,
      });
      mkdirSync(join(this.root, 'datastores', d.name), { recursive: true });
    }
    for (const h of def.hosts) {
      const names = h.datastores ?? def.datastores.map((d) => d.name);
      this.state.hosts.push({
        moref: this.id('host'),
        name: h.name,
        datastores: names.map((n) => this.dsByName(n).moref),
        license: h.license,
        uuid: randomUUID(),
        networks: [...h.networks],
      });
    }
    this.ensureNetworks();
    for (const vm of def.vms) await this.addVm(vm, false);
    for (const vm of def.proxies) await this.addVm(vm, true);
  }

  private baseFolders(): FolderState[] {
    const dc = moref('Datacenter', 'datacenter-2');
    return [
      { moref: ROOT_FOLDER, name: 'Datacenters', parent: undefined },
      { moref: VM_FOLDER, name: 'vm', parent: dc },
      { moref: HOST_FOLDER, name: 'host', parent: dc },
      { moref: DATASTORE_FOLDER, name: 'datastore', parent: dc },
      { moref: NETWORK_FOLDER, name: 'network', parent: dc },
    ];
  }

  /** The VM folder at `path` below the datacenter's vm folder, created (with its parents) if missing. */
  private vmFolder(path: string | undefined): string {
    let cur = VM_FOLDER;
    for (const name of (path ?? '').split('/').filter(Boolean)) {
      const found = this.state.folders.find((f) => f.parent?.value === cur && f.name === name);
      if (found) {
        cur = found.moref;
        continue;
      }
      const f: FolderState = { moref: `group-v${this.state.next++}`, name, parent: moref('Folder', cur) };
      this.state.folders.push(f);
      cur = f.moref;
    }
    return cur;
  }

  private async addVm(v: LabVmDefinition, proxy: boolean): Promise<void> {
    const host = v.host ? this.state.hosts.find((h) => h.name === v.host)! : this.state.hosts[0]!;
    const dsName =
      v.datastore ??
      this.state.datastores.find((d) => host.datastores.includes(d.moref))?.name ??
      this.state.datastores[0]!.name;
    const ds = this.dsByName(dsName);
    const vm: VmState = {
      moref: this.id('vm'),
      name: v.name,
      folder: this.vmFolder(v.folder),
      host: host.moref,
      datastore: ds.moref,
      biosUuid: (v.biosUuid ?? randomUUID()).toLowerCase(),
      instanceUuid: (v.instanceUuid ?? randomUUID()).toLowerCase(),
      powerState: v.powerState,
      hardware: { ...DEFAULT_HARDWARE },
      firmware: v.firmware,
      nics: [],
      template: v.template,
      tools: v.tools,
      proxy,
      cbtEnabled: false,
      cbtPendingStun: false,
      controllers: [{ key: 1000, type: 'VirtualLsiLogicController', busNumber: 0 }],
      disks: [],
      extraConfig: [],
      snapshots: [],
      currentSnapshot: undefined,
      pendingMerges: [],
    };
    if (proxy) {
      vm.controllers.push({ key: HOTADD_CONTROLLER, type: 'ParaVirtualSCSIController', busNumber: 1 });
      vm.extraConfig.push(['disk.EnableUUID', 'TRUE']);
    }
    for (const d of v.disks) {
      if (!vm.controllers.some((c) => c.key === d.controllerKey)) {
        vm.controllers.push({
          key: d.controllerKey,
          type: 'VirtualLsiLogicController',
          busNumber: d.controllerKey - 1000,
        });
      }
    }
    const folder = join(this.root, 'datastores', ds.name, v.name);
    mkdirSync(folder, { recursive: true });
    v.disks.forEach((d, i) => {
      const used = new Set(
        vm.disks.filter((x) => x.controllerKey === d.controllerKey).map((x) => x.unitNumber),
      );
      let unit = d.unitNumber;
      if (unit === undefined) {
        unit = 0;
        while (used.has(unit) || unit === 7) unit++;
      }
      const stem = i === 0 ? v.name : `${v.name}_${i}`;
      const capacity = Math.round(d.sizeMiB * 1024 * 1024);
      createBaseDisk(join(folder, `${stem}.vmdk`), capacity, { uuid: newDdbUuid() });
      const dsPath = `[${ds.name}] ${v.name}/${stem}.vmdk`;
      vm.disks.push({
        key: 2000 + (d.controllerKey - 1000) * 16 + unit,
        controllerKey: d.controllerKey,
        unitNumber: unit,
        capacity,
        label: `Hard disk ${i + 1}`,
        base: dsPath,
        top: dsPath,
      });
    });
    for (const [i, d] of v.disks.entries()) {
      if (d.content) {
        const disk = vm.disks[i]!;
        const desc = readDescriptor(this.fsPath(disk.base));
        await writeDiskContent(join(folder, desc.extentFile), {
          sizeBytes: disk.capacity,
          seed: d.content.seed,
          template: d.content.template,
        });
      }
    }
    for (const n of v.nics) {
      vm.nics!.push({
        key: 4000 + vm.nics!.length,
        type: n.type,
        network: n.network,
        macAddress: this.generateMac(),
        addressType: 'assigned',
        startConnected: n.startConnected,
      });
    }
    this.state.vms.push(vm);
    if (v.cbt) {
      vm.cbtEnabled = true;
      this.activateCbt(vm);
    }
  }

  // --- Networks -------------------------------------------------------------------------------

  /** Gives every network name of a host a Network object (`network-<N>`), once. */
  private ensureNetworks(): void {
    this.state.networks ??= [];
    for (const h of this.state.hosts) {
      for (const name of this.hostNetworkNames(h)) {
        if (!this.state.networks.some((n) => n.name === name)) {
          this.state.networks.push({ moref: this.id('network'), name });
        }
      }
    }
  }

  private hostNetworkNames(h: HostState): string[] {
    return h.networks ?? ['VM Network'];
  }

  get networks(): readonly NetworkState[] {
    return this.state.networks ?? [];
  }

  network(ref: string): NetworkState {
    const n = this.networks.find((x) => x.moref === ref);
    if (!n) throw this.notFound('Network', ref);
    return n;
  }

  /** The Network objects a host has (`HostSystem.network`). */
  hostNetworks(host: HostState): NetworkState[] {
    const names = this.hostNetworkNames(host);
    return this.networks.filter((n) => names.includes(n.name));
  }

  /** The hosts that have a network (`Network.host`). */
  networkHosts(net: NetworkState): HostState[] {
    return this.state.hosts.filter((h) => this.hostNetworkNames(h).includes(net.name));
  }

  /**
   * A MAC address as vCenter generates them (prefix 00:50:56, fourth byte 0x80-0xbf), unique
   * among the lab's network cards.
   */
  private generateMac(): string {
    const used = new Set(this.state.vms.flatMap((v) => (v.nics ?? []).map((n) => n.macAddress)));
    for (;;) {
      const b = [
        0x80 | Math.floor(Math.random() * 0x40),
        Math.floor(Math.random() * 256),
        Math.floor(Math.random() * 256),
      ];
      const mac = ['00', '50', '56', ...b.map((x) => x.toString(16).padStart(2, '0'))].join(':');
      if (!used.has(mac)) return mac;
    }
  }

  // --- Lookups --------------------------------------------------------------------------------

  dsByName(name: string): DatastoreState {
    const d = this.state.datastores.find((x) => x.name === name);
    if (!d) throw new LabFault('NotFound', `datastore ${name} does not exist`);
    return d;
  }

  /** `[ds1] a/b.vmdk` -> `{ ds: 'ds1', rest: 'a/b.vmdk' }`; undefined if it is no datastore path. */
  splitDsPath(dsPath: string): { ds: string; rest: string } | undefined {
    const m = /^\[([^\]]+)\]\s*(.*)$/.exec(dsPath);
    return m ? { ds: m[1]!, rest: m[2]! } : undefined;
  }

  /** `[ds1] a/b.vmdk` -> `<root>/datastores/ds1/a/b.vmdk`. */
  fsPath(dsPath: string): string {
    const p = this.splitDsPath(dsPath);
    if (!p)
      throw new LabFault('InvalidArgument', `${dsPath} is not a datastore path`, {
        invalidProperty: 'fileName',
      });
    return join(this.root, 'datastores', p.ds, p.rest);
  }

  dsPathOf(fsPath: string): string {
    const rel = fsPath.slice(join(this.root, 'datastores').length + 1);
    const i = rel.indexOf('/');
    return `[${rel.slice(0, i)}] ${rel.slice(i + 1)}`;
  }

  private readonly resolveDs = (p: string): string => this.fsPath(p);

  chainOf(dsPath: string): ChainLink[] {
    return readChain(this.fsPath(dsPath), this.resolveDs);
  }

  get vms(): readonly VmState[] {
    return this.state.vms;
  }
  get hosts(): readonly HostState[] {
    return this.state.hosts;
  }
  get datastores(): readonly DatastoreState[] {
    return this.state.datastores;
  }
  get folders(): readonly FolderState[] {
    return this.state.folders;
  }

  folder(ref: string): FolderState {
    const f = this.state.folders.find((x) => x.moref === ref);
    if (!f) throw this.notFound('Folder', ref);
    return f;
  }

  /** A folder's children (Folder.childEntity), in vCenter's order: folders, then the other entities. */
  folderChildren(ref: string): MoRef[] {
    const f = this.folder(ref);
    const sub = this.state.folders
      .filter((x) => x.parent?.type === 'Folder' && x.parent.value === f.moref)
      .map((x) => moref('Folder', x.moref));
    switch (f.moref) {
      case ROOT_FOLDER:
        return [...sub, moref('Datacenter', this.state.datacenter.moref)];
      case HOST_FOLDER:
        return [...sub, ...this.state.hosts.map((h) => moref('ComputeResource', this.computeResourceOf(h)))];
      case DATASTORE_FOLDER:
        return [...sub, ...this.state.datastores.map((d) => moref('Datastore', d.moref))];
      case NETWORK_FOLDER:
        return [...sub, ...this.networks.map((n) => moref('Network', n.moref))];
      default:
        return [
          ...sub,
          ...this.state.vms.filter((v) => v.folder === f.moref).map((v) => moref('VirtualMachine', v.moref)),
        ];
    }
  }

  get datacenter(): { moref: string; name: string } {
    return this.state.datacenter;
  }
  get instanceUuid(): string {
    return this.state.instanceUuid;
  }

  vm(ref: string): VmState {
    const vm = this.state.vms.find((v) => v.moref === ref);
    if (!vm) throw this.notFound('VirtualMachine', ref);
    return vm;
  }

  /** A VM by moref or by name (the guest-write interface accepts both). */
  vmByRefOrName(id: string): VmState {
    const vm = this.state.vms.find((v) => v.moref === id || v.name === id);
    if (!vm) throw new LabFault('NotFound', `no VM ${id} in the lab`);
    return vm;
  }

  snapshot(ref: string): { vm: VmState; snap: SnapState } {
    for (const vm of this.state.vms) {
      const snap = vm.snapshots.find((s) => s.moref === ref);
      if (snap) return { vm, snap };
    }
    throw this.notFound('VirtualMachineSnapshot', ref);
  }

  notFound(type: string, value: string): LabFault {
    return new LabFault(
      'ManagedObjectNotFound',
      `The object '${type}:${value}' has already been deleted or has not been completely created`,
      {
        obj: moref(type, value),
      },
    );
  }

  host(ref: string): HostState {
    const h = this.state.hosts.find((x) => x.moref === ref);
    if (!h) throw this.notFound('HostSystem', ref);
    return h;
  }

  datastore(ref: string): DatastoreState {
    const d = this.state.datastores.find((x) => x.moref === ref);
    if (!d) throw this.notFound('Datastore', ref);
    return d;
  }

  /** The ComputeResource of a host: `domain-s<N>` for `host-<N>` (one per host, as standalone hosts). */
  computeResourceOf(host: HostState): string {
    return `domain-s${host.moref.slice(5)}`;
  }

  /** The root ResourcePool of a host's ComputeResource: `resgroup-<N>` for `host-<N>`. */
  resourcePoolOf(host: HostState): string {
    return `resgroup-${host.moref.slice(5)}`;
  }

  /** The host of ComputeResource `domain-s<N>`. */
  computeResourceHost(ref: string): HostState {
    const h = this.state.hosts.find((x) => this.computeResourceOf(x) === ref);
    if (!h) throw this.notFound('ComputeResource', ref);
    return h;
  }

  /** The host of ResourcePool `resgroup-<N>` (the root pool of its ComputeResource). */
  resourcePoolHost(ref: string): HostState {
    const h = this.state.hosts.find((x) => this.resourcePoolOf(x) === ref);
    if (!h) throw this.notFound('ResourcePool', ref);
    return h;
  }

  /** True for the datacenter's vm folder and every folder below it. */
  isVmFolder(ref: string): boolean {
    let f: FolderState | undefined = this.folder(ref);
    while (f) {
      if (f.moref === VM_FOLDER) return true;
      const p: MoRef | undefined = f.parent;
      f = p?.type === 'Folder' ? this.state.folders.find((x) => x.moref === p.value) : undefined;
    }
    return false;
  }

  // --- CBT ------------------------------------------------------------------------------------

  private ctkName(disk: DiskState): string {
    return `${basename(disk.base, '.vmdk')}-ctk.vmdk`;
  }

  private ctkPath(disk: DiskState): string {
    return join(dirname(this.fsPath(disk.base)), this.ctkName(disk));
  }

  /** Creates the journals (if missing) and names them in every file of every disk chain. */
  private activateCbt(vm: VmState): void {
    for (const disk of vm.disks) {
      const ctk = this.ctkPath(disk);
      if (!existsSync(ctk)) resetJournal(ctk);
      for (const link of this.chainOf(disk.top)) {
        if (link.d.changeTrackPath !== this.ctkName(disk)) setChangeTrackPath(link.path, this.ctkName(disk));
      }
    }
    vm.cbtPendingStun = false;
  }

  private deactivateCbt(vm: VmState): void {
    for (const disk of vm.disks) {
      for (const link of this.chainOf(disk.top)) setChangeTrackPath(link.path, undefined);
      const ctk = this.ctkPath(disk);
      if (existsSync(ctk)) unlinkSync(ctk);
    }
    vm.cbtPendingStun = false;
  }

  /** CBT reset: new journal uuid, `epoch 1`; earlier changeIds become unknown. */
  resetCbt(vmId: string): void {
    const vm = this.vmByRefOrName(vmId);
    for (const disk of vm.disks) {
      if (existsSync(this.ctkPath(disk))) resetJournal(this.ctkPath(disk));
    }
  }

  private cbtActive(disk: DiskState): boolean {
    return (
      existsSync(this.ctkPath(disk)) && readDescriptor(this.fsPath(disk.top)).changeTrackPath !== undefined
    );
  }

  /** The live changeId of a disk: `<uuid>/<last epoch>` once the journal exists. */
  liveChangeId(disk: DiskState): string | undefined {
    if (!this.cbtActive(disk)) return undefined;
    const j = readJournal(this.ctkPath(disk));
    return `${j.uuid}/${j.epochs[j.epochs.length - 1] ?? 1}`;
  }

  // --- Guest writes ---------------------------------------------------------------------------

  /** Writes guest data to the VM's topmost disk file and appends the CBT `w` line. */
  guestWrite(vmId: string, diskKey: number, offset: number, data: Buffer): void {
    const vm = this.vmByRefOrName(vmId);
    const disk = vm.disks.find((d) => d.key === diskKey);
    if (!disk)
      throw new LabFault('InvalidArgument', `VM ${vm.name} has no disk ${diskKey}`, {
        invalidProperty: 'deviceKey',
      });
    if (offset < 0 || offset + data.length > disk.capacity) {
      throw new LabFault(
        'InvalidArgument',
        `write ${offset}+${data.length} is outside disk ${diskKey} of ${vm.name} (${disk.capacity} bytes)`,
        {
          invalidProperty: 'offset',
        },
      );
    }
    const chain = this.chainOf(disk.top);
    writeTop(chain, offset, data);
    const top = chain[0]!;
    if (top.d.changeTrackPath)
      appendWrite(join(dirname(top.path), top.d.changeTrackPath), offset, data.length);
  }

  /** Reads the current content of a VM disk (or of a snapshot's view of it). */
  readDisk(vmId: string, diskKey: number, offset: number, length: number, snapshotRef?: string): Buffer {
    const vm = this.vmByRefOrName(vmId);
    const disk = vm.disks.find((d) => d.key === diskKey);
    if (!disk) throw new LabFault('InvalidArgument', `VM ${vm.name} has no disk ${diskKey}`);
    let file = disk.top;
    if (snapshotRef) {
      const sd = vm.snapshots.find((s) => s.moref === snapshotRef)?.disks.find((d) => d.key === diskKey);
      if (!sd) throw this.notFound('VirtualMachineSnapshot', snapshotRef);
      file = sd.frozen;
    }
    return readView(this.chainOf(file), offset, length);
  }

  // --- Locks and attach records ---------------------------------------------------------------

  /** Files locked by attach records: each record's file and everything below it. */
  lockedFiles(): Set<string> {
    const locked = new Set<string>();
    for (const r of listAllAttachRecords(this.root)) {
      try {
        for (const l of this.chainOf(r.fileName)) locked.add(l.path);
      } catch {
        // A record naming a missing file locks nothing.
      }
    }
    return locked;
  }

  attachRecords(vm: VmState): AttachRecord[] {
    return listAttachRecords(this.root, vm.moref);
  }

  // --- Busy objects and tasks -----------------------------------------------------------------

  checkWritable(vm: VmState): void {
    const host = this.host(vm.host);
    if (host.license === 'free') {
      throw new LabFault(
        'RestrictedVersion',
        'Current license or ESXi version prohibits execution of the requested operation.',
      );
    }
    const running = this.busy.get(vm.moref);
    if (running) {
      throw new LabFault(
        'TaskInProgress',
        `The operation is not allowed in the current state: task ${running} is running on ${vm.name}.`,
        {
          task: moref('Task', running),
        },
      );
    }
  }

  /**
   * Starts a task on `target` that runs `action` after the configured duration, reporting
   * progress. A VM must be writable (checkWritable) and is busy until the task ends; a folder
   * (CreateVM_Task) is only the task's entity and never busy.
   */
  startTask(
    descriptionId: string,
    target: VmState | FolderState,
    action: () => VimValue | undefined,
    failWith?: LabFault,
  ): MoRef {
    const vm = 'disks' in target ? target : undefined;
    if (vm) this.checkWritable(vm);
    const ref = this.id('task');
    const now = new Date().toISOString();
    const task: TaskState = {
      moref: ref,
      descriptionId,
      entity: moref(vm ? 'VirtualMachine' : 'Folder', target.moref),
      entityName: target.name,
      state: 'running',
      progress: 0,
      error: undefined,
      result: undefined,
      queueTime: now,
      startTime: now,
      completeTime: undefined,
      eventChainId: this.state.next++,
    };
    this.tasks.set(ref, task);
    if (vm) this.busy.set(vm.moref, ref);
    const duration = this.taskDurationMs;
    const steps = duration > 0 ? 4 : 0;
    for (let i = 1; i < steps; i++) {
      this.timer(
        () => {
          if (task.state === 'running') task.progress = i * 25;
        },
        (duration * i) / steps,
      );
    }
    const finish = (): void => {
      try {
        if (failWith) throw failWith;
        task.result = action();
        task.state = 'success';
        task.progress = 100;
      } catch (err) {
        task.state = 'error';
        task.error =
          err instanceof LabFault
            ? err
            : new LabFault('SystemError', (err as Error).message, { reason: (err as Error).message });
        task.progress = undefined;
      } finally {
        task.completeTime = new Date().toISOString();
        if (vm) this.busy.delete(vm.moref);
        this.save();
      }
    };
    this.timer(finish, duration);
    if (this.tasks.size > 20000) {
      for (const [k, t] of this.tasks) {
        if (t.state === 'success' || t.state === 'error') this.tasks.delete(k);
        if (this.tasks.size <= 10000) break;
      }
    }
    return moref('Task', ref);
  }

  // --- Snapshots ------------------------------------------------------------------------------

  private nextDeltaName(disk: DiskState): string {
    const base = this.fsPath(disk.base);
    const stem = basename(base, '.vmdk');
    for (let n = 1; ; n++) {
      const p = join(dirname(base), `${stem}-${String(n).padStart(6, '0')}.vmdk`);
      if (!existsSync(p)) return p;
    }
  }

  createSnapshot(
    vmRef: string,
    name: string,
    description: string,
    memory: boolean,
    quiesce: boolean,
    failWith?: LabFault,
  ): MoRef {
    const vm = this.vm(vmRef);
    if (vm.template)
      throw new LabFault('InvalidState', `VM ${vm.name} is a template and cannot be snapshotted.`);
    let fail = failWith;
    if (!fail && quiesce && vm.powerState === 'poweredOn' && !vm.tools) {
      fail = new LabFault(
        'ToolsUnavailable',
        `Cannot quiesce this virtual machine because VMware Tools is not currently available.`,
      );
    }
    return this.startTask(
      'VirtualMachine.createSnapshot',
      vm,
      () => {
        if (vm.cbtEnabled && vm.cbtPendingStun) this.activateCbt(vm);
        const snapRef = this.id('snapshot');
        const disks: SnapDisk[] = [];
        for (const disk of vm.disks) {
          let changeId: string | undefined;
          if (this.cbtActive(disk)) {
            const epoch = appendEpoch(this.ctkPath(disk));
            changeId = `${readJournal(this.ctkPath(disk)).uuid}/${epoch}`;
          }
          const deltaPath = this.nextDeltaName(disk);
          createDelta(deltaPath, this.fsPath(disk.top));
          const frozen = disk.top;
          disk.top = this.dsPathOf(deltaPath);
          disks.push({ key: disk.key, frozen, delta: disk.top, changeId });
        }
        vm.snapshots.push({
          moref: snapRef,
          id: vm.snapshots.reduce((m, s) => Math.max(m, s.id), 0) + 1,
          name,
          description,
          createTime: new Date().toISOString(),
          quiesced: quiesce && vm.powerState === 'poweredOn' && vm.tools,
          state: memory && vm.powerState === 'poweredOn' ? 'poweredOn' : 'poweredOff',
          parent: vm.currentSnapshot,
          disks,
        });
        vm.currentSnapshot = snapRef;
        return moref('VirtualMachineSnapshot', snapRef);
      },
      fail,
    );
  }

  removeSnapshot(snapRef: string, removeChildren: boolean, consolidate: boolean, failWith?: LabFault): MoRef {
    const { vm } = this.snapshot(snapRef);
    return this.startTask(
      'VirtualMachine.removeSnapshot',
      vm,
      () => {
        const { snap } = this.snapshot(snapRef);
        const victims = removeChildren ? this.descendants(vm, snap).reverse() : [];
        for (const v of victims) this.removeOne(vm, v, consolidate);
        this.removeOne(vm, snap, consolidate);
        return undefined;
      },
      failWith,
    );
  }

  private descendants(vm: VmState, snap: SnapState): SnapState[] {
    const out: SnapState[] = [];
    const visit = (s: SnapState): void => {
      for (const c of vm.snapshots.filter((x) => x.parent === s.moref)) {
        out.push(c);
        visit(c);
      }
    };
    visit(snap);
    return out;
  }

  private removeOne(vm: VmState, snap: SnapState, consolidate: boolean): void {
    for (const c of vm.snapshots) if (c.parent === snap.moref) c.parent = snap.parent;
    if (vm.currentSnapshot === snap.moref) vm.currentSnapshot = snap.parent;
    vm.snapshots = vm.snapshots.filter((s) => s !== snap);
    for (const d of snap.disks) {
      vm.pendingMerges.push({ child: d.delta, parent: d.frozen });
    }
    if (consolidate) this.consolidate(vm, false);
  }

  /**
   * Performs pending merges whose files are not locked. With `strict`, a locked file fails the
   * whole call with FileLocked (ConsolidateVMDisks_Task); otherwise it stays pending.
   */
  private consolidate(vm: VmState, strict: boolean): void {
    const locked = this.lockedFiles();
    const remaining: { child: string; parent: string }[] = [];
    for (const m of vm.pendingMerges) {
      const child = this.fsPath(m.child);
      const parent = this.fsPath(m.parent);
      if (locked.has(child) || locked.has(parent)) {
        if (strict) {
          throw new LabFault(
            'FileLocked',
            `Unable to access file ${locked.has(parent) ? m.parent : m.child} since it is locked`,
            {
              file: locked.has(parent) ? m.parent : m.child,
            },
          );
        }
        remaining.push(m);
        continue;
      }
      this.mergeFiles(vm, m.child, m.parent);
    }
    vm.pendingMerges = remaining;
  }

  private mergeFiles(vm: VmState, child: string, parent: string): void {
    const childFs = this.fsPath(child);
    // The file whose parent is `child` (the VM's top chain is linear): re-point it to `parent`.
    let grandchild: string | undefined;
    for (const disk of vm.disks) {
      const chain = this.chainOf(disk.top);
      const i = chain.findIndex((l) => l.path === childFs);
      if (i > 0) grandchild = chain[i - 1]!.path;
    }
    mergeIntoParent(childFs, this.resolveDs);
    if (grandchild) reparent(grandchild, this.fsPath(parent));
    const rename = (p: string): string => (p === child ? parent : p);
    for (const disk of vm.disks) disk.top = rename(disk.top);
    for (const s of vm.snapshots) {
      for (const d of s.disks) {
        d.frozen = rename(d.frozen);
        d.delta = rename(d.delta);
      }
    }
    for (const m of vm.pendingMerges) {
      m.child = rename(m.child);
      m.parent = rename(m.parent);
    }
  }

  consolidateTask(vmRef: string, failWith?: LabFault): MoRef {
    const vm = this.vm(vmRef);
    return this.startTask(
      'VirtualMachine.consolidateDisks',
      vm,
      () => {
        this.consolidate(vm, true);
        return undefined;
      },
      failWith,
    );
  }

  consolidationNeeded(vm: VmState): boolean {
    return vm.pendingMerges.length > 0;
  }

  // --- QueryChangedDiskAreas ------------------------------------------------------------------

  queryChangedDiskAreas(
    vmRef: string,
    snapRef: string | undefined,
    deviceKey: number,
    startOffset: number,
    changeId: string,
  ): VimObject {
    const vm = this.vm(vmRef);
    let file: string;
    let toChangeId: string | undefined;
    const disk = vm.disks.find((d) => d.key === deviceKey);
    if (snapRef) {
      const snap = vm.snapshots.find((s) => s.moref === snapRef);
      if (!snap) throw this.notFound('VirtualMachineSnapshot', snapRef);
      const sd = snap.disks.find((d) => d.key === deviceKey);
      if (!sd)
        throw new LabFault('InvalidArgument', 'A specified parameter was not correct: deviceKey', {
          invalidProperty: 'deviceKey',
        });
      file = sd.frozen;
      toChangeId = sd.changeId;
    } else {
      if (!disk)
        throw new LabFault('InvalidArgument', 'A specified parameter was not correct: deviceKey', {
          invalidProperty: 'deviceKey',
        });
      if (vm.powerState !== 'poweredOff') {
        throw new LabFault(
          'InvalidPowerState',
          `QueryChangedDiskAreas without a snapshot needs ${vm.name} powered off.`,
          {
            requestedState: typed('VirtualMachinePowerState', 'poweredOff'),
            existingState: typed('VirtualMachinePowerState', vm.powerState),
          },
        );
      }
      file = disk.top;
      toChangeId = this.liveChangeId(disk);
    }
    const chain = this.chainOf(file);
    const cap = capacityBytes(chain[0]!.d);
    if (!Number.isSafeInteger(startOffset) || startOffset < 0 || startOffset >= cap) {
      throw new LabFault('InvalidArgument', 'A specified parameter was not correct: startOffset', {
        invalidProperty: 'startOffset',
      });
    }
    const max = this.cbtWindow.maxWindow;
    const size =
      this.cbtWindow.seed === undefined ? max : Math.max(512, Math.floor((this.random() * max) / 512) * 512);
    const end = Math.min(cap, startOffset + size);
    let ranges: [number, number][];
    if (changeId === '*') {
      ranges = allocatedAreas(chain);
    } else {
      const ctk = chain[0]!.d.changeTrackPath;
      if (!ctk || !toChangeId) {
        throw new LabFault('FileFault', `Change tracking is not active on disk ${deviceKey} of ${vm.name}.`, {
          file,
          faultMessage: [
            {
              _type: 'LocalizableMessage',
              key: 'vim.hostd.vmsvc.cbt.noTrack',
              message: 'Change tracking is not active',
            },
          ],
        });
      }
      const m = /^(.*)\/(\d+)$/.exec(changeId);
      const t = /^(.*)\/(\d+)$/.exec(toChangeId);
      try {
        if (!m || !t) throw new UnknownChangeIdError(`${changeId} is not a changeId`);
        ranges = changesBetween(
          readJournal(join(dirname(chain[0]!.path), ctk)),
          m[1]!,
          Number(m[2]),
          Number(t[2]),
        );
      } catch (err) {
        if (!(err instanceof UnknownChangeIdError)) throw err;
        throw new LabFault(
          'FileFault',
          `Error caused by file ${file}: cannot get changes for changeId ${changeId}: ${err.message}`,
          {
            file,
            faultMessage: [
              {
                _type: 'LocalizableMessage',
                key: 'vim.hostd.vmsvc.cbt.cannotGetChanges',
                message: 'Cannot compute changes for this changeId',
              },
            ],
          },
        );
      }
    }
    const changedArea: VimObject[] = [];
    for (const [s, e] of ranges) {
      const cs = Math.max(s, startOffset);
      const ce = Math.min(e, end);
      if (ce > cs) changedArea.push({ _type: 'DiskChangeExtent', start: cs, length: ce - cs });
    }
    return { _type: 'DiskChangeInfo', startOffset, length: end - startOffset, changedArea };
  }

  // --- Reconfigure ----------------------------------------------------------------------------

  reconfigure(vmRef: string, spec: VimObject, failWith?: LabFault): MoRef {
    const vm = this.vm(vmRef);
    // Validate synchronously what vCenter validates before creating the task.
    const changes = (spec.deviceChange as VimObject[] | undefined) ?? [];
    for (const [i, c] of changes.entries()) {
      const dev = c.device as VimObject;
      if (dev._type !== 'VirtualDisk') {
        throw new LabFault(
          'NotSupported',
          `the lab only adds and removes VirtualDisk devices (deviceChange[${i}] is ${dev._type})`,
        );
      }
      if (c.fileOperation !== undefined) {
        throw new LabFault(
          'InvalidDeviceSpec',
          `the lab neither creates nor destroys disk files through ReconfigVM (fileOperation=${String(c.fileOperation)})`,
          {
            deviceIndex: i,
            property: 'fileOperation',
          },
        );
      }
    }
    return this.startTask(
      'VirtualMachine.reconfigure',
      vm,
      () => {
        for (const [i, c] of changes.entries()) {
          if (c.operation === 'add') this.addDisk(vm, c.device as VimObject, i);
          else if (c.operation === 'remove') this.removeDisk(vm, c.device as VimObject, i);
          else
            throw new LabFault(
              'InvalidDeviceSpec',
              `operation ${String(c.operation)} is not supported by the lab`,
              { deviceIndex: i },
            );
        }
        for (const ov of (spec.extraConfig as VimObject[] | undefined) ?? []) {
          const key = String(ov.key);
          const value = ov.value === undefined ? '' : String(ov.value);
          vm.extraConfig = vm.extraConfig.filter(([k]) => k !== key);
          if (value !== '') vm.extraConfig.push([key, value]);
        }
        if (spec.changeTrackingEnabled === true && !vm.cbtEnabled) {
          vm.cbtEnabled = true;
          if (vm.powerState === 'poweredOff') this.activateCbt(vm);
          else vm.cbtPendingStun = true;
        } else if (spec.changeTrackingEnabled === false && vm.cbtEnabled) {
          vm.cbtEnabled = false;
          this.deactivateCbt(vm);
        }
        return undefined;
      },
      failWith,
    );
  }

  private addDisk(vm: VmState, dev: VimObject, index: number): void {
    const backing = (dev.backing ?? {}) as VimObject;
    const fileName = typeof backing.fileName === 'string' ? backing.fileName : '';
    const fs = this.fsPath(fileName);
    if (!existsSync(fs))
      throw new LabFault('FileNotFound', `File ${fileName} was not found`, { file: fileName });
    const ck = typeof dev.controllerKey === 'number' ? dev.controllerKey : -1;
    if (!vm.controllers.some((c) => c.key === ck)) {
      throw new LabFault('InvalidDeviceSpec', `VM ${vm.name} has no controller ${ck}`, {
        deviceIndex: index,
        property: 'device.controllerKey',
      });
    }
    const taken = new Set<number>([
      ...vm.disks.filter((d) => d.controllerKey === ck).map((d) => d.unitNumber),
      ...this.attachRecords(vm)
        .filter((r) => r.controllerKey === ck)
        .map((r) => r.unitNumber),
      7,
    ]);
    let unit = typeof dev.unitNumber === 'number' ? dev.unitNumber : undefined;
    if (unit === undefined) {
      unit = 0;
      while (taken.has(unit)) unit++;
    }
    if (taken.has(unit) || unit > 15) {
      throw new LabFault('InvalidDeviceSpec', `unit ${unit} of controller ${ck} on ${vm.name} is not free`, {
        deviceIndex: index,
        property: 'device.unitNumber',
      });
    }
    const diskMode = typeof backing.diskMode === 'string' ? backing.diskMode : 'persistent';
    if (diskMode === 'persistent' || diskMode === 'independent_persistent') {
      for (const other of this.state.vms) {
        if (other === vm) continue;
        for (const d of other.disks) {
          if (this.chainOf(d.top).some((l) => l.path === fs)) {
            throw new LabFault('FileLocked', `Unable to access file ${fileName} since it is locked`, {
              file: fileName,
            });
          }
        }
      }
    }
    const desc = readDescriptor(fs);
    try {
      createAttachRecord(this.root, {
        vm: vm.moref,
        controllerKey: ck,
        unitNumber: unit,
        fileName,
        diskUuid: ddbValue(desc, 'uuid') ?? '',
        capacityBytes: capacityBytes(desc),
        diskMode,
        attachedBy: 'reconfigure',
        sourceVm: '',
        snapshot: '',
        pid: process.pid,
        connectionId: '',
      });
    } catch (err) {
      if (err instanceof SlotTakenError) {
        throw new LabFault('InvalidDeviceSpec', err.message, {
          deviceIndex: index,
          property: 'device.unitNumber',
        });
      }
      throw err;
    }
  }

  private removeDisk(vm: VmState, dev: VimObject, index: number): void {
    const key = dev.key;
    const record = this.attachRecords(vm).find((r) => r.deviceKey === key);
    if (record) {
      deleteAttachRecord(record);
      return;
    }
    if (vm.disks.some((d) => d.key === key)) {
      throw new LabFault(
        'NotSupported',
        `the lab does not remove a VM's own disk (${String(key)} of ${vm.name})`,
      );
    }
    throw new LabFault('InvalidDeviceSpec', `VM ${vm.name} has no device ${String(key)}`, {
      deviceIndex: index,
      property: 'device.key',
    });
  }

  // --- CreateVM -------------------------------------------------------------------------------

  /**
   * CreateVM_Task on `folderRef`: validates synchronously what vCenter validates before creating
   * the task (folder, pool and host, name, DuplicateName, datastore, device specs), then a task
   * on the folder creates the VM (directory, base disks, inventory) and returns its MoRef.
   */
  createVm(
    folderRef: MoRef,
    config: VimObject | undefined,
    poolRef: VimValue | undefined,
    hostRef: VimValue | undefined,
    failWith?: LabFault,
  ): MoRef {
    const folder = this.folder(folderRef.value);
    if (folderRef.type !== 'Folder' || !this.isVmFolder(folder.moref)) {
      throw new LabFault(
        'NotSupported',
        `CreateVM_Task needs a VM folder; ${folderRef.type} ${folderRef.value} (${folder.name}) is not one`,
      );
    }
    if (!isMoRefValue(poolRef) || poolRef.type !== 'ResourcePool') {
      throw new LabFault('InvalidArgument', 'A specified parameter was not correct: pool', {
        invalidProperty: 'pool',
      });
    }
    const host = this.resourcePoolHost(poolRef.value);
    if (hostRef !== undefined) {
      if (!isMoRefValue(hostRef) || hostRef.type !== 'HostSystem' || this.host(hostRef.value) !== host) {
        throw new LabFault(
          'InvalidArgument',
          `A specified parameter was not correct: host (not a host of ComputeResource ${this.computeResourceOf(host)})`,
          { invalidProperty: 'host' },
        );
      }
    }
    const spec = config ?? { _type: 'VirtualMachineConfigSpec' };
    const name = typeof spec.name === 'string' ? spec.name : '';
    // vCenter's defaults when the spec leaves them out.
    const hardware: VmHardware = {
      guestId: typeof spec.guestId === 'string' && spec.guestId !== '' ? spec.guestId : 'otherGuest',
      numCPU: typeof spec.numCPUs === 'number' && spec.numCPUs > 0 ? spec.numCPUs : 1,
      memoryMB:
        (typeof spec.memoryMB === 'number' || typeof spec.memoryMB === 'bigint') && spec.memoryMB > 0
          ? Number(spec.memoryMB)
          : 4,
    };
    if (name === '') {
      throw new LabFault('InvalidArgument', 'A specified parameter was not correct: name', {
        invalidProperty: 'name',
      });
    }
    if (/[/\\\0]/.test(name) || name === '.' || name === '..' || name.length > 80) {
      throw new LabFault('InvalidName', `The name '${name}' is not valid for a VM in the lab.`, { name });
    }
    this.checkDuplicateName(folder, name);
    if (host.license === 'free') {
      throw new LabFault(
        'RestrictedVersion',
        'Current license or ESXi version prohibits execution of the requested operation.',
      );
    }
    const files = (spec.files ?? {}) as VimObject;
    const vmPathName = typeof files.vmPathName === 'string' ? files.vmPathName : '';
    if (vmPathName === '') {
      throw new LabFault('InvalidArgument', 'A specified parameter was not correct: files.vmPathName', {
        invalidProperty: 'files.vmPathName',
      });
    }
    const m = this.splitDsPath(vmPathName);
    const ds = m ? this.state.datastores.find((d) => d.name === m.ds) : undefined;
    if (!ds) {
      throw new LabFault('InvalidDatastorePath', `Invalid datastore path '${vmPathName}'.`, {
        datastorePath: vmPathName,
        ...(m ? { name: m.ds } : {}),
      });
    }
    if (!host.datastores.includes(ds.moref)) {
      throw new LabFault(
        'InvalidDatastore',
        `Datastore ${ds.name} is not accessible from host ${host.name}.`,
        {
          datastore: moref('Datastore', ds.moref),
          name: ds.name,
        },
      );
    }
    const uuid = (key: 'uuid' | 'instanceUuid'): string | undefined => {
      const v = spec[key];
      if (v === undefined) return undefined;
      if (
        typeof v !== 'string' ||
        !/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(v)
      ) {
        throw new LabFault('InvalidArgument', `A specified parameter was not correct: ${key}`, {
          invalidProperty: key,
        });
      }
      return v.toLowerCase();
    };
    const biosUuid = uuid('uuid');
    const instanceUuid = uuid('instanceUuid');
    const firmware = spec.firmware ?? 'bios';
    if (firmware !== 'bios' && firmware !== 'efi') {
      throw new LabFault('InvalidArgument', 'A specified parameter was not correct: firmware', {
        invalidProperty: 'firmware',
      });
    }
    const plan = this.planDevices((spec.deviceChange as VimObject[] | undefined) ?? [], ds.name, host);
    return this.startTask(
      'Folder.createVm',
      folder,
      () => {
        this.checkDuplicateName(folder, name);
        const dir = join(this.root, 'datastores', ds.name, name);
        if (existsSync(dir)) {
          throw new LabFault(
            'FileAlreadyExists',
            `Cannot complete the operation because the file or folder [${ds.name}] ${name} already exists`,
            {
              file: `[${ds.name}] ${name}`,
            },
          );
        }
        const inst =
          instanceUuid === undefined || this.state.vms.some((v) => v.instanceUuid === instanceUuid)
            ? randomUUID()
            : instanceUuid;
        const vm: VmState = {
          moref: this.id('vm'),
          name,
          folder: folder.moref,
          host: host.moref,
          datastore: ds.moref,
          biosUuid: biosUuid ?? randomUUID(),
          instanceUuid: inst,
          powerState: 'poweredOff',
          hardware,
          firmware,
          nics: plan.nics.map((n, i) => ({
            key: 4000 + i,
            type: n.type,
            network: n.network,
            macAddress: n.macAddress ?? this.generateMac(),
            addressType: n.addressType,
            startConnected: n.startConnected,
          })),
          template: false,
          tools: false,
          proxy: false,
          cbtEnabled: false,
          cbtPendingStun: false,
          controllers: plan.controllers.map((c) => ({
            key: 1000 + c.busNumber,
            type: c.type,
            busNumber: c.busNumber,
          })),
          disks: [],
          extraConfig: [],
          snapshots: [],
          currentSnapshot: undefined,
          pendingMerges: [],
        };
        const realKey = new Map(plan.controllers.map((c) => [c.key, 1000 + c.busNumber]));
        mkdirSync(dir, { recursive: true });
        try {
          plan.disks.forEach((d, i) => {
            const ck = realKey.get(d.controllerKey)!;
            const stem = i === 0 ? name : `${name}_${i}`;
            createBaseDisk(join(dir, `${stem}.vmdk`), d.capacity, { uuid: newDdbUuid() });
            const dsPath = `[${ds.name}] ${name}/${stem}.vmdk`;
            vm.disks.push({
              key: 2000 + (ck - 1000) * 16 + d.unitNumber,
              controllerKey: ck,
              unitNumber: d.unitNumber,
              capacity: d.capacity,
              label: `Hard disk ${i + 1}`,
              base: dsPath,
              top: dsPath,
            });
          });
        } catch (err) {
          rmSync(dir, { recursive: true, force: true });
          throw err;
        }
        this.state.vms.push(vm);
        return moref('VirtualMachine', vm.moref);
      },
      failWith,
    );
  }

  private checkDuplicateName(folder: FolderState, name: string): void {
    const existing = this.state.vms.find((v) => v.folder === folder.moref && v.name === name);
    if (existing) {
      throw new LabFault('DuplicateName', `The name '${name}' already exists.`, {
        name,
        object: moref('VirtualMachine', existing.moref),
      });
    }
  }

  /**
   * The controllers and disks of a CreateVM deviceChange. Accepted: `add` of a SCSI controller
   * (`key`, `busNumber` 0-3) and `add` + fileOperation `create` of a VirtualDisk on one of those
   * controllers (by key) with a FlatVer2 backing whose `fileName` is '' or `[<the VM's
   * datastore>]`; anything else is InvalidDeviceSpec naming the entry and the property.
   */
  private planDevices(
    changes: VimObject[],
    dsName: string,
    host: HostState,
  ): {
    controllers: { key: number; type: string; busNumber: number }[];
    disks: { controllerKey: number; unitNumber: number; capacity: number }[];
    nics: PlannedNic[];
  } {
    const bad = (i: number, property: string, why: string): LabFault =>
      new LabFault('InvalidDeviceSpec', `Invalid configuration for device '${i}': ${why}`, {
        deviceIndex: i,
        property,
      });
    const controllers: { key: number; type: string; busNumber: number }[] = [];
    const diskSpecs: [number, VimObject][] = [];
    const nics: PlannedNic[] = [];
    for (const [i, c] of changes.entries()) {
      const dev = (c.device ?? { _type: 'VirtualDevice' }) as VimObject;
      if (c.operation !== 'add') {
        throw bad(i, 'operation', `CreateVM only adds devices (operation ${String(c.operation)})`);
      }
      if (SCSI_CONTROLLERS.has(dev._type)) {
        if (c.fileOperation !== undefined) throw bad(i, 'fileOperation', 'a controller has no file');
        if (typeof dev.key !== 'number' || controllers.some((x) => x.key === dev.key)) {
          throw bad(i, 'device.key', `controller key ${String(dev.key)} is missing or not unique`);
        }
        const bus = dev.busNumber;
        if (typeof bus !== 'number' || !Number.isInteger(bus) || bus < 0 || bus > 3) {
          throw bad(i, 'device.busNumber', `SCSI bus number ${String(bus)} is not 0-3`);
        }
        if (controllers.some((x) => x.busNumber === bus)) {
          throw bad(i, 'device.busNumber', `SCSI bus ${bus} is already used`);
        }
        controllers.push({ key: dev.key, type: dev._type, busNumber: bus });
      } else if (dev._type === 'VirtualDisk') {
        if (c.fileOperation !== 'create') {
          throw bad(
            i,
            'fileOperation',
            `CreateVM only creates new disks (fileOperation ${String(c.fileOperation)})`,
          );
        }
        diskSpecs.push([i, dev]);
      } else if (LAB_NIC_TYPES.includes(dev._type as (typeof LAB_NIC_TYPES)[number])) {
        if (c.fileOperation !== undefined) throw bad(i, 'fileOperation', 'a network adapter has no file');
        nics.push(this.planNic(i, dev, host, bad));
      } else {
        throw bad(i, 'device', `the lab does not create ${dev._type} devices`);
      }
    }
    const used = new Map<number, Set<number>>(controllers.map((c) => [c.key, new Set([7])]));
    const disks: { controllerKey: number; unitNumber: number; capacity: number; index: number }[] = [];
    for (const [i, dev] of diskSpecs) {
      const ck = dev.controllerKey;
      const units = typeof ck === 'number' ? used.get(ck) : undefined;
      if (!units) throw bad(i, 'device.controllerKey', `no controller with key ${String(ck)} in the spec`);
      const unit = dev.unitNumber;
      if (unit !== undefined) {
        if (typeof unit !== 'number' || !Number.isInteger(unit) || unit < 0 || unit > 15 || units.has(unit)) {
          throw bad(i, 'device.unitNumber', `unit ${String(unit)} of controller ${ck} is not free`);
        }
        units.add(unit);
      }
      const inBytes = dev.capacityInBytes;
      const inKb = dev.capacityInKB;
      const raw =
        inBytes !== undefined
          ? inBytes
          : typeof inKb === 'number' || typeof inKb === 'bigint'
            ? BigInt(inKb) * 1024n
            : undefined;
      const cap = typeof raw === 'number' || typeof raw === 'bigint' ? Number(raw) : NaN;
      if (!Number.isSafeInteger(cap) || cap <= 0 || cap % 512 !== 0) {
        throw bad(
          i,
          inBytes !== undefined ? 'device.capacityInBytes' : 'device.capacityInKB',
          `capacity ${String(raw)} bytes is not a positive multiple of 512`,
        );
      }
      const backing = (dev.backing ?? { _type: 'VirtualDiskFlatVer2BackingInfo' }) as VimObject;
      if (backing._type !== 'VirtualDiskFlatVer2BackingInfo') {
        throw bad(
          i,
          'device.backing',
          `the lab creates VirtualDiskFlatVer2BackingInfo disks, not ${backing._type}`,
        );
      }
      const fileName = typeof backing.fileName === 'string' ? backing.fileName.trim() : '';
      const named = this.splitDsPath(fileName);
      if (fileName !== '' && (named?.ds !== dsName || named.rest !== '')) {
        throw bad(
          i,
          'device.backing.fileName',
          `the lab creates disks only as the default file in the VM's folder ('' or '[${dsName}]'), not ${fileName}`,
        );
      }
      const mode = backing.diskMode ?? 'persistent';
      if (mode !== 'persistent') {
        throw bad(i, 'device.backing.diskMode', `the lab creates persistent disks only, not ${String(mode)}`);
      }
      disks.push({
        controllerKey: ck as number,
        unitNumber: typeof unit === 'number' ? unit : -1,
        capacity: cap,
        index: i,
      });
    }
    for (const d of disks) {
      if (d.unitNumber >= 0) continue;
      const units = used.get(d.controllerKey)!;
      let u = 0;
      while (units.has(u)) u++;
      if (u > 15) throw bad(d.index, 'device.unitNumber', `controller ${d.controllerKey} has no free unit`);
      units.add(u);
      d.unitNumber = u;
    }
    return { controllers, disks, nics };
  }

  /**
   * One network card of a CreateVM spec, validated as vCenter does: a network backing must name
   * (by `deviceName`, and by `network` if given) a network of the placement host; a card without
   * a backing is created, not connected; the lab has no distributed switches (vcsim: NotFound for
   * an unknown switch UUID); a manual MAC address must be a valid unicast one.
   */
  private planNic(
    i: number,
    dev: VimObject,
    host: HostState,
    bad: (i: number, property: string, why: string) => LabFault,
  ): PlannedNic {
    const backing = dev.backing as VimObject | undefined;
    let network: string | undefined;
    if (backing?._type === 'VirtualEthernetCardNetworkBackingInfo') {
      const name = backing.deviceName;
      const have = this.hostNetworks(host);
      const net = have.find((n) => n.name === name);
      if (typeof name !== 'string' || !net) {
        throw bad(
          i,
          'device.backing.deviceName',
          `host ${host.name} has no network ${JSON.stringify(name ?? '')}`,
        );
      }
      const ref = backing.network;
      if (ref !== undefined && (!isMoRefValue(ref) || ref.type !== 'Network' || ref.value !== net.moref)) {
        throw bad(
          i,
          'device.backing.network',
          `network ${isMoRefValue(ref) ? `${ref.type}:${ref.value}` : String(ref)} is not "${net.name}" (Network:${net.moref}) of host ${host.name}`,
        );
      }
      network = net.name;
    } else if (backing?._type === 'VirtualEthernetCardDistributedVirtualPortBackingInfo') {
      const port = backing.port as VimObject | undefined;
      throw new LabFault('NotFound', `DVS ${String(port?.switchUuid)} cannot be found`);
    } else if (backing !== undefined) {
      throw bad(i, 'device.backing', `the lab does not back network adapters with ${backing._type}`);
    }
    const addressType = typeof dev.addressType === 'string' ? dev.addressType : 'generated';
    let macAddress: string | undefined;
    if (addressType === 'manual') {
      const mac = typeof dev.macAddress === 'string' ? dev.macAddress.toLowerCase() : '';
      if (!/^([0-9a-f]{2}:){5}[0-9a-f]{2}$/.test(mac) || parseInt(mac.slice(0, 2), 16) & 1) {
        throw bad(
          i,
          'device.macAddress',
          `${JSON.stringify(dev.macAddress ?? '')} is not a unicast MAC address`,
        );
      }
      if (this.state.vms.some((v) => (v.nics ?? []).some((n) => n.macAddress === mac))) {
        throw bad(i, 'device.macAddress', `MAC address ${mac} is already in use`);
      }
      macAddress = mac;
    } else if (addressType !== 'generated' && addressType !== 'assigned') {
      throw bad(i, 'device.addressType', `address type ${addressType} is not generated, manual or assigned`);
    }
    const conn = dev.connectable as VimObject | undefined;
    return {
      type: dev._type,
      network,
      addressType,
      ...(macAddress !== undefined ? { macAddress } : {}),
      // A card without a network cannot connect.
      startConnected: network !== undefined && (conn === undefined || conn.startConnected === true),
    };
  }

  // --- Destroy --------------------------------------------------------------------------------

  /**
   * Destroy_Task on a VM: refused synchronously (checkWritable, then destroyRefusal); the task
   * (`VirtualMachine.destroy`, entity the VM) checks again, deletes the VM's files and removes it
   * from the inventory (with its snapshots, CBT state, pending merges and extraConfig).
   */
  destroyVm(vmRef: string, failWith?: LabFault): MoRef {
    const vm = this.vm(vmRef);
    this.checkWritable(vm);
    const refused = this.destroyRefusal(vm);
    if (refused) throw refused;
    return this.startTask(
      'VirtualMachine.destroy',
      vm,
      () => {
        // Out-of-process attaches (the lab VDDK) may have come while the task ran.
        const now = this.destroyRefusal(vm);
        if (now) throw now;
        this.deleteVmFiles(vm);
        this.state.vms = this.state.vms.filter((v) => v !== vm);
        try {
          rmdirSync(attachDir(this.root, vm.moref));
        } catch {
          // Absent (the usual case), or a record is being written right now: leave it.
        }
        return undefined;
      },
      failWith,
    );
  }

  /** The VM's directory `[ds] <name>/` (its disks, deltas and journals). */
  private vmDir(vm: VmState): string {
    const dsDir = join(this.root, 'datastores', this.datastore(vm.datastore).name);
    const dir = join(dsDir, vm.name);
    if (dirname(dir) !== dsDir || basename(dir) !== vm.name) {
      throw new LabFault('SystemError', `VM name ${vm.name} is not a directory name`, {
        reason: 'bad VM name',
      });
    }
    return dir;
  }

  /** Every disk file of a VM: each file of the chains of its disks, snapshots and pending merges. */
  private vmFiles(vm: VmState): Set<string> {
    const files = new Set<string>();
    const add = (dsPath: string): void => {
      try {
        for (const l of this.chainOf(dsPath)) files.add(l.path);
      } catch {
        // A file that is gone is no file of the VM.
      }
    };
    for (const d of vm.disks) add(d.top);
    for (const s of vm.snapshots) for (const d of s.disks) add(d.delta);
    for (const m of vm.pendingMerges) add(m.child);
    return files;
  }

  /** The fault Destroy_Task answers for `vm` now, in this order; undefined: it may be destroyed. */
  private destroyRefusal(vm: VmState): LabFault | undefined {
    if (vm.powerState !== 'poweredOff') {
      const label = vm.powerState === 'suspended' ? 'Suspended' : 'Powered on';
      return new LabFault(
        'InvalidPowerState',
        `The attempted operation cannot be performed in the current state (${label}).`,
        {
          requestedState: typed('VirtualMachinePowerState', 'poweredOff'),
          existingState: typed('VirtualMachinePowerState', vm.powerState),
        },
      );
    }
    if (vm.proxy) {
      return new LabFault('InvalidState', `VM ${vm.name} is a backup proxy of the lab; it is not destroyed.`);
    }
    if (this.attachRecords(vm).length > 0) {
      return new LabFault(
        'InvalidState',
        `VM ${vm.name}: the VM has disks of other VMs attached; detach them first`,
      );
    }
    const mine = this.vmFiles(vm);
    const dir = this.vmDir(vm) + sep;
    for (const r of listAllAttachRecords(this.root)) {
      if (r.vm === vm.moref) continue;
      let chain: ChainLink[];
      try {
        chain = this.chainOf(r.fileName);
      } catch {
        continue;
      }
      const hit = chain.find((l) => mine.has(l.path) || l.path.startsWith(dir));
      if (hit) {
        const file = this.dsPathOf(hit.path);
        return new LabFault('FileLocked', `Unable to access file ${file} since it is locked`, { file });
      }
    }
    return undefined;
  }

  /**
   * Deletes the VM's directory recursively; if another VM's disks live in it too (two lab VMs of
   * the same name on one datastore), only this VM's disk files and journals.
   */
  private deleteVmFiles(vm: VmState): void {
    const dir = this.vmDir(vm);
    const shared = this.state.vms.some(
      (o) => o !== vm && o.disks.some((d) => dirname(this.fsPath(d.base)) === dir),
    );
    if (!shared) {
      rmSync(dir, { recursive: true, force: true });
      return;
    }
    for (const p of this.vmFiles(vm)) if (existsSync(p)) deleteDiskFile(p);
    for (const d of vm.disks) if (existsSync(this.ctkPath(d))) unlinkSync(this.ctkPath(d));
  }

  // --- Property views -------------------------------------------------------------------------

  private backing(chain: ChainLink[], i: number, diskMode: string, changeId: string | undefined): VimObject {
    const link = chain[i]!;
    const fileName = this.dsPathOf(link.path);
    const dsName = this.splitDsPath(fileName)?.ds ?? '';
    const ds = this.state.datastores.find((d) => d.name === dsName);
    const delta = link.d.createType === 'vmfsSparse';
    const uuid = ddbValue(link.d, 'uuid');
    return {
      _type: 'VirtualDiskFlatVer2BackingInfo',
      fileName,
      datastore: ds ? moref('Datastore', ds.moref) : undefined,
      diskMode,
      split: false,
      writeThrough: false,
      thinProvisioned: true,
      eagerlyScrub: false,
      uuid: uuid ? backingUuid(uuid) : undefined,
      contentId: ddbValue(link.d, 'longContentID'),
      changeId: i === 0 ? changeId : undefined,
      parent: i + 1 < chain.length ? this.backing(chain, i + 1, diskMode, undefined) : undefined,
      deltaDiskFormat: delta ? 'redoLogFormat' : undefined,
      digestEnabled: false,
      deltaGrainSize: delta ? grainSize(link.d) : undefined,
    };
  }

  private diskDevice(
    key: number,
    ck: number,
    unit: number,
    label: string,
    file: string,
    diskMode: string,
    changeId: string | undefined,
  ): VimObject {
    const chain = this.chainOf(file);
    const cap = capacityBytes(chain[0]!.d);
    return {
      _type: 'VirtualDisk',
      key,
      deviceInfo: {
        _type: 'Description',
        label,
        summary: `${Math.floor(cap / 1024).toLocaleString('en-US')} KB`,
      },
      backing: this.backing(chain, 0, diskMode, changeId),
      controllerKey: ck,
      unitNumber: unit,
      capacityInKB: Math.floor(cap / 1024),
      capacityInBytes: cap,
    };
  }

  /** `config.hardware.device` of a VM (its disks, attach records shown as disks, controllers). */
  vmDevices(vm: VmState): VimObject[] {
    const disks: VimObject[] = vm.disks.map((d) =>
      this.diskDevice(
        d.key,
        d.controllerKey,
        d.unitNumber,
        d.label,
        d.top,
        'persistent',
        this.liveChangeId(d),
      ),
    );
    for (const r of this.attachRecords(vm)) {
      try {
        disks.push(
          this.diskDevice(
            r.deviceKey,
            r.controllerKey,
            r.unitNumber,
            `Hard disk (hot-added ${r.controllerKey}:${r.unitNumber})`,
            r.fileName,
            r.diskMode,
            undefined,
          ),
        );
      } catch {
        // A record naming a file that is gone shows nothing.
      }
    }
    return this.devicesWith(vm, disks);
  }

  /**
   * A device list around `disks`: the SCSI controllers, the disks, and the network cards on their
   * PCI controller. Live VMs and snapshots alike (vcsim's snapshots show the cards too).
   */
  private devicesWith(vm: VmState, disks: VimObject[]): VimObject[] {
    const nics = this.nicDevices(vm);
    if (nics.length === 0) return [...this.controllerDevices(vm, disks), ...disks];
    // The PCI controller the cards are on (shown only with cards, as lab VMs always were).
    const pci: VimObject = {
      _type: 'VirtualPCIController',
      key: PCI_CONTROLLER,
      deviceInfo: { _type: 'Description', label: 'PCI controller 0', summary: 'PCI controller 0' },
      busNumber: 0,
      device: nics.map((n) => n.key as number),
    };
    return [pci, ...this.controllerDevices(vm, disks), ...disks, ...nics];
  }

  /** The network cards of a VM as `config.hardware.device` shows them (vCenter's shape). */
  private nicDevices(vm: VmState): VimObject[] {
    return (vm.nics ?? []).map((n, i) => {
      const net = n.network === undefined ? undefined : this.networks.find((x) => x.name === n.network);
      return {
        _type: n.type,
        key: n.key,
        deviceInfo: {
          _type: 'Description',
          label: `Network adapter ${i + 1}`,
          summary: n.network ?? 'none',
        },
        backing:
          n.network === undefined
            ? undefined
            : {
                _type: 'VirtualEthernetCardNetworkBackingInfo',
                deviceName: n.network,
                useAutoDetect: false,
                network: net ? moref('Network', net.moref) : undefined,
              },
        connectable: {
          // No migrateConnect: vcsim leaves it unset (the client does not read it).
          _type: 'VirtualDeviceConnectInfo',
          startConnected: n.startConnected,
          allowGuestControl: true,
          connected: vm.powerState === 'poweredOn' && n.startConnected,
          status: 'untried',
        },
        controllerKey: PCI_CONTROLLER,
        unitNumber: 7 + i,
        addressType: n.addressType,
        macAddress: n.macAddress,
        wakeOnLanEnabled: true,
      };
    });
  }

  private controllerDevices(vm: VmState, disks: VimObject[]): VimObject[] {
    return vm.controllers.map((c) => ({
      _type: c.type,
      key: c.key,
      deviceInfo: { _type: 'Description', label: `SCSI controller ${c.busNumber}`, summary: c.type },
      busNumber: c.busNumber,
      device: disks.filter((d) => d.controllerKey === c.key).map((d) => d.key as number),
      hotAddRemove: true,
      sharedBus: 'noSharing',
      scsiCtlrUnitNumber: 7,
    }));
  }

  /** `config.hardware.device` of a snapshot: the frozen files and their changeIds. */
  snapshotDevices(vm: VmState, snap: SnapState): VimObject[] {
    const disks = snap.disks.map((sd) => {
      const d = vm.disks.find((x) => x.key === sd.key)!;
      return this.diskDevice(
        d.key,
        d.controllerKey,
        d.unitNumber,
        d.label,
        sd.frozen,
        'persistent',
        sd.changeId,
      );
    });
    return this.devicesWith(vm, disks);
  }

  snapshotInfo(vm: VmState): VimObject | undefined {
    if (vm.snapshots.length === 0) return undefined;
    const tree = (s: SnapState): VimObject => ({
      _type: 'VirtualMachineSnapshotTree',
      snapshot: moref('VirtualMachineSnapshot', s.moref),
      vm: moref('VirtualMachine', vm.moref),
      name: s.name,
      description: s.description,
      id: s.id,
      createTime: s.createTime,
      state: s.state,
      quiesced: s.quiesced,
      childSnapshotList: vm.snapshots.filter((c) => c.parent === s.moref).map(tree),
      replaySupported: false,
    });
    return {
      _type: 'VirtualMachineSnapshotInfo',
      currentSnapshot: vm.currentSnapshot ? moref('VirtualMachineSnapshot', vm.currentSnapshot) : undefined,
      rootSnapshotList: vm.snapshots.filter((s) => s.parent === undefined).map(tree),
    };
  }

  /** The value of one property path of a VM (undefined: unset). */
  vmProperty(vm: VmState, path: string): VimValue | undefined {
    switch (path) {
      case 'name':
        return vm.name;
      case 'config.name':
        return vm.name;
      case 'config.uuid':
        return vm.biosUuid;
      case 'config.instanceUuid':
        return vm.instanceUuid;
      case 'config.guestId':
        return (vm.hardware ?? DEFAULT_HARDWARE).guestId;
      case 'config.hardware.numCPU':
        return (vm.hardware ?? DEFAULT_HARDWARE).numCPU;
      case 'config.hardware.memoryMB':
        return (vm.hardware ?? DEFAULT_HARDWARE).memoryMB;
      case 'config.firmware':
        return vm.firmware ?? 'bios';
      case 'network':
        return arrayOf(
          'ManagedObjectReference',
          this.networks
            .filter((n) => (vm.nics ?? []).some((c) => c.network === n.name))
            .map((n) => moref('Network', n.moref)),
        );
      case 'config.template':
        return vm.template;
      case 'config.changeTrackingEnabled':
        return vm.cbtEnabled;
      case 'config.hardware.device':
        return arrayOf('VirtualDevice', this.vmDevices(vm));
      case 'config.extraConfig':
        return arrayOf(
          'OptionValue',
          vm.extraConfig.map(([key, value]) => ({ _type: 'OptionValue', key, value })),
        );
      case 'config.files.vmPathName':
        return `[${this.datastore(vm.datastore).name}] ${vm.name}/${vm.name}.vmx`;
      case 'capability.changeTrackingSupported':
        return true;
      case 'runtime.powerState':
        return typed('VirtualMachinePowerState', vm.powerState);
      case 'runtime.consolidationNeeded':
        return this.consolidationNeeded(vm);
      case 'runtime.host':
        return moref('HostSystem', vm.host);
      case 'snapshot':
        return this.snapshotInfo(vm);
      case 'datastore':
        return arrayOf('ManagedObjectReference', [moref('Datastore', vm.datastore)]);
      case 'parent':
        return moref('Folder', vm.folder);
      default:
        throw new LabFault('InvalidProperty', `the lab has no VirtualMachine property ${path}`, {
          name: path,
        });
    }
  }
}
