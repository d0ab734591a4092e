/** Exit codes of the `vbproxy` command, as documented in the README. */
export const ExitCode = {
  ok: 0,
  failure: 1,
  usage: 2,
  /** Damage found: verify named damaged points or chunks, or a restore stopped at damaged data. */
  damage: 3,
} as const;
export type ExitCode = (typeof ExitCode)[keyof typeof ExitCode];
