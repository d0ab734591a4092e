/**
 * `npm run bench:repository -- --size-mb 2048 [--runs 3] [--dir DIR] [--seed N]`
 *
 * Generates a VM-like image (src/lab/sample-image.ts), then per run backs it up with vbproxy,
 * restic and borg (Debian packages, installed when missing) into fresh repositories, changes 2%
 * of its 64 KiB blocks, runs the incremental (vbproxy with the changed extents, restic and borg
 * re-run), restores the incremental with each, and checks the restores byte for byte. Every step
 * is a whole process measured by GNU time (wall, user+sys CPU, peak RSS). Each run starts after
 * the previous run's repositories are deleted and the machine has settled (measure.ts `quiesce`),
 * and with another tool first (vbproxy, restic, borg; then restic, borg, vbproxy; ...). Prints
 * medians over the runs and the ratios against restic as a markdown table. vbproxy uses the
 * product defaults. vbproxy's restore ends with an fsync of the image and restic's and borg's do
 * not, so the table also has a `durable restore` row: theirs plus an fsync of what they restored.
 */
import { parseArgs } from 'node:util';
import { mkdtempSync, rmSync, writeFileSync, mkdirSync, statSync } from 'node:fs';
import { tmpdir, cpus } from 'node:os';
import { join } from 'node:path';
import { writeSampleImage, mutateImage } from '../src/lab/sample-image.js';
import {
  ensureDebian,
  fsyncTime,
  measure,
  median,
  quiesce,
  run,
  storedBytes,
  type Measured,
} from './measure.js';

const { values } = parseArgs({
  options: {
    'size-mb': { type: 'string', default: '2048' },
    runs: { type: 'string', default: '3' },
    dir: { type: 'string' },
    seed: { type: 'string', default: '1' },
    keep: { type: 'boolean', default: false },
  },
});
const sizeMb = Number(values['size-mb']);
const runs = Number(values.runs);
const seed = Number(values.seed);
if (!(sizeMb > 0) || !(runs > 0)) throw new Error('--size-mb and --runs need positive numbers');
const size = sizeMb * 1024 * 1024;

ensureDebian({ restic: 'restic', borg: 'borgbackup' });
const work = values.dir ?? mkdtempSync(join(tmpdir(), 'vbproxy-bench-'));
mkdirSync(work, { recursive: true });
const cli = new URL('../src/cli/main.js', import.meta.url).pathname;
const PASS = 'bench passphrase (not secret)';
const env = {
  VBPROXY_REPO_PASSPHRASE: PASS,
  VBPROXY_LOG_LEVEL: 'silent',
  RESTIC_PASSWORD: PASS,
  RESTIC_CACHE_DIR: join(work, 'restic-cache'),
  BORG_PASSPHRASE: PASS,
  BORG_BASE_DIR: join(work, 'borg-base'),
  BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK: 'yes',
  BORG_RELOCATED_REPO_ACCESS_IS_OK: 'yes',
};

type Tool = 'vbproxy' | 'restic' | 'borg';
/**
 * `durable restore`: the restore until the image is on disk. vbproxy's restore fsyncs its output
 * before it exits; restic's and borg's leave it in the page cache, so theirs is the restore plus
 * an fsync of the restored image (measure.ts `fsyncTime`).
 */
type Phase = 'full' | 'incremental' | 'restore' | 'durable restore';
const PHASES: Phase[] = ['full', 'incremental', 'restore', 'durable restore'];
const tools: Tool[] = ['vbproxy', 'restic', 'borg'];
const results: Record<Tool, Record<Phase, Measured[]> & { stored: number[] }> = {
  vbproxy: { full: [], incremental: [], restore: [], 'durable restore': [], stored: [] },
  restic: { full: [], incremental: [], restore: [], 'durable restore': [], stored: [] },
  borg: { full: [], incremental: [], restore: [], 'durable restore': [], stored: [] },
};
/** Wall seconds of the fsync after restic's restore: this disk writing the restored image alone. */
const resticFsyncS: number[] = [];
let readBytes = { full: 0, incremental: 0 };

function sameFile(a: string, b: string): void {
  run('cmp', ['-s', a, b]);
}

const pristine = join(work, 'pristine.img');
const t0 = Date.now();
await writeSampleImage(pristine, { sizeBytes: size, seed });
console.error(
  `generated ${sizeMb} MiB image in ${((Date.now() - t0) / 1000).toFixed(1)} s (${((statSync(pristine).blocks * 512) / 2 ** 20).toFixed(0)} MiB allocated)`,
);

