import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { readFileSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { z } from 'zod';
import { checkSecretFileMode, ConfigError } from '../config/load.js';
import { ApiError } from './errors.js';

/**
 * Bearer tokens for the API. The tokens file (`api.tokensFile`, mode 0600) holds only SHA-256
 * hashes of the tokens with their names and scopes; a token is shown once, when created.
 * Scopes are ordered: `admin` can do everything, `operate` can read and start/cancel jobs, `read`
 * can only read.
 */
export const SCOPES = ['read', 'operate', 'admin'] as const;
export type Scope = (typeof SCOPES)[number];

const tokensFileSchema = z.strictObject({
  tokens: z.array(
    z.strictObject({
      name: z.string().min(1).max(64),
      sha256: z.string().regex(/^[0-9a-f]{64}$/, 'must be 64 lowercase hex characters'),
      scopes: z.array(z.enum(SCOPES)).min(1),
      createdAt: z.string().optional(),
    }),
  ),
});
export type TokensFile = z.infer<typeof tokensFileSchema>;

export function hashToken(token: string): Buffer {
  return createHash('sha256').update(token, 'utf8').digest();
}

function satisfies(have: readonly Scope[], need: Scope): boolean {
  const rank = SCOPES.indexOf(need);
  return have.some((s) => SCOPES.indexOf(s) >= rank);
}

/** The tokens file, re-read when it changes on disk (so new tokens work without a restart). */
export class TokenStore {
  readonly #file: string;
  #stamp = '';
  #entries: { name: string; hash: Buffer; scopes: Scope[] }[] = [];

  constructor(file: string) {
    this.#file = file;
    this.#reload();
  }

  #reload(): void {
    let st;
    try {
      st = statSync(this.#file);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
        this.#entries = [];
        this.#stamp = 'absent';
        return;
      }
      throw err;
    }
    const stamp = `${st.ino}:${st.mtimeMs}:${st.size}`;
    if (stamp === this.#stamp) return;
    checkSecretFileMode(this.#file, 'api.tokensFile', this.#file);
    const parsed = readTokensFile(this.#file);
    this.#entries = parsed.tokens.map((t) => ({
      name: t.name,
      hash: Buffer.from(t.sha256, 'hex'),
      scopes: t.scopes,
    }));
    this.#stamp = stamp;
  }

  /**
   * The token's name when it is valid and carries `scope`; 401 when absent or unknown, 403 when
   * valid but short of the scope. Every stored hash is compared, in constant time.
   */
  authorize(header: string | undefined, scope: Scope): string {
    this.#reload();
    const m = header === undefined ? null : /^Bearer\s+(\S+)\s*$/i.exec(header);
    if (m === null) {
      throw new ApiError(
        401,
        'UNAUTHENTICATED',
        'missing bearer token: send "Authorization: Bearer <token>"',
      );
    }
    const presented = hashToken(m[1]!);
    let found: { name: string; scopes: Scope[] } | undefined;
    for (const e of this.#entries) {
      if (timingSafeEqual(presented, e.hash) && found === undefined) found = e;
    }
    if (found === undefined) throw new ApiError(401, 'UNAUTHENTICATED', 'the bearer token is not valid');
    if (!satisfies(found.scopes, scope)) {
      throw new ApiError(
        403,
        'FORBIDDEN',
        `token "${found.name}" lacks the "${scope}" scope this request needs`,
      );
    }
    return found.name;
  }
}

export function readTokensFile(file: string): TokensFile {
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(file, 'utf8'));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { tokens: [] };
    throw new ConfigError('API_TOKENS_FILE', `${file}: not a readable JSON tokens file`, { cause: err });
  }
  const r = tokensFileSchema.safeParse(raw);
  if (!r.success) {
    const first = r.error.issues[0];
    throw new ConfigError(
      'API_TOKENS_FILE',
      `${file}: invalid tokens file: ${first?.path.join('.') ?? ''}: ${first?.message ?? 'invalid'}`,
    );
  }
  return r.data;
}

/**
 * Creates a token with a name and scopes, stores its hash (atomically, mode 0600) and returns the
 * token itself: the only time it exists in plaintext.
 */
export function createToken(file: string, name: string, scopes: Scope[]): string {
  const current = readTokensFile(file);
  if (current.tokens.some((t) => t.name === name)) {
    throw new ConfigError(
      'API_TOKEN_EXISTS',
      `a token named "${name}" already exists in ${file}; revoke it first`,
    );
  }
  const token = `vbp_${randomBytes(32).toString('base64url')}`;
  current.tokens.push({
    name,
    sha256: hashToken(token).toString('hex'),
    scopes,
    createdAt: new Date().toISOString(),
  });
  writeTokensFile(file, current);
  return token;
}

/** Removes a token by name; returns false when there was none. */
export function revokeToken(file: string, name: string): boolean {
  const current = readTokensFile(file);
  const kept = current.tokens.filter((t) => t.name !== name);
  if (kept.length === current.tokens.length) return false;
  writeTokensFile(file, { tokens: kept });
  return true;
}

function writeTokensFile(file: string, content: TokensFile): void {
  const tmp = `${file}.tmp-${process.pid}`;
  writeFileSync(tmp, `${JSON.stringify(content, null, 2)}\n`, { mode: 0o600 });
  renameSync(tmp, file);
}
