import { readFile } from 'node:fs/promises';
import { Command, Option } from 'commander';
import cliProgress from 'cli-progress';
import { z } from 'zod';
import { Repository } from '../repository/repository.js';
import type { Manifest } from '../repository/manifest.js';
import { policyIsEmpty, RETENTION_RULES, type RetentionPolicy } from '../repository/retention.js';
import { InvalidRequestError } from '../repository/errors.js';
import { RawImageSource } from '../pipeline/image-file.js';
import type { Extent, ProgressListener } from '../pipeline/disk.js';
import { ExitCode } from './exit-codes.js';
import { UsageError } from './usage-error.js';

interface CommonOptions {
  repo: string;
  passphraseFile?: string;
  json?: boolean;
}

const PASSPHRASE_ENV = 'VBPROXY_REPO_PASSPHRASE';
const NEW_PASSPHRASE_ENV = 'VBPROXY_REPO_NEW_PASSPHRASE';

async function secretFrom(
  file: string | undefined,
  env: string,
  what: string,
  fileOption: string,
): Promise<string> {
  if (file) {
    let text: string;
    try {
      text = await readFile(file, 'utf8');
    } catch (err) {
      throw new UsageError(`cannot read the ${what} file ${file}: ${(err as Error).message}`);
    }
    const value = text.replace(/\r?\n$/, '');
    if (!value) throw new UsageError(`the ${what} file ${file} is empty`);
    return value;
  }
  const value = process.env[env];
  if (value) return value;
  throw new UsageError(`no ${what}: set ${env} or pass ${fileOption} FILE (never on the command line)`);
}

const passphraseOf = (o: CommonOptions): Promise<string> =>
  secretFrom(o.passphraseFile, PASSPHRASE_ENV, 'repository passphrase', '--passphrase-file');

function parseSize(value: string): number {
  const m = /^(\d+)([KkMm]i?[Bb]?)?$/.exec(value.trim());
  if (!m) throw new UsageError(`${value} is not a size (bytes, or a number with K or M)`);
  const unit = (m[2] ?? '').toUpperCase().charAt(0);
  return Number(m[1]) * (unit === 'K' ? 1024 : unit === 'M' ? 1024 * 1024 : 1);
}

function parseCount(name: string) {
  return (value: string): number => {
    const n = Number(value);
    if (!Number.isInteger(n) || n < 0)
      throw new UsageError(`${name} needs a non-negative integer, not ${value}`);
    return n;
  };
}

function out(o: CommonOptions, json: unknown, text: string): void {
  process.stdout.write(o.json ? `${JSON.stringify(json, null, 2)}\n` : `${text}\n`);
}

function mb(n: number): string {
  return `${(n / 1e6).toFixed(1)} MB`;
}

/** A progress bar on a TTY (stderr), nothing otherwise or with --json. */
function progressBar(
  o: CommonOptions,
  label: string,
): { listener: ProgressListener | undefined; stop: () => void } {
  if (o.json || !process.stderr.isTTY) return { listener: undefined, stop: () => undefined };
  const bar = new cliProgress.SingleBar(
    {
      stream: process.stderr,
      format: `${label} [{bar}] {percentage}% | {doneMb}/{totalMb} MB | {eta_formatted}`,
      hideCursor: true,
      clearOnComplete: true,
    },
    cliProgress.Presets.shades_classic,
  );
  let started = false;
  return {
    listener: (p) => {
      if (!started) {
        bar.start(p.totalBytes, 0, { doneMb: '0', totalMb: (p.totalBytes / 1e6).toFixed(0) });
        started = true;
      }
      bar.setTotal(p.totalBytes);
      bar.update(p.doneBytes, {
        doneMb: (p.doneBytes / 1e6).toFixed(0),
        totalMb: (p.totalBytes / 1e6).toFixed(0),
      });
    },
    stop: () => {
      if (started) bar.stop();
    },
  };
}

/** Runs `fn` on the opened repository; `startWorkers` for commands that move chunks (see Repository.open). */
async function withRepo<T>(
  o: CommonOptions,
  fn: (repo: Repository) => Promise<T>,
  options: { startWorkers?: boolean } = {},
): Promise<T> {
  const repo = await Repository.open(o.repo, await passphraseOf(o), options);
  try {
    return await fn(repo);
  } finally {
    await repo.close();
  }
}

