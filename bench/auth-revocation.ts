// The `auth` scenario's revocation trials: a grantee's stream at a viewer's pace and a poller,
// the patient revoking through the node's API or the CLI, each cut timed (see auth-scenario.ts).
import { CUT_TIMEOUT_MS, DICOM_ACCEPT, POLL_MS, STREAMER, STREAM_BYTES_PER_SECOND, type AuthOptions, type RevocationTrial, type Setup } from './auth-report.ts';
import { spawn } from 'node:child_process';
import http from 'node:http';
import { signSession, signStatement, type KeyFile } from '../src/grants/signing.ts';
import type { GeneratedStudy } from './generate.ts';
import { BIN, type ServedNode } from './node-process.ts';

export function cli(args: string[], env: NodeJS.ProcessEnv): Promise<{ code: number; stdout: string; stderr: string; ms: number }> {
  const t0 = performance.now();
  const child = spawn(process.execPath, [BIN, ...args], {
    env: { DICOM_VAULT_CHAIN: 'none', DICOM_VAULT_DIMSE_PORT: 'off', ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  return new Promise((resolve, reject) => {
    child.once('error', reject);
    child.once('exit', (code) => resolve({ code: code ?? -1, stdout, stderr, ms: performance.now() - t0 }));
  });
}

export async function cliJson<T>(args: string[], env: NodeJS.ProcessEnv): Promise<T> {
  const r = await cli([...args, '--json'], env);
  if (r.code !== 0) throw new Error(`dicom-vault ${args.slice(0, 2).join(' ')} exited ${r.code}: ${r.stderr.trim().slice(0, 300)}`);
  return JSON.parse(r.stdout.trim().split('\n').at(-1)!) as T;
}

// ---------- revocation ----------

interface Stream {
  firstBytes: Promise<void>;
  ended: Promise<{ at: number; complete: boolean }>;
  bytes: () => number;
  destroy: () => void;
}

/** Reads `url` at about `bytesPerSecond`; `ended` resolves (Date.now()) when the response ends or breaks. */
function slowStream(url: string, token: string, bytesPerSecond: number): Stream {
  let bytes = 0;
  let req: http.ClientRequest | undefined;
  let resolveFirst!: () => void;
  let rejectFirst!: (e: Error) => void;
  const firstBytes = new Promise<void>((res, rej) => {
    resolveFirst = res;
    rejectFirst = rej;
  });
  const ended = new Promise<{ at: number; complete: boolean }>((resolve) => {
    req = http.get(url, { agent: false, headers: { accept: DICOM_ACCEPT, authorization: `Bearer ${token}` } }, (res) => {
      if (res.statusCode !== 200) rejectFirst(new Error(`stream: HTTP ${res.statusCode}`));
      res.on('data', (chunk: Buffer) => {
        bytes += chunk.length;
        resolveFirst();
        res.pause();
        setTimeout(() => res.resume(), (chunk.length / bytesPerSecond) * 1000);
      });
      res.on('close', () => resolve({ at: Date.now(), complete: res.complete }));
      res.on('error', () => {});
    });
    req.on('error', (e) => {
      rejectFirst(e);
      resolve({ at: Date.now(), complete: false });
    });
  });
  firstBytes.catch(() => {});
  return { firstBytes, ended, bytes: () => bytes, destroy: () => req?.destroy() };
}

interface Poller {
  stop: () => Promise<void>;
  /** Answers: when sent and answered (Date.now()), and the status. */
  answers: Array<{ sent: number; at: number; status: number }>;
}

/** GETs `url` as `token` one after another, POLL_MS apart, until stopped. */
function poll(url: string, token: string): Poller {
  const answers: Poller['answers'] = [];
  let stopped = false;
  const loop = (async () => {
    while (!stopped) {
      const sent = Date.now();
      try {
        const res = await fetch(url, { headers: { accept: 'application/dicom+json', authorization: `Bearer ${token}` } });
        await res.arrayBuffer();
        answers.push({ sent, at: Date.now(), status: res.status });
      } catch {
        answers.push({ sent, at: Date.now(), status: 0 });
      }
      await new Promise((r) => setTimeout(r, POLL_MS));
    }
  })();
  return {
    answers,
    stop: async () => {
      stopped = true;
      await loop;
    },
  };
}

/** A patient session through the node's API: the challenge signed with the key file. */
async function patientSession(api: string, key: KeyFile): Promise<string> {
  const c = (await (await fetch(`${api}/patient/session/challenge`, { method: 'POST' })).json()) as { challenge: string };
  const res = await fetch(`${api}/patient/session`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ account: key.account, keyId: key.keyId, challenge: c.challenge, signature: signSession(key.node!, c.challenge, key) }),
  });
  if (res.status !== 200) throw new Error(`patient session: HTTP ${res.status} ${(await res.text()).slice(0, 200)}`);
  return ((await res.json()) as { token: string }).token;
}

