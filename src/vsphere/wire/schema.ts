/**
 * The vim25 subset vbproxy uses, as data: every complex type with its fields in XSD sequence order
 * (the order of VMware's WSDL, checked against govmomi's generated types by a test), the enum
 * types, and the operations. The WSDL text node-soap loads is generated from this table
 * (wsdl.ts), the request encoder and the response decoder walk it (codec.ts), and the lab vSphere
 * serialises its answers with it, so the three can never disagree about order or shape.
 *
 * Field specs are compact strings: `name:type` (exactly one), `name?:type` (optional),
 * `name[]:type` (zero or more), `name+:type` (one or more). Types without a prefix are vim25
 * types; `xsd:` types are XML Schema primitives.
 */

export interface FieldDef {
  readonly name: string;
  readonly type: string;
  readonly min: 0 | 1;
  readonly array: boolean;
}

export interface TypeDef {
  readonly name: string;
  readonly base: string | undefined;
  /** Own fields only, in sequence order. */
  readonly own: readonly FieldDef[];
}

export interface OperationDef {
  /** The request element name (e.g. `ReconfigVM_Task`). */
  readonly name: string;
  /** The request complex type (e.g. `ReconfigVMRequestType`). */
  readonly requestType: string;
  /** The returnval field of the response, or undefined for void operations. */
  readonly returns: FieldDef | undefined;
}

function parseField(spec: string): FieldDef {
  const m = /^([A-Za-z_][A-Za-z0-9_]*)(\?|\[\]|\+)?:([A-Za-z0-9:]+)$/.exec(spec);
  if (!m) throw new Error(`bad field spec ${spec}`);
  const [, name, card, type] = m as unknown as [string, string, string | undefined, string];
  return { name, type, min: card === '?' || card === '[]' ? 0 : 1, array: card === '[]' || card === '+' };
}

const types = new Map<string, TypeDef>();
const enums = new Map<string, readonly string[]>();
const operations = new Map<string, OperationDef>();

function t(name: string, base: string | undefined, ...fields: string[]): void {
  types.set(name, { name, base, own: fields.map(parseField) });
}
function e(name: string, ...values: string[]): void {
  enums.set(name, values);
}
function op(name: string, requestType: string, returns: string | undefined, ...fields: string[]): void {
  t(requestType, undefined, ...fields);
  operations.set(name, {
    name,
    requestType,
    returns: returns === undefined ? undefined : parseField(returns),
  });
}

const MOR = 'ManagedObjectReference';

// --- Base data objects --------------------------------------------------------------------------
t('DynamicData', undefined);
t(
  'AboutInfo',
  'DynamicData',
  'name:xsd:string',
  'fullName:xsd:string',
  'vendor:xsd:string',
  'version:xsd:string',
  'build:xsd:string',
  'localeVersion?:xsd:string',
  'localeBuild?:xsd:string',
  'osType:xsd:string',
  'productLineId:xsd:string',
  'apiType:xsd:string',
  'apiVersion:xsd:string',
  'instanceUuid?:xsd:string',
);
t(
  'ServiceContent',
  'DynamicData',
  `rootFolder:${MOR}`,
  `propertyCollector:${MOR}`,
  `viewManager?:${MOR}`,
  'about:AboutInfo',
  `setting?:${MOR}`,
  `userDirectory?:${MOR}`,
  `sessionManager?:${MOR}`,
  `authorizationManager?:${MOR}`,
  `perfManager?:${MOR}`,
  `taskManager?:${MOR}`,
  `customFieldsManager?:${MOR}`,
  `searchIndex?:${MOR}`,
  `fileManager?:${MOR}`,
  `virtualDiskManager?:${MOR}`,
);
t(
  'UserSession',
  'DynamicData',
  'key:xsd:string',
  'userName:xsd:string',
  'fullName:xsd:string',
  'loginTime:xsd:dateTime',
  'lastActiveTime:xsd:dateTime',
  'locale:xsd:string',
  'messageLocale:xsd:string',
  'extensionSession?:xsd:boolean',
  'ipAddress?:xsd:string',
  'userAgent?:xsd:string',
  'callCount?:xsd:long',
);
t('Description', 'DynamicData', 'label:xsd:string', 'summary:xsd:string');
t('LocalizableMessage', 'DynamicData', 'key:xsd:string', 'arg[]:KeyAnyValue', 'message?:xsd:string');
t('KeyAnyValue', 'DynamicData', 'key:xsd:string', 'value:xsd:anyType');
t('OptionValue', 'DynamicData', 'key:xsd:string', 'value?:xsd:anyType');

