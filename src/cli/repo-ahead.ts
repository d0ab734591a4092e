import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { deriveKekAhead } from '../repository/kdf.js';
import { paths } from '../repository/format.js';

/** The value of `--name VALUE` or `--name=VALUE` in `args`, if given once. */
function optionValue(args: readonly string[], name: string): string | undefined {
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a === name) return args[i + 1];
    if (a.startsWith(`${name}=`)) return a.slice(name.length + 1);
  }
  return undefined;
}

/**
 * For `vbproxy repo ...` (`args` from `repo` on): starts the passphrase's key derivation (Argon2id,
 * about 0.1 s of one core, on libuv's thread pool) before the command's modules load, so that the
 * two run side by side, when the repository and the passphrase can be read off the arguments and
 * the environment the way the command itself will (`--repo`, then `--passphrase-file` or
 * VBPROXY_REPO_PASSPHRASE). Anything unexpected (no key file yet, an unreadable file, odd JSON)
 * just skips it: the command then derives the key itself, and reports any problem with its own
 * checks. Nothing here throws or prints. (Starting the chunk workers this early too was measured
 * and is slower: a restore of 4 MiB took 379 ms against 294 ms, with 120 ms more CPU; the 2% incremental
 * of a 2 GiB image took 934 ms against 846 ms, 10 runs each. On two cores, their boot competes with
 * the main thread's module loading.)
 */
export function startAhead(args: readonly string[]): void {
  const repo = optionValue(args, '--repo');
  if (!repo) return;
  deriveAhead(repo, args);
}

function deriveAhead(repo: string, args: readonly string[]): void {
  try {
    const file = optionValue(args, '--passphrase-file');
    const passphrase = file
      ? readFileSync(file, 'utf8').replace(/\r?\n$/, '')
      : process.env.VBPROXY_REPO_PASSPHRASE;
    if (!passphrase) return;
    const key = JSON.parse(readFileSync(join(repo, paths.key), 'utf8')) as {
      kdf?: { algorithm?: unknown; salt?: unknown; opslimit?: unknown; memlimit?: unknown };
    };
    const kdf = key.kdf;
    if (
      kdf?.algorithm !== 'argon2id13' ||
      typeof kdf.salt !== 'string' ||
      typeof kdf.opslimit !== 'number' ||
      typeof kdf.memlimit !== 'number'
    )
      return;
    deriveKekAhead(passphrase, Buffer.from(kdf.salt, 'base64'), kdf.opslimit, kdf.memlimit);
  } catch {
    // The command's own path reads the same files and reports what is wrong.
  }
}
