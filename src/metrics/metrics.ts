import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { JobType } from '../catalog/jobs.js';

/**
 * Every Prometheus metric vbproxy exports, and the typed functions the job layer calls to record
 * them. Labels only take values from fixed sets (job type, result, transport, mode, queue, state)
 * plus the VM, which is bounded by `maxVms`: no label ever holds a secret, a path or free text.
 */

export type JobResult = 'succeeded' | 'failed' | 'cancelled';
export type MetricTransport = 'hotadd' | 'nbdssl' | 'nbd' | 'file';
export type DiskMode = 'full' | 'incremental';
export type QueueState = 'waiting' | 'active' | 'failed' | 'delayed';

const JOB_TYPES: readonly JobType[] = ['backup', 'restore', 'verify', 'prune', 'gc', 'catalog-rebuild'];
const TRANSPORTS: readonly MetricTransport[] = ['hotadd', 'nbdssl', 'nbd', 'file'];
/** The VDDK error codes (VixError) worth their own label value; everything else is `other`. */
const VDDK_CODES = new Set([
  '1',
  '2',
  '3',
  '4',
  '6',
  '13',
  '16',
  '20',
  '24',
  '3009',
  '3014',
  '13001',
  '13004',
  '13010',
  '13011',
  '16000',
  '16009',
  '16052',
  '16053',
  '16054',
  '16061',
  '16064',
]);

const VM_MOREF = /^vm-\d+$/;

/** A source of queue counts (implemented by src/jobs/queues.ts `queueCounts`). */
export type QueueCountSource = () => Promise<Record<string, Record<string, number>>>;

/** The newest committed restore point per VM (implemented from the catalog). */
export type LastSuccessSource = () => Promise<{ vm: string; at: Date }[]>;

export interface DiskRecord {
  mode: DiskMode;
  transport: MetricTransport;
  durationSeconds: number;
  bytesRead: number;
  bytesWritten: number;
  /** Bytes of chunks that were already in the repository (not written again). */
  bytesDeduplicated: number;
  /** Bytes saved by compression (uncompressed minus compressed, of the chunks written). */
  bytesCompressedSaved: number;
}

export interface MetricsOptions {
  /** Also collect Node's default metrics (process, heap, GC, event-loop lag). Default true. */
  defaults?: boolean;
  /** Most VMs tracked by per-VM metrics; beyond, new VMs are not added (a warning counter moves). */
  maxVms?: number;
}

export class Metrics {
  readonly registry = new Registry();
  readonly #maxVms: number;
  readonly #vms = new Set<string>();
  readonly #lastSeen = new Map<string, number>();

  readonly jobsTotal: Counter<'type' | 'result'>;
  readonly jobDuration: Histogram<'type'>;
  readonly diskDuration: Histogram<'mode' | 'transport'>;
  readonly bytesRead: Counter<'mode'>;
  readonly bytesWritten: Counter<'mode'>;
  readonly bytesDeduplicated: Counter;
  readonly bytesCompressedSaved: Counter;
  readonly diskThroughput: Gauge<'transport'>;
  readonly queueJobs: Gauge<'queue' | 'state'>;
  readonly lastSuccess: Gauge<'vm'>;
  readonly vmLabelOverflow: Counter;
  readonly orphanDisksDetached: Counter;
  readonly leftoverSnapshotsRemoved: Counter;
  readonly cbtResets: Counter;
  readonly transportUsed: Counter<'transport'>;
  readonly vddkErrors: Counter<'code'>;
  readonly repositoryBytes: Gauge;
  readonly datastoreFreeRatio: Gauge;

  #queueSource: QueueCountSource | undefined;
  #lastSuccessSource: LastSuccessSource | undefined;

