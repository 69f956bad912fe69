// --audit-syslog and its companions: what an operator may write, and every mistake refused at
// start with CONFIG_INVALID naming the flag (rather than a node that silently audits nowhere).
import { describe, expect, it } from 'vitest';
import { resolveNodeOptions } from '../../../src/shell/config.ts';

function refused(flags: Record<string, string>, env: NodeJS.ProcessEnv = {}): string {
  try {
    resolveNodeOptions(flags, env);
  } catch (err) {
    expect((err as { code?: string }).code).toBe('CONFIG_INVALID');
    return (err as Error).message;
  }
  throw new Error(`accepted ${JSON.stringify(flags)}`);
}

describe('--audit-syslog', () => {
  it('is off by default, and with "none"', () => {
    expect(resolveNodeOptions({}, {}).auditSyslog).toBeUndefined();
    expect(resolveNodeOptions({ 'audit-syslog': 'none' }, {}).auditSyslog).toBeUndefined();
  });

  it('takes udp:// and tls:// with a port, the standard port when none is given, IPv6 in brackets', () => {
    expect(resolveNodeOptions({ 'audit-syslog': 'udp://arr.example.org:1514' }, {}).auditSyslog).toEqual({
      target: { transport: 'udp', host: 'arr.example.org', port: 1514 },
    });
    expect(resolveNodeOptions({ 'audit-syslog': 'tls://arr.example.org' }, {}).auditSyslog?.target).toEqual({
      transport: 'tls',
      host: 'arr.example.org',
      port: 6514,
    });
    expect(resolveNodeOptions({ 'audit-syslog': 'udp://[::1]' }, {}).auditSyslog?.target).toEqual({ transport: 'udp', host: '::1', port: 514 });
  });

  it('takes the CA, a client certificate and key, the source and site ids, from flags or the environment', () => {
    const o = resolveNodeOptions(
      { 'audit-syslog': 'tls://arr:6514', 'audit-syslog-ca': '/etc/arr/ca.pem', 'audit-source-id': 'vault-3' },
      { DICOM_VAULT_AUDIT_SYSLOG_CERT: '/etc/vault/c.pem', DICOM_VAULT_AUDIT_SYSLOG_KEY: '/etc/vault/k.pem', DICOM_VAULT_AUDIT_SITE_ID: 'St Elsewhere' },
    );
    expect(o.auditSyslog).toEqual({
      target: { transport: 'tls', host: 'arr', port: 6514 },
      caFile: '/etc/arr/ca.pem',
      certFile: '/etc/vault/c.pem',
      keyFile: '/etc/vault/k.pem',
      sourceId: 'vault-3',
      siteId: 'St Elsewhere',
    });
  });

  it('refuses other schemes, paths, queries, credentials and ports out of range', () => {
    for (const raw of ['tcp://arr:514', 'https://arr', 'arr:514', 'udp://arr:514/x', 'tls://arr?x=1', 'tls://u:p@arr', 'udp://arr:70000', 'udp://']) {
      expect(refused({ 'audit-syslog': raw })).toMatch(/--audit-syslog must be udp:\/\/host:port or tls:\/\/host:port/);
    }
  });

  it('refuses TLS files without a TLS repository, and a certificate without its key', () => {
    expect(refused({ 'audit-syslog-ca': '/ca.pem' })).toMatch(/--audit-syslog-ca needs --audit-syslog tls:/);
    expect(refused({ 'audit-syslog': 'udp://arr', 'audit-syslog-ca': '/ca.pem' })).toMatch(/--audit-syslog-ca goes with a tls:\/\/ repository/);
    expect(refused({ 'audit-syslog': 'tls://arr', 'audit-syslog-cert': '/c.pem' })).toMatch(/--audit-syslog-cert and --audit-syslog-key go together/);
  });
});
