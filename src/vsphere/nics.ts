import type { VimClient } from './client.js';
import { retrieve } from './property.js';
import { isMoRef, isVimObject, type MoRef, type VimObject, type VimValue } from './wire/values.js';

/**
 * Network cards: reading them from `config.hardware.device`, the networks a host sees
 * (`HostSystem.network`), and matching the cards of a backed-up VM to those networks for a new VM.
 */

/** The network a card's backing names. */
export type NicNetwork =
  /** A standard port group (or any `Network`): `VirtualEthernetCardNetworkBackingInfo`. */
  | { readonly kind: 'standard'; readonly name: string; readonly moref?: string | undefined }
  /** A distributed port group: `VirtualEthernetCardDistributedVirtualPortBackingInfo`. */
  | {
      readonly kind: 'distributed';
      readonly switchUuid: string;
      readonly portgroupKey?: string | undefined;
    }
  /** Any other backing (opaque/NSX networks, ...), kept by type only. */
  | { readonly kind: 'other'; readonly backingType: string };

/** A network card as read from a VM. */
export interface NicInfo {
  readonly key: number;
  /** vim25 device type, e.g. `VirtualVmxnet3`. */
  readonly type: string;
  readonly label: string;
  readonly macAddress: string | undefined;
  /** `generated`, `manual` or `assigned`. */
  readonly addressType: string | undefined;
  readonly startConnected: boolean;
  readonly network: NicNetwork | undefined;
}

/** The card types vbproxy creates on a new VM (SR-IOV cards need a physical function: not these). */
export const ETHERNET_CARD_TYPES: ReadonlySet<string> = new Set([
  'VirtualE1000',
  'VirtualE1000e',
  'VirtualPCNet32',
  'VirtualVmxnet',
  'VirtualVmxnet2',
  'VirtualVmxnet3',
  'VirtualVmxnet3Vrdma',
]);

const ALL_CARD_TYPES = new Set([...ETHERNET_CARD_TYPES, 'VirtualSriovEthernetCard']);

function str(v: VimValue | undefined): string | undefined {
  return typeof v === 'string' && v !== '' ? v : undefined;
}

function networkOf(backing: VimValue | undefined): NicNetwork | undefined {
  if (!isVimObject(backing)) return undefined;
  if (backing._type === 'VirtualEthernetCardNetworkBackingInfo') {
    const name = str(backing.deviceName);
    if (name === undefined) return undefined;
    return { kind: 'standard', name, moref: isMoRef(backing.network) ? backing.network.value : undefined };
  }
  if (backing._type === 'VirtualEthernetCardDistributedVirtualPortBackingInfo') {
    const port = isVimObject(backing.port) ? backing.port : undefined;
    const switchUuid = str(port?.switchUuid);
    if (switchUuid === undefined) return undefined;
    return { kind: 'distributed', switchUuid, portgroupKey: str(port?.portgroupKey) };
  }
  return { kind: 'other', backingType: backing._type };
}

/** The network cards of a device list (`config.hardware.device`), in device order. */
export function parseNics(devices: VimValue | undefined): NicInfo[] {
  if (!Array.isArray(devices)) return [];
  const out: NicInfo[] = [];
  for (const d of devices) {
    if (!isVimObject(d) || !ALL_CARD_TYPES.has(d._type)) continue;
    const info = isVimObject(d.deviceInfo) ? d.deviceInfo : undefined;
    const conn = isVimObject(d.connectable) ? d.connectable : undefined;
    const key = typeof d.key === 'number' ? d.key : 0;
    out.push({
      key,
      type: d._type,
      label: str(info?.label) ?? `network adapter ${key}`,
      macAddress: str(d.macAddress),
      addressType: str(d.addressType),
      startConnected: conn?.startConnected === true,
      network: networkOf(d.backing),
    });
  }
  return out;
}

/** A network a host sees: a standard one (`Network`) or a distributed port group. */
export interface HostNetwork {
  readonly ref: MoRef;
  readonly name: string;
  /** For a distributed port group: its key and its switch's UUID. */
  readonly portgroupKey?: string | undefined;
  readonly switchUuid?: string | undefined;
}

/**
 * The networks `host` sees (`HostSystem.network`) with their names, and for distributed port
 * groups their key and switch UUID, in two RetrievePropertiesEx calls.
 */
export async function hostNetworks(client: VimClient, host: MoRef): Promise<HostNetwork[]> {
  const objs = await retrieve(client, [
    {
      _type: 'PropertyFilterSpec',
      propSet: [
        { _type: 'PropertySpec', type: 'Network', pathSet: ['name'] },
        {
          _type: 'PropertySpec',
          type: 'DistributedVirtualPortgroup',
          pathSet: ['name', 'key', 'config.distributedVirtualSwitch'],
        },
      ],
      objectSet: [
        {
          _type: 'ObjectSpec',
          obj: host,
          skip: true,
          selectSet: [{ _type: 'TraversalSpec', type: 'HostSystem', path: 'network', skip: false }],
        },
      ],
    },
  ]);
  const switches = [
    ...new Map(
      objs
        .map((o) => o.props.get('config.distributedVirtualSwitch'))
        .filter(isMoRef)
        .map((r) => [r.value, r] as const),
    ).values(),
  ];
  const uuids = new Map<string, string>();
  if (switches.length > 0) {
    const types = [...new Set(switches.map((s) => s.type))];
    const dvs = await retrieve(client, [
      {
        _type: 'PropertyFilterSpec',
        propSet: types.map((type) => ({ _type: 'PropertySpec', type, pathSet: ['uuid'] })),
        objectSet: switches.map((obj) => ({ _type: 'ObjectSpec', obj })),
      },
    ]);
    for (const o of dvs) {
      const u = str(o.props.get('uuid'));
      if (u !== undefined) uuids.set(o.obj.value, u);
    }
  }
  return objs.map((o) => {
    const sw = o.props.get('config.distributedVirtualSwitch');
    return {
      ref: o.obj,
      name: str(o.props.get('name')) ?? o.obj.value,
      portgroupKey: str(o.props.get('key')),
      switchUuid: isMoRef(sw) ? uuids.get(sw.value) : undefined,
    };
  });
}

