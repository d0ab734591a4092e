/**
 * Where the appliance keeps things. /etc is read-only for the services (ProtectSystem=strict), so
 * everything a service writes at run time lives under /var/lib/vbproxy.
 */
export const LAYOUT = {
  configDir: '/etc/vbproxy',
  configFile: '/etc/vbproxy/config.json',
  secretsDir: '/etc/vbproxy/secrets',
  enrollmentTokenFile: '/etc/vbproxy/secrets/enrollment-token',
  catalogKeyFile: '/etc/vbproxy/secrets/catalog.key',
  repositoryPassphraseFile: '/etc/vbproxy/secrets/repository-passphrase',
  tlsKeyFile: '/etc/vbproxy/secrets/api.key',
  tlsCertFile: '/etc/vbproxy/tls/api.crt',
  managerCaFile: '/etc/vbproxy/tls/manager-ca.pem',
  vddkConfigFile: '/etc/vbproxy/vddk.conf',
  vddkLibDir: '/opt/vmware-vix-disklib-distrib',
  stateDir: '/var/lib/vbproxy',
  stateSecretsDir: '/var/lib/vbproxy/secrets',
  credentialsFile: '/var/lib/vbproxy/secrets/manager-credentials.json',
  apiTokensFile: '/var/lib/vbproxy/secrets/api-tokens.json',
  repositoryPath: '/var/lib/vbproxy/repository',
  firstbootDoneFile: '/var/lib/vbproxy/firstboot.done',
  networkFile: '/etc/systemd/network/10-vbproxy.network',
  timesyncdDropIn: '/etc/systemd/timesyncd.conf.d/50-vbproxy.conf',
  adminUser: 'vbadmin',
  adminAuthorizedKeysFile: '/etc/ssh/authorized_keys/vbadmin',
  apiPort: 8443,
  databaseUrl: 'postgresql://vbproxy@/vbproxy?host=/run/postgresql',
  redisUrl: 'redis://127.0.0.1:6379/0',
} as const;
