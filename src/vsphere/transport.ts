import http from 'node:http';
import https from 'node:https';
import tls from 'node:tls';
import type { Duplex } from 'node:stream';
import soap from 'soap';
import {
  VimConnectionError,
  VimProtocolError,
  VimTlsError,
  faultToError,
  type FaultContext,
} from './errors.js';
import { decodeReturn, decodeValue, encodeRequest, xsiTypeOf } from './wire/codec.js';
import { schemaOperations } from './wire/schema.js';
import type { MoRef, VimValue } from './wire/values.js';
import { vim25SubsetWsdl } from './wire/wsdl.js';

/** How the server's certificate is trusted. One of `ca` or `fingerprint256` is required for https. */
export interface TlsTrust {
  /** PEM of the CA (or CAs) that signed the server certificate; verified with the host name. */
  readonly ca?: string | Buffer | undefined;
  /** The SHA-256 fingerprint of the server certificate (hex, colons optional), pinned exactly. */
  readonly fingerprint256?: string | undefined;
  /** Allow a plain http:// URL (only for local simulators in tests). */
  readonly allowPlainHttp?: boolean | undefined;
}

export interface PeerCertificate {
  /** SHA-256 fingerprint, `AA:BB:...`. */
  readonly fingerprint256: string;
  /** SHA-1 thumbprint, `AA:BB:...`: what VDDK's ConnectParams.thumbPrint wants. */
  readonly thumbprintSha1: string;
}

export const SESSION_COOKIE = 'vmware_soap_session';

export function normaliseFingerprint(fp: string): string {
  const hex = fp.replace(/[^0-9a-fA-F]/g, '').toUpperCase();
  return hex.match(/.{2}/g)?.join(':') ?? '';
}

/** An https.Agent that only hands out sockets whose peer certificate has the pinned fingerprint. */
class PinnedAgent extends https.Agent {
  constructor(private readonly pinned: string) {
    super({ keepAlive: true, maxSockets: 8 });
  }

  override createConnection(
    options: tls.ConnectionOptions,
    callback?: (err: Error | null, socket: Duplex) => void,
  ): Duplex | null | undefined {
    const socket = tls.connect({ ...options, rejectUnauthorized: false });
    const done = callback ?? (() => undefined);
    socket.once('secureConnect', () => {
      const cert = socket.getPeerCertificate();
      const got = normaliseFingerprint(cert.fingerprint256 ?? '');
      if (got !== this.pinned) {
        socket.destroy();
        done(
          new VimTlsError(
            `the server at ${options.host ?? ''}:${options.port ?? ''} presented certificate ${got}, not the pinned ${this.pinned}; ` +
              'check that this is the right vCenter, then update the pinned fingerprint',
          ),
          socket,
        );
        return;
      }
      done(null, socket);
    });
    socket.once('error', (err) => done(err, socket));
    return undefined;
  }
}

interface SoapHttpResponse {
  status: number;
  headers: http.IncomingHttpHeaders;
  data: string;
}
type SoapCallback = (err: Error | null, res?: SoapHttpResponse, body?: string) => void;

/**
 * The HTTP layer node-soap calls: Node's https with our agent, the session cookie carried in both
 * directions, a timeout, and connection errors turned into VimConnectionError.
 */
class VimHttpClient {
  cookie: string | undefined;
  constructor(
    private readonly agent: http.Agent,
    private readonly timeoutMs: number,
    private readonly onPeer: (c: PeerCertificate) => void,
  ) {}

