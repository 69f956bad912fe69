// The node's own memory as V8 sees it after a full GC, for the soak (issue 21): RSS alone cannot
// tell a leak of JavaScript objects from memory the allocator keeps, nor garbage not yet collected
// from live data. The node is started with its inspector on a free loopback port (serveNode's
// `inspect`), and the benchmark asks over the DevTools protocol for a full collection
// (HeapProfiler.collectGarbage), then for process.memoryUsage(). Nothing is added to the node's
// routes: a GC trigger there would be one more thing for anyone to call. Node's global WebSocket
// (Node 22 and later) speaks the protocol; no package needed.

export interface PostGcMemory {
  heapUsedBytes: number;
  externalBytes: number;
  rssBytes: number;
}

export interface HeapProbe {
  /** Forces a full GC in the node, then reads its memory. */
  postGc(): Promise<PostGcMemory>;
  close(): void;
}

/** Connects to a node's inspector (`ws://127.0.0.1:PORT/UUID`, as the node printed it). */
export async function openHeapProbe(inspectorUrl: string, timeoutMs = 10_000): Promise<HeapProbe> {
  const ws = new WebSocket(inspectorUrl);
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`inspector ${inspectorUrl} did not answer within ${timeoutMs} ms`)), timeoutMs);
    const settle = (err?: Error): void => {
      clearTimeout(timer);
      if (err === undefined) resolve();
      else reject(err);
    };
    ws.addEventListener('open', () => settle(), { once: true });
    ws.addEventListener('error', () => settle(new Error(`cannot connect to the inspector ${inspectorUrl}`)), { once: true });
  });
  let next = 1;
  const waiting = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  ws.addEventListener('message', (m) => {
    const msg = JSON.parse(String(m.data)) as { id?: number; result?: unknown; error?: { message: string } };
    const w = msg.id === undefined ? undefined : waiting.get(msg.id);
    if (w === undefined) return; // an event, not an answer
    waiting.delete(msg.id!);
    if (msg.error !== undefined) w.reject(new Error(msg.error.message));
    else w.resolve(msg.result);
  });
  ws.addEventListener('close', () => {
    for (const w of waiting.values()) w.reject(new Error('the inspector connection closed'));
    waiting.clear();
  });
  const call = (method: string, params: Record<string, unknown> = {}): Promise<unknown> =>
    new Promise((resolve, reject) => {
      const id = next++;
      waiting.set(id, { resolve, reject });
      ws.send(JSON.stringify({ id, method, params }));
    });
  return {
    async postGc() {
      await call('HeapProfiler.collectGarbage');
      const r = (await call('Runtime.evaluate', { expression: 'JSON.stringify(process.memoryUsage())', returnByValue: true })) as {
        result: { value?: string };
        exceptionDetails?: { text: string };
      };
      if (r.exceptionDetails !== undefined || typeof r.result.value !== 'string')
        throw new Error(`process.memoryUsage() in the node failed: ${r.exceptionDetails?.text}`);
      const u = JSON.parse(r.result.value) as { heapUsed: number; external: number; rss: number };
      return { heapUsedBytes: u.heapUsed, externalBytes: u.external, rssBytes: u.rss };
    },
    close: () => ws.close(),
  };
}
