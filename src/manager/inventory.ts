import type { Pool } from '../catalog/db.js';
import type { SecretBox } from '../catalog/secret-box.js';
import { getVcenterCredentials, listVcenters } from '../catalog/vcenters.js';
import { describeError } from '../errors.js';
import { sessionFor } from '../jobs/runtime.js';
import type { Logger } from '../log.js';
import {
  datastoresVisibleTo,
  findSelfVm,
  listHosts,
  readSelfIdentity,
  type SelfIdentity,
} from '../vsphere/inventory.js';
import { moref } from '../vsphere/wire/values.js';
import type { InventoryView } from './proxy-agent.js';

type Entry = { moref: string; name: string };
type Inventory = { hosts: Entry[]; datastores: Entry[] };

export interface VsphereInventoryOptions {
  readonly pool: Pool;
  /** The catalog key (opened lazily: only needed once a vCenter exists). */
  readonly secretBox: () => SecretBox;
  /** config.proxy.vmMoref; when null the proxy VM is looked up by its DMI identity (findSelfVm). */
  readonly proxyVmMoref: string | null;
  readonly logger: Logger;
  /** Longest time one inventory read may take before registration goes on without it. */
  readonly timeoutMs?: number;
  /** The DMI identity of this machine (tests); default: /sys/class/dmi/id. */
  readonly selfIdentity?: () => SelfIdentity;
}

/**
 * The hosts and datastores this proxy sees, read through the vSphere client from the catalog's
 * vCenters: every host of each vCenter, and the datastores visible to the proxy VM's host. It never
 * blocks or breaks registration: with no vCenter yet, an unreachable vCenter, or a read that takes
 * longer than `timeoutMs`, it reports empty lists and logs a warning (once per distinct reason).
 */
export function vsphereInventory(o: VsphereInventoryOptions): InventoryView {
  const warned = new Set<string>();
  const warnOnce = (reason: string, msg: string): void => {
    if (warned.has(reason)) return;
    warned.add(reason);
    o.logger.warn({ reason }, msg);
  };
  const timeoutMs = o.timeoutMs ?? 15_000;

  async function read(): Promise<Inventory> {
    const vcenters = await listVcenters(o.pool);
    if (vcenters.length === 0) {
      warnOnce(
        'no-vcenter',
        'no vCenter is configured yet: registration reports no hosts or datastores until one is added',
      );
      return { hosts: [], datastores: [] };
    }
    const hosts = new Map<string, Entry>();
    const datastores = new Map<string, Entry>();
    for (const v of vcenters) {
      let vc;
      try {
        vc = await sessionFor(await getVcenterCredentials(o.pool, o.secretBox(), v.id));
      } catch (err) {
        warnOnce(
          `vcenter:${v.id}`,
          `cannot read the inventory of vCenter ${v.name} for registration: ${describeError(err)}`,
        );
        continue;
      }
      try {
        for (const h of await listHosts(vc.client))
          hosts.set(h.ref.value, { moref: h.ref.value, name: h.name });
        let self = o.proxyVmMoref === null ? undefined : moref('VirtualMachine', o.proxyVmMoref);
        if (self === undefined) {
          try {
            self = await findSelfVm(vc.client, (o.selfIdentity ?? readSelfIdentity)());
          } catch (err) {
            warnOnce(
              `self:${v.id}`,
              `the proxy VM is not found in vCenter ${v.name} (${describeError(err)}): no datastores reported from it; set proxy.vmMoref`,
            );
          }
        }
        if (self !== undefined) {
          try {
            for (const d of await datastoresVisibleTo(vc.client, self))
              datastores.set(d.ref.value, { moref: d.ref.value, name: d.name });
          } catch (err) {
            warnOnce(
              `datastores:${v.id}`,
              `cannot read the datastores proxy VM ${self.value} sees in vCenter ${v.name}: ${describeError(err)}`,
            );
          }
        }
      } catch (err) {
        warnOnce(
          `vcenter:${v.id}`,
          `cannot read the inventory of vCenter ${v.name} for registration: ${describeError(err)}`,
        );
      } finally {
        await vc.close();
      }
    }
    return { hosts: [...hosts.values()], datastores: [...datastores.values()] };
  }

  return {
    async hostsAndDatastores() {
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<Inventory>((resolve) => {
        timer = setTimeout(() => {
          warnOnce(
            'timeout',
            `reading the vSphere inventory took longer than ${timeoutMs} ms: registering without hosts and datastores`,
          );
          resolve({ hosts: [], datastores: [] });
        }, timeoutMs);
        timer.unref();
      });
      try {
        return await Promise.race([
          read().catch((err: unknown) => {
            warnOnce('catalog', `cannot read the vCenters for registration: ${describeError(err)}`);
            return { hosts: [], datastores: [] };
          }),
          timeout,
        ]);
      } finally {
        clearTimeout(timer);
      }
    },
  };
}