// --- Property collector -------------------------------------------------------------------------
t('PropertySpec', 'DynamicData', 'type:xsd:string', 'all?:xsd:boolean', 'pathSet[]:xsd:string');
t('SelectionSpec', 'DynamicData', 'name?:xsd:string');
t(
  'TraversalSpec',
  'SelectionSpec',
  'type:xsd:string',
  'path:xsd:string',
  'skip?:xsd:boolean',
  'selectSet[]:SelectionSpec',
);
t('ObjectSpec', 'DynamicData', `obj:${MOR}`, 'skip?:xsd:boolean', 'selectSet[]:SelectionSpec');
t(
  'PropertyFilterSpec',
  'DynamicData',
  'propSet+:PropertySpec',
  'objectSet+:ObjectSpec',
  'reportMissingObjectsInResults?:xsd:boolean',
);
t('RetrieveOptions', 'DynamicData', 'maxObjects?:xsd:int');
t('DynamicProperty', undefined, 'name:xsd:string', 'val:xsd:anyType');
t('MissingProperty', 'DynamicData', 'path:xsd:string', 'fault:LocalizedMethodFault');
t('ObjectContent', 'DynamicData', `obj:${MOR}`, 'propSet[]:DynamicProperty', 'missingSet[]:MissingProperty');
t('RetrieveResult', 'DynamicData', 'token?:xsd:string', 'objects+:ObjectContent');

// --- Faults -------------------------------------------------------------------------------------
t('LocalizedMethodFault', 'DynamicData', 'fault:MethodFault', 'localizedMessage?:xsd:string');
t('MethodFault', undefined, 'faultCause?:LocalizedMethodFault', 'faultMessage[]:LocalizableMessage');
t('RuntimeFault', 'MethodFault');
t('VimFault', 'MethodFault');
t('SecurityError', 'RuntimeFault');
t('NoPermission', 'SecurityError', `object?:${MOR}`, 'privilegeId?:xsd:string');
t('NotAuthenticated', 'NoPermission');
t('RestrictedVersion', 'SecurityError');
t('ManagedObjectNotFound', 'RuntimeFault', `obj:${MOR}`);
t('InvalidRequest', 'RuntimeFault');
t('MethodNotFound', 'InvalidRequest', `receiver:${MOR}`, 'method:xsd:string');
t('InvalidArgument', 'RuntimeFault', 'invalidProperty?:xsd:string');
t('NotSupported', 'RuntimeFault');
t('NotImplemented', 'RuntimeFault');
t('SystemError', 'RuntimeFault', 'reason:xsd:string');
t('HostCommunication', 'RuntimeFault');
t('RequestCanceled', 'RuntimeFault');
t('InvalidLogin', 'VimFault');
t('NotFound', 'VimFault');
t('InvalidState', 'VimFault');
t(
  'InvalidPowerState',
  'InvalidState',
  'requestedState?:VirtualMachinePowerState',
  'existingState:VirtualMachinePowerState',
);
t('TaskInProgress', 'VimFault', `task:${MOR}`);
t('ConcurrentAccess', 'VimFault');
t('InvalidName', 'VimFault', 'name:xsd:string', `entity?:${MOR}`);
t('FileFault', 'VimFault', 'file:xsd:string');
t('FileLocked', 'FileFault');
t('FileNotFound', 'FileFault');
t('FileAlreadyExists', 'FileFault');
t('CannotCreateFile', 'FileFault');
t('NoDiskSpace', 'FileFault', 'datastore:xsd:string');
t('SnapshotFault', 'VimFault');
t('ApplicationQuiesceFault', 'SnapshotFault');
t('FilesystemQuiesceFault', 'SnapshotFault');
t('ToolsUnavailable', 'VimFault');
t('VmConfigFault', 'VimFault');
t('InvalidVmConfig', 'VmConfigFault', 'property?:xsd:string');
t('InvalidDeviceSpec', 'InvalidVmConfig', 'deviceIndex:xsd:int');
t('InvalidDeviceOperation', 'InvalidDeviceSpec', 'badOp?:xsd:string', 'badFileOp?:xsd:string');
t('DuplicateName', 'VimFault', 'name:xsd:string', `object:${MOR}`);
t('InvalidDatastore', 'VimFault', `datastore?:${MOR}`, 'name?:xsd:string');
t('InvalidDatastorePath', 'InvalidDatastore', 'datastorePath:xsd:string');
t('InvalidCollectorVersion', 'MethodFault');
t('InvalidProperty', 'MethodFault', 'name:xsd:string');