for (let r = 1; r <= runs; r++) {
  const img = join(work, 'disk.img');
  run('cp', ['--sparse=always', pristine, img]);
  const repos: Record<Tool, string> = {
    vbproxy: join(work, 'vbproxy-repo'),
    restic: join(work, 'restic-repo'),
    borg: join(work, 'borg-repo'),
  };
  for (const t of tools) rmSync(repos[t], { recursive: true, force: true });
  await quiesce();
  // Each run starts with another tool, so that no tool is always the first after the deletes.
  const order = tools.map((_, i) => tools[(i + r - 1) % tools.length]!);
  run(process.execPath, [cli, 'repo', 'init', '--repo', repos.vbproxy], env);
  run('restic', ['init', '--repo', repos.restic, '--repository-version', '2'], env);
  run('borg', ['init', '--encryption', 'repokey-blake2', repos.borg], env);

  const backup: Record<Tool, (incr: boolean, extents?: string) => [string, string[]]> = {
    vbproxy: (incr, extents) => [
      process.execPath,
      [
        cli,
        'repo',
        'backup-image',
        '--repo',
        repos.vbproxy,
        '--image',
        img,
        '--name',
        'bench',
        ...(incr ? ['--changed-extents', extents!] : []),
      ],
    ],
    restic: () => ['restic', ['backup', '--repo', repos.restic, '--quiet', img]],
    borg: (incr) => [
      'borg',
      [
        'create',
        '--chunker-params',
        'fixed,4194304',
        '--sparse',
        `${repos.borg}::${incr ? 'incr' : 'full'}`,
        img,
      ],
    ],
  };
  for (const t of order) {
    const [cmd, args] = backup[t](false);
    results[t].full.push(await measure(cmd, args, { env }));
  }
  const extents = await mutateImage(img, { fraction: 0.02, blockSize: 64 * 1024, seed: seed + 1000 });
  const extentsFile = join(work, 'changed.json');
  writeFileSync(extentsFile, JSON.stringify(extents));
  for (const t of order) {
    const [cmd, args] = backup[t](true, extentsFile);
    results[t].incremental.push(await measure(cmd, args, { env }));
    results[t].stored.push(storedBytes(repos[t]));
  }
  if (r === 1) {
    const list = JSON.parse(
      run(process.execPath, [cli, 'repo', 'list', '--repo', repos.vbproxy, '--json'], env),
    ) as {
      points: Array<{ disks: Array<{ stats: { readBytes: number } }> }>;
    };
    readBytes = {
      full: list.points[0]!.disks[0]!.stats.readBytes,
      incremental: list.points[1]!.disks[0]!.stats.readBytes,
    };
  }
  // Restore the incremental with each tool and check it byte for byte.
  const pointId = (
    JSON.parse(run(process.execPath, [cli, 'repo', 'list', '--repo', repos.vbproxy, '--json'], env)) as {
      points: Array<{ id: string }>;
    }
  ).points[1]!.id;
  const out = join(work, 'restore');
  for (const t of order) {
    rmSync(out, { recursive: true, force: true });
    mkdirSync(out);
    let restored: string;
    if (t === 'vbproxy') {
      restored = join(out, 'disk.img');
      results[t].restore.push(
        await measure(
          process.execPath,
          [
            cli,
            'repo',
            'restore',
            '--repo',
            repos.vbproxy,
            '--point',
            pointId,
            '--disk',
            '0',
            '--output',
            restored,
          ],
          { env },
        ),
      );
    } else if (t === 'restic') {
      results[t].restore.push(
        await measure('restic', ['restore', 'latest', '--repo', repos.restic, '--target', out, '--quiet'], {
          env,
        }),
      );
      restored = join(out, img);
    } else {
      results[t].restore.push(
        await measure('borg', ['extract', '--sparse', `${repos.borg}::incr`], { env, cwd: out }),
      );
      restored = join(out, img.replace(/^\//, ''));
    }
    const restore = results[t].restore.at(-1)!;
    if (t === 'vbproxy') {
      results[t]['durable restore'].push(restore);
    } else {
      const f = await fsyncTime(restored);
      if (t === 'restic') resticFsyncS.push(f.wallS);
      results[t]['durable restore'].push({
        wallS: restore.wallS + f.wallS,
        cpuS: restore.cpuS + f.cpuS,
        maxRssKiB: restore.maxRssKiB,
      });
    }
    sameFile(restored, img);
  }
  rmSync(out, { recursive: true, force: true });
  console.error(`run ${r}/${runs} done (${((Date.now() - t0) / 1000).toFixed(0)} s)`);
}

const mib = size / 2 ** 20;
const fmt = (n: number, d = 1): string => n.toFixed(d);
const med = (t: Tool, p: Phase, k: keyof Measured): number => median(results[t][p].map((m) => m[k]));
const lines: string[] = [];
lines.push(
  `## Repository benchmark: ${sizeMb} MiB VM-like image, ${runs} run(s), medians (${cpus().length} CPUs, ${new Date().toISOString()})`,
);
lines.push('');
lines.push('| tool | phase | wall s | CPU s | MiB/s (image size / wall) | peak RSS MiB | wall vs restic |');
lines.push('|---|---|---:|---:|---:|---:|---:|');
for (const p of PHASES) {
  for (const t of tools) {
    const wall = med(t, p, 'wallS');
    const vsRestic = med('restic', p, 'wallS') / wall;
    lines.push(
      `| ${t} | ${p} | ${fmt(wall, 2)} | ${fmt(med(t, p, 'cpuS'), 2)} | ${fmt(mib / wall, 0)} | ${fmt(med(t, p, 'maxRssKiB') / 1024, 0)} | ${fmt(vsRestic, 2)}x |`,
    );
  }
}
lines.push('');
lines.push('| tool | stored MB after full + incremental | vs restic |');
lines.push('|---|---:|---:|');
for (const t of tools) {
  const s = median(results[t].stored);
  lines.push(`| ${t} | ${fmt(s / 1e6, 1)} | ${fmt(s / median(results.restic.stored), 3)} |`);
}
const peak =
  Math.max(
    ...(['full', 'incremental', 'restore'] as Phase[]).flatMap((p) =>
      results.vbproxy[p].map((m) => m.maxRssKiB),
    ),
  ) / 1024;
const checks: Array<[string, boolean, string]> = [
  [
    'full backup throughput >= 3x restic',
    med('restic', 'full', 'wallS') / med('vbproxy', 'full', 'wallS') >= 3,
    `${fmt(med('restic', 'full', 'wallS') / med('vbproxy', 'full', 'wallS'), 2)}x`,
  ],
  [
    'incremental >= 10x faster than restic second run',
    med('restic', 'incremental', 'wallS') / med('vbproxy', 'incremental', 'wallS') >= 10,
    `${fmt(med('restic', 'incremental', 'wallS') / med('vbproxy', 'incremental', 'wallS'), 2)}x`,
  ],
  [
    'restore >= 2x restic',
    med('restic', 'restore', 'wallS') / med('vbproxy', 'restore', 'wallS') >= 2,
    `${fmt(med('restic', 'restore', 'wallS') / med('vbproxy', 'restore', 'wallS'), 2)}x`,
  ],
  [
    'stored bytes <= restic',
    median(results.vbproxy.stored) <= median(results.restic.stored),
    `${fmt(median(results.vbproxy.stored) / median(results.restic.stored), 3)}`,
  ],
  ['vbproxy peak RSS < 256 MiB', peak < 256, `${fmt(peak, 0)} MiB`],
];
lines.push('');
lines.push('| target | result | figure |');
lines.push('|---|---|---:|');
for (const [name, ok, fig] of checks) lines.push(`| ${name} | ${ok ? 'met' : 'NOT met'} | ${fig} |`);
lines.push('');
lines.push(
  `durable restore: vbproxy's restore fsyncs the image before it exits; restic's and borg's do not, so their durable restore is the restore plus an fsync of the restored image (\`sync FILE\`, right after). With both durable, vbproxy's restore is ${fmt(med('restic', 'durable restore', 'wallS') / med('vbproxy', 'durable restore', 'wallS'), 2)}x restic's (the target above compares against restic's restore as it runs, into the page cache). Writing the restored image to this disk alone (the fsync after restic's restore) took ${fmt(median(resticFsyncS), 2)} s, where a restore at 2x restic's has ${fmt(med('restic', 'restore', 'wallS') / 2, 2)} s in all.`,
);
lines.push('');
lines.push(
  `vbproxy read ${fmt(readBytes.full / 2 ** 20, 0)} MiB for the full (holes skipped) and ${fmt(readBytes.incremental / 2 ** 20, 0)} MiB for the incremental; restic and borg read the whole image both times. borg runs with --chunker-params fixed,4194304 --sparse (its documented setting for disk images), restic with its defaults (repository v2, compression auto). All restores compared byte for byte with the image.`,
);
console.log(lines.join('\n'));
if (!values.keep && !values.dir) rmSync(work, { recursive: true, force: true });
