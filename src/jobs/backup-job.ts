import { setTimeout as sleep } from 'node:timers/promises';
import { recordAttach, recordDetach } from '../catalog/hotadd-ledger.js';
import { addJobEvent } from '../catalog/jobs.js';
import { getPolicy, type ConsistencyMode, type Policy } from '../catalog/policies.js';
import {
  getRestorePoint,
  insertRestorePoint,
  latestDiskRecord,
  type DiskTransport,
  type RestorePointDisk,
} from '../catalog/restore-points.js';
import { describeError, isTransient } from '../errors.js';
import type { Logger } from '../log.js';
import type { DiskSource, Extent } from '../pipeline/disk.js';
import { PointNotFoundError } from '../repository/errors.js';
import type { Manifest } from '../repository/manifest.js';
import type { Repository } from '../repository/repository.js';
import type { BackupSession } from '../repository/session.js';
import {
  VddkDiskSource,
  VddkError,
  type Transport,
  type VddkConnection,
  type VddkDisk,
} from '../vddk/index.js';
import { changeIdUuid, queryChangedAreas } from '../vsphere/cbt.js';
import type { DiskInfo } from '../vsphere/disks.js';
import { FileFaultError, QuiesceFaultError } from '../vsphere/errors.js';
import { getVm, type VmInfo } from '../vsphere/inventory.js';
import {
  consolidateDisks,
  createSnapshot,
  enableCbt,
  removeSnapshot,
  snapshotDescription,
  snapshotName,
  walkSnapshotTree,
  type CreatedSnapshot,
} from '../vsphere/snapshots.js';
import type { MoRef } from '../vsphere/wire/values.js';
import { JobError } from './errors.js';
import { crashArmed, crashPoint } from './failpoints.js';
import { preflight, type PreflightReport } from './preflight.js';
import type { BackupJobData } from './queues.js';
import { connectVcenter, vmRef, type JobRuntime, type VcenterSession } from './runtime.js';
import { vmConfigOf } from './vm-config.js';

/** What one job handler gets from the worker: its id, cancellation, progress and a logger. */
export interface JobControl {
  readonly jobId: string;
  readonly signal: AbortSignal;
  readonly log: Logger;
  progress(p: { doneBytes: number; totalBytes: number; phase: string }): void;
}

/** One disk of a finished backup, as the demo's summary and the job's return value show it. */
export interface DiskResult {
  diskKey: number;
  disk: number;
  label: string;
  capacityBytes: number;
  mode: 'full' | 'incremental';
  /** Why a full was read although a previous point existed (CBT reset, size change, ...). */
  fullReason: string | null;
  transport: DiskTransport;
  bytesRead: number;
  /** Plaintext bytes of the chunks written (new content), and their size as stored. */
  newBytes: number;
  storedBytes: number;
  dedupChunks: number;
  newChunks: number;
  zeroChunks: number;
  reusedChunks: number;
  durationMs: number;
  /** Transient faults survived by resuming the read. */
  resumes: number;
}

export interface BackupResult {
  restorePointId: string;
  manifestId: string;
  vmName: string;
  consistency: ConsistencyMode;
  quiesceFallback: boolean;
  preflight: PreflightReport;
  disks: DiskResult[];
}

/** VDDK reads kept in flight per disk (ReadAsync on the VDDK worker thread). */
const READS_IN_FLIGHT = 16;

const MANIFEST_TAG_DISK = (n: number): string => `disk.${n}.key`;