// --- Tasks --------------------------------------------------------------------------------------
t('TaskReason', 'DynamicData');
t('TaskReasonUser', 'TaskReason', 'userName:xsd:string');
t(
  'TaskInfo',
  'DynamicData',
  'key:xsd:string',
  `task:${MOR}`,
  'description?:LocalizableMessage',
  'name?:xsd:string',
  'descriptionId:xsd:string',
  `entity?:${MOR}`,
  'entityName?:xsd:string',
  `locked[]:${MOR}`,
  'state:TaskInfoState',
  'cancelled:xsd:boolean',
  'cancelable:xsd:boolean',
  'error?:LocalizedMethodFault',
  'result?:xsd:anyType',
  'progress?:xsd:int',
  'reason:TaskReason',
  'queueTime:xsd:dateTime',
  'startTime?:xsd:dateTime',
  'completeTime?:xsd:dateTime',
  'eventChainId:xsd:int',
);

// --- Devices ------------------------------------------------------------------------------------
t('VirtualDeviceBackingInfo', 'DynamicData');
t(
  'VirtualDeviceFileBackingInfo',
  'VirtualDeviceBackingInfo',
  'fileName:xsd:string',
  `datastore?:${MOR}`,
  'backingObjectId?:xsd:string',
);
t(
  'VirtualDiskFlatVer2BackingInfo',
  'VirtualDeviceFileBackingInfo',
  'diskMode:xsd:string',
  'split?:xsd:boolean',
  'writeThrough?:xsd:boolean',
  'thinProvisioned?:xsd:boolean',
  'eagerlyScrub?:xsd:boolean',
  'uuid?:xsd:string',
  'contentId?:xsd:string',
  'changeId?:xsd:string',
  'parent?:VirtualDiskFlatVer2BackingInfo',
  'deltaDiskFormat?:xsd:string',
  'digestEnabled?:xsd:boolean',
  'deltaGrainSize?:xsd:int',
  'deltaDiskFormatVariant?:xsd:string',
  'sharing?:xsd:string',
);
t(
  'VirtualDiskSparseVer2BackingInfo',
  'VirtualDeviceFileBackingInfo',
  'diskMode:xsd:string',
  'split?:xsd:boolean',
  'writeThrough?:xsd:boolean',
  'spaceUsedInKB?:xsd:long',
  'uuid?:xsd:string',
  'contentId?:xsd:string',
  'changeId?:xsd:string',
  'parent?:VirtualDiskSparseVer2BackingInfo',
);
t(
  'VirtualDiskRawDiskMappingVer1BackingInfo',
  'VirtualDeviceFileBackingInfo',
  'lunUuid?:xsd:string',
  'deviceName?:xsd:string',
  'compatibilityMode?:xsd:string',
  'diskMode?:xsd:string',
  'uuid?:xsd:string',
  'contentId?:xsd:string',
  'changeId?:xsd:string',
  'parent?:VirtualDiskRawDiskMappingVer1BackingInfo',
);
t(
  'VirtualDeviceConnectInfo',
  'DynamicData',
  'migrateConnect?:xsd:string',
  'startConnected:xsd:boolean',
  'allowGuestControl:xsd:boolean',
  'connected:xsd:boolean',
  'status?:xsd:string',
);
t(
  'VirtualDevice',
  'DynamicData',
  'key:xsd:int',
  'deviceInfo?:Description',
  'backing?:VirtualDeviceBackingInfo',
  'connectable?:VirtualDeviceConnectInfo',
  'controllerKey?:xsd:int',
  'unitNumber?:xsd:int',
);
t(
  'VirtualDisk',
  'VirtualDevice',
  'capacityInKB:xsd:long',
  'capacityInBytes?:xsd:long',
  'diskObjectId?:xsd:string',
);
t('VirtualController', 'VirtualDevice', 'busNumber:xsd:int', 'device[]:xsd:int');
t(
  'VirtualSCSIController',
  'VirtualController',
  'hotAddRemove?:xsd:boolean',
  'sharedBus:xsd:string',
  'scsiCtlrUnitNumber?:xsd:int',
);
t('ParaVirtualSCSIController', 'VirtualSCSIController');
t('VirtualLsiLogicController', 'VirtualSCSIController');
t('VirtualLsiLogicSASController', 'VirtualSCSIController');
t('VirtualBusLogicController', 'VirtualSCSIController');
t('VirtualIDEController', 'VirtualController');
t('VirtualPCIController', 'VirtualController');
t(
  'VirtualEthernetCard',
  'VirtualDevice',
  'addressType?:xsd:string',
  'macAddress?:xsd:string',
  'wakeOnLanEnabled?:xsd:boolean',
);
t('VirtualE1000', 'VirtualEthernetCard');
t('VirtualE1000e', 'VirtualEthernetCard');
t('VirtualPCNet32', 'VirtualEthernetCard');
t('VirtualVmxnet', 'VirtualEthernetCard');
t('VirtualVmxnet2', 'VirtualVmxnet');
t('VirtualVmxnet3', 'VirtualVmxnet');
t('VirtualVmxnet3Vrdma', 'VirtualVmxnet3');
t('VirtualSriovEthernetCard', 'VirtualEthernetCard');
t(
  'VirtualDeviceDeviceBackingInfo',
  'VirtualDeviceBackingInfo',
  'deviceName:xsd:string',
  'useAutoDetect?:xsd:boolean',
);
t(
  'VirtualEthernetCardNetworkBackingInfo',
  'VirtualDeviceDeviceBackingInfo',
  `network?:${MOR}`,
  'inPassthroughMode?:xsd:boolean',
);
t(
  'DistributedVirtualSwitchPortConnection',
  'DynamicData',
  'switchUuid:xsd:string',
  'portgroupKey?:xsd:string',
  'portKey?:xsd:string',
  'connectionCookie?:xsd:int',
);
t(
  'VirtualEthernetCardDistributedVirtualPortBackingInfo',
  'VirtualDeviceBackingInfo',
  'port:DistributedVirtualSwitchPortConnection',
);
t(
  'VirtualEthernetCardOpaqueNetworkBackingInfo',
  'VirtualDeviceBackingInfo',
  'opaqueNetworkId:xsd:string',
  'opaqueNetworkType:xsd:string',
);
t(
  'VirtualDeviceConfigSpec',
  'DynamicData',
  'operation?:VirtualDeviceConfigSpecOperation',
  'fileOperation?:VirtualDeviceConfigSpecFileOperation',
  'device:VirtualDevice',
);
t(
  'VirtualMachineFileInfo',
  'DynamicData',
  'vmPathName?:xsd:string',
  'snapshotDirectory?:xsd:string',
  'suspendDirectory?:xsd:string',
  'logDirectory?:xsd:string',
);
t(
  'VirtualMachineConfigSpec',
  'DynamicData',
  'changeVersion?:xsd:string',
  'name?:xsd:string',
  'uuid?:xsd:string',
  'instanceUuid?:xsd:string',
  'guestId?:xsd:string',
  'annotation?:xsd:string',
  'files?:VirtualMachineFileInfo',
  'numCPUs?:xsd:int',
  'memoryMB?:xsd:long',
  'deviceChange[]:VirtualDeviceConfigSpec',
  'extraConfig[]:OptionValue',
  'changeTrackingEnabled?:xsd:boolean',
  'firmware?:xsd:string',
);

