import { readFileSync } from 'node:fs';
import { Agent, request as httpsRequest } from 'node:https';
import { request as httpRequest } from 'node:http';
import type { z } from 'zod';
import { ManagerRejectedError, ManagerUnreachableError } from './errors.js';
import {
  heartbeatResponse,
  managerError,
  registerResponse,
  type HeartbeatRequest,
  type RegisterRequest,
  type RegisterResponse,
} from './protocol.js';

/** HTTP(S) client of the manager's proxy endpoints. */
export class ManagerClient {
  readonly url: string;
  readonly #agent: Agent | undefined;
  readonly #timeoutMs: number;

  constructor(url: string, options: { caFile?: string | undefined; timeoutMs?: number } = {}) {
    this.url = url.replace(/\/+$/, '');
    this.#timeoutMs = options.timeoutMs ?? 10_000;
    this.#agent =
      options.caFile === undefined
        ? undefined
        : new Agent({ ca: readFileSync(options.caFile), keepAlive: false });
  }

  async register(enrollmentToken: string, body: RegisterRequest): Promise<RegisterResponse> {
    return this.#post('/api/v1/proxies/register', enrollmentToken, body, registerResponse);
  }

  async heartbeat(
    proxyId: string,
    secret: string,
    body: HeartbeatRequest,
  ): Promise<{ heartbeatIntervalSeconds: number }> {
    return this.#post(
      `/api/v1/proxies/${encodeURIComponent(proxyId)}/heartbeat`,
      secret,
      body,
      heartbeatResponse,
    );
  }

  #post<T>(path: string, bearer: string, body: unknown, schema: z.ZodType<T>): Promise<T> {
    const target = new URL(this.url + path);
    const payload = Buffer.from(JSON.stringify(body));
    const req = target.protocol === 'https:' ? httpsRequest : httpRequest;
    return new Promise<T>((resolve, reject) => {
      const r = req(
        target,
        {
          method: 'POST',
          headers: {
            'content-type': 'application/json',
            'content-length': payload.length,
            authorization: `Bearer ${bearer}`,
          },
          timeout: this.#timeoutMs,
          ...(this.#agent === undefined ? {} : { agent: this.#agent }),
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('error', (err) => reject(new ManagerUnreachableError(this.url, err.message, err)));
          res.on('end', () => {
            const text = Buffer.concat(chunks).toString('utf8');
            const status = res.statusCode ?? 0;
            let json: unknown;
            try {
              json = JSON.parse(text);
            } catch {
              json = undefined;
            }
            if (status >= 500 || status === 429) {
              reject(new ManagerUnreachableError(this.url, `HTTP ${status}`));
              return;
            }
            if (status >= 400) {
              const e = managerError.safeParse(json);
              reject(
                e.success
                  ? new ManagerRejectedError(
                      status,
                      e.data.error.code,
                      `the manager refused ${path}: ${e.data.error.message}`,
                    )
                  : new ManagerRejectedError(
                      status,
                      'http_error',
                      `the manager refused ${path} with HTTP ${status}`,
                    ),
              );
              return;
            }
            const parsed = schema.safeParse(json);
            if (!parsed.success) {
              reject(
                new ManagerRejectedError(
                  status,
                  'bad_response',
                  `the manager's answer to ${path} is not valid: ${parsed.error.issues[0]?.message ?? ''}`,
                ),
              );
              return;
            }
            resolve(parsed.data);
          });
        },
      );
      r.on('timeout', () => r.destroy(new Error(`no answer within ${this.#timeoutMs} ms`)));
      r.on('error', (err: NodeJS.ErrnoException) =>
        reject(new ManagerUnreachableError(this.url, err.code ?? err.message, err)),
      );
      r.end(payload);
    });
  }
}