  request(
    rurl: string,
    data: string,
    callback: SoapCallback,
    exheaders?: Record<string, string>,
  ): http.ClientRequest {
    const url = new URL(rurl);
    const headers: Record<string, string | number> = { ...(exheaders ?? {}) };
    headers['Content-Type'] = 'text/xml; charset="utf-8"';
    headers['Content-Length'] = Buffer.byteLength(data);
    headers['Accept-Encoding'] = 'identity';
    if (this.cookie) headers.Cookie = `${SESSION_COOKIE}=${this.cookie}`;
    const mod = url.protocol === 'https:' ? https : http;
    const req = mod.request(
      url,
      { method: 'POST', headers, agent: this.agent, timeout: this.timeoutMs },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', (err) => callback(err));
        res.on('end', () => {
          for (const sc of res.headers['set-cookie'] ?? []) {
            const m = new RegExp(`^${SESSION_COOKIE}=("?[^;]*"?)`).exec(sc);
            if (m?.[1]) {
              this.cookie = m[1];
            }
          }
          const body = Buffer.concat(chunks).toString('utf8');
          callback(null, { status: res.statusCode ?? 0, headers: res.headers, data: body }, body);
        });
      },
    );
    req.on('socket', (s) => {
      const t = s as tls.TLSSocket;
      if (typeof t.getPeerCertificate !== 'function') return;
      const grab = (): void => {
        const c = t.getPeerCertificate();
        if (c?.fingerprint256) {
          this.onPeer({
            fingerprint256: normaliseFingerprint(c.fingerprint256),
            thumbprintSha1: normaliseFingerprint(c.fingerprint),
          });
        }
      };
      if (t.connecting) t.once('secureConnect', grab);
      else grab();
    });
    req.on('timeout', () => req.destroy(new Error(`no answer within ${this.timeoutMs} ms`)));
    req.on('error', (err) => callback(err));
    req.end(data);
    return req;
  }
}

const keepText = (text: string): string => text;
const SOAP_OPTIONS = {
  customDeserializer: {
    long: keepText,
    int: keepText,
    short: keepText,
    byte: keepText,
    boolean: keepText,
    dateTime: keepText,
    double: keepText,
    float: keepText,
  },
  returnFault: true,
};

let wsdlPromise: Promise<soap.WSDL> | undefined;

/** The subset WSDL parsed once per process (node-soap's WSDL object is read-only after onReady). */
export function loadWsdl(): Promise<soap.WSDL> {
  wsdlPromise ??= new Promise((resolve, reject) => {
    const wsdl = new soap.WSDL(vim25SubsetWsdl(), 'vim25-subset.wsdl', SOAP_OPTIONS as never);
    wsdl.onReady((err) => {
      if (err) return reject(err);
      (wsdl.options as { attributesKey?: string }).attributesKey = 'attributes';
      resolve(wsdl);
    });
  });
  return wsdlPromise;
}

interface SoapError extends Error {
  root?: {
    Envelope?: { Body?: { Fault?: { faultcode?: unknown; faultstring?: unknown; detail?: unknown } } };
  };
  response?: { status?: number };
  body?: string;
  code?: string;
}

/**
 * One node-soap client bound to one vSphere endpoint. `invoke` encodes the arguments in XSD order,
 * sends them with the negotiated SOAPAction and the session cookie, and decodes the answer or the
 * fault. It knows nothing about sessions: that is client.ts.
 */
export class VimTransport {
  private client: soap.Client | undefined;
  private readonly http: VimHttpClient;
  private readonly agent: http.Agent;
  peer: PeerCertificate | undefined;
  /** Calls made, for tests and benchmarks. */
  calls = 0;
  /** Observes every exchange (request and response XML); for the XSD order and conformance tests. */
  onExchange: ((method: string, request: string, response: string) => void) | undefined;

  constructor(
    readonly url: string,
    trust: TlsTrust,
    timeoutMs = 120_000,
  ) {
    const u = new URL(url);
    if (u.protocol === 'http:') {
      if (!trust.allowPlainHttp)
        throw new VimTlsError(`refusing plain http for ${url}: use https with a CA or a pinned fingerprint`);
      this.agent = new http.Agent({ keepAlive: true, maxSockets: 8 });
    } else if (trust.fingerprint256) {
      this.agent = new PinnedAgent(normaliseFingerprint(trust.fingerprint256));
    } else if (trust.ca) {
      this.agent = new https.Agent({ keepAlive: true, maxSockets: 8, ca: trust.ca });
    } else {
      throw new VimTlsError(
        `no way to verify ${url}: give the vCenter CA certificate or the certificate's SHA-256 fingerprint`,
      );
    }
    this.http = new VimHttpClient(this.agent, timeoutMs, (c) => (this.peer = c));
  }