// --- Snapshots, CBT, datastores -----------------------------------------------------------------
t(
  'VirtualMachineSnapshotTree',
  'DynamicData',
  `snapshot:${MOR}`,
  `vm:${MOR}`,
  'name:xsd:string',
  'description:xsd:string',
  'id?:xsd:int',
  'createTime:xsd:dateTime',
  'state:VirtualMachinePowerState',
  'quiesced:xsd:boolean',
  'backupManifest?:xsd:string',
  'childSnapshotList[]:VirtualMachineSnapshotTree',
  'replaySupported?:xsd:boolean',
);
t(
  'VirtualMachineSnapshotInfo',
  'DynamicData',
  `currentSnapshot?:${MOR}`,
  'rootSnapshotList[]:VirtualMachineSnapshotTree',
);
t('DiskChangeExtent', 'DynamicData', 'start:xsd:long', 'length:xsd:long');
t(
  'DiskChangeInfo',
  'DynamicData',
  'startOffset:xsd:long',
  'length:xsd:long',
  'changedArea[]:DiskChangeExtent',
);
t(
  'DatastoreSummary',
  'DynamicData',
  `datastore?:${MOR}`,
  'name:xsd:string',
  'url:xsd:string',
  'capacity:xsd:long',
  'freeSpace:xsd:long',
  'uncommitted?:xsd:long',
  'accessible:xsd:boolean',
  'multipleHostAccess?:xsd:boolean',
  'type:xsd:string',
  'maintenanceMode?:xsd:string',
);

