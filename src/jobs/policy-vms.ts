import type { Policy } from '../catalog/policies.js';
import { listVms } from '../vsphere/inventory.js';
import { JobError } from './errors.js';
import { connectVcenter, type JobRuntime } from './runtime.js';

/** A glob (`*`, `?`) as an anchored, case-insensitive regular expression. */
export function globToRegExp(glob: string): RegExp {
  const body = glob
    .replace(/[.+^${}()|[\]\\]/g, '\\$&')
    .replace(/\*/g, '.*')
    .replace(/\?/g, '.');
  return new RegExp(`^${body}$`, 'i');
}

/**
 * The VMs a policy selects: its explicit morefs, and every VM (not template, not a vbproxy proxy)
 * whose name matches one of its patterns. Folder selection needs the inventory's folder paths,
 * which the vSphere client does not read yet: a policy that uses folders is refused clearly.
 */
export async function resolvePolicyVms(
  rt: JobRuntime,
  policy: Policy,
): Promise<{ moref: string; name?: string }[]> {
  const sel = policy.vmSelection;
  if (sel.folders.length > 0) {
    throw new JobError(
      'POLICY_FOLDERS_UNSUPPORTED',
      `policy ${policy.name} selects VMs by folder (${sel.folders.join(', ')}), which this version cannot resolve yet; use morefs or name patterns`,
    );
  }
  const out = new Map<string, string | undefined>();
  for (const m of sel.morefs) out.set(m, undefined);
  if (sel.namePatterns.length > 0) {
    const vc = await connectVcenter(rt, policy.vcenterId);
    try {
      const res = sel.namePatterns.map(globToRegExp);
      for (const vm of await listVms(vc.client)) {
        if (vm.template || vm.ref.value === rt.proxy.vmMoref) continue;
        if (res.some((r) => r.test(vm.name))) out.set(vm.ref.value, vm.name);
      }
    } finally {
      await vc.close();
    }
  }
  return [...out.entries()].map(([moref, name]) => (name === undefined ? { moref } : { moref, name }));
}
