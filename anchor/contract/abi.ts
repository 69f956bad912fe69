// The anchoring contract's ABI as a TypeScript constant (viem infers argument and event types from
// it) and its compiled bytecode from the committed artifact. test/integration/anchor/contract.test.ts checks
// that this ABI equals the one solc produces from DicomVaultAnchor.sol.
import { readFileSync } from 'node:fs';
import type { Hex } from 'viem';
import type { ContractArtifact } from './compile.ts';

export const anchorAbi = [
  {
    type: 'error',
    name: 'AlreadyAnchored',
    inputs: [
      { name: 'root', type: 'bytes32', internalType: 'bytes32' },
      { name: 'timestamp', type: 'uint256', internalType: 'uint256' },
    ],
  },
  {
    type: 'event',
    name: 'Anchored',
    anonymous: false,
    inputs: [
      { name: 'root', type: 'bytes32', indexed: true, internalType: 'bytes32' },
      { name: 'timestamp', type: 'uint256', indexed: false, internalType: 'uint256' },
    ],
  },
  {
    type: 'function',
    name: 'anchor',
    stateMutability: 'nonpayable',
    inputs: [{ name: 'root', type: 'bytes32', internalType: 'bytes32' }],
    outputs: [],
  },
  {
    type: 'function',
    name: 'anchoredAt',
    stateMutability: 'view',
    inputs: [{ name: 'root', type: 'bytes32', internalType: 'bytes32' }],
    outputs: [{ name: 'timestamp', type: 'uint256', internalType: 'uint256' }],
  },
] as const;

let artifact: ContractArtifact | undefined;

/** The committed artifact (read once): creation and runtime bytecode of the contract. */
export function anchorArtifact(): ContractArtifact & { bytecode: Hex; deployedBytecode: Hex } {
  artifact ??= JSON.parse(readFileSync(new URL('./DicomVaultAnchor.json', import.meta.url), 'utf8')) as ContractArtifact;
  return artifact;
}