/** The backup lifecycle of design section 2 for one VM. */
export async function runBackupJob(
  rt: JobRuntime,
  data: BackupJobData,
  ctl: JobControl,
): Promise<BackupResult> {
  const { jobId } = data;
  const log = ctl.log;
  const policy = await getPolicy(rt.pool, data.policyId);
  const vc = await connectVcenter(rt, data.vcenterId);
  const vm = vmRef(data.vmMoref);
  let snapshot: CreatedSnapshot | undefined;
  let session: BackupSession | undefined;
  let committed = false;
  try {
    let info = await getVm(vc.client, vm);
    const vmLog = log.child({ vm: info.name, vmMoref: vm.value });
    if (info.template) {
      throw new JobError(
        'BACKUP_TEMPLATE',
        `VM ${info.name} (${vm.value}) is a template: templates cannot be snapshotted; convert it to a VM or leave it out of policy ${policy.name}`,
      );
    }
    const t = { start: Date.now(), preflight: 0, snapshot: 0, plan: 0, read: 0, commit: 0 };
    const lap = (k: keyof typeof t): void => {
      t[k] = Date.now() - t.start - (t.preflight + t.snapshot + t.plan + t.read + t.commit);
    };
    ctl.progress({ doneBytes: 0, totalBytes: 0, phase: 'pre-flight' });
    const pf = await preflight(rt, vc, jobId, vm, vmLog);
    lap('preflight');
    checkCancel(ctl);

    // 2. CBT on.
    info = await getVm(vc.client, vm);
    if (!info.cbtEnabled) {
      if (walkSnapshotTree(info.snapshot).length === 0 && info.cbtSupported) {
        await enableCbt(vc.client, vm);
        await event(rt, jobId, 'info', `CBT enabled on ${info.name} (stun cycle done)`);
      } else {
        await event(rt, jobId, 'warn', `CBT is off on ${info.name} and cannot be enabled now: full read`);
      }
      info = await getVm(vc.client, vm);
    }

    // 3. Snapshot.
    ctl.progress({ doneBytes: 0, totalBytes: 0, phase: 'snapshot' });
    const snap = await takeSnapshot(rt, vc, info, policy, jobId, vmLog);
    snapshot = snap.snapshot;
    lap('snapshot');
    crashPoint('after-snapshot');
    checkCancel(ctl);

    // 4-5. Disks.
    const repo = await rt.repositories.get(policy.repository);
    const selected = selectDisks(info, policy, snapshot.disks);
    if (selected.length === 0) {
      throw new JobError(
        'BACKUP_NO_DISKS',
        `policy ${policy.name} selects no disk of VM ${info.name} (${vm.value})`,
      );
    }
    const plans: DiskPlan[] = [];
    for (const [n, d] of selected.entries())
      plans.push(await planDisk(rt, vc, data, policy, repo, snapshot.ref, d, n, vmLog));
    const bases = [...new Set(plans.flatMap((p) => (p.base ? [p.base.pointId] : [])))];
    session = await repo.beginBackup({ name: info.name, basePoints: bases });
    lap('plan');

    const totals = plans.map(() => ({ done: 0, total: 0 }));
    const report = (): void => {
      const done = totals.reduce((a, t) => a + t.done, 0);
      const total = totals.reduce((a, t) => a + t.total, 0);
      ctl.progress({ doneBytes: done, totalBytes: total, phase: 'read' });
    };
    const s = session;
    const snapRef = snapshot.ref;
    const results = await Promise.all(
      plans.map((p, i) =>
        backupOneDisk(rt, vc, data, policy, s, snapRef, p, ctl, vmLog.child({ disk: p.disk.key }), (d, t) => {
          totals[i] = { done: d, total: t };
          report();
        }),
      ),
    );
    lap('read');
    checkCancel(ctl);

    // 6. Commit: data and indexes + manifest (session.commit), then the catalog rows with the changeIds.
    ctl.progress({ doneBytes: 1, totalBytes: 1, phase: 'commit' });
    crashPoint('before-commit');
    const tags: Record<string, string> = {
      jobId,
      vcenterId: data.vcenterId,
      vmMoref: vm.value,
      policy: policy.name,
    };
    plans.forEach((p, i) => (tags[MANIFEST_TAG_DISK(i)] = String(p.disk.key)));
    const manifest = await session.commit({
      consistency: snap.consistency,
      vmConfig: Buffer.from(JSON.stringify(vmConfigOf(info))),
      tags,
    });
    committed = true;
    const disks: RestorePointDisk[] = plans.map((p, i) => ({
      diskKey: p.disk.key,
      label: p.disk.label,
      capacityBytes: p.disk.capacityBytes,
      changeId: p.disk.changeId ?? null,
      cbtUuid: p.disk.changeId ? changeIdUuid(p.disk.changeId) : null,
      mode: results[i]!.mode,
      bytesRead: results[i]!.bytesRead,
      bytesWritten: results[i]!.storedBytes,
      durationMs: results[i]!.durationMs,
      transport: results[i]!.transport,
    }));
    const point = await insertRestorePoint(rt.pool, {
      jobId,
      vcenterId: data.vcenterId,
      vmMoref: vm.value,
      vmName: info.name,
      repository: policy.repository,
      manifestName: manifest.id,
      snapshotTime: new Date(manifest.startedAt),
      consistency: snap.consistency,
      disks,
    });
    lap('commit');
    const { start: _start, ...phasesMs } = t;
    await event(rt, jobId, 'info', `restore point ${manifest.id} committed`, {
      restorePointId: point.id,
      phasesMs,
    });
    crashPoint('after-commit');

    // 7. Snapshot removal (the disks are closed already), consolidation.
    ctl.progress({ doneBytes: 1, totalBytes: 1, phase: 'cleanup' });
    const snapToRemove = snapshot;
    snapshot = undefined;
    await removeSnapshotAndConsolidate(rt, vc, vm, snapToRemove.ref, jobId, vmLog);
    rt.metrics.recordBackupSucceeded(vm.value);
    for (const r of results) {
      rt.metrics.recordDiskFinished({
        mode: r.mode,
        transport: r.transport,
        durationSeconds: r.durationMs / 1000,
        bytesRead: r.bytesRead,
        bytesWritten: r.storedBytes,
        bytesDeduplicated: Math.max(0, r.bytesRead - r.newBytes),
        bytesCompressedSaved: Math.max(0, r.newBytes - r.storedBytes),
      });
    }
    return {
      restorePointId: point.id,
      manifestId: manifest.id,
      vmName: info.name,
      consistency: snap.consistency,
      quiesceFallback: snap.fallback,
      preflight: pf,
      disks: results,
    };
  } finally {
    if (session && !committed) await session.abort().catch(() => undefined);
    if (snapshot) {
      // A failed or cancelled job removes its snapshot now; if that fails too, the next pre-flight does.
      await removeSnapshotAndConsolidate(rt, vc, vm, snapshot.ref, jobId, log).catch((err: unknown) =>
        log.warn({ err: describeError(err) }, 'could not remove the snapshot; the next job start will'),
      );
    }
    await vc.close();
  }
}

