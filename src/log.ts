import { pino, type Logger, type LoggerOptions } from 'pino';

/**
 * Field names whose values are never written to a log, wherever they appear in a log record
 * (two levels deep). A secret that has to be mentioned is mentioned by name, never by value.
 */
export const REDACTED_FIELDS = [
  'password',
  'passphrase',
  'token',
  'enrollmentToken',
  'secret',
  'apiKey',
  'masterKey',
  'key',
  'authorization',
  'cookie',
  'sessionCookie',
  'credentials',
] as const;

function redactPaths(): string[] {
  const paths: string[] = [];
  for (const field of REDACTED_FIELDS) {
    paths.push(field, `*.${field}`, `*.*.${field}`);
  }
  return paths;
}

export type { Logger };

/**
 * The process logger: structured JSON lines on stderr (stdout stays free for command output),
 * secrets redacted. Level from `VBPROXY_LOG_LEVEL` (default `info`; `silent` turns it off).
 */
export function createLogger(name: string, options: LoggerOptions = {}): Logger {
  return pino(
    {
      name,
      level: process.env.VBPROXY_LOG_LEVEL ?? 'info',
      redact: { paths: redactPaths(), censor: '[redacted]' },
      ...options,
    },
    pino.destination({ dest: 2, sync: true }),
  );
}
