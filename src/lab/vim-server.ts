import { randomBytes, timingSafeEqual } from 'node:crypto';
import https from 'node:https';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { loadWsdl } from '../vsphere/transport.js';
import { decodeValue } from '../vsphere/wire/codec.js';
import {
  allFields,
  isSubtype,
  MOREF_TYPE,
  schemaEnums,
  schemaOperations,
  schemaTypes,
} from '../vsphere/wire/schema.js';
import {
  arrayItems,
  arrayOf,
  isMoRef,
  moref,
  type MoRef,
  type VimObject,
  type VimValue,
} from '../vsphere/wire/values.js';
import { writeElement, xmlEscape } from '../vsphere/wire/xml-writer.js';
import { LabFault, type FaultRule } from './fault.js';
import {
  DATASTORE_FOLDER,
  NETWORK_FOLDER,
  HOST_FOLDER,
  ROOT_FOLDER,
  VM_FOLDER,
  type LabWorld,
  type TaskState,
} from './world.js';

/**
 * The lab vSphere's HTTPS endpoint: vim25 SOAP on /sdk in vCenter's dialect (fields in XSD
 * order, xsi:type on polymorphic values, faults as soapenv:Fault with a `<Type>Fault` detail),
 * sessions with the vmware_soap_session cookie and an idle timeout, fault injection, and the
 * lab control API on /lab/ (guest writes, CBT reset, faults, session expiry; HTTP basic auth).
 */

export interface LabServerOptions {
  readonly world: LabWorld;
  readonly username: string;
  readonly password: string;
  readonly key: string;
  readonly cert: string;
  readonly port?: number | undefined;
  readonly host?: string | undefined;
}

interface Session {
  key: string;
  userName: string;
  loginTime: string;
  lastActive: number;
}

const UNAUTHENTICATED = new Set(['RetrieveServiceContent', 'Login']);
const SOAP_NS =
  'xmlns:soapenc="http://schemas.xmlsoap.org/soap/encoding/" xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" ' +
  'xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"';

function envelope(body: string): string {
  return `<?xml version="1.0" encoding="UTF-8"?>\n<soapenv:Envelope ${SOAP_NS}>\n<soapenv:Body>\n${body}\n</soapenv:Body>\n</soapenv:Envelope>`;
}