const extentsSchema = z.array(
  z.object({ offset: z.number().int().nonnegative(), length: z.number().int().nonnegative() }),
);

async function readExtents(file: string): Promise<Extent[]> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    throw new UsageError(`cannot read --changed-extents file ${file}: ${(err as Error).message}`);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw new UsageError(`--changed-extents file ${file} is not JSON`);
  }
  const r = extentsSchema.safeParse(parsed);
  if (!r.success)
    throw new UsageError(`--changed-extents file ${file} must be a JSON array of {offset, length} in bytes`);
  return r.data;
}

function common(cmd: Command): Command {
  return cmd
    .requiredOption('--repo <dir>', 'repository directory')
    .option('--passphrase-file <file>', `file holding the passphrase (default: $${PASSPHRASE_ENV})`)
    .option('--json', 'machine-readable output on stdout');
}

function pointLine(m: Manifest): string {
  const stored = m.disks.reduce((s, d) => s + d.stats.storedBytes, 0);
  const size = m.disks.reduce((s, d) => s + d.capacity, 0);
  const modes = [...new Set(m.disks.map((d) => d.mode))].join('+');
  return `${m.id}  ${m.createdAt}  ${m.name}  disks=${m.disks.length}  size=${mb(size)}  ${modes}  new=${mb(stored)}  ${m.consistency}`;
}

