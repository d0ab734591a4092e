import { NotAuthenticatedError, VimProtocolError } from './errors.js';
import { VimTransport, type PeerCertificate, type TlsTrust } from './transport.js';
import { isMoRef, isVimObject, moref, type MoRef, type VimObject, type VimValue } from './wire/values.js';

export interface ConnectOptions extends TlsTrust {
  /** `https://vcenter.example/sdk` (the `/sdk` path is added when missing). */
  readonly url: string;
  readonly username: string;
  readonly password: string;
  /** Idle time after which a CurrentTime keep-alive is sent; at most (and by default) 10 minutes. */
  readonly keepAliveMs?: number;
  /** Per-call HTTP timeout. */
  readonly timeoutMs?: number;
  /** Observes every SOAP exchange (tests: XSD order and conformance checks). */
  readonly onExchange?: (method: string, request: string, response: string) => void;
}

export interface AboutInfo {
  readonly name: string;
  readonly fullName: string;
  readonly version: string;
  readonly apiType: string;
  readonly apiVersion: string;
  readonly instanceUuid: string | undefined;
}

/** The singletons of ServiceContent the client uses. */
export interface ServiceContent {
  readonly rootFolder: MoRef;
  readonly propertyCollector: MoRef;
  readonly viewManager: MoRef | undefined;
  readonly sessionManager: MoRef | undefined;
  readonly searchIndex: MoRef | undefined;
  readonly customFieldsManager: MoRef | undefined;
  readonly about: AboutInfo;
}

const MAX_KEEPALIVE_MS = 10 * 60 * 1000;

function sdkUrl(url: string): string {
  const u = new URL(url);
  if (u.pathname === '/' || u.pathname === '') u.pathname = '/sdk';
  return u.toString();
}

function refField(obj: VimObject, name: string): MoRef | undefined {
  const v = obj[name];
  return v !== undefined && isMoRef(v) ? v : undefined;
}

function str(obj: VimObject, name: string): string {
  const v = obj[name];
  return typeof v === 'string' ? v : '';
}

/**
 * A logged-in vim25 session: the service content, the session cookie, a keep-alive, and one
 * transparent re-login when a call fails with a SOAP-level NotAuthenticated (a `missingSet`
 * NotAuthenticated is a permission problem and never triggers it). If the call fails with
 * NotAuthenticated again right after the re-login, the error is thrown, saying so.
 */
export class VimClient {
  private keepAliveTimer: NodeJS.Timeout | undefined;
  private lastCall = Date.now();
  private closed = false;
  /** Re-logins performed (observable for tests and logs). */
  relogins = 0;

  private constructor(
    readonly transport: VimTransport,
    readonly serviceContent: ServiceContent,
    private readonly username: string,
    private readonly password: string,
    keepAliveMs: number,
  ) {
    const interval = Math.min(Math.max(keepAliveMs, 1000), MAX_KEEPALIVE_MS);
    this.keepAliveTimer = setInterval(() => {
      if (Date.now() - this.lastCall >= interval) void this.keepAlive().catch(() => undefined);
    }, interval);
    this.keepAliveTimer.unref();
  }