function checkCancel(ctl: JobControl): void {
  if (ctl.signal.aborted)
    throw ctl.signal.reason instanceof Error ? ctl.signal.reason : new Error('cancelled');
}

async function event(
  rt: JobRuntime,
  jobId: string,
  level: 'info' | 'warn' | 'error',
  message: string,
  data?: Record<string, unknown>,
): Promise<void> {
  await addJobEvent(rt.pool, jobId, level, message, data);
}

async function removeSnapshotAndConsolidate(
  rt: JobRuntime,
  vc: VcenterSession,
  vm: MoRef,
  snap: MoRef,
  jobId: string,
  log: Logger,
): Promise<void> {
  await removeSnapshot(vc.client, snap);
  if ((await getVm(vc.client, vm)).consolidationNeeded) {
    log.warn('consolidation needed after snapshot removal');
    await consolidateDisks(vc.client, vm);
    await event(rt, jobId, 'warn', 'disks consolidated after snapshot removal');
  }
}

/** The policy's quiescing with retries and its fallback; returns what was achieved. */
async function takeSnapshot(
  rt: JobRuntime,
  vc: VcenterSession,
  info: VmInfo,
  policy: Policy,
  jobId: string,
  log: Logger,
): Promise<{ snapshot: CreatedSnapshot; consistency: ConsistencyMode; fallback: boolean }> {
  const tag = { jobId, proxy: rt.proxy.vmMoref ?? rt.proxy.name, created: new Date().toISOString() };
  const base = { name: snapshotName(tag), description: snapshotDescription(tag) };
  const wantQuiesce = policy.consistency !== 'crash' && info.powerState === 'poweredOn';
  if (wantQuiesce) {
    let last: unknown;
    for (let attempt = 1; attempt <= rt.quiesceAttempts; attempt++) {
      try {
        const s = await createSnapshot(vc.client, info.ref, { ...base, quiesce: true });
        if (s.quiesced) return { snapshot: s, consistency: policy.consistency, fallback: false };
        // Taken but not quiesced (vSphere may do this silently): what was achieved is crash-consistent.
        await event(
          rt,
          jobId,
          'warn',
          `snapshot of ${info.name} was taken without quiescing: crash-consistent`,
        );
        return { snapshot: s, consistency: 'crash', fallback: true };
      } catch (err) {
        if (!(err instanceof QuiesceFaultError)) throw err;
        last = err;
        log.warn({ attempt, err: describeError(err) }, 'quiesced snapshot failed');
        await event(
          rt,
          jobId,
          'warn',
          `quiesced snapshot attempt ${attempt} of ${rt.quiesceAttempts} failed: ${err.message}`,
        );
        if (attempt < rt.quiesceAttempts) await sleep(rt.retryDelayMs * attempt);
      }
    }
    if (policy.consistencyFallback !== 'crash') {
      throw new JobError(
        'BACKUP_QUIESCE_FAILED',
        `VM ${info.name} could not be quiesced after ${rt.quiesceAttempts} attempts and policy ${policy.name} allows no fallback below ${policy.consistencyFallback === 'fail' ? policy.consistency : 'filesystem'} consistency: ${describeError(last)}`,
        { cause: last },
      );
    }
    const s = await createSnapshot(vc.client, info.ref, { ...base, quiesce: false });
    await event(
      rt,
      jobId,
      'warn',
      `fell back to a crash-consistent snapshot of ${info.name} (policy fallback)`,
      {
        requested: policy.consistency,
        achieved: 'crash',
      },
    );
    return { snapshot: s, consistency: 'crash', fallback: true };
  }
  const s = await createSnapshot(vc.client, info.ref, { ...base, quiesce: false });
  // A powered-off VM's disks are at rest: the snapshot is as consistent as the policy asks.
  return {
    snapshot: s,
    consistency: info.powerState === 'poweredOn' ? 'crash' : policy.consistency,
    fallback: false,
  };
}

