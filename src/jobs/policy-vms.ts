import type { Pool } from '../catalog/db.js';
import type { Policy } from '../catalog/policies.js';
import type { SecretBox } from '../catalog/secret-box.js';
import { getVcenterCredentials } from '../catalog/vcenters.js';
import type { VimClient } from '../vsphere/client.js';
import { VimLookupError } from '../vsphere/errors.js';
import { findByInventoryPath, listVms, listVmsInFolder } from '../vsphere/inventory.js';
import { JobError } from './errors.js';
import { connectVcenter, sessionFor, type JobRuntime } from './runtime.js';

/** A glob (`*`, `?`) as an anchored, case-insensitive regular expression. */
export function globToRegExp(glob: string): RegExp {
  const body = glob
    .replace(/[.+^${}()|[\]\\]/g, '\\$&')
    .replace(/\*/g, '.*')
    .replace(/\?/g, '.');
  return new RegExp(`^${body}$`, 'i');
}

/** A logged-in vSphere client for a catalog vCenter, closed by the caller. */
export type VcenterConnector = (vcenterId: string) => Promise<{ client: VimClient; close(): Promise<void> }>;

export interface PolicyVmResolverOptions {
  /** Opens the policy's vCenter (the worker: its runtime; the API and CLI: the catalog credentials). */
  readonly connect: VcenterConnector;
  /** This proxy's own VM, never selected by a folder or a pattern. */
  readonly proxyVmMoref: string | null;
}

export interface SelectedVm {
  moref: string;
  name?: string;
}

/**
 * The VMs a policy selects: its explicit morefs, every VM below each of its folders (a moref, or
 * an inventory path resolved now; recursively, through the property collector), and every VM
 * whose name matches one of its patterns. Templates and this proxy's own VM are never selected by
 * a folder or a pattern. One resolver serves the worker (scheduled runs) and the API and CLI
 * ("run now").
 */
export function policyVmResolver(o: PolicyVmResolverOptions): {
  resolve(policy: Policy): Promise<SelectedVm[]>;
} {
  return {
    async resolve(policy) {
      const sel = policy.vmSelection;
      const out = new Map<string, string | undefined>();
      for (const m of sel.morefs) out.set(m, undefined);
      if (sel.folders.length === 0 && sel.namePatterns.length === 0) return toList(out);
      const vc = await o.connect(policy.vcenterId);
      try {
        const eligible = (ref: string, template: boolean): boolean => !template && ref !== o.proxyVmMoref;
        for (const entry of sel.folders) {
          const folder = await folderMorefOf(vc.client, policy, entry);
          let vms;
          try {
            vms = await listVmsInFolder(vc.client, folder);
          } catch (err) {
            if (err instanceof VimLookupError) {
              throw new JobError(
                'POLICY_FOLDER_NOT_FOUND',
                `policy ${policy.name} selects folder ${entry === folder ? folder : `${entry} (${folder})`}, which does not exist in its vCenter; fix the policy's vmSelection.folders`,
                { cause: err },
              );
            }
            throw err;
          }
          for (const vm of vms) if (eligible(vm.ref.value, vm.template)) out.set(vm.ref.value, vm.name);
        }
        if (sel.namePatterns.length > 0) {
          const res = sel.namePatterns.map(globToRegExp);
          for (const vm of await listVms(vc.client)) {
            if (eligible(vm.ref.value, vm.template) && res.some((r) => r.test(vm.name)))
              out.set(vm.ref.value, vm.name);
          }
        }
      } finally {
        await vc.close();
      }
      return toList(out);
    },
  };
}

/** What to do instead when a policy's folder path leads to something that is not a folder. */
const INSTEAD: Readonly<Record<string, string>> = {
  VirtualMachine: 'to protect that VM alone, put its moref in vmSelection.morefs',
  Datacenter: "to protect the datacenter's VMs, give its vm folder (the path followed by /vm)",
};

/**
 * The folder moref a `vmSelection.folders` entry names: a moref as it is, an inventory path
 * (starting with `/`) through `SearchIndex.FindByInventoryPath`. A path that leads nowhere, or to
 * something other than a Folder, is POLICY_FOLDER_NOT_FOUND naming the policy and the path.
 */
async function folderMorefOf(client: VimClient, policy: Policy, entry: string): Promise<string> {
  if (!entry.startsWith('/')) return entry;
  const ref = await findByInventoryPath(client, entry);
  if (ref === undefined) {
    throw new JobError(
      'POLICY_FOLDER_NOT_FOUND',
      `policy ${policy.name} selects folder ${entry}, but no object of its vCenter has that inventory path ` +
        `(a folder renamed or moved since the policy was written is no longer found by its old path); ` +
        `fix the policy's vmSelection.folders: give the folder's current path, or its moref (group-v...), which survives renames`,
    );
  }
  if (ref.type !== 'Folder') {
    const instead = INSTEAD[ref.type] ?? 'give the path of a VM folder';
    throw new JobError(
      'POLICY_FOLDER_NOT_FOUND',
      `policy ${policy.name} selects folder ${entry}, but that inventory path is a ${ref.type} (${ref.value}), ` +
        `not a folder; fix the policy's vmSelection.folders: ${instead}`,
    );
  }
  return ref.value;
}

function toList(m: Map<string, string | undefined>): SelectedVm[] {
  return [...m.entries()].map(([moref, name]) => (name === undefined ? { moref } : { moref, name }));
}

/** The worker's view of `policyVmResolver`: connects through the job runtime. */
export function resolvePolicyVms(rt: JobRuntime, policy: Policy): Promise<SelectedVm[]> {
  return policyVmResolver({
    connect: (id) => connectVcenter(rt, id),
    proxyVmMoref: rt.proxy.vmMoref,
  }).resolve(policy);
}

/** The API's and CLI's view of `policyVmResolver`: connects with the catalog's sealed credentials. */
export function catalogPolicyVmResolver(
  pool: Pool,
  secretBox: SecretBox,
  proxyVmMoref: string | null,
): { resolve(policy: Policy): Promise<SelectedVm[]> } {
  return policyVmResolver({
    connect: async (id) => sessionFor(await getVcenterCredentials(pool, secretBox, id)),
    proxyVmMoref,
  });
}
