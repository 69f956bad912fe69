// The trust file on its own, and the development keys and chain ids that make an anchor
// self-attested: the written-out accounts are the mnemonic's, and a public key is refused on a
// chain that is not a local development chain.
import { mnemonicToAccount } from 'viem/accounts';
import { describe, expect, it } from 'vitest';
import { assertSignerAllowed, DEV_ACCOUNTS, DEV_MNEMONIC, devAccountIndex, isDevChainId } from '../../../anchor/dev-chain.ts';
import { encodeTrustFile, parseTrustFile, TRUST_TYPE } from '../../../anchor/trust.ts';
import { isVaultError } from '../../../src/core/errors.ts';

const GENESIS = `0x${'ab'.repeat(32)}` as const;
const CONTRACT = '0x5FbDB2315678afecb367f032d93F642f64180aa3' as const;

function refusal(fn: () => unknown): string | undefined {
  try {
    fn();
    return undefined;
  } catch (err) {
    if (!isVaultError(err, 'CONFIG_INVALID')) throw err;
    return err.message;
  }
}

describe('development keys and chains', () => {
  it('lists exactly the first 20 accounts of the anvil/hardhat mnemonic', () => {
    const derived = Array.from({ length: 20 }, (_, i) => mnemonicToAccount(DEV_MNEMONIC, { addressIndex: i }).address);
    expect(DEV_ACCOUNTS).toEqual(derived);
    expect(devAccountIndex(derived[0]!.toLowerCase())).toBe(0);
    expect(devAccountIndex('0x000000000000000000000000000000000000dEaD')).toBe(-1);
  });

  it('knows the development chain ids', () => {
    expect([31337, 1337].map(isDevChainId)).toEqual([true, true]);
    expect([1, 10, 8453, 42161, 11155111].map(isDevChainId)).toEqual([false, false, false, false, false]);
  });

  it('refuses a public development key on any other chain, with the reason', () => {
    expect(refusal(() => assertSignerAllowed(DEV_ACCOUNTS[0]!, 31337, 'anchoring'))).toBeUndefined();
    expect(refusal(() => assertSignerAllowed(DEV_ACCOUNTS[0]!, 1337, 'anchoring'))).toBeUndefined();
    expect(refusal(() => assertSignerAllowed(DEV_ACCOUNTS[7]!, 8453, 'anchoring'))).toMatch(
      /^anchoring: the signer key is public development account #7 \(0x\w+\) .* must not be used on chain 8453/,
    );
    expect(refusal(() => assertSignerAllowed('0x000000000000000000000000000000000000dEaD', 8453, 'anchoring'))).toBeUndefined();
  });
});

describe('trust file dicom-vault-trust/1', () => {
  const good = { v: TRUST_TYPE, anchors: [{ chainId: 8453, genesisHash: GENESIS, contract: CONTRACT, confirmations: 12, label: 'Base' }] };

  it('round-trips', () => {
    expect(encodeTrustFile(parseTrustFile(JSON.stringify(good)).anchors)).toEqual(good);
  });

  it('names what is wrong', () => {
    const anchor = good.anchors[0]!;
    const cases: Array<[RegExp, unknown]> = [
      [/not JSON/, '{'],
      [/"v" must be/, { ...good, v: 'dicom-vault-trust/2' }],
      [/unknown field "extra"/, { ...good, extra: 1 }],
      [/non-empty list/, { ...good, anchors: [] }],
      [/anchors\[0\]\.chainId/, { ...good, anchors: [{ ...anchor, chainId: '8453' }] }],
      [/anchors\[0\]\.genesisHash/, { ...good, anchors: [{ ...anchor, genesisHash: undefined }] }],
      [/anchors\[0\]\.genesisHash/, { ...good, anchors: [{ ...anchor, genesisHash: '0x1234' }] }],
      [/anchors\[0\]\.contract is not an address/, { ...good, anchors: [{ ...anchor, contract: '0x12' }] }],
      [/EIP-55/, { ...good, anchors: [{ ...anchor, contract: '0x5fBDB2315678afecb367f032d93F642f64180aa3' }] }],
      [/confirmations/, { ...good, anchors: [{ ...anchor, confirmations: 0 }] }],
      [/unknown field "rpc"/, { ...good, anchors: [{ ...anchor, rpc: 'http://x' }] }],
    ];
    for (const [reason, input] of cases)
      expect(
        refusal(() => parseTrustFile(input)),
        JSON.stringify(input),
      ).toMatch(reason);
  });
});
