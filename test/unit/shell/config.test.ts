// Configuration (src/shell/config.ts): flags win over DICOM_VAULT_* variables, every option has its
// documented default, and a bad value stops start-up with CONFIG_INVALID and a reason.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { DEFAULT_DATA_DIR, DEFAULT_HOST, DEFAULT_LOG_LEVEL, DEFAULT_PORT, resolveNodeOptions } from '../../../src/shell/config.ts';
import { run } from '../../support/process.ts';

const invalid = (flags: Record<string, string>, env: NodeJS.ProcessEnv = {}) => {
  try {
    resolveNodeOptions(flags, env);
  } catch (err) {
    return err as { code?: string; message?: string };
  }
  throw new Error(`accepted ${JSON.stringify({ flags, env })}`);
};

describe('configuration', () => {
  it('defaults to 127.0.0.1:8080, ./data, the fs store, 1 MiB chunks and info logs', () => {
    const o = resolveNodeOptions({}, {});
    expect(o.host).toBe('127.0.0.1');
    expect(o.host).toBe(DEFAULT_HOST);
    expect(o.port).toBe(8080);
    expect(o.port).toBe(DEFAULT_PORT);
    expect(DEFAULT_DATA_DIR).toBe('./data');
    expect(o.dataDir).toBe(resolve('./data'));
    expect(o.store).toBe('fs');
    expect(o.blockStore).toEqual({ kind: 'fs', fs: { path: join(resolve('./data'), 'blocks') } });
    expect(o.chunkSize).toBe(1048576);
    expect(o.logLevel).toBe('info');
    expect(o.logLevel).toBe(DEFAULT_LOG_LEVEL);
  });

  it('takes DICOM_VAULT_* variables when no flag is given', () => {
    const o = resolveNodeOptions(
      {},
      {
        DICOM_VAULT_HOST: '0.0.0.0',
        DICOM_VAULT_PORT: '9090',
        DICOM_VAULT_DATA_DIR: '/srv/vault',
        DICOM_VAULT_CHUNK_SIZE: '65536',
        DICOM_VAULT_LOG_LEVEL: 'debug',
      },
    );
    expect(o).toMatchObject({ host: '0.0.0.0', port: 9090, dataDir: '/srv/vault', chunkSize: 65536, logLevel: 'debug' });
    expect(o.blockStore).toEqual({ kind: 'fs', fs: { path: '/srv/vault/blocks' } });
  });

  it('lets flags win over the variables', () => {
    const o = resolveNodeOptions(
      { host: '::1', port: '0', 'data-dir': '/srv/flag', 'chunk-size': '8192', 'log-level': 'warn' },
      {
        DICOM_VAULT_HOST: '0.0.0.0',
        DICOM_VAULT_PORT: '9090',
        DICOM_VAULT_DATA_DIR: '/srv/env',
        DICOM_VAULT_CHUNK_SIZE: '65536',
        DICOM_VAULT_LOG_LEVEL: 'debug',
      },
    );
    expect(o).toMatchObject({ host: '::1', port: 0, dataDir: '/srv/flag', chunkSize: 8192, logLevel: 'warn' });
    expect(o.blockStore).toEqual({ kind: 'fs', fs: { path: '/srv/flag/blocks' } });
    // A bad variable does not matter when a flag overrides it.
    expect(resolveNodeOptions({ port: '81' }, { DICOM_VAULT_PORT: 'eighty' }).port).toBe(81);
  });

  it('treats an empty variable as unset: DICOM_VAULT_HOST= never opens the node to every interface', () => {
    const o = resolveNodeOptions(
      {},
      { DICOM_VAULT_HOST: '', DICOM_VAULT_PORT: '', DICOM_VAULT_DATA_DIR: '', DICOM_VAULT_LOG_LEVEL: '', DICOM_VAULT_STORE: '' },
    );
    expect(o).toMatchObject({ host: '127.0.0.1', port: 8080, dataDir: resolve('./data'), logLevel: 'info', store: 'fs' });
  });

  it('refuses invalid values with CONFIG_INVALID naming the option and the value', () => {
    const cases: Array<[Record<string, string>, NodeJS.ProcessEnv, RegExp]> = [
      [{ port: 'http' }, {}, /--port must be a whole number \(got "http"\)/],
      [{ port: '65536' }, {}, /--port must be between 0 and 65535 \(got 65536\)/],
      [{ port: '-1' }, {}, /--port/],
      [{}, { DICOM_VAULT_PORT: '80.5' }, /--port must be a whole number/],
      [{ 'chunk-size': '1024' }, {}, /--chunk-size must be between 4096 and 67108864 \(got 1024\)/],
      [{ 'chunk-size': '1e6' }, {}, /--chunk-size must be a whole number/],
      [{}, { DICOM_VAULT_CHUNK_SIZE: '134217728' }, /--chunk-size must be between/],
      [{ store: 'nfs' }, {}, /--store must be fs, ipfs or s3 \(got "nfs"\)/],
      [{ 'log-level': 'verbose' }, {}, /--log-level must be one of .*info.* \(got "verbose"\)/],
      [{}, { DICOM_VAULT_LOG_LEVEL: 'INFO ' }, /--log-level/],
      [{ chain: 'mainnet' }, {}, /--chain must be embedded or none/],
    ];
    for (const [flags, env, reason] of cases) {
      const err = invalid(flags, env);
      expect(err.code, JSON.stringify({ flags, env })).toBe('CONFIG_INVALID');
      expect(err.message, JSON.stringify({ flags, env })).toMatch(reason);
    }
  });

  it('stops the command with the code and reason on stderr, exit status 1', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'dicom-vault-config-'));
    try {
      const r = await run(['verify', '1.2.3', '--data-dir', dir], { DICOM_VAULT_CHUNK_SIZE: 'big' });
      expect(r.code).toBe(1);
      expect(r.stderr).toContain('dicom-vault: CONFIG_INVALID: --chunk-size must be a whole number (got "big")');
      const level = await run(['serve', '--data-dir', dir, '--port', '0', '--log-level', 'loud']);
      expect(level.code).toBe(1);
      expect(level.stderr).toMatch(/^dicom-vault: CONFIG_INVALID: --log-level must be one of/m);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