/** The backing of a new card: a host network, or none (the card is created disconnected). */
export type NicBacking =
  | { readonly kind: 'standard'; readonly name: string; readonly network: MoRef }
  | { readonly kind: 'distributed'; readonly switchUuid: string; readonly portgroupKey: string };

/** What `placeNics` decided for one kept card. */
export interface PlacedNic {
  readonly type: string;
  readonly label: string;
  readonly startConnected: boolean;
  readonly backing: NicBacking | undefined;
  /** Why the card has no backing (undefined when it has one). */
  readonly unconnected: string | undefined;
}

/** What `placeNics` needs of a kept card. */
export interface KeptNic {
  readonly type: string;
  readonly label?: string | undefined;
  readonly startConnected?: boolean | undefined;
  readonly network?: NicNetwork | null | undefined;
}

/**
 * The kept cards that vbproxy recreates on a new VM (ETHERNET_CARD_TYPES) and those it leaves out
 * (SR-IOV cards, which need a physical function of the host), each list in the kept order.
 */
export function creatableNics<T extends KeptNic>(nics: readonly T[]): { create: T[]; skip: T[] } {
  return {
    create: nics.filter((n) => ETHERNET_CARD_TYPES.has(n.type)),
    skip: nics.filter((n) => !ETHERNET_CARD_TYPES.has(n.type)),
  };
}

/** How a network is named in messages. */
export function describeNetwork(n: NicNetwork | null | undefined): string {
  if (!n) return 'no network';
  switch (n.kind) {
    case 'standard':
      return `network "${n.name}"`;
    case 'distributed':
      return `distributed port group ${n.portgroupKey ?? '(no key)'} of switch ${n.switchUuid}`;
    default:
      return `a ${n.backingType} network`;
  }
}

/**
 * Matches each kept card to a network of the placement host: a standard network by name, a
 * distributed port group by port group key and switch UUID. A card whose network the host lacks
 * (or whose backing cannot be rebuilt) keeps its type, gets no backing and does not start
 * connected; `unconnected` says why.
 */
export function placeNics(nics: readonly KeptNic[], networks: readonly HostNetwork[]): PlacedNic[] {
  return nics.map((n, i) => {
    const label = n.label ?? `network adapter ${i + 1}`;
    const wanted = n.network ?? undefined;
    const base = { type: n.type, label };
    const none = (why: string): PlacedNic => ({
      ...base,
      startConnected: false,
      backing: undefined,
      unconnected: why,
    });
    if (!wanted) return none('the backup kept no network for it');
    if (wanted.kind === 'standard') {
      const net = networks.find((h) => h.name === wanted.name && h.portgroupKey === undefined);
      if (!net) return none(`the placement host has no ${describeNetwork(wanted)}`);
      return {
        ...base,
        startConnected: n.startConnected ?? true,
        backing: { kind: 'standard', name: net.name, network: net.ref },
        unconnected: undefined,
      };
    }
    if (wanted.kind === 'distributed') {
      const key = wanted.portgroupKey;
      if (key === undefined)
        return none(`${describeNetwork(wanted)} cannot be rebuilt without a port group key`);
      const pg = networks.find((h) => h.portgroupKey === key && h.switchUuid === wanted.switchUuid);
      if (!pg) return none(`the placement host has no ${describeNetwork(wanted)}`);
      return {
        ...base,
        startConnected: n.startConnected ?? true,
        backing: { kind: 'distributed', switchUuid: wanted.switchUuid, portgroupKey: key },
        unconnected: undefined,
      };
    }
    return none(`vbproxy does not rebuild ${describeNetwork(wanted)} backings`);
  });
}

/** The `VirtualDeviceConfigSpec` (operation add) of a new card with a generated MAC address. */
export function nicDeviceSpec(nic: PlacedNic, key: number): VimObject {
  let backing: VimObject | undefined;
  if (nic.backing?.kind === 'standard') {
    backing = {
      _type: 'VirtualEthernetCardNetworkBackingInfo',
      deviceName: nic.backing.name,
      network: nic.backing.network,
    };
  } else if (nic.backing?.kind === 'distributed') {
    backing = {
      _type: 'VirtualEthernetCardDistributedVirtualPortBackingInfo',
      port: {
        _type: 'DistributedVirtualSwitchPortConnection',
        switchUuid: nic.backing.switchUuid,
        portgroupKey: nic.backing.portgroupKey,
      },
    };
  }
  const connected = nic.backing !== undefined && nic.startConnected;
  return {
    _type: 'VirtualDeviceConfigSpec',
    operation: 'add',
    device: {
      _type: nic.type,
      key,
      backing,
      connectable: {
        _type: 'VirtualDeviceConnectInfo',
        startConnected: connected,
        allowGuestControl: true,
        connected: false,
      },
      addressType: 'generated',
    },
  };
}
