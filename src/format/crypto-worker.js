// The worker side of src/format/crypto-pool.ts: seals chunks in place (the instance's running
// plaintext SHA-256, AES-256-GCM, then the SHA-256 of ciphertext || tag for the CID) and verifies
// + opens blocks read back.
//
// Plain JavaScript on purpose: a worker that loads a .ts file starts Node's type stripper (a
// WebAssembly module) in its own isolate, about 10 MiB of RSS per worker for a file this small.
// The nonce layout duplicates src/format/seal.ts (nonce = purpose || counter); test/unit/format/crypto-pool.test.ts
// checks that both produce the same bytes.
import { createCipheriv, createDecipheriv, createHash, createSecretKey } from 'node:crypto';
import { parentPort } from 'node:worker_threads';

const TAG_BYTES = 16;
const PURPOSE_CHUNK = 0;

/** Plaintext SHA-256 streams (CryptoPool.startHash), by id. */
const hashes = new Map();

/**
 * Gives a buffer's memory back to the allocator now (ES2024 ArrayBuffer.prototype.transfer
 * detaches it) instead of at this isolate's next GC. A worker allocates little else, so its GCs
 * are rare: without this, dead 1 MiB outputs pile up to V8's external-memory limit (~64 MiB per
 * worker of RSS) and are then freed by a full GC; freed at once, the allocator reuses the same
 * memory for the next chunk.
 */
function release(bytes) {
  if (bytes.byteOffset !== 0 || bytes.byteLength !== bytes.buffer.byteLength) return; // part of a shared slab
  try {
    bytes.buffer.transfer(0);
  } catch {
    // not detachable: left to the GC
  }
}

/**
 * What a reply hands back of a slot's memory: an ordinary slot's buffer is moved back; a shared
 * slot's (aligned shared memory, crypto-pool.ts) never left the main thread.
 */
function back(msg) {
  return msg.buffer instanceof ArrayBuffer ? { buffer: msg.buffer, transfer: [msg.buffer] } : {};
}

/** src/core/aligned-memory.ts copyInto (a worker in plain JavaScript cannot load it): one memcpy into a shared slot. */
function copyInto(target, source, at) {
  if (source.length > 0) target.fill(source, at, at + source.length);
}

function chunkNonce(index) {
  const n = Buffer.alloc(12);
  n.writeUInt32BE(PURPOSE_CHUNK, 0);
  n.writeBigUInt64BE(BigInt(index), 4);
  return n;
}

/**
 * Seals `length` plaintext bytes at the start of the slot's buffer in place: afterwards it holds
 * ciphertext || tag (length + 16 bytes), and goes back to the main thread. Node's cipher has no
 * output-buffer API, so the ciphertext is copied back; that allocation is this worker's, whose
 * heap is tiny, instead of the main thread's, whose garbage collections are what cost.
 */
function seal(msg) {
  const slot = Buffer.from(msg.buffer, msg.offset, msg.length + TAG_BYTES);
  if (msg.hash !== undefined) {
    let hash = hashes.get(msg.hash);
    if (hash === undefined) {
      hash = createHash('sha256');
      hashes.set(msg.hash, hash);
    }
    hash.update(slot.subarray(0, msg.length));
  }
  // A KeyObject, not bytes: see deriveKey in seal.ts.
  const cipher = createCipheriv('aes-256-gcm', createSecretKey(msg.key), chunkNonce(msg.index));
  // Format 2 chunks carry associated data (seal.ts chunkAad); format 1 none.
  if (msg.aad !== undefined) cipher.setAAD(msg.aad);
  const ct = cipher.update(slot.subarray(0, msg.length));
  cipher.final(); // empty for GCM
  copyInto(slot, ct, 0);
  release(ct);
  copyInto(slot, cipher.getAuthTag(), msg.length);
  // Copied into its own 32-byte buffer: a view into a larger one would be cloned whole.
  const digest = new Uint8Array(createHash('sha256').update(slot).digest());
  // The stream's last seal ends its plaintext hash too (CryptoPool.seal with `last`).
  const hex = msg.end === true ? digestOf(msg.hash) : undefined;
  return { id: msg.id, digest, ...back(msg), ...(hex === undefined ? {} : { hex }) };
}