  constructor(options: MetricsOptions = {}) {
    this.#maxVms = options.maxVms ?? 5000;
    const r = [this.registry];
    if (options.defaults !== false)
      collectDefaultMetrics({ register: this.registry, eventLoopMonitoringPrecision: 20 });
    this.jobsTotal = new Counter({
      name: 'vbproxy_jobs_total',
      help: 'Jobs finished, by type and result',
      labelNames: ['type', 'result'],
      registers: r,
    });
    for (const type of JOB_TYPES)
      for (const result of ['succeeded', 'failed', 'cancelled']) this.jobsTotal.inc({ type, result }, 0);
    this.jobDuration = new Histogram({
      name: 'vbproxy_job_duration_seconds',
      help: 'Duration of finished jobs',
      labelNames: ['type'],
      buckets: [1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, 28800],
      registers: r,
    });
    this.diskDuration = new Histogram({
      name: 'vbproxy_disk_duration_seconds',
      help: 'Duration of one disk of a backup',
      labelNames: ['mode', 'transport'],
      buckets: [0.5, 1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200],
      registers: r,
    });
    this.bytesRead = new Counter({
      name: 'vbproxy_bytes_read_total',
      help: 'Bytes read from source disks',
      labelNames: ['mode'],
      registers: r,
    });
    this.bytesWritten = new Counter({
      name: 'vbproxy_bytes_written_total',
      help: 'Bytes written to the repository (after dedup, compression and encryption)',
      labelNames: ['mode'],
      registers: r,
    });
    for (const mode of ['full', 'incremental']) {
      this.bytesRead.inc({ mode }, 0);
      this.bytesWritten.inc({ mode }, 0);
    }
    this.bytesDeduplicated = new Counter({
      name: 'vbproxy_bytes_deduplicated_total',
      help: 'Bytes read whose chunks were already stored',
      registers: r,
    });
    this.bytesCompressedSaved = new Counter({
      name: 'vbproxy_bytes_compression_saved_total',
      help: 'Bytes saved by compression of written chunks',
      registers: r,
    });
    this.diskThroughput = new Gauge({
      name: 'vbproxy_disk_throughput_bytes_per_second',
      help: 'Read throughput of the last finished disk, by transport',
      labelNames: ['transport'],
      registers: r,
    });
    // eslint-disable-next-line @typescript-eslint/no-this-alias
    const self = this;
    this.queueJobs = new Gauge({
      name: 'vbproxy_queue_jobs',
      help: 'Jobs in the BullMQ queues, by queue and state',
      labelNames: ['queue', 'state'],
      registers: r,
      async collect() {
        const source = self.#queueSource;
        if (source === undefined) return;
        let counts: Record<string, Record<string, number>>;
        try {
          counts = await source();
        } catch {
          return; // Redis down: keep the last values; /readyz reports the outage
        }
        for (const [queue, byState] of Object.entries(counts)) {
          for (const state of ['waiting', 'active', 'failed', 'delayed'] as const) {
            this.set({ queue, state }, byState[state] ?? 0);
          }
        }
      },
    });
    this.lastSuccess = new Gauge({
      name: 'vbproxy_last_successful_backup_timestamp_seconds',
      help: 'Unix time of the last successful backup of each VM',
      labelNames: ['vm'],
      registers: r,
      async collect() {
        const source = self.#lastSuccessSource;
        if (source === undefined) return;
        let rows: { vm: string; at: Date }[];
        try {
          rows = await source();
        } catch {
          return; // catalog down: keep what was recorded; /readyz reports the outage
        }
        for (const row of rows) {
          if (VM_MOREF.test(row.vm)) self.recordBackupSucceeded(row.vm, row.at);
        }
      },
    });
    this.vmLabelOverflow = new Counter({
      name: 'vbproxy_vm_label_overflow_total',
      help: 'Per-VM samples dropped because more VMs than the label limit were seen',
      registers: r,
    });
    this.orphanDisksDetached = new Counter({
      name: 'vbproxy_orphan_disks_detached_total',
      help: 'Hot-added disks without a live job detached by the pre-flight cleanup',
      registers: r,
    });
    this.leftoverSnapshotsRemoved = new Counter({
      name: 'vbproxy_leftover_snapshots_removed_total',
      help: 'Snapshots of this product without a live job removed by the pre-flight cleanup',
      registers: r,
    });
    this.cbtResets = new Counter({
      name: 'vbproxy_cbt_resets_total',
      help: 'Disks read in full because the CBT trust rule failed or CBT was reset',
      registers: r,
    });
    this.transportUsed = new Counter({
      name: 'vbproxy_transport_used_total',
      help: 'Disks opened, by the transport VDDK actually used',
      labelNames: ['transport'],
      registers: r,
    });
    for (const transport of TRANSPORTS) this.transportUsed.inc({ transport }, 0);
    this.vddkErrors = new Counter({
      name: 'vbproxy_vddk_errors_total',
      help: 'VDDK errors by VixError code (rare codes are grouped as "other")',
      labelNames: ['code'],
      registers: r,
    });
    this.repositoryBytes = new Gauge({
      name: 'vbproxy_repository_size_bytes',
      help: 'Bytes used by the repository (chunks, indexes, manifests)',
      registers: r,
    });
    this.datastoreFreeRatio = new Gauge({
      name: 'vbproxy_datastore_free_ratio',
      help: 'Free space of the file system holding the repository, 0..1',
      registers: r,
    });
  }

