import type { Job as QueueJob } from 'bullmq';
import { listProxies } from '../catalog/proxies.js';
import type { Logger } from '../log.js';
import { datastoresVisibleTo, getVm } from '../vsphere/inventory.js';
import type { BackupJobData } from './queues.js';
import { connectVcenter, vmRef, type JobRuntime } from './runtime.js';

/** Proxies seen within this window count as online for routing. */
const ONLINE_MS = 2 * 60 * 1000;
/** After this many hand-backs, whichever proxy takes the job runs it (over NBD if it must). */
const MAX_PASSES = 5;

/**
 * Scale-out routing: a backup should run on a proxy that can hot-add the VM's disks (its host sees
 * every datastore of the VM). When this proxy cannot and another online proxy can, the job is
 * handed back (the caller delays it a few seconds) so that one takes it, at most MAX_PASSES times;
 * when no proxy can, any proxy runs it over NBD. Returns true when this proxy should pass the job on.
 */
export async function shouldPassOn(
  rt: JobRuntime,
  job: QueueJob<BackupJobData>,
  log: Logger,
): Promise<boolean> {
  const passed = job.data.passedBy ?? [];
  if (passed.length >= MAX_PASSES) return false;
  const others = (await listProxies(rt.pool)).filter(
    (p) =>
      p.name !== rt.proxy.name &&
      p.vmMoref !== null &&
      p.status === 'online' &&
      Date.now() - p.lastSeenAt.getTime() < ONLINE_MS,
  );
  if (others.length === 0) return false;
  const vc = await connectVcenter(rt, job.data.vcenterId);
  try {
    const vm = await getVm(vc.client, vmRef(job.data.vmMoref));
    const needed = new Set(vm.disks.flatMap((d) => (d.datastore ? [d.datastore.value] : [])));
    const covers = async (proxyVm: string): Promise<boolean> => {
      const seen = new Set((await datastoresVisibleTo(vc.client, vmRef(proxyVm))).map((d) => d.ref.value));
      return [...needed].every((d) => seen.has(d));
    };
    if (rt.proxy.vmMoref !== null && (await covers(rt.proxy.vmMoref))) return false;
    for (const p of others) {
      if (await covers(p.vmMoref!)) {
        log.info(
          { vm: vm.name, better: p.name },
          'this proxy cannot hot-add the VM; leaving the job to a proxy that can',
        );
        await job.updateData({ ...job.data, passedBy: [...passed, rt.proxy.name] });
        return true;
      }
    }
    return false;
  } finally {
    await vc.close();
  }
}