  get sessionCookie(): string | undefined {
    return this.http.cookie;
  }
  set sessionCookie(v: string | undefined) {
    this.http.cookie = v;
  }

  /** Sets the SOAPAction version, e.g. `8.0.3.0`. */
  setApiVersion(version: string): void {
    this.client?.setSOAPAction(`urn:vim25/${version}`);
  }

  private async soapClient(): Promise<soap.Client> {
    if (!this.client) {
      const wsdl = await loadWsdl();
      const client = new soap.Client(wsdl, this.url, { ...SOAP_OPTIONS, httpClient: this.http } as never);
      client.setSOAPAction('urn:vim25/6.5');
      this.client = client;
    }
    return this.client;
  }

  /** The XML of the last request sent (for the XSD order test). */
  get lastRequest(): string | undefined {
    return (this.client as unknown as { lastRequest?: string } | undefined)?.lastRequest;
  }

  async invoke(method: string, args: Record<string, VimValue | undefined>): Promise<VimValue | undefined> {
    const op = schemaOperations.get(method);
    if (!op) throw new VimProtocolError(`${method} is not in the vim25 subset`);
    const client = await this.soapClient();
    const encoded = encodeRequest(op.requestType, args);
    const fn = (
      client as unknown as Record<string, (a: unknown, cb: (e: SoapError | null, r: unknown) => void) => void>
    )[method];
    if (!fn) throw new VimProtocolError(`node-soap has no method ${method}`);
    this.calls++;
    const target = args._this as MoRef | undefined;
    const raw = await new Promise<unknown>((resolve, reject) => {
      fn.call(client, encoded, (err, result) => {
        if (this.onExchange) {
          const c = client as unknown as { lastRequest?: string; lastResponse?: string };
          this.onExchange(method, c.lastRequest ?? '', String(c.lastResponse ?? err?.body ?? ''));
        }
        if (err) reject(this.mapError(err, { method, target }));
        else resolve(result);
      });
    });
    return decodeReturn(raw, op.returns, method);
  }

  private mapError(err: SoapError, ctx: FaultContext): Error {
    const fault = err.root?.Envelope?.Body?.Fault;
    if (fault) {
      const faultstring =
        typeof fault.faultstring === 'string' ? fault.faultstring : String(fault.faultstring ?? '');
      const detail = fault.detail;
      let decoded = { _type: 'MethodFault' } as Record<string, VimValue>;
      if (detail && typeof detail === 'object') {
        const [name, value] =
          Object.entries(detail as Record<string, unknown>).find(([k]) => k.endsWith('Fault')) ?? [];
        if (name) {
          const type = xsiTypeOf(value) ?? name.replace(/Fault$/, '');
          decoded = (decodeValue(value, type, type) ?? { _type: type }) as Record<string, VimValue>;
          if (decoded._type === undefined || typeof decoded !== 'object') decoded = { _type: type };
        }
      }
      return faultToError(decoded as never, faultstring, ctx);
    }
    if (err.response?.status !== undefined && err.body !== undefined) {
      return new VimProtocolError(
        `${ctx.method}: the server at ${this.url} answered HTTP ${err.response.status} without a SOAP fault`,
        err,
      );
    }
    if (err instanceof VimTlsError) return err;
    const code = err.code ?? '';
    if (/CERT|SELF_SIGNED|UNABLE_TO_VERIFY|ERR_TLS/.test(code)) {
      return new VimTlsError(
        `the certificate of ${this.url} could not be verified (${code}): give the right CA or fingerprint`,
        err,
      );
    }
    return new VimConnectionError(this.url, `${ctx.method} failed: ${err.message}`, err);
  }

  close(): void {
    this.agent.destroy();
  }
}