// --- Arrays used in anyType positions -----------------------------------------------------------
t('ArrayOfString', undefined, 'string[]:xsd:string');
t('ArrayOfInt', undefined, 'int[]:xsd:int');
t(`ArrayOf${MOR}`, undefined, `${MOR}[]:${MOR}`);
t('ArrayOfVirtualDevice', undefined, 'VirtualDevice[]:VirtualDevice');
t('ArrayOfOptionValue', undefined, 'OptionValue[]:OptionValue');
t('ArrayOfVirtualMachineSnapshotTree', undefined, 'VirtualMachineSnapshotTree[]:VirtualMachineSnapshotTree');

// --- Enums --------------------------------------------------------------------------------------
e('VirtualMachinePowerState', 'poweredOff', 'poweredOn', 'suspended');
e('TaskInfoState', 'queued', 'running', 'success', 'error');
e('VirtualDeviceConfigSpecOperation', 'add', 'remove', 'edit');
e('VirtualDeviceConfigSpecFileOperation', 'create', 'destroy', 'replace');
e('HostSystemConnectionState', 'connected', 'notResponding', 'disconnected');

// --- Operations (request types in XSD order) ----------------------------------------------------
op('RetrieveServiceContent', 'RetrieveServiceContentRequestType', 'returnval:ServiceContent', `_this:${MOR}`);
op(
  'Login',
  'LoginRequestType',
  'returnval:UserSession',
  `_this:${MOR}`,
  'userName:xsd:string',
  'password:xsd:string',
  'locale?:xsd:string',
);
op('Logout', 'LogoutRequestType', undefined, `_this:${MOR}`);
op('CurrentTime', 'CurrentTimeRequestType', 'returnval:xsd:dateTime', `_this:${MOR}`);
op(
  'RetrievePropertiesEx',
  'RetrievePropertiesExRequestType',
  'returnval?:RetrieveResult',
  `_this:${MOR}`,
  'specSet+:PropertyFilterSpec',
  'options:RetrieveOptions',
);
op(
  'ContinueRetrievePropertiesEx',
  'ContinueRetrievePropertiesExRequestType',
  'returnval:RetrieveResult',
  `_this:${MOR}`,
  'token:xsd:string',
);
op(
  'CreateContainerView',
  'CreateContainerViewRequestType',
  `returnval:${MOR}`,
  `_this:${MOR}`,
  `container:${MOR}`,
  'type[]:xsd:string',
  'recursive:xsd:boolean',
);
op('DestroyView', 'DestroyViewRequestType', undefined, `_this:${MOR}`);
op(
  'FindByUuid',
  'FindByUuidRequestType',
  `returnval?:${MOR}`,
  `_this:${MOR}`,
  `datacenter?:${MOR}`,
  'uuid:xsd:string',
  'vmSearch:xsd:boolean',
  'instanceUuid?:xsd:boolean',
);
op(
  'FindAllByUuid',
  'FindAllByUuidRequestType',
  `returnval[]:${MOR}`,
  `_this:${MOR}`,
  `datacenter?:${MOR}`,
  'uuid:xsd:string',
  'vmSearch:xsd:boolean',
  'instanceUuid?:xsd:boolean',
);
op(
  'FindByInventoryPath',
  'FindByInventoryPathRequestType',
  `returnval?:${MOR}`,
  `_this:${MOR}`,
  'inventoryPath:xsd:string',
);
op(
  'ReconfigVM_Task',
  'ReconfigVMRequestType',
  `returnval:${MOR}`,
  `_this:${MOR}`,
  'spec:VirtualMachineConfigSpec',
);
op(
  'CreateVM_Task',
  'CreateVMRequestType',
  `returnval:${MOR}`,
  `_this:${MOR}`,
  'config:VirtualMachineConfigSpec',
  `pool:${MOR}`,
  `host?:${MOR}`,
);
op('Destroy_Task', 'DestroyRequestType', `returnval:${MOR}`, `_this:${MOR}`);
op(
  'CreateSnapshot_Task',
  'CreateSnapshotRequestType',
  `returnval:${MOR}`,
  `_this:${MOR}`,
  'name:xsd:string',
  'description?:xsd:string',
  'memory:xsd:boolean',
  'quiesce:xsd:boolean',
);
op(
  'RemoveSnapshot_Task',
  'RemoveSnapshotRequestType',
  `returnval:${MOR}`,
  `_this:${MOR}`,
  'removeChildren:xsd:boolean',
  'consolidate?:xsd:boolean',
);
op('ConsolidateVMDisks_Task', 'ConsolidateVMDisksRequestType', `returnval:${MOR}`, `_this:${MOR}`);
op(
  'QueryChangedDiskAreas',
  'QueryChangedDiskAreasRequestType',
  'returnval:DiskChangeInfo',
  `_this:${MOR}`,
  `snapshot?:${MOR}`,
  'deviceKey:xsd:int',
  'startOffset:xsd:long',
  'changeId:xsd:string',
);