/** A grant to the streamer (search, view, download of the series), drafted by the node and signed here with the key file. */
async function streamGrant(api: string, session: string, key: KeyFile, series: GeneratedStudy): Promise<string> {
  const headers = { 'content-type': 'application/json', authorization: `Bearer ${session}` };
  const draft = await fetch(`${api}/patient/grants/draft`, {
    method: 'POST',
    headers,
    body: JSON.stringify({
      to: `user:${STREAMER}`,
      series: [{ study: series.studyInstanceUID, series: series.seriesInstanceUID }],
      actions: ['search', 'view', 'download'],
      until: '+1h',
    }),
  });
  if (draft.status !== 200) throw new Error(`grant draft: HTTP ${draft.status} ${(await draft.text()).slice(0, 200)}`);
  const { statement } = (await draft.json()) as { statement: Parameters<typeof signStatement>[0] };
  const add = await fetch(`${api}/patient/grants`, { method: 'POST', headers, body: JSON.stringify({ statement, proof: signStatement(statement, key) }) });
  if (add.status !== 201) throw new Error(`grant: HTTP ${add.status} ${(await add.text()).slice(0, 200)}`);
  return statement.id;
}

/**
 * The node's audit records of streams (GET of a whole series) it closed before their end, from its
 * log lines (pino JSON on stdout; UIDs in URLs are tagged, so a series retrieval is known by its shape).
 */