function readBody(req: IncomingMessage, limit = 256 * 1024 * 1024): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > limit) {
        reject(new Error('request body too large'));
        req.destroy();
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

export class LabVimServer {
  private server: https.Server | undefined;
  private readonly sessions = new Map<string, Session>();
  private readonly views = new Map<string, { types: string[] }>();
  private readonly pages = new Map<string, { objects: VimObject[]; max: number }>();
  private faults: (FaultRule & { left: number })[] = [];
  /** Session idle timeout in ms (from the definition; tests may shorten it). */
  sessionTimeoutMs: number;
  /** Calls per vim25 method (for tests and the benchmark). */
  readonly calls = new Map<string, number>();
  url = '';
  /** The SOAPAction header of the last SOAP request (tests: version negotiation). */
  lastSoapAction = '';

  constructor(private readonly opts: LabServerOptions) {
    this.sessionTimeoutMs = opts.world.def.sessionTimeoutSeconds * 1000;
  }

  get world(): LabWorld {
    return this.opts.world;
  }

  async start(): Promise<string> {
    await loadWsdl();
    const server = https.createServer(
      { key: this.opts.key, cert: this.opts.cert, keepAliveTimeout: 30_000 },
      (req, res) => {
        void this.route(req, res).catch((err: unknown) => {
          if (!res.headersSent) {
            res.writeHead(500, { 'Content-Type': 'text/plain' });
            res.end(`internal error: ${(err as Error).message}\n`);
          }
        });
      },
    );
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.opts.port ?? 0, this.opts.host ?? '127.0.0.1', () => resolve());
    });
    this.server = server;
    const addr = server.address() as AddressInfo;
    this.url = `https://${this.opts.host ?? '127.0.0.1'}:${addr.port}/sdk`;
    return this.url;
  }

  async stop(): Promise<void> {
    const s = this.server;
    if (!s) return;
    this.server = undefined;
    s.closeAllConnections();
    await new Promise<void>((resolve) => s.close(() => resolve()));
  }

  // --- Control --------------------------------------------------------------------------------

  injectFault(rule: FaultRule): void {
    if (
      (rule.action === 'fault' || rule.action === 'task') &&
      (!rule.fault || !schemaTypes.has(rule.fault))
    ) {
      throw new LabFault(
        'InvalidArgument',
        `fault injection needs a vim25 fault type the lab knows, not ${String(rule.fault)}`,
      );
    }
    this.faults.push({ ...rule, left: rule.times ?? 1 });
  }

  clearFaults(): void {
    this.faults = [];
  }

  /** Ends every session now (as if they had all been idle too long). */
  expireSessions(): void {
    this.sessions.clear();
  }

  private matchFault(method: string, target: MoRef | undefined): (FaultRule & { left: number }) | undefined {
    for (const f of this.faults) {
      if (f.action === 'missing') continue;
      if (f.method !== '*' && f.method !== method) continue;
      if (f.object !== undefined) {
        const name =
          target?.type === 'VirtualMachine'
            ? this.world.vms.find((v) => v.moref === target.value)?.name
            : undefined;
        if (target?.value !== f.object && name !== f.object) continue;
      }
      if (f.times !== 0) {
        f.left--;
        if (f.left <= 0) this.faults = this.faults.filter((x) => x !== f);
      }
      return f;
    }
    return undefined;
  }

  // --- HTTP routing ---------------------------------------------------------------------------

  private async route(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'https://lab');
    if (url.pathname === '/sdk' && req.method === 'POST') return this.soap(req, res);
    if (url.pathname === '/sdk/vimServiceVersions.xml') {
      res.writeHead(200, { 'Content-Type': 'text/xml' });
      res.end(
        `<?xml version="1.0" encoding="UTF-8" ?><namespaces version="1.0"><namespace><name>urn:vim25</name>` +
          `<version>${this.world.def.apiVersion}</version></namespace></namespaces>`,
      );
      return;
    }
    if (url.pathname.startsWith('/lab/')) return this.control(req, res, url);
    res.writeHead(404, { 'Content-Type': 'text/plain' });
    res.end('not found\n');
  }

  private authorised(req: IncomingMessage): boolean {
    const h = req.headers.authorization ?? '';
    if (!h.startsWith('Basic ')) return false;
    const got = Buffer.from(h.slice(6), 'base64');
    const want = Buffer.from(`${this.opts.username}:${this.opts.password}`);
    return got.length === want.length && timingSafeEqual(got, want);
  }

  private async control(req: IncomingMessage, res: ServerResponse, url: URL): Promise<void> {
    const reply = (status: number, body: unknown): void => {
      res.writeHead(status, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify(body) + '\n');
    };
    if (!this.authorised(req)) {
      res.writeHead(401, {
        'WWW-Authenticate': 'Basic realm="vbproxy lab"',
        'Content-Type': 'application/json',
      });
      res.end(
        JSON.stringify({ error: 'the lab control API needs the lab user and password (basic auth)' }) + '\n',
      );
      return;
    }
    try {
      const parts = url.pathname.split('/').filter(Boolean).map(decodeURIComponent);
      const body = await readBody(req);
      // /lab/vms/<vm>/disks/<key>/write?offset=N   (body: the bytes)
      if (parts[1] === 'vms' && parts[3] === 'disks' && parts[5] === 'write' && req.method === 'POST') {
        const offset = Number(url.searchParams.get('offset') ?? 'NaN');
        if (!Number.isSafeInteger(offset)) return reply(400, { error: 'offset must be an integer' });
        this.world.guestWrite(parts[2]!, Number(parts[4]), offset, body);
        return reply(200, { written: body.length });
      }
      if (parts[1] === 'vms' && parts[3] === 'disks' && parts[5] === 'read' && req.method === 'GET') {
        const offset = Number(url.searchParams.get('offset') ?? '0');
        const length = Number(url.searchParams.get('length') ?? '0');
        const data = this.world.readDisk(
          parts[2]!,
          Number(parts[4]),
          offset,
          length,
          url.searchParams.get('snapshot') ?? undefined,
        );
        res.writeHead(200, { 'Content-Type': 'application/octet-stream' });
        res.end(data);
        return;
      }
      if (parts[1] === 'vms' && parts[3] === 'cbt-reset' && req.method === 'POST') {
        this.world.resetCbt(parts[2]!);
        return reply(200, { reset: parts[2] });
      }
      if (parts[1] === 'faults' && req.method === 'POST') {
        this.injectFault(JSON.parse(body.toString('utf8')) as FaultRule);
        return reply(200, { faults: this.faults.length });
      }
      if (parts[1] === 'faults' && req.method === 'DELETE') {
        this.clearFaults();
        return reply(200, { faults: 0 });
      }
      if (parts[1] === 'sessions' && parts[2] === 'expire' && req.method === 'POST') {
        this.expireSessions();
        return reply(200, { sessions: 0 });
      }
      return reply(404, { error: `no lab control endpoint ${req.method ?? ''} ${url.pathname}` });
    } catch (err) {
      return reply(err instanceof LabFault ? 400 : 500, { error: (err as Error).message });
    }
  }

  // --- SOAP -----------------------------------------------------------------------------------

  private async soap(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const text = (await readBody(req)).toString('utf8');
    this.lastSoapAction = String(req.headers.soapaction ?? '');
    const wsdl = await loadWsdl();
    let args: VimObject = { _type: 'unknown' };
    const headers: Record<string, string> = { 'Content-Type': 'text/xml; charset=utf-8' };
    try {
      let body: Record<string, unknown>;
      try {
        const parsed = wsdl.xmlToObject(text) as { Body?: Record<string, unknown> };
        body = parsed.Body ?? {};
      } catch (err) {
        const m = /<(?:\w+:)?Body[^>]*>\s*<(?:\w+:)?(\w+)/.exec(text);
        if (m && !schemaOperations.has(m[1]!)) {
          throw new LabFault('MethodNotFound', `Method ${m[1]!} not implemented by the lab`, {
            receiver: moref('ServiceInstance', 'ServiceInstance'),
            method: m[1]!,
          });
        }
        throw new LabFault('InvalidRequest', `cannot parse the request: ${(err as Error).message}`);
      }
      const [name, raw] = Object.entries(body)[0] ?? [];
      if (!name) throw new LabFault('InvalidRequest', 'empty SOAP body');
      const op = schemaOperations.get(name);
      if (!op)
        throw new LabFault('MethodNotFound', `Method ${name} not implemented by the lab`, { method: name });
      args = (decodeValue(raw, op.requestType) ?? { _type: op.requestType }) as VimObject;
      this.calls.set(name, (this.calls.get(name) ?? 0) + 1);
      const target = isMoRef(args._this) ? args._this : undefined;
      const rule = this.matchFault(name, target);
      if (rule?.action === 'drop') {
        req.socket.destroy();
        return;
      }
      if (rule?.action === 'fault') {
        throw new LabFault(
          rule.fault!,
          rule.message ?? `injected ${rule.fault!}`,
          (rule.fields ?? {}) as Record<string, VimValue>,
        );
      }
      const failWith =
        rule?.action === 'task'
          ? new LabFault(
              rule.fault!,
              rule.message ?? `injected ${rule.fault!}`,
              (rule.fields ?? {}) as Record<string, VimValue>,
            )
          : undefined;
      const session = this.session(req, name, target);
      const result = this.dispatch(name, args, session, headers, failWith);
      const out: string[] = [`<${name}Response xmlns="urn:vim25">`];
      if (op.returns && result !== undefined) {
        if (op.returns.array)
          for (const r of result as VimValue[]) writeElement(out, op.returns.name, r, op.returns.type);
        else writeElement(out, op.returns.name, result, op.returns.type);
      }
      out.push(`</${name}Response>`);
      res.writeHead(200, headers);
      res.end(envelope(out.join('')));
    } catch (err) {
      const fault =
        err instanceof LabFault
          ? err
          : new LabFault('SystemError', (err as Error).message, { reason: (err as Error).message });
      const target = isMoRef(args._this) ? args._this : moref('ServiceInstance', 'ServiceInstance');
      const detail: string[] = [];
      writeElement(detail, `${fault.faultType}Fault`, this.faultObject(fault, target), 'xsd:anyType');
      const d = detail
        .join('')
        .replace(`<${fault.faultType}Fault `, `<${fault.faultType}Fault xmlns="urn:vim25" `);
      res.writeHead(500, headers);
      res.end(
        envelope(
          `<soapenv:Fault><faultcode>ServerFaultCode</faultcode><faultstring>${xmlEscape(fault.message)}</faultstring>` +
            `<detail>${d}</detail></soapenv:Fault>`,
        ),
      );
    }
  }

  /** A fault data object with every required field present (defaults for injected faults). */
  private faultObject(f: LabFault, target: MoRef): VimObject {
    const type = schemaTypes.has(f.faultType) ? f.faultType : 'SystemError';
    const out: Record<string, VimValue> = { _type: type };
    for (const field of allFields(type)) {
      const given = f.fields[field.name];
      if (given !== undefined) {
        out[field.name] =
          schemaEnums.has(field.type) && typeof given === 'object' && '_value' in given
            ? (given._value as VimValue)
            : given;
        continue;
      }
      if (field.min === 0 || field.array) continue;
      if (field.type === MOREF_TYPE) out[field.name] = target;
      else if (field.type === 'xsd:int') out[field.name] = 0;
      else if (schemaEnums.has(field.type)) out[field.name] = schemaEnums.get(field.type)![0]!;
      else out[field.name] = type === 'SystemError' ? f.message : '';
    }
    if (type === 'SystemError' && f.faultType !== 'SystemError') out.reason = `${f.faultType}: ${f.message}`;
    return out as VimObject;
  }

  private session(req: IncomingMessage, method: string, target: MoRef | undefined): Session | undefined {
    const m = /vmware_soap_session="?([0-9a-f]+)"?/.exec(req.headers.cookie ?? '');
    const s = m ? this.sessions.get(m[1]!) : undefined;
    const now = Date.now();
    if (s && now - s.lastActive > this.sessionTimeoutMs) this.sessions.delete(s.key);
    const live = s && this.sessions.has(s.key) ? s : undefined;
    if (!live && !UNAUTHENTICATED.has(method)) {
      throw new LabFault('NotAuthenticated', 'The session is not authenticated.', {
        object: target ?? moref('Folder', 'group-d1'),
        privilegeId: 'System.View',
      });
    }
    if (live) live.lastActive = now;
    return live;
  }

  // --- Methods --------------------------------------------------------------------------------

  private dispatch(
    method: string,
    a: VimObject,
    session: Session | undefined,
    headers: Record<string, string>,
    failWith: LabFault | undefined,
  ): VimValue | undefined {
    const w = this.world;
    const ref = (v: VimValue | undefined): MoRef => {
      if (!isMoRef(v))
        throw new LabFault('InvalidArgument', 'A specified parameter was not correct: _this', {
          invalidProperty: '_this',
        });
      return v;
    };
    switch (method) {
      case 'RetrieveServiceContent':
        return this.serviceContent();
      case 'Login': {
        const user = String(a.userName ?? '');
        const pass = Buffer.from(String(a.password ?? ''));
        const want = Buffer.from(this.opts.password);
        if (user !== this.opts.username || pass.length !== want.length || !timingSafeEqual(pass, want)) {
          throw new LabFault(
            'InvalidLogin',
            'Cannot complete login due to an incorrect user name or password.',
          );
        }
        const key = randomBytes(20).toString('hex');
        const now = new Date().toISOString();
        this.sessions.set(key, { key, userName: user, loginTime: now, lastActive: Date.now() });
        headers['Set-Cookie'] = `vmware_soap_session="${key}"; Path=/; HttpOnly; Secure;`;
        return {
          _type: 'UserSession',
          key: randomBytes(16).toString('hex'),
          userName: user,
          fullName: user,
          loginTime: now,
          lastActiveTime: now,
          locale: 'en',
          messageLocale: 'en',
          extensionSession: false,
          ipAddress: '127.0.0.1',
          callCount: 0,
        };
      }
      case 'Logout':
        if (session) this.sessions.delete(session.key);
        return undefined;
      case 'CurrentTime':
        return new Date().toISOString();
      case 'CreateContainerView': {
        const id = `session[${session?.key.slice(0, 8) ?? ''}]${randomBytes(8).toString('hex')}`;
        this.views.set(id, { types: ((a.type as VimValue[] | undefined) ?? []).map(String) });
        return moref('ContainerView', id);
      }
      case 'DestroyView':
        this.views.delete(ref(a._this).value);
        return undefined;
      case 'RetrievePropertiesEx':
        return this.retrieve(a);
      case 'ContinueRetrievePropertiesEx': {
        const page = this.pages.get(String(a.token));
        if (!page)
          throw new LabFault('InvalidArgument', 'A specified parameter was not correct: token', {
            invalidProperty: 'token',
          });
        this.pages.delete(String(a.token));
        return this.page(page.objects, page.max);
      }
      case 'FindByUuid':
      case 'FindAllByUuid': {
        const uuid = String(a.uuid);
        let found: MoRef[];
        if (a.vmSearch === true) {
          found = w.vms
            .filter((v) => (a.instanceUuid === true ? v.instanceUuid === uuid : v.biosUuid === uuid))
            .map((v) => moref('VirtualMachine', v.moref));
        } else {
          found = w.hosts.filter((h) => h.uuid === uuid).map((h) => moref('HostSystem', h.moref));
        }
        return method === 'FindByUuid' ? found[0] : found;
      }
      case 'FindByInventoryPath':
        return this.findByInventoryPath(String(a.inventoryPath ?? ''));
      case 'CreateVM_Task': {
        const folder = ref(a._this);
        if (folder.type !== 'Folder') {
          throw new LabFault('NotSupported', `CreateVM_Task needs a VM folder, not ${folder.type}`);
        }
        return w.createVm(folder, a.config as VimObject | undefined, a.pool, a.host, failWith);
      }
      case 'Destroy_Task': {
        const target = ref(a._this);
        if (target.type !== 'VirtualMachine') {
          throw new LabFault('NotSupported', `the lab destroys VirtualMachines only, not ${target.type}`);
        }
        return w.destroyVm(this.vmRef(target), failWith);
      }
      case 'ReconfigVM_Task':
        return w.reconfigure(this.vmRef(a._this), a.spec as VimObject, failWith);
      case 'CreateSnapshot_Task':
        return w.createSnapshot(
          this.vmRef(a._this),
          String(a.name ?? ''),
          String(a.description ?? ''),
          a.memory === true,
          a.quiesce === true,
          failWith,
        );
      case 'RemoveSnapshot_Task': {
        const snap = ref(a._this);
        if (snap.type !== 'VirtualMachineSnapshot') throw w.notFound(snap.type, snap.value);
        const { vm } = w.snapshot(snap.value);
        w.checkWritable(vm);
        return w.removeSnapshot(snap.value, a.removeChildren === true, a.consolidate !== false, failWith);
      }
      case 'ConsolidateVMDisks_Task':
        return w.consolidateTask(this.vmRef(a._this), failWith);
      case 'QueryChangedDiskAreas': {
        const snap = a.snapshot;
        return w.queryChangedDiskAreas(
          this.vmRef(a._this),
          isMoRef(snap) ? snap.value : undefined,
          Number(a.deviceKey),
          Number(a.startOffset),
          String(a.changeId ?? ''),
        );
      }
      default:
        throw new LabFault('MethodNotFound', `Method ${method} not implemented by the lab`, { method });
    }
  }

  private vmRef(v: VimValue | undefined): string {
    if (!isMoRef(v) || v.type !== 'VirtualMachine') {
      throw new LabFault('InvalidArgument', 'A specified parameter was not correct: _this', {
        invalidProperty: '_this',
      });
    }
    this.world.vm(v.value);
    return v.value;
  }

  private serviceContent(): VimObject {
    const w = this.world;
    const version = w.def.apiVersion;
    return {
      _type: 'ServiceContent',
      rootFolder: moref('Folder', 'group-d1'),
      propertyCollector: moref('PropertyCollector', 'propertyCollector'),
      viewManager: moref('ViewManager', 'ViewManager'),
      about: {
        _type: 'AboutInfo',
        name: 'VMware vCenter Server',
        fullName: `VMware vCenter Server ${version} build-24022515 (vbproxy lab)`,
        vendor: 'VMware, Inc.',
        version: version.split('.').slice(0, 3).join('.'),
        build: '24022515',
        localeVersion: 'INTL',
        localeBuild: '000',
        osType: 'linux-x64',
        productLineId: 'vpx',
        apiType: 'VirtualCenter',
        apiVersion: version,
        instanceUuid: w.instanceUuid,
      },
      setting: moref('OptionManager', 'VpxSettings'),
      userDirectory: moref('UserDirectory', 'UserDirectory'),
      sessionManager: moref('SessionManager', 'SessionManager'),
      authorizationManager: moref('AuthorizationManager', 'AuthorizationManager'),
      perfManager: moref('PerformanceManager', 'PerfMgr'),
      taskManager: moref('TaskManager', 'TaskManager'),
      customFieldsManager: moref('CustomFieldsManager', 'CustomFieldsManager'),
      searchIndex: moref('SearchIndex', 'SearchIndex'),
      fileManager: moref('FileManager', 'FileManager'),
      virtualDiskManager: moref('VirtualDiskManager', 'VirtualDiskManager'),
    };
  }

  // --- Property collector ---------------------------------------------------------------------

  private viewContents(id: string): MoRef[] {
    const view = this.views.get(id);
    if (!view) throw this.world.notFound('ContainerView', id);
    const out: MoRef[] = [];
    const w = this.world;
    for (const t of view.types) {
      if (
        isSubtype(t, 'ManagedEntity') ||
        [
          'VirtualMachine',
          'HostSystem',
          'Datastore',
          'Network',
          'Datacenter',
          'ComputeResource',
          'ResourcePool',
          'ManagedEntity',
        ].includes(t)
      ) {
        if (t === 'VirtualMachine' || t === 'ManagedEntity')
          out.push(...w.vms.map((v) => moref('VirtualMachine', v.moref)));
        if (t === 'HostSystem' || t === 'ManagedEntity')
          out.push(...w.hosts.map((h) => moref('HostSystem', h.moref)));
        if (t === 'Datastore' || t === 'ManagedEntity')
          out.push(...w.datastores.map((d) => moref('Datastore', d.moref)));
        if (t === 'Network' || t === 'ManagedEntity')
          out.push(...w.networks.map((n) => moref('Network', n.moref)));
        if (t === 'Datacenter' || t === 'ManagedEntity') out.push(moref('Datacenter', w.datacenter.moref));
        if (t === 'ComputeResource' || t === 'ManagedEntity')
          out.push(...w.hosts.map((h) => moref('ComputeResource', w.computeResourceOf(h))));
        if (t === 'ResourcePool' || t === 'ManagedEntity')
          out.push(...w.hosts.map((h) => moref('ResourcePool', w.resourcePoolOf(h))));
      }
    }
    return out;
  }

  /**
   * RetrievePropertiesEx with vim25 traversal: each ObjectSpec starts at `obj` (reported unless
   * `skip`), and each TraversalSpec of its selectSet whose `type` matches the object follows the
   * object's `path` property to further objects (reported unless the spec's `skip`), recursing into
   * the spec's own selectSet; a SelectionSpec names a TraversalSpec of the same filter spec. Each
   * object is reported once. A start object that does not exist is ManagedObjectNotFound.
   */
  private retrieve(a: VimObject): VimValue | undefined {
    const objects: VimObject[] = [];
    const seen = new Set<string>();
    for (const spec of (a.specSet as VimObject[] | undefined) ?? []) {
      const propSpecs = (spec.propSet as VimObject[] | undefined) ?? [];
      const named = new Map<string, VimObject>();
      const collect = (sels: VimObject[] | undefined): void => {
        for (const sel of sels ?? []) {
          if (sel._type === 'TraversalSpec' && typeof sel.name === 'string' && !named.has(sel.name)) {
            named.set(sel.name, sel);
            collect(sel.selectSet as VimObject[] | undefined);
          }
        }
      };
      for (const os of (spec.objectSet as VimObject[] | undefined) ?? [])
        collect(os.selectSet as VimObject[] | undefined);
      const targets: MoRef[] = [];
      const visit = (obj: MoRef, report: boolean, sels: VimObject[] | undefined, depth: number): void => {
        if (report) targets.push(obj);
        if (depth > 64) return;
        for (const raw of sels ?? []) {
          const sel =
            raw._type === 'TraversalSpec' ? raw : named.get(typeof raw.name === 'string' ? raw.name : '');
          if (!sel || sel.type !== obj.type) continue;
          for (const child of this.traverse(obj, String(sel.path))) {
            visit(child, sel.skip !== true, sel.selectSet as VimObject[] | undefined, depth + 1);
          }
        }
      };
      for (const os of (spec.objectSet as VimObject[] | undefined) ?? []) {
        const obj = os.obj as MoRef;
        this.checkExists(obj);
        visit(obj, os.skip !== true, os.selectSet as VimObject[] | undefined, 0);
      }
      for (const t of targets) {
        const key = `${t.type}:${t.value}`;
        if (seen.has(key)) continue;
        const ps = propSpecs.filter((p) => p.type === t.type);
        if (ps.length === 0) continue;
        seen.add(key);
        const paths = ps.flatMap((p) => ((p.pathSet as VimValue[] | undefined) ?? []).map(String));
        objects.push(this.objectContent(t, paths));
      }
    }
    if (objects.length === 0) return undefined;
    const max = (a.options as VimObject | undefined)?.maxObjects;
    return this.page(objects, typeof max === 'number' && max > 0 ? max : 100);
  }

  /** Throws ManagedObjectNotFound for a start object the inventory does not have. */
  private checkExists(obj: MoRef): void {
    const w = this.world;
    switch (obj.type) {
      case 'Folder':
        w.folder(obj.value);
        return;
      case 'VirtualMachine':
        w.vm(obj.value);
        return;
      case 'ComputeResource':
        w.computeResourceHost(obj.value);
        return;
      case 'ResourcePool':
        w.resourcePoolHost(obj.value);
        return;
      case 'ContainerView':
        if (!this.views.has(obj.value)) throw w.notFound('ContainerView', obj.value);
        return;
      case 'Network':
        w.network(obj.value);
        return;
      default:
        return;
    }
  }

  /**
   * SearchIndex.FindByInventoryPath as vCenter and vcsim answer it: from the root folder, each
   * `/`-separated name (empty ones skipped, so a leading `/` is optional) picks the child of that
   * name: a folder's childEntity; a datacenter's vm, host, datastore and network folders; a
   * ComputeResource's host and root pool; a pool's VMs. Nothing there: no value, not a fault.
   */
  private findByInventoryPath(path: string): MoRef | undefined {
    const names = path.split('/').filter(Boolean);
    if (names.length === 0) return undefined;
    let cur: MoRef | undefined = moref('Folder', ROOT_FOLDER);
    for (const name of names) {
      cur = this.inventoryChildren(cur).find((c) => this.property(c, 'name') === name);
      if (cur === undefined) return undefined;
    }
    return cur;
  }

  /** The children an inventory path walks through (vcsim's SearchIndex.FindChild). */
  private inventoryChildren(obj: MoRef): MoRef[] {
    const w = this.world;
    switch (obj.type) {
      case 'Folder':
        return w.folderChildren(obj.value);
      case 'Datacenter':
        return [VM_FOLDER, HOST_FOLDER, DATASTORE_FOLDER, NETWORK_FOLDER].map((f) => moref('Folder', f));
      case 'ComputeResource': {
        const h = w.computeResourceHost(obj.value);
        return [moref('HostSystem', h.moref), moref('ResourcePool', w.resourcePoolOf(h))];
      }
      case 'ResourcePool': {
        const h = w.resourcePoolHost(obj.value);
        return w.vms.filter((v) => v.host === h.moref).map((v) => moref('VirtualMachine', v.moref));
      }
      default:
        return [];
    }
  }

  /** The objects a traversal path leads to from `obj` (MoRef-valued properties only). */
  private traverse(obj: MoRef, path: string): MoRef[] {
    const w = this.world;
    if (obj.type === 'ContainerView' && path === 'view') return this.viewContents(obj.value);
    if (obj.type === 'Folder' && path === 'childEntity') return w.folderChildren(obj.value);
    if (obj.type === 'Datacenter') {
      const f = {
        vmFolder: VM_FOLDER,
        hostFolder: HOST_FOLDER,
        datastoreFolder: DATASTORE_FOLDER,
        networkFolder: NETWORK_FOLDER,
      }[path];
      if (f !== undefined) return [moref('Folder', f)];
    }
    let v: VimValue | undefined;
    try {
      v = this.property(obj, path);
    } catch {
      return [];
    }
    const items = arrayItems(v); // array properties are ArrayOf<item> values
    const list = Array.isArray(items) ? items : items === undefined ? [] : [items];
    return list.filter(isMoRef);
  }

  private page(objects: VimObject[], max: number): VimObject {
    const first = objects.slice(0, max);
    const rest = objects.slice(max);
    let token: string | undefined;
    if (rest.length > 0) {
      token = randomBytes(8).toString('hex');
      this.pages.set(token, { objects: rest, max });
    }
    return { _type: 'RetrieveResult', token, objects: first };
  }

  private missingRule(obj: MoRef, path: string): (FaultRule & { left: number }) | undefined {
    const name =
      obj.type === 'VirtualMachine' ? this.world.vms.find((v) => v.moref === obj.value)?.name : undefined;
    const f = this.faults.find(
      (r) =>
        r.action === 'missing' &&
        r.path === path &&
        (r.object === undefined || r.object === obj.value || r.object === name),
    );
    if (f && f.times !== 0) {
      f.left--;
      if (f.left <= 0) this.faults = this.faults.filter((x) => x !== f);
    }
    return f;
  }

  private objectContent(obj: MoRef, paths: string[]): VimObject {
    const propSet: VimObject[] = [];
    const missingSet: VimObject[] = [];
    for (const path of paths) {
      const rule = this.missingRule(obj, path);
      if (rule) {
        const fault = new LabFault(
          rule.fault!,
          rule.message ?? `injected ${rule.fault!}`,
          (rule.fields ?? {}) as Record<string, VimValue>,
        );
        missingSet.push({
          _type: 'MissingProperty',
          path,
          fault: {
            _type: 'LocalizedMethodFault',
            fault: this.faultObject(fault, obj),
            localizedMessage: fault.message,
          },
        });
        continue;
      }
      const val = this.property(obj, path);
      if (val !== undefined) propSet.push({ _type: 'DynamicProperty', name: path, val });
    }
    return { _type: 'ObjectContent', obj, propSet, missingSet };
  }

  private property(obj: MoRef, path: string): VimValue | undefined {
    const w = this.world;
    switch (obj.type) {
      case 'VirtualMachine':
        return w.vmProperty(w.vm(obj.value), path);
      case 'VirtualMachineSnapshot': {
        const { vm, snap } = w.snapshot(obj.value);
        if (path === 'config.hardware.device') return arrayOf('VirtualDevice', w.snapshotDevices(vm, snap));
        if (path === 'vm') return moref('VirtualMachine', vm.moref);
        break;
      }
      case 'Task': {
        const t = w.tasks.get(obj.value);
        if (!t) throw w.notFound('Task', obj.value);
        const info = this.taskInfo(t);
        if (path === 'info') return info;
        if (path.startsWith('info.')) return info[path.slice(5)];
        break;
      }
      case 'HostSystem': {
        const h = w.host(obj.value);
        if (path === 'name') return h.name;
        if (path === 'datastore')
          return arrayOf(
            MOREF_TYPE,
            h.datastores.map((d) => moref('Datastore', d)),
          );
        if (path === 'parent') return moref('ComputeResource', w.computeResourceOf(h));
        if (path === 'network')
          return arrayOf(
            MOREF_TYPE,
            w.hostNetworks(h).map((n) => moref('Network', n.moref)),
          );
        break;
      }
      case 'Network': {
        const n = w.network(obj.value);
        if (path === 'name') return n.name;
        if (path === 'host')
          return arrayOf(
            MOREF_TYPE,
            w.networkHosts(n).map((h) => moref('HostSystem', h.moref)),
          );
        break;
      }
      case 'ComputeResource': {
        const h = w.computeResourceHost(obj.value);
        if (path === 'name') return h.name;
        if (path === 'resourcePool') return moref('ResourcePool', w.resourcePoolOf(h));
        if (path === 'host') return arrayOf(MOREF_TYPE, [moref('HostSystem', h.moref)]);
        if (path === 'datastore')
          return arrayOf(
            MOREF_TYPE,
            h.datastores.map((d) => moref('Datastore', d)),
          );
        if (path === 'parent') return moref('Folder', HOST_FOLDER);
        break;
      }
      case 'ResourcePool': {
        const h = w.resourcePoolHost(obj.value);
        if (path === 'name') return 'Resources';
        if (path === 'owner' || path === 'parent') return moref('ComputeResource', w.computeResourceOf(h));
        break;
      }
      case 'Datastore': {
        const d = w.datastore(obj.value);
        if (path === 'name') return d.name;
        if (path === 'summary') {
          return {
            _type: 'DatastoreSummary',
            datastore: moref('Datastore', d.moref),
            name: d.name,
            url: `ds:///vmfs/volumes/${d.moref}/`,
            capacity: d.capacity,
            freeSpace: Math.floor(d.capacity * 0.8),
            accessible: true,
            type: 'VMFS',
            maintenanceMode: 'normal',
          };
        }
        break;
      }
      case 'Datacenter':
        if (path === 'name') return w.datacenter.name;
        if (path === 'vmFolder') return moref('Folder', VM_FOLDER);
        if (path === 'hostFolder') return moref('Folder', HOST_FOLDER);
        if (path === 'datastoreFolder') return moref('Folder', DATASTORE_FOLDER);
        if (path === 'networkFolder') return moref('Folder', NETWORK_FOLDER);
        if (path === 'parent') return moref('Folder', ROOT_FOLDER);
        break;
      case 'Folder': {
        const f = w.folder(obj.value);
        if (path === 'name') return f.name;
        if (path === 'parent') return f.parent;
        if (path === 'childEntity') return arrayOf(MOREF_TYPE, w.folderChildren(f.moref));
        break;
      }
      default:
        throw w.notFound(obj.type, obj.value);
    }
    throw new LabFault('InvalidProperty', `the lab has no ${obj.type} property ${path}`, { name: path });
  }

  private taskInfo(t: TaskState): VimObject {
    const err = t.error;
    return {
      _type: 'TaskInfo',
      key: t.moref,
      task: moref('Task', t.moref),
      name: t.descriptionId.split('.').pop(),
      descriptionId: t.descriptionId,
      entity: t.entity,
      entityName: t.entityName,
      state: t.state,
      cancelled: false,
      cancelable: false,
      error: err
        ? {
            _type: 'LocalizedMethodFault',
            fault: this.faultObject(err, t.entity ?? moref('Task', t.moref)),
            localizedMessage: err.message,
          }
        : undefined,
      result: t.result,
      progress: t.progress,
      reason: { _type: 'TaskReasonUser', userName: this.opts.username },
      queueTime: t.queueTime,
      startTime: t.startTime,
      completeTime: t.completeTime,
      eventChainId: t.eventChainId,
    };
  }
}
