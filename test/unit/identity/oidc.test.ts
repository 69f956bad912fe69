// The pure parts of the OpenID verifier (src/identity/oidc.ts): the role mapping an operator
// writes, how a token's claims become node roles, and the configuration it refuses at start-up.
// Tokens against a real provider: test/integration/identity/oidc.test.ts.
import { describe, expect, it } from 'vitest';
import { claimAt, createOidcVerifier, parseRoleMapping, resolveOidcOptions, rolesFromClaims } from '../../../src/identity/oidc.ts';
import { resolveNodeOptions } from '../../../src/shell/config.ts';

const configError = (fn: () => unknown): string => {
  try {
    fn();
  } catch (err) {
    expect((err as { code?: string }).code).toBe('CONFIG_INVALID');
    return (err as Error).message;
  }
  throw new Error('accepted');
};

describe('role mapping', () => {
  it('reads role=value,value;role=value', () => {
    expect(parseRoleMapping('staff=radiologist,clinician;admin=pacs-admin')).toEqual({ staff: ['radiologist', 'clinician'], admin: ['pacs-admin'] });
    expect(parseRoleMapping(' staff = radiologist , clinician ; ; ingest=modality ')).toEqual({ staff: ['radiologist', 'clinician'], ingest: ['modality'] });
    expect(parseRoleMapping('staff=a;staff=b')).toEqual({ staff: ['a', 'b'] });
    expect(parseRoleMapping('none')).toEqual({});
  });

  it('refuses what is not a mapping, an unknown role, and patient', () => {
    expect(configError(() => parseRoleMapping('staff'))).toMatch(/"staff" is not role=value/);
    expect(configError(() => parseRoleMapping('staff='))).toMatch(/is not role=value/);
    expect(configError(() => parseRoleMapping('doctor=radiologist'))).toMatch(
      /"doctor" is not a role an identity provider may give \(ingest, staff, admin, grantee\)/,
    );
    expect(configError(() => parseRoleMapping('patient=self'))).toMatch(/patient comes from a patient account/);
  });

  it('gives every role whose values the claim holds, and grantee to a caller with none', () => {
    const mapping = parseRoleMapping('staff=radiologist,clinician;admin=pacs-admin');
    expect(rolesFromClaims({ roles: ['clinician', 'pacs-admin', 'other'] }, 'roles', mapping)).toEqual(['staff', 'admin']);
    expect(rolesFromClaims({ roles: 'radiologist' }, 'roles', mapping)).toEqual(['staff']);
    expect(rolesFromClaims({ roles: ['nurse'] }, 'roles', mapping)).toEqual(['grantee']);
    expect(rolesFromClaims({}, 'roles', mapping)).toEqual(['grantee']);
    // Values are matched whole and exactly: no case folding, no substrings, no non-strings.
    expect(rolesFromClaims({ roles: ['Radiologist', 'radiologists', 1, null, ['radiologist']] }, 'roles', mapping)).toEqual(['grantee']);
    expect(rolesFromClaims({ roles: { radiologist: true } }, 'roles', mapping)).toEqual(['grantee']);
  });

  it('follows a dotted path, but takes a claim named with dots whole first', () => {
    const keycloak = { realm_access: { roles: ['pacs-admin'] }, resource_access: { vault: { roles: ['radiologist'] } } };
    expect(claimAt(keycloak, 'realm_access.roles')).toEqual(['pacs-admin']);
    expect(claimAt(keycloak, 'resource_access.vault.roles')).toEqual(['radiologist']);
    expect(claimAt(keycloak, 'realm_access.missing')).toBeUndefined();
    expect(claimAt({ realm_access: ['x'] }, 'realm_access.0')).toBeUndefined();
    expect(claimAt({ 'https://hospital.example.org/roles': ['radiologist'] }, 'https://hospital.example.org/roles')).toEqual(['radiologist']);
    // Only own properties: a path cannot walk into Object.prototype.
    expect(claimAt({}, 'constructor.name')).toBeUndefined();
    expect(claimAt({ a: {} }, 'a.__proto__')).toBeUndefined();
  });
});