/** `vbproxy repo ...`: the repository commands (README.md, "The repository on its own"). */
export function repoCommand(): Command {
  const repo = new Command('repo').description('encrypted, deduplicating backup repository');

  common(repo.command('init').description('create a repository in an empty or new directory'))
    .option('--chunk-size <size>', 'chunk size (power of two, 64K..8M; default 256K)', parseSize)
    .option(
      '--manager-public-key <file>',
      'also seal the master key to this X25519 public key (32 bytes, raw or base64)',
    )
    .action(async (o: CommonOptions & { chunkSize?: number; managerPublicKey?: string }) => {
      let managerPublicKey: Buffer | undefined;
      if (o.managerPublicKey) {
        const raw = await readFile(o.managerPublicKey).catch((err: unknown) => {
          throw new UsageError(`cannot read ${o.managerPublicKey}: ${(err as Error).message}`);
        });
        managerPublicKey = raw.length === 32 ? raw : Buffer.from(raw.toString('utf8').trim(), 'base64');
        if (managerPublicKey.length !== 32)
          throw new UsageError(`${o.managerPublicKey} is not a 32-byte X25519 public key`);
      }
      const r = await Repository.init(o.repo, await passphraseOf(o), {
        chunkSize: o.chunkSize,
        managerPublicKey,
      });
      await r.close();
      out(
        o,
        { repository: o.repo, id: r.config.id, chunkSize: r.chunkSize },
        `created repository ${o.repo} (chunk size ${r.chunkSize} bytes)`,
      );
    });

  common(
    repo
      .command('backup-image')
      .description('back up a raw disk image file (full, or incremental from changed extents)'),
  )
    .requiredOption('--image <file>', 'raw image file')
    .requiredOption('--name <name>', 'name of what is backed up (prune groups by it)')
    .option(
      '--changed-extents <file>',
      'JSON array of {offset, length}: an incremental from the latest point of that name',
    )
    .option('--base <point>', 'base point of the incremental (default: the latest point with this name)')
    .action(
      async (o: CommonOptions & { image: string; name: string; changedExtents?: string; base?: string }) => {
        const changed = o.changedExtents ? await readExtents(o.changedExtents) : undefined;
        if (o.base && !changed) throw new UsageError('--base needs --changed-extents');
        await withRepo(
          o,
          async (r) => {
            const source = await RawImageSource.open(o.image);
            try {
              let base: { pointId: string; disk: number } | undefined;
              if (changed) {
                let baseId = o.base;
                if (!baseId) {
                  const { points } = await r.listPoints();
                  const latest = points.filter((p) => p.name === o.name).pop();
                  if (!latest)
                    throw new InvalidRequestError(
                      `no earlier restore point named ${o.name}: run a full backup first (without --changed-extents)`,
                    );
                  baseId = latest.id;
                }
                base = { pointId: baseId, disk: 0 };
              }
              const session = await r.beginBackup({ name: o.name });
              const bar = progressBar(o, changed ? 'incremental' : 'full');
              const ac = new AbortController();
              const onSignal = (): void => ac.abort(new Error('interrupted by a signal'));
              process.once('SIGINT', onSignal);
              process.once('SIGTERM', onSignal);
              try {
                await session.backupDisk(source, {
                  disk: 0,
                  label: o.image,
                  base,
                  changedExtents: changed,
                  onProgress: bar.listener,
                  signal: ac.signal,
                });
                const m = await session.commit({ consistency: 'image' });
                bar.stop();
                const s = m.disks[0]!.stats;
                out(
                  o,
                  m,
                  `restore point ${m.id} (${m.disks[0]!.mode}): read ${mb(s.readBytes)}, ${s.newChunks} new chunks (${mb(s.newBytes)} -> ${mb(s.storedBytes)} stored), ${s.dedupChunks} deduplicated, ${s.zeroChunks} zero, ${s.reusedChunks} unchanged, ${(s.durationMs / 1000).toFixed(1)} s`,
                );
              } catch (err) {
                bar.stop();
                await session.abort().catch(() => undefined);
                throw err;
              } finally {
                process.off('SIGINT', onSignal);
                process.off('SIGTERM', onSignal);
              }
            } finally {
              await source.close();
            }
          },
          { startWorkers: true },
        );
      },
    );

  common(repo.command('list').description('list restore points')).action(async (o: CommonOptions) => {
    await withRepo(o, async (r) => {
      const { points, damaged } = await r.listPoints();
      const lines = points.map(pointLine);
      for (const d of damaged) lines.push(`${d.id}  DAMAGED: ${d.error.message}`);
      out(
        o,
        { points, damaged: damaged.map((d) => ({ id: d.id, error: d.error.message })) },
        lines.join('\n') || '(no restore points)',
      );
    });
  });

  common(repo.command('restore').description('restore a disk of a restore point to a raw image file'))
    .requiredOption('--point <id>', 'restore point id')
    .requiredOption('--disk <n>', 'disk number', parseCount('--disk'))
    .requiredOption('--output <file>', 'image file to create (sparse)')
    .option('--offset <bytes>', 'restore only a byte range starting here', parseSize)
    .option('--length <bytes>', 'length of the byte range', parseSize)
    .action(
      async (
        o: CommonOptions & { point: string; disk: number; output: string; offset?: number; length?: number },
      ) => {
        if ((o.offset === undefined) !== (o.length === undefined))
          throw new UsageError('--offset and --length go together');
        await withRepo(
          o,
          async (r) => {
            const bar = progressBar(o, 'restore');
            try {
              const range = o.offset !== undefined ? { offset: o.offset, length: o.length! } : undefined;
              const s = await r.restoreToFile(o.point, o.disk, o.output, { range, onProgress: bar.listener });
              bar.stop();
              out(
                o,
                { output: o.output, ...s },
                `restored ${mb(s.bytes)} to ${o.output} (${s.chunks} chunks, ${s.zeroChunks} zero) in ${(s.durationMs / 1000).toFixed(1)} s`,
              );
            } finally {
              bar.stop();
            }
          },
          { startWorkers: true },
        );
      },
    );

  common(
    repo
      .command('verify')
      .description('re-read and authenticate restore points and chunks (exit 3 on damage)'),
  )
    .option('--point <id>', 'only this restore point')
    .option('--sample <fraction>', 'verify only this fraction of chunks (0 < f <= 1)', (v) => {
      const f = Number(v);
      if (!(f > 0 && f <= 1)) throw new UsageError(`--sample needs a fraction in (0, 1], not ${v}`);
      return f;
    })
    .action(async (o: CommonOptions & { point?: string; sample?: number }) => {
      await withRepo(
        o,
        async (r) => {
          const bar = progressBar(o, 'verify');
          const rep = await r.verify({ pointId: o.point, sample: o.sample, onProgress: bar.listener });
          bar.stop();
          const lines: string[] = [];
          for (const p of rep.points) {
            lines.push(`${p.id}  ${p.name ?? '?'}  ${p.ok ? 'ok' : 'DAMAGED'}`);
            for (const pr of p.problems) {
              const where =
                pr.kind === 'chunk'
                  ? ` disk ${pr.disk} chunk ${pr.chunk} (${pr.chunkId})`
                  : pr.disk !== undefined
                    ? ` disk ${pr.disk}`
                    : '';
              lines.push(`  ${pr.kind}${where}: ${pr.message}`);
            }
            if (p.moreProblems > 0) lines.push(`  ... and ${p.moreProblems} more problems`);
          }
          lines.push(
            rep.ok
              ? `verified ${rep.points.length} restore points, ${rep.chunksChecked} chunks: no damage`
              : `DAMAGE: ${rep.points.filter((p) => !p.ok).length} of ${rep.points.length} restore points, ${rep.damagedChunks.length} damaged or missing chunks`,
          );
          out(o, rep, lines.join('\n'));
          if (!rep.ok) process.exitCode = ExitCode.damage;
        },
        { startWorkers: true },
      );
    });

  const prune = common(
    repo.command('prune').description('remove restore points a retention policy does not keep'),
  );
  for (const [k] of RETENTION_RULES)
    prune.addOption(
      new Option(
        `--keep-${k} <n>`,
        `keep the newest point of the last N ${k === 'last' ? 'points' : k + ' periods'}`,
      ).argParser(parseCount(`--keep-${k}`)),
    );
  prune
    .option('--name <name>', 'only points with this name')
    .option('--dry-run', 'only show what would be removed')
    .action(
      async (
        o: CommonOptions &
          Partial<Record<keyof RetentionPolicy, number>> & { name?: string; dryRun?: boolean },
      ) => {
        const policy: RetentionPolicy = {};
        for (const [, key] of RETENTION_RULES) if (o[key] !== undefined) policy[key] = o[key];
        if (policyIsEmpty(policy))
          throw new UsageError('give at least one --keep-* option with a count above 0');
        await withRepo(o, async (r) => {
          const rep = await r.prune(policy, { name: o.name, dryRun: o.dryRun });
          const lines = [
            ...rep.kept.map((p) => `keep    ${p.id}  ${p.name}  ${p.createdAt}  (${p.rule})`),
            ...rep.removed.map(
              (p) => `${rep.dryRun ? 'would remove' : 'remove '} ${p.id}  ${p.name}  ${p.createdAt}`,
            ),
            `${rep.kept.length} kept, ${rep.removed.length} ${rep.dryRun ? 'would be ' : ''}removed; run "vbproxy repo gc" to free their space`,
          ];
          out(o, rep, lines.join('\n'));
        });
      },
    );

  common(
    repo.command('gc').description('delete chunks and indexes no restore point or running backup references'),
  )
    .option('--dry-run', 'only count what would be deleted')
    .option(
      '--grace-seconds <n>',
      'safety margin for clock differences between hosts (default 60)',
      parseCount('--grace-seconds'),
    )
    .action(async (o: CommonOptions & { dryRun?: boolean; graceSeconds?: number }) => {
      await withRepo(o, async (r) => {
        const rep = await r.gc({
          dryRun: o.dryRun,
          graceMs: o.graceSeconds === undefined ? undefined : o.graceSeconds * 1000,
        });
        out(
          o,
          rep,
          `${rep.dryRun ? 'would delete' : 'deleted'} ${rep.chunksDeleted} of ${rep.chunksSeen} chunks (${mb(rep.bytesDeleted)}), ${rep.indexesDeleted} orphaned indexes, ${rep.tempFilesDeleted} temporary files; kept ${rep.chunksKeptYoung} recent unreferenced chunks`,
        );
      });
    });

  common(
    repo
      .command('change-passphrase')
      .description('re-wrap the key under a new passphrase (no data rewritten)'),
  )
    .option(
      '--new-passphrase-file <file>',
      `file holding the new passphrase (default: $${NEW_PASSPHRASE_ENV})`,
    )
    .action(async (o: CommonOptions & { newPassphraseFile?: string }) => {
      const current = await passphraseOf(o);
      const next = await secretFrom(
        o.newPassphraseFile,
        NEW_PASSPHRASE_ENV,
        'new passphrase',
        '--new-passphrase-file',
      );
      const r = await Repository.open(o.repo, current);
      try {
        await r.changePassphrase(current, next);
      } finally {
        await r.close();
      }
      out(o, { repository: o.repo, changed: true }, `passphrase of ${o.repo} changed`);
    });

  // Usage errors of the subcommands must reach main() (exit code 2), not exit the process.
  repo.exitOverride();
  for (const c of repo.commands) c.exitOverride().showHelpAfterError();
  return repo;
}
