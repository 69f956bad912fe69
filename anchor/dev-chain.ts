// Development chains and development keys: what makes an anchor "self-attested".
//
// A local development chain (anvil, hardhat, ganache, geth --dev) is run by whoever runs the
// node, answers cheat RPCs (evm_setTime, anvil_setCode, anvil_reorg, ...) and can be started
// anew with any genesis time (`anvil --timestamp`). An anchor on it proves something to nobody
// but its operator. The same holds for an anchor signed with one of the public development keys
// (the accounts of the "test test ... junk" mnemonic that anvil and hardhat print at start):
// anyone can sign with them, on any chain.
//
// Recognised by chain id (what a receipt carries) and by signer (what its transaction shows).
import { getAddress, type Address } from 'viem';
import { VaultError } from '../src/core/errors.ts';

/**
 * Chain ids of local development chains: 31337 (anvil, hardhat), 1337 (ganache, geth --dev).
 * A "local chain" in the node's rules is one of these; every other id is taken as a chain that
 * others run too.
 */
export const DEV_CHAIN_IDS: readonly number[] = [31337, 1337];

/** The mnemonic anvil and hardhat derive their default accounts from (public). */
export const DEV_MNEMONIC = 'test test test test test test test test test test test junk';

/**
 * Accounts 0-19 of DEV_MNEMONIC at m/44'/60'/0'/0/i (anvil prints the first 10, hardhat 20).
 * Written out rather than derived at start: deriving costs ~25 ms per account (PBKDF2 of the
 * mnemonic each time); test/unit/anchor/dev-chain.test.ts derives them and compares.
 */
export const DEV_ACCOUNTS: readonly Address[] = [
  '0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266',
  '0x70997970C51812dc3A010C7d01b50e0d17dc79C8',
  '0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC',
  '0x90F79bf6EB2c4f870365E785982E1f101E93b906',
  '0x15d34AAf54267DB7D7c367839AAf71A00a2C6A65',
  '0x9965507D1a55bcC2695C58ba16FB37d819B0A4dc',
  '0x976EA74026E726554dB657fA54763abd0C3a0aa9',
  '0x14dC79964da2C08b23698B3D3cc7Ca32193d9955',
  '0x23618e81E3f5cdF7f54C3d65f7FBc0aBf5B21E8f',
  '0xa0Ee7A142d267C1f36714E4a8F75612F20a79720',
  '0xBcd4042DE499D14e55001CcbB24a551F3b954096',
  '0x71bE63f3384f5fb98995898A86B02Fb2426c5788',
  '0xFABB0ac9d68B0B445fB7357272Ff202C5651694a',
  '0x1CBd3b2770909D4e10f157cABC84C7264073C9Ec',
  '0xdF3e18d64BC6A983f673Ab319CCaE4f1a57C7097',
  '0xcd3B766CCDd6AE721141F452C550Ca635964ce71',
  '0x2546BcD3c84621e976D8185a91A922aE77ECEc30',
  '0xbDA5747bFD65F08deb54cb465eB87D40e51B197E',
  '0xdD2FD4581271e230360230F9337D5c0430Bf44C0',
  '0x8626f6940E2eb28930eFb4CeF49B2d1F2C9C1199',
];

export function isDevChainId(chainId: number): boolean {
  return DEV_CHAIN_IDS.includes(chainId);
}

/** Index of `address` among the public development accounts, or -1. */
export function devAccountIndex(address: string): number {
  let a: Address;
  try {
    a = getAddress(address);
  } catch {
    return -1;
  }
  return DEV_ACCOUNTS.indexOf(a);
}

/** Why a chain id is a development chain's, in words; undefined when it is not. */
export function devChainReason(chainId: number): string | undefined {
  if (chainId === 31337) return 'chain id 31337 is the development chain id of anvil and hardhat';
  if (chainId === 1337) return 'chain id 1337 is the development chain id of ganache and geth --dev';
  return undefined;
}

/**
 * Refuses a public development key on a chain that is not a local development chain: whatever it
 * signs there, anyone could have signed, and whatever it holds there anyone can take.
 * CONFIG_INVALID with the reason.
 */
export function assertSignerAllowed(signer: Address, chainId: number, doing: string): void {
  const index = devAccountIndex(signer);
  if (index >= 0 && !isDevChainId(chainId)) {
    throw new VaultError(
      'CONFIG_INVALID',
      `${doing}: the signer key is public development account #${index} (${signer}) of the "test test ... junk" mnemonic that anvil and hardhat print; ` +
        `anyone can sign with it, so it must not be used on chain ${chainId} (only on a local development chain, ids ${DEV_CHAIN_IDS.join(', ')}): ` +
        'generate a key of your own (e.g. `cast wallet new`) and fund it',
    );
  }
}
