import { readFileSync, statSync } from 'node:fs';
import type { z } from 'zod';
import { VbproxyError } from '../errors.js';
import { configSchema, SECRET_FILE_KEYS, type Config, type SecretFileKey } from './schema.js';

export const DEFAULT_CONFIG_PATH = '/etc/vbproxy/config.json';

/** A configuration file that cannot be read, parsed or validated, or a secret file that is unsafe. */
export class ConfigError extends VbproxyError {
  constructor(code: string, message: string, options: { cause?: unknown } = {}) {
    super(code, message, options);
  }
}

/** A loaded configuration together with the file it came from (for messages). */
export interface LoadedConfig {
  readonly path: string;
  readonly config: Config;
}

/** The config path: the `--config` option, else VBPROXY_CONFIG, else /etc/vbproxy/config.json. */
export function resolveConfigPath(option?: string): string {
  return option ?? process.env.VBPROXY_CONFIG ?? DEFAULT_CONFIG_PATH;
}

function keyPath(path: readonly PropertyKey[]): string {
  return path.length === 0 ? '(top level)' : path.map(String).join('.');
}

/** One line per problem: `key path: rule`. */
export function formatIssues(issues: readonly z.core.$ZodIssue[]): string {
  return issues
    .map((i) => {
      if (i.code === 'unrecognized_keys') {
        return `${keyPath(i.path)}: unknown key${i.keys.length > 1 ? 's' : ''} ${i.keys.map((k) => `"${k}"`).join(', ')} (secrets go in files named by "...File" keys)`;
      }
      return `${keyPath(i.path)}: ${i.message}`;
    })
    .join('; ');
}

function getPath(obj: unknown, dotted: string): unknown {
  let cur: unknown = obj;
  for (const part of dotted.split('.')) {
    if (cur === null || typeof cur !== 'object') return undefined;
    cur = (cur as Record<string, unknown>)[part];
  }
  return cur;
}

/**
 * Refuses a secret file that group or others can access. `key` is the config key naming it.
 * A missing file is fine here (credentials appear at registration); reading it reports that.
 */
export function checkSecretFileMode(file: string, key: string, configPath: string): void {
  let mode: number;
  try {
    mode = statSync(file).mode;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw new ConfigError('CONFIG_SECRET_FILE', `${configPath}: ${key}: cannot stat ${file}`, { cause: err });
  }
  if ((mode & 0o077) !== 0) {
    throw new ConfigError(
      'CONFIG_SECRET_FILE_MODE',
      `${configPath}: ${key}: the secret file ${file} has mode ${(mode & 0o777).toString(8).padStart(4, '0')}; ` +
        `it must be readable by its owner only (run: chmod 600 ${file})`,
    );
  }
}

/** Parses and validates configuration text. `path` is used in messages only. */
export function parseConfig(text: string, path: string): Config {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new ConfigError('CONFIG_JSON', `${path}: not valid JSON: ${(err as Error).message}`, {
      cause: err,
    });
  }
  const result = configSchema.safeParse(raw);
  if (!result.success) {
    throw new ConfigError(
      'CONFIG_INVALID',
      `${path}: invalid configuration: ${formatIssues(result.error.issues)}`,
      {
        cause: result.error,
      },
    );
  }
  for (const key of SECRET_FILE_KEYS) {
    const file = getPath(result.data, key);
    if (typeof file === 'string') checkSecretFileMode(file, key, path);
  }
  return result.data;
}

/** Reads, parses and validates the configuration file. */
export function loadConfig(option?: string): LoadedConfig {
  const path = resolveConfigPath(option);
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const hint = code === 'ENOENT' ? ' (no such file; pass --config or set VBPROXY_CONFIG)' : '';
    throw new ConfigError('CONFIG_READ', `cannot read the configuration file ${path}${hint}`, { cause: err });
  }
  return { path, config: parseConfig(text, path) };
}

/**
 * Reads a secret file named by a config key, checking its mode first. Trailing newlines are
 * removed. The message names the key and the file, never the content.
 */
export function readSecretFile(loaded: LoadedConfig, key: SecretFileKey): Buffer {
  const file = getPath(loaded.config, key);
  if (typeof file !== 'string') {
    throw new ConfigError('CONFIG_MISSING', `${loaded.path}: ${key} is not set`);
  }
  return readSecretFileAt(file, key, loaded.path);
}

/** Same as readSecretFile, for a path already known. */
export function readSecretFileAt(file: string, key: string, configPath: string): Buffer {
  checkSecretFileMode(file, key, configPath);
  let data: Buffer;
  try {
    data = readFileSync(file);
  } catch (err) {
    throw new ConfigError(
      'CONFIG_SECRET_FILE',
      `${configPath}: ${key}: cannot read the secret file ${file}`,
      {
        cause: err,
      },
    );
  }
  let end = data.length;
  while (end > 0 && (data[end - 1] === 0x0a || data[end - 1] === 0x0d)) end--;
  return data.subarray(0, end);
}
