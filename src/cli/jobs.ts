import { Command, Option } from 'commander';
import cliProgress from 'cli-progress';
import { cancelJob, liveJobState } from '../api/operations.js';
import { jobQuery } from '../api/schemas.js';
import { getJob, JOB_STATES, JOB_TYPES, listJobEvents, listJobs, type Job } from '../catalog/jobs.js';
import { bytes, output, parseWith, table, withContext } from './surface-context.js';

function progressText(j: Job): string {
  if (j.progress === null) return '-';
  const pct =
    j.progress.totalBytes > 0 ? Math.floor((100 * j.progress.doneBytes) / j.progress.totalBytes) : 0;
  return `${pct}% of ${bytes(j.progress.totalBytes)}`;
}

function jobRows(jobs: Job[]) {
  return table(
    ['ID', 'TYPE', 'STATE', 'VM', 'PROGRESS', 'CREATED', 'ERROR'],
    jobs.map((j) => [
      j.id,
      j.type,
      j.state,
      j.vmMoref,
      progressText(j),
      j.createdAt.toISOString(),
      j.errorMessage,
    ]),
  );
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** `vbproxy jobs list|show|watch|cancel`. */
export function jobsCommand(): Command {
  const cmd = new Command('jobs').description('list, follow and cancel jobs');
  cmd
    .command('list')
    .description('list jobs, newest first')
    .addOption(new Option('--state <state>', 'only jobs in this state').choices(JOB_STATES))
    .addOption(new Option('--type <type>', 'only jobs of this type').choices(JOB_TYPES))
    .option('--vm <moref>', 'only jobs of this VM')
    .option('--limit <n>', 'at most n jobs', '50')
    .option('-c, --config <file>', 'configuration file')
    .option('--json', 'JSON output')
    .action(
      async (opts: {
        state?: string;
        type?: string;
        vm?: string;
        limit: string;
        config?: string;
        json?: boolean;
      }) => {
        const q = parseWith(
          jobQuery,
          { state: opts.state, type: opts.type, vm: opts.vm, limit: opts.limit },
          'jobs list',
        );
        await withContext(opts.config, async (ctx) => {
          const jobs = await listJobs(ctx.pool, {
            state: q.state,
            type: q.type,
            vmMoref: q.vm,
            limit: q.limit,
          });
          output(opts.json === true, jobs, () => jobRows(jobs));
        });
      },
    );
  cmd
    .command('show <id>')
    .description('show a job with its events')
    .option('-c, --config <file>', 'configuration file')
    .option('--json', 'JSON output')
    .action(async (id: string, opts: { config?: string; json?: boolean }) => {
      await withContext(opts.config, async (ctx) => {
        const job = await getJob(ctx.pool, id);
        const events = await listJobEvents(ctx.pool, id);
        output(opts.json === true, { ...job, events }, () =>
          [
            jobRows([job]),
            '',
            ...events.map((e) => `${e.at.toISOString()}  ${e.level.padEnd(5)}  ${e.message}`),
          ].join('\n'),
        );
      });
    });
  cmd
    .command('watch [id]')
    .description('follow running jobs (or one job) with live progress bars until they finish')
    .option('--interval <ms>', 'refresh interval', '1000')
    .option('-c, --config <file>', 'configuration file')
    .action(async (id: string | undefined, opts: { interval: string; config?: string }) => {
      await withContext(opts.config, async (ctx) => {
        const bars = new cliProgress.MultiBar(
          {
            format: '{label} |{bar}| {percentage}% {state}',
            hideCursor: true,
            clearOnComplete: false,
            noTTYOutput: true,
            notTTYSchedule: 2000,
          },
          cliProgress.Presets.shades_classic,
        );
        const shown = new Map<string, cliProgress.SingleBar>();
        try {
          while (true) {
            const jobs =
              id !== undefined
                ? [await getJob(ctx.pool, id)]
                : await listJobs(ctx.pool, { state: 'running' });
            for (const j of jobs) {
              j.progress = (await liveJobState(ctx.queues, j)).progress;
              const total = Math.max(1, j.progress?.totalBytes ?? 1);
              const payload = { label: `${j.type} ${j.vmMoref ?? ''} ${j.id.slice(0, 8)}`, state: j.state };
              let bar = shown.get(j.id);
              if (bar === undefined) {
                bar = bars.create(total, j.progress?.doneBytes ?? 0, payload);
                shown.set(j.id, bar);
              }
              bar.setTotal(total);
              bar.update(j.state === 'succeeded' ? total : (j.progress?.doneBytes ?? 0), payload);
            }
            const live = jobs.some((j) => j.state === 'queued' || j.state === 'running');
            if (!live) break;
            await sleep(Number(opts.interval));
          }
        } finally {
          bars.stop();
        }
      });
    });
  cmd
    .command('cancel <id>')
    .description('cancel a job (a running job is stopped and cleaned up by its worker)')
    .option('-c, --config <file>', 'configuration file')
    .option('--json', 'JSON output')
    .action(async (id: string, opts: { config?: string; json?: boolean }) => {
      await withContext(opts.config, async (ctx) => {
        const j = await cancelJob({ ...ctx, repositoryPath: ctx.loaded.config.repository.path }, id);
        output(opts.json === true, j, () =>
          j.state === 'cancelled'
            ? `job ${j.id} cancelled`
            : `cancellation of job ${j.id} requested (${j.state})`,
        );
      });
    });
  return cmd;
}
