// A real audit record repository for the suites: Debian's rsyslogd, in the foreground with a
// private configuration (nothing of the system's logger is touched), listening on free loopback
// ports for RFC 5426 syslog over UDP and RFC 5425 syslog over TLS (the GnuTLS stream driver of
// rsyslog-gnutls, with a self-signed certificate made by openssl for the run), writing every
// message it receives, raw, one per line, to a file the test reads. test/services/setup.sh
// installs both packages; a missing one fails the suite naming it.
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, connect as netConnect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const RSYSLOGD = '/usr/sbin/rsyslogd';
const GTLS_DRIVER = '/usr/lib/x86_64-linux-gnu/rsyslog/lmnsd_gtls.so';

export interface Rsyslog {
  udpPort: number;
  tlsPort: number;
  /** PEM of the repository's self-signed certificate: the CA the node must trust. */
  caFile: string;
  /** TLS that also asks the client for a certificate signed by caFile (mutual TLS, as ATNA's Secure Node does). */
  mtlsPort: number;
  /** A client certificate and key signed by caFile, for the node. */
  clientCertFile: string;
  clientKeyFile: string;
  /** PEM of another self-signed certificate: a CA the repository's certificate does not chain to. */
  otherCaFile: string;
  /** Every message received so far, as received (header and MSG), oldest first. */
  messages(): string[];
  /** Waits until `count` messages satisfy `match`; returns them. */
  waitFor(match: (line: string) => boolean, count?: number, timeoutMs?: number): Promise<string[]>;
  /** Stops the daemon (SIGTERM, then SIGKILL). `restart()` starts it again on the same ports and file. */
  stop(): Promise<void>;
  restart(): Promise<void>;
  /** stop(), and the temporary directory removed. */
  close(): Promise<void>;
}

async function freeTcpPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

async function freeUdpPort(): Promise<number> {
  const socket = createSocket('udp4');
  await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', resolve));
  const port = socket.address().port;
  await new Promise<void>((resolve) => socket.close(() => resolve()));
  return port;
}

function tcpAccepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = netConnect(port, '127.0.0.1');
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function startRsyslog(): Promise<Rsyslog> {
  for (const [file, pkg] of [
    [RSYSLOGD, 'rsyslog'],
    [GTLS_DRIVER, 'rsyslog-gnutls'],
  ] as const) {
    if (!existsSync(file)) throw new Error(`${file} is missing: install ${pkg} (test/services/setup.sh)`);
  }
  const dir = mkdtempSync(join(tmpdir(), 'dicom-vault-rsyslog-'));
  const cert = join(dir, 'repository.pem');
  const key = join(dir, 'repository.key');
  const selfSigned = (certFile: string, keyFile: string): void => {
    execFileSync(
      'openssl',
      [
        'req',
        '-x509',
        '-newkey',
        'ec',
        '-pkeyopt',
        'ec_paramgen_curve:P-256',
        '-nodes',
        '-keyout',
        keyFile,
        '-out',
        certFile,
        '-days',
        '1',
        '-subj',
        '/CN=localhost',
        '-addext',
        'subjectAltName=DNS:localhost,IP:127.0.0.1',
      ],
      { stdio: 'ignore' },
    );
  };
  selfSigned(cert, key);
  const otherCa = join(dir, 'other.pem');
  selfSigned(otherCa, join(dir, 'other.key'));
  // The node's client certificate, signed by the repository's (self-signed, CA:TRUE) certificate.
  const clientKey = join(dir, 'client.key');
  const clientCert = join(dir, 'client.pem');
  const csr = join(dir, 'client.csr');
  execFileSync(
    'openssl',
    ['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', clientKey, '-out', csr, '-subj', '/CN=dicom-vault-node'],
    {
      stdio: 'ignore',
    },
  );
  execFileSync('openssl', ['x509', '-req', '-in', csr, '-CA', cert, '-CAkey', key, '-CAcreateserial', '-out', clientCert, '-days', '1'], { stdio: 'ignore' });
  const [udpPort, tlsPort, mtlsPort] = [await freeUdpPort(), await freeTcpPort(), await freeTcpPort()];
  const out = join(dir, 'received.log');
  const conf = join(dir, 'rsyslog.conf');
  // rawmsg: the message exactly as it came (for TLS, without the octet count), so the test reads
  // what the node sent, not rsyslog's rendering of it. 64 KiB messages: an audit message is ~2 KiB.
  writeFileSync(
    conf,
    `global(workDirectory="${dir}" maxMessageSize="64k"
  defaultNetstreamDriverCAFile="${cert}" defaultNetstreamDriverCertFile="${cert}" defaultNetstreamDriverKeyFile="${key}")
module(load="imudp")
module(load="imtcp" streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="anon")
input(type="imudp" address="127.0.0.1" port="${udpPort}")
input(type="imtcp" address="127.0.0.1" port="${tlsPort}")
input(type="imtcp" address="127.0.0.1" port="${mtlsPort}" streamDriver.authMode="x509/certvalid")
template(name="raw" type="string" string="%rawmsg%\\n")
*.* action(type="omfile" file="${out}" template="raw")
`,
  );
  let child: ChildProcess | undefined;
  let stderr = '';
  const start = async (): Promise<void> => {
    stderr = '';
    const c = spawn(RSYSLOGD, ['-n', '-f', conf, '-i', join(dir, 'rsyslogd.pid')], { stdio: ['ignore', 'ignore', 'pipe'] });
    c.stderr!.on('data', (d: Buffer) => {
      stderr += d.toString();
    });
    child = c;
    const deadline = Date.now() + 10_000;
    // Ready when the TLS port accepts and a UDP probe comes out in the file (both inputs are up).
    while (!(await tcpAccepts(tlsPort)) || !(await tcpAccepts(mtlsPort))) {
      if (c.exitCode !== null || Date.now() > deadline) throw new Error(`rsyslogd did not start: ${stderr}`);
      await sleep(50);
    }
    const probe = createSocket('udp4');
    const marker = `probe-${process.pid}-${Date.now()}`;
    try {
      while (!(existsSync(out) && readFileSync(out, 'utf8').includes(marker))) {
        if (Date.now() > deadline) throw new Error(`rsyslogd does not write UDP messages: ${stderr}`);
        probe.send(`<13>1 - - rsyslog-probe - - - ${marker}`, udpPort, '127.0.0.1');
        await sleep(100);
      }
    } finally {
      probe.close();
    }
  };
  const stop = async (): Promise<void> => {
    const c = child;
    child = undefined;
    if (c === undefined || c.exitCode !== null) return;
    const exited = new Promise<void>((resolve) => c.once('exit', () => resolve()));
    c.kill('SIGTERM');
    const timer = setTimeout(() => c.kill('SIGKILL'), 5_000);
    await exited;
    clearTimeout(timer);
  };
  await start();
  const messages = (): string[] => (existsSync(out) ? readFileSync(out, 'utf8') : '').split('\n').filter((l) => l !== '' && !l.includes('rsyslog-probe'));
  return {
    udpPort,
    tlsPort,
    mtlsPort,
    caFile: cert,
    clientCertFile: clientCert,
    clientKeyFile: clientKey,
    otherCaFile: otherCa,
    messages,
    async waitFor(match, count = 1, timeoutMs = 10_000) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const found = messages().filter(match);
        if (found.length >= count) return found;
        if (Date.now() > deadline) throw new Error(`${found.length} of ${count} messages arrived within ${timeoutMs} ms; received: ${messages().length}`);
        await sleep(50);
      }
    },
    stop,
    restart: start,
    async close() {
      await stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
