// Compiles DicomVaultAnchor.sol with solc (the npm package: the official compiler built to
// wasm, pinned exactly in devDependencies) and writes the committed artifact beside it. The node
// loads the artifact at run time and needs no compiler; test/integration/anchor/contract.test.ts recompiles
// and checks that the committed bytecode is what this source compiles to.
//
//   node anchor/contract/compile.ts          # rewrite DicomVaultAnchor.json
//   node anchor/contract/compile.ts --check  # exit 1 if the artifact is stale
import { createHash } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

export const CONTRACT_NAME = 'DicomVaultAnchor';
export const SOURCE_PATH = fileURLToPath(new URL('./DicomVaultAnchor.sol', import.meta.url));
export const ARTIFACT_PATH = fileURLToPath(new URL('./DicomVaultAnchor.json', import.meta.url));

/**
 * Compiler settings, part of the artifact. evmVersion paris (no PUSH0) so the same bytecode
 * deploys on chains that lag behind mainnet forks (consortium chains, some L2s); the optimizer
 * runs are high because `anchor` is called many times and deployed once.
 */
export const COMPILER_SETTINGS = {
  optimizer: { enabled: true, runs: 1_000_000 },
  evmVersion: 'paris',
  outputSelection: { '*': { '*': ['abi', 'evm.bytecode.object', 'evm.deployedBytecode.object'] } },
} as const;

export interface ContractArtifact {
  contractName: string;
  /** solc version string, e.g. 0.8.30+commit.73712a01.Emscripten.clang */
  compiler: string;
  settings: { optimizer: { enabled: boolean; runs: number }; evmVersion: string };
  /** SHA-256 of the .sol file, hex: tells at a glance which source the artifact was built from. */
  sourceSha256: string;
  abi: unknown[];
  /** Creation bytecode, 0x-prefixed hex. */
  bytecode: `0x${string}`;
  /** Runtime bytecode, 0x-prefixed hex: what `eth_getCode` returns once deployed. */
  deployedBytecode: `0x${string}`;
}

interface SolcOutput {
  errors?: Array<{ severity: string; formattedMessage: string }>;
  contracts: Record<string, Record<string, { abi: unknown[]; evm: { bytecode: { object: string }; deployedBytecode: { object: string } } }>>;
}

/** Compiles the contract source; throws with solc's messages on any error. Takes a few seconds (wasm). */
export async function compileAnchorContract(source: string = readFileSync(SOURCE_PATH, 'utf8')): Promise<ContractArtifact> {
  const solc = (await import('solc')).default as { compile(input: string): string; version(): string };
  const fileName = `${CONTRACT_NAME}.sol`;
  const input = { language: 'Solidity', sources: { [fileName]: { content: source } }, settings: COMPILER_SETTINGS };
  const output = JSON.parse(solc.compile(JSON.stringify(input))) as SolcOutput;
  const errors = (output.errors ?? []).filter((e) => e.severity === 'error');
  if (errors.length > 0) throw new Error(`solc: ${errors.map((e) => e.formattedMessage).join('\n')}`);
  const contract = output.contracts[fileName]?.[CONTRACT_NAME];
  if (!contract) throw new Error(`solc produced no ${CONTRACT_NAME}`);
  return {
    contractName: CONTRACT_NAME,
    compiler: solc.version(),
    settings: { optimizer: { ...COMPILER_SETTINGS.optimizer }, evmVersion: COMPILER_SETTINGS.evmVersion },
    sourceSha256: createHash('sha256').update(source).digest('hex'),
    abi: contract.abi,
    bytecode: `0x${contract.evm.bytecode.object}`,
    deployedBytecode: `0x${contract.evm.deployedBytecode.object}`,
  };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const artifact = await compileAnchorContract();
  const text = `${JSON.stringify(artifact, null, 2)}\n`;
  if (process.argv.includes('--check')) {
    const committed = readFileSync(ARTIFACT_PATH, 'utf8');
    if (committed !== text) {
      process.stderr.write(`${ARTIFACT_PATH} is stale: run node anchor/contract/compile.ts\n`);
      process.exit(1);
    }
  } else {
    writeFileSync(ARTIFACT_PATH, text);
    process.stdout.write(`wrote ${ARTIFACT_PATH} (${(artifact.deployedBytecode.length - 2) / 2} bytes runtime)\n`);
  }
}