  /**
   * Lets the last-success gauge read the catalog at scrape time (the API process does this, so the
   * metric survives worker restarts and covers every worker sharing the catalog).
   */
  setLastSuccessSource(source: LastSuccessSource): void {
    this.#lastSuccessSource = source;
  }

  /** Lets the queue gauges read BullMQ's counts at scrape time. */
  setQueueSource(source: QueueCountSource): void {
    this.#queueSource = source;
  }

  recordJobFinished(type: JobType, result: JobResult, durationSeconds: number): void {
    this.jobsTotal.inc({ type, result });
    this.jobDuration.observe({ type }, durationSeconds);
  }

  recordDiskFinished(d: DiskRecord): void {
    this.diskDuration.observe({ mode: d.mode, transport: d.transport }, d.durationSeconds);
    this.bytesRead.inc({ mode: d.mode }, d.bytesRead);
    this.bytesWritten.inc({ mode: d.mode }, d.bytesWritten);
    this.bytesDeduplicated.inc(d.bytesDeduplicated);
    this.bytesCompressedSaved.inc(d.bytesCompressedSaved);
    if (d.durationSeconds > 0)
      this.diskThroughput.set({ transport: d.transport }, d.bytesRead / d.durationSeconds);
  }

  /** Bytes as they are read, for live byte counters during long disks (call with deltas). */
  recordBytesRead(mode: DiskMode, bytes: number): void {
    this.bytesRead.inc({ mode }, bytes);
  }

  /** `vm` is the VM's moref (never its name, which may be long or carry personal data). */
  recordBackupSucceeded(vm: string, at: Date = new Date()): void {
    if (!VM_MOREF.test(vm)) throw new TypeError(`recordBackupSucceeded: "${vm}" is not a VM moref`);
    if (!this.#vms.has(vm)) {
      if (this.#vms.size >= this.#maxVms) {
        this.vmLabelOverflow.inc();
        return;
      }
      this.#vms.add(vm);
    }
    const seconds = at.getTime() / 1000;
    const previous = this.#lastSeen.get(vm) ?? 0;
    if (seconds < previous) return;
    this.#lastSeen.set(vm, seconds);
    this.lastSuccess.set({ vm }, seconds);
  }

  recordOrphanDisksDetached(count: number): void {
    this.orphanDisksDetached.inc(count);
  }

  recordLeftoverSnapshotsRemoved(count: number): void {
    this.leftoverSnapshotsRemoved.inc(count);
  }

  recordCbtReset(): void {
    this.cbtResets.inc();
  }

  recordTransportUsed(transport: MetricTransport): void {
    this.transportUsed.inc({ transport });
  }

  recordVddkError(code: number | string): void {
    const c = String(code);
    this.vddkErrors.inc({ code: VDDK_CODES.has(c) ? c : 'other' });
  }

  setRepositorySize(bytes: number): void {
    this.repositoryBytes.set(bytes);
  }

  setDatastoreFreeRatio(ratio: number): void {
    this.datastoreFreeRatio.set(Math.min(1, Math.max(0, ratio)));
  }

  /** The exposition text for /metrics. */
  async text(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }
}

let processMetrics: Metrics | undefined;

/** The process-wide metrics (created on first use). Tests create their own `new Metrics()`. */
export function metrics(): Metrics {
  processMetrics ??= new Metrics();
  return processMetrics;
}