/**
 * Re-hashes `block` against its CID's digest, then checks the tag and decrypts: the plaintext in
 * a new buffer of this worker's, or why not.
 */
function verifyAndDecrypt(msg, block) {
  const actual = createHash(msg.algorithm).update(block).digest();
  if (!actual.equals(msg.digest)) return { failure: 'hash' };
  if (block.length < TAG_BYTES) return { failure: 'short' };
  const decipher = createDecipheriv('aes-256-gcm', createSecretKey(msg.key), chunkNonce(msg.index));
  if (msg.aad !== undefined) decipher.setAAD(msg.aad);
  decipher.setAuthTag(block.subarray(block.length - TAG_BYTES));
  try {
    const plain = decipher.update(block.subarray(0, block.length - TAG_BYTES));
    decipher.final();
    return { plain };
  } catch {
    return { failure: 'tag' };
  }
}

const plainDigest = (msg, plain) => (msg.plainDigest === true ? { hex: createHash('sha256').update(plain).digest('hex') } : {});

/** Verifies and opens a block moved (or copied) here; the plaintext goes back in its own buffer. */
function open(msg) {
  const block = Buffer.from(msg.block);
  const { plain, failure } = verifyAndDecrypt(msg, block);
  if (failure !== undefined) return { id: msg.id, failure };
  const hex = plainDigest(msg, plain);
  release(block); // ours: moved or copied here by the pool
  // Large outputs own their ArrayBuffer and are moved, not copied; small ones may sit in
  // Buffer's shared 8 KiB slab and are copied out (moving the slab would detach its neighbours).
  const own =
    plain.byteOffset === 0 && plain.byteLength === plain.buffer.byteLength
      ? plain.buffer
      : plain.buffer.slice(plain.byteOffset, plain.byteOffset + plain.byteLength);
  return { id: msg.id, plain: own, transfer: [own], ...hex };
}

/**
 * As `open`, for a block in the first `length` bytes of a slot's buffer: on success the slot
 * starts with the plaintext (length - 16 bytes). The buffer goes back whatever happens. Node's
 * decipher has no output-buffer API, so the plaintext is copied over the ciphertext and its own
 * buffer given back to the allocator at once (as in seal).
 */
function openInPlace(msg) {
  const block = Buffer.from(msg.buffer, msg.offset, msg.length);
  const { plain, failure } = verifyAndDecrypt(msg, block);
  if (failure !== undefined) return { id: msg.id, failure, ...back(msg) };
  copyInto(block, plain, 0);
  const hex = plainDigest(msg, plain);
  release(plain);
  return { id: msg.id, ...back(msg), ...hex };
}

function digestOf(id) {
  const hash = hashes.get(id) ?? createHash('sha256');
  hashes.delete(id);
  return hash.digest('hex');
}

function digest(msg) {
  return { id: msg.id, hex: digestOf(msg.hash) };
}

parentPort.on('message', (msg) => {
  if (msg.op === 'drop') {
    hashes.delete(msg.hash);
    return;
  }
  let reply;
  try {
    reply = msg.op === 'seal' ? seal(msg) : msg.op === 'digest' ? digest(msg) : msg.op === 'openInPlace' ? openInPlace(msg) : open(msg);
  } catch (err) {
    // A failed seal or in-place open still hands its slot's memory back.
    const slotted = msg.op === 'seal' || msg.op === 'openInPlace';
    const memory = slotted && msg.buffer.byteLength > 0 ? back(msg) : {};
    reply = { id: msg.id, error: err instanceof Error ? `${err.name}: ${err.message}` : String(err), ...memory };
  }
  const { transfer, ...rest } = reply;
  parentPort.postMessage(rest, transfer ?? []);
});
