/** Exit codes of the `vbproxy` command, as documented in the README. */
export const ExitCode = {
  ok: 0,
  failure: 1,
  usage: 2,
  /** Verification found damaged restore points or chunks. */
  damage: 3,
} as const;
export type ExitCode = (typeof ExitCode)[keyof typeof ExitCode];