export const MOREF_TYPE = MOR;

/** All complex types, by name. */
export const schemaTypes: ReadonlyMap<string, TypeDef> = types;
/** All enum (string restriction) types, by name. */
export const schemaEnums: ReadonlyMap<string, readonly string[]> = enums;
/** All operations, by request element name. */
export const schemaOperations: ReadonlyMap<string, OperationDef> = operations;

const fieldCache = new Map<string, readonly FieldDef[]>();

/** Every field of `typeName`, inherited ones first, in XSD sequence order. */
export function allFields(typeName: string): readonly FieldDef[] {
  const cached = fieldCache.get(typeName);
  if (cached) return cached;
  const def = types.get(typeName);
  if (!def) throw new Error(`unknown vim25 type ${typeName}`);
  const fields = [...(def.base ? allFields(def.base) : []), ...def.own];
  fieldCache.set(typeName, fields);
  return fields;
}

/** True when `sub` is `base` or derives from it. */
export function isSubtype(sub: string, base: string): boolean {
  for (let cur: string | undefined = sub; cur; cur = types.get(cur)?.base) {
    if (cur === base) return true;
  }
  return false;
}

/** The types that derive (directly or not) from `base`, `base` included. */
export function subtypesOf(base: string): string[] {
  return [...types.keys()].filter((n) => isSubtype(n, base));
}

export function isPrimitive(type: string): boolean {
  return type.startsWith('xsd:');
}