/** The snapshot's disks the policy selects, in device key order; independent disks and RDMs cannot be snapshotted. */
function selectDisks(info: VmInfo, policy: Policy, snapDisks: readonly DiskInfo[]): DiskInfo[] {
  const sel = policy.diskSelection;
  return [...snapDisks]
    .filter((d) => !d.independent && !d.rdm)
    .filter((d) =>
      sel.mode === 'all'
        ? true
        : sel.mode === 'include'
          ? sel.diskKeys.includes(d.key)
          : !sel.diskKeys.includes(d.key),
    )
    .sort((a, b) => a.key - b.key);
}

interface DiskPlan {
  disk: DiskInfo;
  /** The disk's number in the restore point. */
  n: number;
  base: { pointId: string; disk: number } | undefined;
  /** Changed areas (incremental) or allocated areas (full with CBT); undefined: VDDK's allocated blocks. */
  extents: Extent[] | undefined;
  fullReason: string | null;
}

/**
 * The CBT trust rule of design section 2 step 4: an incremental only when the newest point of this
 * disk in this repository has a changeId with the same CBT identity as the snapshot's, the same
 * size, and its manifest opens with this repository's key. Anything else is a full read.
 */
async function planDisk(
  rt: JobRuntime,
  vc: VcenterSession,
  data: BackupJobData,
  policy: Policy,
  repo: Repository,
  snap: MoRef,
  disk: DiskInfo,
  n: number,
  log: Logger,
): Promise<DiskPlan> {
  const toExtents = (areas: { start: number; length: number }[]): Extent[] =>
    areas.map((a) => ({ offset: a.start, length: a.length }));
  const full = async (reason: string | null): Promise<DiskPlan> => {
    const extents = disk.changeId
      ? toExtents(
          await queryChangedAreas(vc.client, {
            vm: vmRef(data.vmMoref),
            snapshot: snap,
            deviceKey: disk.key,
            capacityBytes: disk.capacityBytes,
            changeId: '*',
          }),
        )
      : undefined;
    if (reason) await event(rt, data.jobId, 'warn', `disk ${disk.label}: full read: ${reason}`);
    return { disk, n, base: undefined, extents, fullReason: reason };
  };
  const prev = await latestDiskRecord(rt.pool, {
    vcenterId: data.vcenterId,
    vmMoref: data.vmMoref,
    repository: policy.repository,
    diskKey: disk.key,
  });
  if (!prev) return full(null);
  if (!disk.changeId || !prev.changeId || !prev.cbtUuid) return full('no CBT changeId to compare');
  if (prev.cbtUuid !== changeIdUuid(disk.changeId)) {
    rt.metrics.recordCbtReset();
    return full('CBT was reset since the previous restore point (different CBT identity)');
  }
  if (prev.capacityBytes !== disk.capacityBytes) return full('the disk changed size');
  let manifest: Manifest;
  try {
    const point = await getRestorePoint(rt.pool, prev.restorePointId);
    manifest = await repo.getPoint(point.manifestName);
  } catch (err) {
    if (err instanceof PointNotFoundError)
      return full('the previous restore point is gone from the repository');
    throw err;
  }
  const baseDisk = manifest.disks.find((d) => manifest.tags[MANIFEST_TAG_DISK(d.disk)] === String(disk.key));
  if (!baseDisk) return full('the previous restore point does not hold this disk');
  try {
    const areas = await queryChangedAreas(vc.client, {
      vm: vmRef(data.vmMoref),
      snapshot: snap,
      deviceKey: disk.key,
      capacityBytes: disk.capacityBytes,
      changeId: prev.changeId,
    });
    log.info({ changed: areas.length, since: prev.changeId }, 'incremental');
    return {
      disk,
      n,
      base: { pointId: manifest.id, disk: baseDisk.disk },
      extents: toExtents(areas),
      fullReason: null,
    };
  } catch (err) {
    if (err instanceof FileFaultError) {
      rt.metrics.recordCbtReset();
      return full(`vSphere does not know changeId ${prev.changeId} any more (${err.message})`);
    }
    throw err;
  }
}

