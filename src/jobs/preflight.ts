import { addJobEvent } from '../catalog/jobs.js';
import { openAttachments, recordDetach } from '../catalog/hotadd-ledger.js';
import type { Logger } from '../log.js';
import { detachDisk, listProxyDisks } from '../vsphere/devices.js';
import { getVm, listVms } from '../vsphere/inventory.js';
import { consolidateDisks, listSnapshots, removeSnapshot } from '../vsphere/snapshots.js';
import type { MoRef } from '../vsphere/wire/values.js';
import { liveJobs } from './liveness.js';
import { vmRef, type JobRuntime, type VcenterSession } from './runtime.js';

export interface PreflightReport {
  /** Disks detached from this proxy VM (orphaned hot-adds). */
  proxyDisksDetached: string[];
  /** Hot-added disks of this proxy VM left alone because a live job holds them. */
  proxyDisksKept: string[];
  /** What VDDK Cleanup removed and what it could not. */
  vddkCleanedUp: number;
  vddkRemaining: number;
  /** Disks of the target detached from other VMs (another proxy that died mid-job). */
  targetDisksDetached: string[];
  /** Our leftover snapshots removed from the target. */
  snapshotsRemoved: string[];
  consolidated: boolean;
}

/**
 * The pre-flight cleanup of design section 2 step 1, in its order: (1) disks hot-added to this
 * proxy VM that no live job holds are detached (files kept) and VDDK Cleanup runs; (2) disks of the
 * target that another VM still holds without a live job are detached from it; (3) vbproxy's own
 * snapshots on the target whose job is not live are removed, one by one (never RemoveAllSnapshots);
 * (4) the target is consolidated when vSphere says it needs it. The proxy's own disks (files no
 * other VM's chain contains and that the ledger never recorded) are never touched.
 */
export async function preflight(
  rt: JobRuntime,
  vc: VcenterSession,
  jobId: string,
  target: MoRef,
  log: Logger,
): Promise<PreflightReport> {
  const report: PreflightReport = {
    proxyDisksDetached: [],
    proxyDisksKept: [],
    vddkCleanedUp: 0,
    vddkRemaining: 0,
    targetDisksDetached: [],
    snapshotsRemoved: [],
    consolidated: false,
  };
  const live = await liveJobs(rt.pool, rt.queues, jobId);
  const client = vc.client;

  /** Jobs the ledger says hold `file` on `vm` (attachments never detached). */
  const holders = async (vm: string, file: string): Promise<string[]> =>
    (await openAttachments(rt.pool, vm)).filter((e) => e.diskPath === file).map((e) => e.jobId ?? '');

  // 1. This proxy's orphaned hot-adds, then VDDK Cleanup.
  const proxyMoref = rt.proxy.vmMoref;
  if (proxyMoref !== null) {
    const proxyVm = vmRef(proxyMoref);
    const ledgerFiles = new Set((await openAttachments(rt.pool, proxyMoref)).map((e) => e.diskPath));
    for (const pd of await listProxyDisks(client, proxyVm)) {
      const file = pd.disk.fileName;
      if (pd.owner === undefined && !ledgerFiles.has(file)) continue; // the appliance's own disk
      const held = (await holders(proxyMoref, file)).filter((j) => live.has(j));
      if (held.length > 0) {
        report.proxyDisksKept.push(file);
        log.info(
          { disk: file, heldBy: held },
          'pre-flight: hot-added disk held by a live job, left attached',
        );
        continue;
      }
      await detachDisk(client, proxyVm, pd.disk.key);
      await recordDetach(rt.pool, { proxyVmMoref: proxyMoref, diskPath: file, by: 'preflight' });
      report.proxyDisksDetached.push(file);
      log.warn({ disk: file, owner: pd.owner?.name }, 'pre-flight: detached an orphaned hot-added disk');
    }
    try {
      const r = await rt.vddk.cleanup(vc.vddkSpec({}));
      report.vddkCleanedUp = r.cleanedUp;
      report.vddkRemaining = r.remaining;
    } catch (err) {
      log.warn({ err }, 'pre-flight: VDDK Cleanup failed');
    }
    // Ledger entries whose disk is gone and whose job is dead: close them.
    const still = new Set((await getVm(client, proxyVm)).disks.map((d) => d.fileName));
    for (const e of await openAttachments(rt.pool, proxyMoref)) {
      if (!still.has(e.diskPath) && !live.has(e.jobId ?? '')) {
        await recordDetach(rt.pool, { proxyVmMoref: proxyMoref, diskPath: e.diskPath, by: 'preflight' });
      }
    }
  }

  // 2. Disks of the target that another VM holds without a live job.
  const targetInfo = await getVm(client, target);
  const targetFiles = new Set<string>();
  for (const d of targetInfo.disks) for (const f of d.chain) targetFiles.add(f);
  for (const other of await listVms(client)) {
    if (other.ref.value === target.value || other.ref.value === proxyMoref) continue;
    for (const d of other.disks) {
      if (!targetFiles.has(d.fileName)) continue;
      const held = (await holders(other.ref.value, d.fileName)).filter((j) => live.has(j));
      if (held.length > 0) {
        log.info(
          { vm: other.name, disk: d.fileName, heldBy: held },
          'pre-flight: target disk held by a live job',
        );
        continue;
      }
      await detachDisk(client, other.ref, d.key);
      await recordDetach(rt.pool, { proxyVmMoref: other.ref.value, diskPath: d.fileName, by: 'preflight' });
      report.targetDisksDetached.push(`${other.name}: ${d.fileName}`);
      log.warn({ vm: other.name, disk: d.fileName }, 'pre-flight: detached a target disk another VM held');
    }
  }

  // 3. Our leftover snapshots whose job is not live (deepest first, so parents stay valid).
  const ours = (await listSnapshots(client, target)).filter((s) => s.tag !== undefined);
  for (const s of ours.reverse()) {
    if (live.has(s.tag!.jobId)) {
      log.info({ snapshot: s.ref.value, heldBy: s.tag!.jobId }, 'pre-flight: snapshot of a live job, kept');
      continue;
    }
    await removeSnapshot(client, s.ref);
    report.snapshotsRemoved.push(s.ref.value);
    log.warn({ snapshot: s.ref.value, job: s.tag!.jobId }, 'pre-flight: removed a leftover vbproxy snapshot');
  }

  // 4. Consolidate when needed.
  if ((await getVm(client, target)).consolidationNeeded) {
    await consolidateDisks(client, target);
    report.consolidated = true;
    log.warn({ vm: targetInfo.name }, 'pre-flight: consolidated the disks of the target');
  }

  if (report.proxyDisksDetached.length > 0)
    rt.metrics.recordOrphanDisksDetached(report.proxyDisksDetached.length);
  if (report.targetDisksDetached.length > 0)
    rt.metrics.recordOrphanDisksDetached(report.targetDisksDetached.length);
  if (report.snapshotsRemoved.length > 0)
    rt.metrics.recordLeftoverSnapshotsRemoved(report.snapshotsRemoved.length);
  const acted =
    report.proxyDisksDetached.length +
    report.targetDisksDetached.length +
    report.snapshotsRemoved.length +
    report.vddkCleanedUp +
    (report.consolidated ? 1 : 0);
  await addJobEvent(rt.pool, jobId, acted > 0 ? 'warn' : 'info', 'pre-flight cleanup done', { ...report });
  return report;
}