describe('OpenID configuration', () => {
  it('is off unless --oidc-issuer is set, and then needs an audience', () => {
    expect(resolveNodeOptions({}, {}).oidc).toBeUndefined();
    expect(resolveNodeOptions({ 'oidc-issuer': 'none' }, {}).oidc).toBeUndefined();
    expect(configError(() => resolveNodeOptions({ 'oidc-issuer': 'https://idp.example.org/realms/main' }, {}))).toMatch(/--oidc-audience is required/);
    expect(configError(() => resolveNodeOptions({ 'oidc-audience': 'dicom-vault' }, {}))).toMatch(/--oidc-audience needs --oidc-issuer/);
    expect(configError(() => resolveNodeOptions({ 'oidc-roles': 'staff=x' }, {}))).toMatch(/--oidc-roles needs --oidc-issuer/);
  });

  it('takes flags or DICOM_VAULT_OIDC_* variables, with defaults roles and no mapping', () => {
    expect(resolveNodeOptions({ 'oidc-issuer': 'https://idp.example.org/realms/main', 'oidc-audience': 'dicom-vault' }, {}).oidc).toEqual({
      issuer: 'https://idp.example.org/realms/main',
      audience: 'dicom-vault',
      roleClaim: 'roles',
      roles: {},
    });
    const o = resolveNodeOptions(
      { 'oidc-roles': 'admin=ops' },
      {
        DICOM_VAULT_OIDC_ISSUER: 'https://idp.example.org',
        DICOM_VAULT_OIDC_AUDIENCE: 'https://pacs.example.org/dicom-web',
        DICOM_VAULT_OIDC_ROLE_CLAIM: 'realm_access.roles',
        DICOM_VAULT_OIDC_ROLES: 'staff=radiologist',
      },
    );
    expect(o.oidc).toEqual({
      issuer: 'https://idp.example.org',
      audience: 'https://pacs.example.org/dicom-web',
      roleClaim: 'realm_access.roles',
      roles: { admin: ['ops'] },
    });
  });

  it('refuses an issuer that is not https (but for loopback), or has a query or credentials', () => {
    const issuer = (i: string) => resolveOidcOptions({ issuer: i, audience: 'a' });
    expect(configError(() => issuer('http://idp.example.org'))).toMatch(/must be https/);
    expect(configError(() => issuer('idp.example.org'))).toMatch(/is not a URL/);
    expect(configError(() => issuer('https://idp.example.org/?tenant=1'))).toMatch(/no query/);
    expect(configError(() => issuer('https://user:pw@idp.example.org'))).toMatch(/credentials/);
    expect(issuer('http://127.0.0.1:8443')?.issuer).toBe('http://127.0.0.1:8443');
    expect(issuer('http://localhost:8443/realms/x')?.issuer).toBe('http://localhost:8443/realms/x');
    expect(configError(() => resolveOidcOptions({ issuer: 'https://idp.example.org', audience: 'a', roleClaim: 'realm_access..roles' }))).toMatch(
      /not a claim name/,
    );
  });

  it('allows asymmetric algorithms only', () => {
    const make = (algorithms: string[]) => createOidcVerifier({ issuer: 'https://idp.example.org', audience: 'a', algorithms });
    expect(configError(() => make(['none']))).toMatch(/none may not be allowed/);
    expect(configError(() => make(['RS256', 'HS256']))).toMatch(/HS256 may not be allowed/);
    expect(configError(() => make([]))).toMatch(/no JWS algorithm/);
    expect(make(['ES384', 'PS512', 'Ed25519']).issuer).toBe('https://idp.example.org');
  });

  it('takes a clock tolerance of 0 to 600 s', () => {
    const make = (clockToleranceS: number) => createOidcVerifier({ issuer: 'https://idp.example.org', audience: 'a', clockToleranceS });
    expect(configError(() => make(-1))).toMatch(/clock tolerance of -1 s is not 0 to 600 s/);
    expect(configError(() => make(Number.NaN))).toMatch(/clock tolerance/);
    expect(configError(() => make(3600))).toMatch(/clock tolerance/);
    expect(make(0).issuer).toBe('https://idp.example.org');
  });
});
