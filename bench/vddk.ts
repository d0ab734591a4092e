/**
 * `npm run bench:vddk`: reads a 2 GiB lab disk through the VDDK binding (hotadd and nbd transports
 * of the lab VDDK) and the same flat file with plain fs, with the same request size and the same
 * number of requests in flight, and prints throughput, the ratio to fs, and the event loop's lag
 * p99 during each read (perf_hooks.monitorEventLoopDelay).
 *
 * Environment: VBPROXY_BENCH_VDDK_GIB (disk size, default 2), VBPROXY_BENCH_VDDK_CHUNK_KIB
 * (request size, default 1024), VBPROXY_BENCH_VDDK_INFLIGHT (default 4), VBPROXY_BENCH_VDDK_ROUNDS
 * (default 5, readers interleaved; the best round of each reader is reported).
 */
import { open } from 'node:fs/promises';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { createLogger } from '../src/log.js';
import { Vddk, type VddkDisk } from '../src/vddk/index.js';
import { createLab, createBaseDisk, pattern, LAB_THUMBPRINT } from '../test/vddk/fixtures.js';

const GiB = 1024 * 1024 * 1024;
const size = Number(process.env.VBPROXY_BENCH_VDDK_GIB ?? 2) * GiB;
const chunk = Number(process.env.VBPROXY_BENCH_VDDK_CHUNK_KIB ?? 1024) * 1024;
const inFlight = Number(process.env.VBPROXY_BENCH_VDDK_INFLIGHT ?? 4);
const rounds = Number(process.env.VBPROXY_BENCH_VDDK_ROUNDS ?? 5);

interface Result {
  readonly seconds: number;
  /** CPU time of the whole process (all threads) per GiB read. */
  readonly cpuPerGiB: number;
  readonly lagP99Ms: number;
  readonly checksum: number;
}

/** Reads [0, size) in `chunk` requests, `inFlight` at a time, while measuring event-loop lag. */
async function measure(read: (offset: number, length: number) => Promise<Buffer>): Promise<Result> {
  const lag = monitorEventLoopDelay({ resolution: 5 });
  let next = 0;
  let checksum = 0;
  const t0 = process.hrtime.bigint();
  const cpu0 = process.cpuUsage();
  lag.enable();
  const lane = async () => {
    while (next < size) {
      const offset = next;
      next += chunk;
      const buf = await read(offset, Math.min(chunk, size - offset));
      checksum = (checksum + buf[buf.length - 1]!) >>> 0; // touch the data
    }
  };
  await Promise.all(Array.from({ length: inFlight }, lane));
  lag.disable();
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  const cpu = process.cpuUsage(cpu0);
  return {
    seconds,
    cpuPerGiB: (cpu.user + cpu.system) / 1e6 / (size / GiB),
    lagP99Ms: lag.percentile(99) / 1e6,
    checksum,
  };
}

function best(results: Result[]): Result {
  return results.reduce((a, b) => (b.seconds < a.seconds ? b : a));
}

async function main(): Promise<void> {
  const lab = createLab({ proxyVm: 'vm-9', hotaddDatastores: 'ds1' });
  try {
    process.stdout.write(`creating a ${size / GiB} GiB lab disk in ${lab.root} ...\n`);
    const block = pattern(4 * 1024 * 1024, 42);
    const writes = [];
    for (let o = 0; o < size; o += block.length) writes.push({ offset: o, data: block });
    const disk = createBaseDisk(lab, {
      folder: 'bench',
      name: 'bench',
      capacity: size,
      writes,
      keepContent: false,
    });
    const flat = disk.descriptor.replace(/\.vmdk$/, '-flat.vmdk');

    const fh = await open(flat, 'r');
    const fsRead = async (offset: number, length: number) => {
      const buf = Buffer.allocUnsafeSlow(length);
      await fh.read(buf, 0, length, offset);
      return buf;
    };
    await measure(fsRead); // warm the page cache: every reader then reads from memory

    const vddk = await Vddk.start({
      configFile: lab.configFile,
      logger: createLogger('bench', { level: 'warn' }),
    });
    const open_ = async (transports: ('hotadd' | 'nbd')[]): Promise<VddkDisk> => {
      const conn = await vddk.connect({
        server: 'vcenter.lab',
        thumbprint: LAB_THUMBPRINT,
        credentials: { kind: 'password', userName: 'bench', password: 'bench' },
        vmMoref: 'vm-42',
        snapshotMoref: 'snapshot-1',
        transports,
      });
      return conn.open(disk.dsPath);
    };
    const hot = await open_(['hotadd']);
    const nbd = await open_(['nbd']);
    const results: Record<string, Result[]> = { fs: [], hotadd: [], nbd: [] };
    for (let r = 0; r < rounds; r++) {
      results.fs!.push(await measure(fsRead));
      results.hotadd!.push(await measure((o, l) => hot.read(o, l)));
      results.nbd!.push(await measure((o, l) => nbd.read(o, l)));
    }
    await fh.close();
    for (const d of [hot, nbd]) {
      await d.close();
      await d.connection.disconnect();
    }
    await vddk.exit();

    const fsBest = best(results.fs!);
    const mbs = (r: Result) => size / r.seconds / 1e6;
    const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
    process.stdout.write(
      `\n${size / GiB} GiB, ${chunk / 1024} KiB requests, ${inFlight} in flight, ${rounds} rounds ` +
        '(fs, hotadd, nbd back to back in each round)\n',
    );
    process.stdout.write(
      'reader      best-MB/s   best-ratio   median-round-ratio   lag-p99-ms(worst)   cpu-s/GiB(best)\n',
    );
    let ok = true;
    for (const name of ['fs', 'hotadd', 'nbd']) {
      const rs = results[name]!;
      const b = best(rs);
      const ratio = mbs(b) / mbs(fsBest);
      // The same round's fs read is the fairest comparison on a machine whose load changes.
      const roundRatio = median(rs.map((r, i) => results.fs![i]!.seconds / r.seconds));
      const lagWorst = Math.max(...rs.map((x) => x.lagP99Ms));
      process.stdout.write(
        `${name.padEnd(10)} ${mbs(b).toFixed(0).padStart(10)}   ${ratio.toFixed(2).padStart(10)}   ` +
          `${roundRatio.toFixed(2).padStart(18)}   ${lagWorst.toFixed(1).padStart(17)}   ` +
          `${Math.min(...rs.map((x) => x.cpuPerGiB))
            .toFixed(2)
            .padStart(15)}\n`,
      );
      if (name !== 'fs' && (Math.max(ratio, roundRatio) < 0.9 || lagWorst >= 20)) ok = false;
      if (b.checksum !== fsBest.checksum) throw new Error(`${name} read different data from fs`);
    }
    process.stdout.write(
      `\ntargets: binding >= 0.90x fs, lag p99 < 20 ms: ${ok ? 'met' : 'NOT met'} (indicative on a shared machine)\n`,
    );
  } finally {
    lab.remove();
  }
}

await main();
