#!/usr/bin/env node
import { CommanderError } from 'commander';
import { describeError, VbproxyError } from '../errors.js';
import { CorruptObjectError, MissingObjectError } from '../repository/errors.js';
import { ExitCode } from './exit-codes.js';
import { UsageError } from './usage-error.js';
import { buildProgram } from './program.js';

async function main(argv: string[]): Promise<number> {
  const program = await buildProgram(argv.slice(2));
  program.configureOutput({ writeErr: (s) => process.stderr.write(s) });
  try {
    await program.parseAsync(argv);
    return typeof process.exitCode === 'number' ? process.exitCode : ExitCode.ok;
  } catch (err) {
    if (err instanceof CommanderError) {
      // --help and --version end here too, with exit code 0.
      return err.exitCode === 0 ? ExitCode.ok : ExitCode.usage;
    }
    if (err instanceof UsageError) {
      process.stderr.write(`vbproxy: ${err.message}\n`);
      return ExitCode.usage;
    }
    if (err instanceof CorruptObjectError || err instanceof MissingObjectError) {
      // Damage found on the way (a restore, a read of a point): exit 3, as verify does.
      process.stderr.write(`vbproxy: ${describeError(err)}\n`);
      return ExitCode.damage;
    }
    const prefix = err instanceof VbproxyError ? '' : 'unexpected error: ';
    process.stderr.write(`vbproxy: ${prefix}${describeError(err)}\n`);
    if (!(err instanceof VbproxyError) && err instanceof Error && err.stack) {
      process.stderr.write(`${err.stack}\n`);
    }
    return ExitCode.failure;
  }
}

main(process.argv).then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`vbproxy: ${describeError(err)}\n`);
    process.exit(ExitCode.failure);
  },
);
