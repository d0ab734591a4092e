import type { Pool } from '../catalog/db.js';
import type { Policy } from '../catalog/policies.js';
import type { SecretBox } from '../catalog/secret-box.js';
import { getVcenterCredentials } from '../catalog/vcenters.js';
import type { VimClient } from '../vsphere/client.js';
import { VimLookupError } from '../vsphere/errors.js';
import { listVms, listVmsInFolder } from '../vsphere/inventory.js';
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
 * The VMs a policy selects: its explicit morefs, every VM below each of its folders (recursively,
 * through the property collector), and every VM whose name matches one of its patterns. Templates
 * and this proxy's own VM are never selected by a folder or a pattern. One resolver serves the
 * worker (scheduled runs) and the API and CLI ("run now").
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
        for (const folder of sel.folders) {
          let vms;
          try {
            vms = await listVmsInFolder(vc.client, folder);
          } catch (err) {
            if (err instanceof VimLookupError) {
              throw new JobError(
                'POLICY_FOLDER_NOT_FOUND',
                `policy ${policy.name} selects folder ${folder}, which does not exist in its vCenter; fix the policy's vmSelection.folders`,
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