export class AuditLines {
  #rest = '';
  readonly cuts: number[] = [];
  push(chunk: string): void {
    const lines = (this.#rest + chunk).split('\n');
    this.#rest = lines.pop()!;
    for (const line of lines) {
      if (!line.includes('"audit"')) continue;
      try {
        const e = JSON.parse(line) as { time: number; audit?: { method?: string; url?: string; complete?: boolean } };
        if (e.audit?.method === 'GET' && e.audit.complete === false && /\/series\/[^/?]+$/.test(e.audit.url ?? '')) this.cuts.push(e.time);
      } catch {
        // not a JSON line
      }
    }
  }
}

export async function revocationTrials(
  node: ServedNode,
  o: AuthOptions,
  nodeFlags: string[],
  series: GeneratedStudy,
  setup: Setup,
  audit: AuditLines,
): Promise<RevocationTrial[]> {
  const api = `${new URL(node.url).origin}/api`;
  const session = await patientSession(api, setup.key);
  const seriesUrl = `${node.url}/studies/${series.studyInstanceUID}/series/${series.seriesInstanceUID}`;
  const probeUrl = `${seriesUrl}/instances/${series.instances[0]!.sopInstanceUID}/metadata`;
  const pace = o.streamBytesPerSecond ?? STREAM_BYTES_PER_SECOND;
  const trials: RevocationTrial[] = [];
  for (let i = 0; i < 2 * o.revocations; i++) {
    const via: RevocationTrial['via'] = i % 2 === 0 ? 'node' : 'cli';
    o.log(`auth: revocation ${Math.floor(i / 2) + 1} of ${o.revocations} ${via === 'node' ? "through the node's API" : 'with the CLI'}`);
    let stream: Stream | undefined;
    let poller: Poller | undefined;
    try {
      const id = await streamGrant(api, session, setup.key, series);
      stream = slowStream(seriesUrl, setup.tokens.streamer, pace);
      await stream.firstBytes;
      poller = poll(probeUrl, setup.tokens.streamer);
      await new Promise((r) => setTimeout(r, 300));
      let revokedAt: number;
      let ackAt: number;
      let bytesAtRevoke: number;
      let cliMs: number | undefined;
      if (via === 'node') {
        revokedAt = Date.now();
        bytesAtRevoke = stream.bytes();
        const res = await fetch(`${api}/patient/grants/${id}/revoke`, { method: 'POST', headers: { authorization: `Bearer ${session}` } });
        await res.arrayBuffer();
        ackAt = Date.now();
        if (res.status !== 200) throw new Error(`revoke: HTTP ${res.status}`);
      } else {
        const r = await cli(['patient', 'revoke', id, '--key-file', setup.keyFile, ...nodeFlags, '--json'], o.env);
        ackAt = Date.now();
        cliMs = r.ms;
        if (r.code !== 0) throw new Error(`dicom-vault patient revoke exited ${r.code}: ${r.stderr.slice(0, 200)}`);
        // The moment the CLI wrote the revocation (this machine's clock, as Date.now()).
        revokedAt = Date.parse((JSON.parse(r.stdout.trim().split('\n').at(-1)!) as { revokedAt: string }).revokedAt);
        bytesAtRevoke = NaN;
      }
      const cut = await Promise.race([stream.ended, new Promise<null>((r) => setTimeout(() => r(null), CUT_TIMEOUT_MS))]);
      // Some more answers after the cut, so that "the next request" is seen even when the cut came first.
      const until = Date.now() + 200;
      while (Date.now() < until && !poller.answers.some((a) => a.sent >= revokedAt && a.status === 404)) await new Promise((r) => setTimeout(r, POLL_MS));
      await poller.stop();
      const refused = poller.answers.find((a) => a.at >= revokedAt && a.status === 404);
      // The audit record is written as the response closes; give the log a moment to arrive.
      for (let k = 0; k < 50 && !audit.cuts.some((t) => t >= revokedAt); k++) await new Promise((r) => setTimeout(r, 20));
      const nodeCut = audit.cuts.find((t) => t >= revokedAt);
      trials.push({
        via,
        nodeCutMs: nodeCut === undefined ? null : nodeCut - revokedAt,
        cutMs: cut === null ? null : Math.max(0, cut.at - revokedAt),
        refusedMs: refused === undefined ? null : refused.at - revokedAt,
        ackMs: ackAt - revokedAt,
        ...(cliMs !== undefined ? { cliMs: Math.round(cliMs) } : {}),
        // The CLI's moment of revocation is known only afterwards: the bytes then are estimated from the pace.
        bytesAfter:
          cut === null ? NaN : Number.isNaN(bytesAtRevoke) ? Math.max(0, Math.round(((cut.at - revokedAt) / 1000) * pace)) : stream.bytes() - bytesAtRevoke,
        allowedAfterAck: poller.answers.filter((a) => a.sent > ackAt && a.status === 200).length,
        complete: cut?.complete ?? false,
      });
    } catch (err) {
      trials.push({
        via,
        nodeCutMs: null,
        cutMs: null,
        refusedMs: null,
        ackMs: NaN,
        bytesAfter: NaN,
        allowedAfterAck: 0,
        complete: false,
        error: err instanceof Error ? err.message : String(err),
      });
    } finally {
      stream?.destroy();
      await poller?.stop();
    }
  }
  return trials;
}