  /** Connects, negotiates the SOAPAction version from `about.apiVersion`, and logs in. */
  static async connect(opts: ConnectOptions): Promise<VimClient> {
    const transport = new VimTransport(sdkUrl(opts.url), opts, opts.timeoutMs);
    transport.onExchange = opts.onExchange;
    try {
      const sc = await transport.invoke('RetrieveServiceContent', {
        _this: moref('ServiceInstance', 'ServiceInstance'),
      });
      if (!isVimObject(sc))
        throw new VimProtocolError(`RetrieveServiceContent returned no ServiceContent from ${opts.url}`);
      const about = sc.about as VimObject;
      const content: ServiceContent = {
        rootFolder: refField(sc, 'rootFolder') ?? moref('Folder', 'group-d1'),
        propertyCollector:
          refField(sc, 'propertyCollector') ?? moref('PropertyCollector', 'propertyCollector'),
        viewManager: refField(sc, 'viewManager'),
        sessionManager: refField(sc, 'sessionManager'),
        searchIndex: refField(sc, 'searchIndex'),
        customFieldsManager: refField(sc, 'customFieldsManager'),
        about: {
          name: str(about, 'name'),
          fullName: str(about, 'fullName'),
          version: str(about, 'version'),
          apiType: str(about, 'apiType'),
          apiVersion: str(about, 'apiVersion'),
          instanceUuid: str(about, 'instanceUuid') || undefined,
        },
      };
      if (content.about.apiVersion) transport.setApiVersion(content.about.apiVersion);
      const client = new VimClient(
        transport,
        content,
        opts.username,
        opts.password,
        opts.keepAliveMs ?? MAX_KEEPALIVE_MS,
      );
      await client.login();
      return client;
    } catch (err) {
      transport.close();
      throw err;
    }
  }

  /** SHA-256 fingerprint and SHA-1 thumbprint of the server certificate (undefined over http). */
  get peerCertificate(): PeerCertificate | undefined {
    return this.transport.peer;
  }

  private async login(): Promise<void> {
    const sm = this.serviceContent.sessionManager;
    if (!sm) throw new VimProtocolError('the server has no SessionManager');
    this.transport.sessionCookie = undefined;
    await this.transport.invoke('Login', { _this: sm, userName: this.username, password: this.password });
    this.lastCall = Date.now();
  }

  private reloginInFlight: Promise<void> | undefined;

  /** One re-login at a time: concurrent calls that all saw the expiry share it. */
  private async relogin(): Promise<void> {
    if (!this.reloginInFlight) {
      this.relogins++;
      this.reloginInFlight = this.login().finally(() => (this.reloginInFlight = undefined));
    }
    await this.reloginInFlight;
  }

  /** Calls a vim25 method with session recovery. */
  async call(method: string, args: Record<string, VimValue | undefined>): Promise<VimValue | undefined> {
    if (this.closed) throw new VimProtocolError(`${method}: the vSphere client is closed`);
    const cookie = this.transport.sessionCookie;
    try {
      const r = await this.transport.invoke(method, args);
      this.lastCall = Date.now();
      return r;
    } catch (err) {
      if (!(err instanceof NotAuthenticatedError) || err.propertyPath !== undefined) throw err;
      // Another call may already have logged in again since this one was sent: then just retry.
      if (this.reloginInFlight || this.transport.sessionCookie === cookie) await this.relogin();
      try {
        const r = await this.transport.invoke(method, args);
        this.lastCall = Date.now();
        return r;
      } catch (again) {
        if (again instanceof NotAuthenticatedError) {
          throw new NotAuthenticatedError(
            again.fault,
            `the session was rejected again right after a fresh login as ${this.username} (${again.serverMessage}); ` +
              'the server expires sessions faster than calls complete, or the account lost its privileges',
            { method, target: args._this as MoRef | undefined },
          );
        }
        throw again;
      }
    }
  }

  /** A cheap call that keeps the session from expiring (CurrentTime). */
  async keepAlive(): Promise<string> {
    const t = await this.call('CurrentTime', { _this: moref('ServiceInstance', 'ServiceInstance') });
    return typeof t === 'string' ? t : '';
  }

  /** Logs out and releases the connections. Safe to call twice. */
  async close(): Promise<void> {
    if (this.closed) return;
    if (this.keepAliveTimer) clearInterval(this.keepAliveTimer);
    const sm = this.serviceContent.sessionManager;
    try {
      if (sm) await this.transport.invoke('Logout', { _this: sm });
    } catch {
      // A failed logout loses nothing: the server expires the session.
    } finally {
      this.closed = true;
      this.transport.close();
    }
  }
}