/** A DiskSource that counts what it reads and can crash the worker half-way (the mid-read crash point). */
class ObservedSource implements DiskSource {
  readonly capacity: number;
  readonly maxConcurrentReads?: number;
  readonly description: string;
  bytes = 0;
  constructor(private readonly inner: DiskSource) {
    this.capacity = inner.capacity;
    this.description = inner.description;
    if (inner.maxConcurrentReads !== undefined) this.maxConcurrentReads = inner.maxConcurrentReads;
  }
  extents(): Promise<readonly Extent[]> {
    return this.inner.extents();
  }
  async read(offset: number, length: number): Promise<Buffer> {
    const b = await this.inner.read(offset, length);
    this.bytes += length;
    if (crashArmed('mid-read') && this.bytes >= 4 * length) crashPoint('mid-read');
    return b;
  }
  recycle(buffer: Buffer): void {
    this.inner.recycle?.(buffer);
  }
  close(): Promise<void> {
    return this.inner.close();
  }
}

/**
 * Reads one disk into the session: opens it through VDDK with the policy's transport order
 * (hot-add recorded in the ledger first), and on a transient fault closes everything, waits, and
 * calls backupDisk again, which resumes from the last durable chunk.
 */
async function backupOneDisk(
  rt: JobRuntime,
  vc: VcenterSession,
  data: BackupJobData,
  policy: Policy,
  session: BackupSession,
  snap: MoRef,
  plan: DiskPlan,
  ctl: JobControl,
  log: Logger,
  onProgress: (done: number, total: number) => void,
): Promise<DiskResult> {
  const file = plan.disk.fileName;
  const proxyVm = rt.proxy.vmMoref;
  let resumes = 0;
  let bytesRead = 0;
  let transport: Transport = 'nbdssl';
  let started = 0;
  for (;;) {
    const release = await rt.diskSlots.acquire();
    // The disk's duration counts from its first slot: waiting for other disks is not its time.
    started ||= Date.now();
    let conn: VddkConnection | undefined;
    let disk: VddkDisk | undefined;
    let source: ObservedSource | undefined;
    let ledger = false;
    try {
      checkCancel(ctl);
      if (proxyVm !== null && policy.transports.includes('hotadd')) {
        await recordAttach(rt.pool, {
          jobId: data.jobId,
          proxyId: rt.proxy.id,
          proxyVmMoref: proxyVm,
          vmMoref: data.vmMoref,
          diskPath: file,
        });
        ledger = true;
      }
      conn = await rt.vddk.connect(
        vc.vddkSpec({
          vmMoref: data.vmMoref,
          snapshotMoref: snap.value,
          transports: policy.transports,
          readOnly: true,
        }),
      );
      // Unbuffered: a backup reads each block once, so host caching would only cost memory and a
      // copy (VddkDisk.read then gives VDDK sector-aligned buffers).
      disk = await conn.open(file, { readOnly: true, unbuffered: true });
      transport = disk.transport;
      rt.metrics.recordTransportUsed(transport === 'hotadd' || transport === 'nbd' ? transport : 'nbdssl');
      if (transport !== 'hotadd' && ledger) {
        await recordDetach(rt.pool, { proxyVmMoref: proxyVm!, diskPath: file, by: 'job' });
        ledger = false;
      }
      if (transport === 'hotadd') crashPoint('after-hotadd');
      if (transport !== 'hotadd' && policy.transports[0] === 'hotadd' && resumes === 0) {
        await event(
          rt,
          data.jobId,
          'warn',
          `disk ${plan.disk.label}: hot-add not possible, read over ${transport}`,
          {
            diskKey: plan.disk.key,
            transport,
          },
        );
      }
      source = new ObservedSource(
        new VddkDiskSource(disk, {
          maxConcurrentReads: READS_IN_FLIGHT,
          ...(plan.extents ? { extents: plan.extents } : {}),
        }),
      );
      const stats = await session.backupDisk(source, {
        disk: plan.n,
        label: `${plan.disk.key} ${plan.disk.label} ${file}`,
        changeId: plan.disk.changeId ?? null,
        ...(plan.base ? { base: plan.base, changedExtents: plan.extents ?? [] } : {}),
        signal: ctl.signal,
        onProgress: (p) => onProgress(p.doneBytes, p.totalBytes),
      });
      bytesRead += source.bytes;
      rt.metrics.recordBytesRead(plan.base ? 'incremental' : 'full', source.bytes);
      return {
        diskKey: plan.disk.key,
        disk: plan.n,
        label: plan.disk.label,
        capacityBytes: plan.disk.capacityBytes,
        mode: plan.base ? 'incremental' : 'full',
        fullReason: plan.fullReason,
        transport: transport === 'san' || transport === 'file' ? 'nbdssl' : transport,
        bytesRead,
        newBytes: stats.newBytes,
        storedBytes: stats.storedBytes,
        dedupChunks: stats.dedupChunks,
        newChunks: stats.newChunks,
        zeroChunks: stats.zeroChunks,
        reusedChunks: stats.reusedChunks,
        durationMs: Date.now() - started,
        resumes,
      };
    } catch (err) {
      bytesRead += source?.bytes ?? 0;
      if (err instanceof VddkError && err.vixCode !== 0) rt.metrics.recordVddkError(err.vixCode);
      if (ctl.signal.aborted || !isTransient(err) || resumes >= rt.readRetries) throw err;
      resumes++;
      const delay = rt.retryDelayMs * 2 ** (resumes - 1);
      log.warn({ err: describeError(err), resumes, delay }, 'transient fault while reading; resuming');
      await event(
        rt,
        data.jobId,
        'warn',
        `disk ${plan.disk.label}: transient fault, resuming from chunk ${session.durableChunks(plan.n)}: ${describeError(err)}`,
        {
          diskKey: plan.disk.key,
          resume: resumes,
        },
      );
      await sleep(delay);
    } finally {
      if (disk)
        await disk.close().catch((e: unknown) => log.warn({ err: describeError(e) }, 'disk close failed'));
      if (conn) await conn.disconnect().catch(() => undefined);
      if (ledger && proxyVm !== null)
        await recordDetach(rt.pool, { proxyVmMoref: proxyVm, diskPath: file, by: 'job' });
      release();
    }
  }
}
