// The data key's envelope in a CAR (src/transfer/car.ts): HPKE (RFC 9180) to the receiving node's
// X25519 key, bound to the study root. Opened only by that node, and only as sealed.
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import * as dagCbor from '@ipld/dag-cbor';
import { describe, expect, it } from 'vitest';
import { encodeNode } from '../../../src/format/dag.ts';
import { KEY_ENVELOPE_TYPE, openKeyEnvelope, sealKeyEnvelope, type TransportKey } from '../../../src/transfer/car.ts';

function transportKey(): TransportKey {
  const { privateKey, publicKey } = generateKeyPairSync('x25519');
  return { privateKey, publicKey };
}

const dataKey = { keyId: 'f1b1d2c8-6d0e-4f5b-9a53-7d3e2f9c1a00', key: randomBytes(32) };
const study = '2.25.1234567890';
const root = encodeNode({ study: 1 }).cid;

type Envelope = Record<string, unknown>;
const decode = (b: Uint8Array): Envelope => dagCbor.decode(b) as Envelope;

describe('CAR key envelope (HPKE)', () => {
  it('opens on the node it was sealed to, with the same key', async () => {
    const node = transportKey();
    const env = await sealKeyEnvelope(dataKey, study, root, node.publicKey);
    expect(decode(env.bytes).type).toBe(KEY_ENVELOPE_TYPE);
    const opened = await openKeyEnvelope(env.bytes, root, node);
    expect(opened).toEqual({ studyInstanceUID: study, dataKey: { keyId: dataKey.keyId, key: dataKey.key } });
    // Nothing of the key or the study is in the envelope in clear.
    expect(Buffer.from(env.bytes).includes(dataKey.key)).toBe(false);
    expect(Buffer.from(env.bytes).includes(Buffer.from(study))).toBe(false);
  });

  it('is not opened by another node (says so), nor by one that rewrites the recipient field', async () => {
    const node = transportKey();
    const other = transportKey();
    const env = await sealKeyEnvelope(dataKey, study, root, node.publicKey);
    expect(await openKeyEnvelope(env.bytes, root, other)).toMatch(/sealed to another node/);
    const relabelled = encodeNode({ ...decode(env.bytes), recipient: decode((await sealKeyEnvelope(dataKey, study, root, other.publicKey)).bytes).recipient });
    await expect(openKeyEnvelope(relabelled.bytes, root, other)).rejects.toMatchObject({ code: 'CAR_INVALID', message: /fails authentication/ });
  });

  it('refuses an envelope altered in its ciphertext or encapsulated key, or moved to another study root', async () => {
    const node = transportKey();
    const env = decode((await sealKeyEnvelope(dataKey, study, root, node.publicKey)).bytes);
    for (const field of ['sealed', 'enc'] as const) {
      const bytes = Buffer.from(env[field] as Uint8Array);
      bytes[bytes.length - 1]! ^= 1;
      await expect(openKeyEnvelope(encodeNode({ ...env, [field]: bytes }).bytes, root, node)).rejects.toMatchObject({ code: 'CAR_INVALID' });
    }
    const otherRoot = encodeNode({ study: 2 }).cid;
    await expect(openKeyEnvelope(encodeNode(env).bytes, otherRoot, node)).rejects.toMatchObject({ message: /another study root/ });
    // The root field rewritten too: the root is the HPKE associated data, so the tag fails.
    await expect(openKeyEnvelope(encodeNode({ ...env, root: otherRoot }).bytes, otherRoot, node)).rejects.toMatchObject({ message: /fails authentication/ });
  });

  it("names release 0.1's envelope (hand-written ECIES) instead of opening it", async () => {
    const legacy = encodeNode({
      type: 'dicom-vault/key-envelope@1',
      root,
      recipient: new Uint8Array(32),
      ephemeral: new Uint8Array(44),
      iv: new Uint8Array(12),
      sealed: new Uint8Array(64),
    });
    expect(await openKeyEnvelope(legacy.bytes, root, transportKey())).toMatch(/release 0\.1 .*export the study again/);
  });
});
