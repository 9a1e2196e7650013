/**
 * What the browser tests run against: a real gogate process in development mode (with its
 * embedded development backend), a loopback web server for the test page and the client's
 * build, a TCP relay that can cut the browser's connections like a network failure, and
 * Debian's Chromium driven by playwright-core.
 *
 * Environment:
 * - `GOGATE_COMMAND`: the command that starts the gateway (split on spaces; default: the
 *   repository's `.venv/bin/python -m gogate`); the harness adds `--dev` and the ports.
 * - `CHROMIUM`: the browser executable (default `/usr/bin/chromium`).
 * - `GOGATE_TEST_LOG=1`: show the gateway's output.
 */

import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer as createHttpServer, type Server as HttpServer } from "node:http";
import { createConnection, createServer as createTcpServer, type Server as TcpServer,
  type Socket } from "node:net";
import { tmpdir } from "node:os";
import { dirname, extname, join, normalize, resolve } from "node:path";
import { fileURLToPath } from "node:url";

import { chromium, type BrowserContext, type Page } from "playwright-core";

/** clients/js, whether running from test/ or from the compiled build-test/test/. */
const PACKAGE_DIR = (() => {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!dir.endsWith(join("clients", "js")) && dir !== dirname(dir)) dir = dirname(dir);
  return dir;
})();
const REPO_DIR = resolve(PACKAGE_DIR, "..", "..");

export const JOHN = 1;
export const JANE = 2;
export const CAROL = 3;
export const DAVE = 4;
/** Chat 1 "General" holds John, Jane and Carol; Dave is not a member. */
export const GENERAL = 1;

export function freePort(): Promise<number> {
  return new Promise((ok, fail) => {
    const server = createTcpServer();
    server.once("error", fail);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      server.close(() => ok(typeof address === "object" && address !== null ? address.port : 0));
    });
  });
}

export function sleep(ms: number): Promise<void> {
  return new Promise((ok) => setTimeout(ok, ms));
}

/** Resolves once `check()` is true, polling; fails after `timeout` ms with `what`. */
export async function eventually(check: () => boolean | Promise<boolean>, what: string,
                                 timeout = 10000): Promise<void> {
  const deadline = Date.now() + timeout;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

// --- the gateway ------------------------------------------------------------------------------

/** A `python -m gogate --dev` process on fixed ports, so that it can be restarted in place. */

/** The environment for the gateway under test: this process's, less the settings that would
 * make it another deployment than the one the tests expect (a shared Redis, several workers,
 * another token key), such as CI's REDIS_URL for the Python suites. */
function inheritedEnv(): NodeJS.ProcessEnv {
  const env = { ...process.env };
  for (const name of ["REDIS_URL", "WORKERS", "JWT_PUBLIC_KEY", "JWT_SECRET", "RECOVERY_TTL",
                      "INTERNAL_API_KEY", "ALLOWED_ORIGINS"]) {
    delete env[name];
  }
  return env;
}

export class Gateway {
  readonly host = "127.0.0.1";
  private process: ChildProcess | null = null;
  private output = "";

  private constructor(readonly port: number, readonly internalPort: number,
                      readonly backendPort: number, private readonly settings: string[]) {}

  /** Starts a gateway on free ports; `settings` are extra flags such as `--auth-timeout 3`. */
  static async start(...settings: string[]): Promise<Gateway> {
    const gateway = new Gateway(await freePort(), await freePort(), await freePort(), settings);
    await gateway.start();
    return gateway;
  }

  get wsUrl(): string {
    return `ws://${this.host}:${this.port}/ws`;
  }

  get backendUrl(): string {
    return `http://${this.host}:${this.backendPort}`;
  }

  async start(): Promise<void> {
    const command = (process.env.GOGATE_COMMAND ?? join(REPO_DIR, ".venv", "bin", "python") +
      " -m gogate").split(" ").filter((word) => word !== "");
    const [program, ...args] = command as [string, ...string[]];
    args.push("--dev", "--host", this.host, "--port", String(this.port),
              "--internal-port", String(this.internalPort), ...this.settings);
    // A directory of its own, so that no .env of the developer's changes the settings.
    const cwd = mkdtempSync(join(tmpdir(), "gogate-js-test-"));
    this.output = "";
    const child = spawn(program, args, {
      cwd,
      env: { ...inheritedEnv(), BACKEND_API_URL: this.backendUrl, LOG_LEVEL: "warning" },
      stdio: ["ignore", "pipe", "pipe"],
    });
    this.process = child;
    const keep = (chunk: Buffer): void => {
      this.output += chunk.toString();
      if (process.env.GOGATE_TEST_LOG === "1") process.stderr.write(chunk);
    };
    child.stdout?.on("data", keep);
    child.stderr?.on("data", keep);
    child.once("exit", () => rmSync(cwd, { recursive: true, force: true }));
    try {
      await eventually(async () => {
        if (child.exitCode !== null) throw new Error(`exited with ${child.exitCode}`);
        return (await this.healthy()) && (await this.backendUp());
      }, "the gateway to answer /health", 20000);
    } catch (err) {
      await this.stop();
      throw new Error(`gateway did not start (${String(err)}): ${program} ${args.join(" ")}\n` +
                      this.output);
    }
  }

  /** SIGTERM, and the exit (the gateway closes its connections with 1001 first). */
  async stop(): Promise<void> {
    const child = this.process;
    this.process = null;
    if (child === null || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise<void>((ok) => child.once("exit", () => ok()));
    child.kill("SIGTERM");
    const timer = setTimeout(() => child.kill("SIGKILL"), 15000);
    await exited;
    clearTimeout(timer);
  }

  async restart(): Promise<void> {
    await this.stop();
    await this.start();
  }

  private async healthy(): Promise<boolean> {
    try {
      const response = await fetch(`http://${this.host}:${this.port}/health`);
      return response.ok;
    } catch {
      return false;
    }
  }

  private async backendUp(): Promise<boolean> {
    try {
      await this.mintToken(JOHN);
      return true;
    } catch {
      return false;
    }
  }

  /** A token of `userId` from the development backend, living `ttl` seconds. */
  async mintToken(userId: number, ttl?: number): Promise<string> {
    const body = ttl === undefined ? { user_id: userId } : { user_id: userId, ttl };
    const response = await fetch(`${this.backendUrl}/api/dev/tokens`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    if (!response.ok) throw new Error(`minting a token: HTTP ${response.status}`);
    return ((await response.json()) as { token: string }).token;
  }

  /** Closes every connection of `userId` with 4001 through the gateway's internal API. */
  async revoke(userId: number): Promise<void> {
    const response = await fetch(
      `http://${this.host}:${this.internalPort}/api/internal/v1/users/${userId}/disconnect`, {
        method: "POST",
        headers: { "Content-Type": "application/json", "X-Internal-API-Key": "dev-internal-key" },
        body: JSON.stringify({ reason: "revoked by the test" }),
      });
    if (!response.ok) throw new Error(`revoking: HTTP ${response.status}`);
  }
}

// --- the network between the browser and the gateway -------------------------------------

/**
 * A TCP relay on loopback in front of the gateway. `cut()` drops every relayed connection at
 * once and refuses new ones until `restore()`: to the browser, the network went away.
 */
export class Relay {
  private readonly sockets = new Set<Socket>();
  private down = false;

  private constructor(private readonly server: TcpServer, readonly port: number) {}

  static async start(targetPort: number, host = "127.0.0.1"): Promise<Relay> {
    let relay: Relay | null = null;
    const server = createTcpServer((inbound) => {
      if (relay === null || relay.down) {
        inbound.destroy();
        return;
      }
      const outbound = createConnection(targetPort, host);
      const pair = [inbound, outbound];
      for (const socket of pair) {
        relay.sockets.add(socket);
        socket.on("error", () => undefined);
        socket.on("close", () => {
          relay?.sockets.delete(socket);
          for (const other of pair) other.destroy();
        });
      }
      inbound.pipe(outbound);
      outbound.pipe(inbound);
    });
    await new Promise<void>((ok) => server.listen(0, host, ok));
    const address = server.address();
    relay = new Relay(server, typeof address === "object" && address !== null ? address.port : 0);
    return relay;
  }

  wsUrl(host = "127.0.0.1"): string {
    return `ws://${host}:${this.port}/ws`;
  }

  cut(): void {
    this.down = true;
    for (const socket of this.sockets) socket.destroy();
    this.sockets.clear();
  }

  restore(): void {
    this.down = false;
  }

  async close(): Promise<void> {
    this.cut();
    await new Promise<void>((ok) => this.server.close(() => ok()));
  }
}

// --- the page and the browser -------------------------------------------------------------

const PAGE = `<!doctype html>
<html><head><meta charset="utf-8"><title>gogate client test</title></head>
<body>
<script type="module">
  // The client's build, and a registry of clients by name, each with a log of everything it
  // emitted, for the test to drive and read through page.evaluate.
  import * as gogate from "/dist/index.js";
  window.gogate = gogate;
  window.clients = {};
  window.logs = {};
  const lifecycle = ["connecting", "connected", "disconnected", "recovered", "reset",
                     "auth_failed", "error"];
  const delivered = ["new_message", "user_typing", "new_reaction", "message_read",
                     "stream_reset"];
  const plain = (value) => value instanceof gogate.GogateError
    ? { code: value.code, message: value.message } : value;
  window.startClient = (name, { url, userId, token, tokenTtl, refresh, options }) => {
    const log = window.logs[name] = [];
    const client = new gogate.GogateClient({
      url,
      token,
      // The application's refresh call; here the test's development backend mints the token.
      getToken: refresh === false ? undefined : async () => {
        log.push({ type: "getToken" });
        return window.mintToken(userId, tokenTtl ?? null);
      },
      ...options,
    });
    for (const event of lifecycle) {
      client.on(event, (info) => log.push({ type: event, info: plain(info) }));
    }
    for (const event of delivered) {
      client.on(event, (data, meta) => log.push({ type: event, data, offset: meta.offset }));
    }
    window.clients[name] = client;
    return client.connect().then((info) => ({ info }), (err) => ({ error: plain(err) }));
  };
  // Calls a method of a client; a rejection comes back as { error: { code, message } }.
  window.callClient = async (name, method, args) => {
    try {
      return { value: await window.clients[name][method](...args) };
    } catch (err) {
      return { error: plain(err), isGogateError: err instanceof gogate.GogateError };
    }
  };
  window.clientReady = true;
</script>
</body></html>`;

const TYPES: Record<string, string> = {
  ".js": "text/javascript", ".map": "application/json", ".html": "text/html",
};

/** Serves the test page at `/` and the client's build at `/dist/`, on loopback. */
export class PageServer {
  private constructor(private readonly server: HttpServer, readonly url: string) {}

  static async start(): Promise<PageServer> {
    const dist = join(PACKAGE_DIR, "dist");
    const server = createHttpServer((request, response) => {
      const path = normalize(decodeURIComponent((request.url ?? "/").split("?")[0] ?? "/"));
      if (path === "/") {
        response.writeHead(200, { "Content-Type": "text/html" }).end(PAGE);
        return;
      }
      const file = join(dist, path.replace(/^\/dist\//, ""));
      if (!path.startsWith("/dist/") || !file.startsWith(dist)) {
        response.writeHead(404).end();
        return;
      }
      try {
        const body = readFileSync(file);
        response.writeHead(200, { "Content-Type": TYPES[extname(file)] ?? "text/plain" }).end(body);
      } catch {
        response.writeHead(404).end();
      }
    });
    await new Promise<void>((ok) => server.listen(0, "127.0.0.1", ok));
    const address = server.address();
    const port = typeof address === "object" && address !== null ? address.port : 0;
    return new PageServer(server, `http://127.0.0.1:${port}/`);
  }

  async close(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((ok) => this.server.close(() => ok()));
  }
}

/** Headless Chromium with a fresh profile, removed on close. */
export class Browser {
  private constructor(private readonly context: BrowserContext,
                      private readonly profile: string, private readonly pageUrl: string) {}

  static async launch(pageUrl: string): Promise<Browser> {
    const profile = mkdtempSync(join(tmpdir(), "gogate-js-chromium-"));
    const context = await chromium.launchPersistentContext(profile, {
      executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
      headless: true,
      args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync"],
    });
    return new Browser(context, profile, pageUrl);
  }

  /**
   * A new tab with the client loaded as `window.gogate`; `window.mintToken(userId, ttl)` asks
   * `mint` (the test's development backend) for a token.
   */
  async page(mint: (userId: number, ttl?: number) => Promise<string>): Promise<Page> {
    const page = await this.context.newPage();
    page.on("pageerror", (err) => process.stderr.write(`page error: ${err.message}\n`));
    await page.exposeFunction("mintToken", (userId: number, ttl: number | null) =>
      mint(userId, ttl ?? undefined));
    await page.goto(this.pageUrl);
    await page.waitForFunction(() => (window as unknown as { clientReady?: boolean }).clientReady);
    return page;
  }

  async close(): Promise<void> {
    await this.context.close();
    rmSync(this.profile, { recursive: true, force: true });
  }
}

// --- a client in a tab, seen from the test ---------------------------------------------------

/** One entry of a client's log in the page: an event it emitted, or a call of `getToken`. */
export interface LogEntry {
  type: string;
  info?: Record<string, unknown> & { code?: number | string; willRetry?: boolean };
  data?: Record<string, unknown>;
  offset?: number;
}

export interface StartOptions {
  url: string;
  userId: number;
  /** The first token; without it the client asks getToken. */
  token?: string;
  /** Lifetime of the tokens getToken gives, seconds. */
  tokenTtl?: number;
  /** `false`: the application has no getToken. */
  refresh?: boolean;
  /** More options of the client (JSON only). */
  options?: Record<string, unknown>;
}

interface CallResult {
  value?: unknown;
  error?: { code: string; message: string };
  isGogateError?: boolean;
}

/** A GogateClient living in a browser tab, driven and read by the test. */
export class TabClient {
  constructor(readonly page: Page, readonly name: string) {}

  /** Creates the client and waits for its first connection (or its refusal). */
  start(options: StartOptions): Promise<{ info?: Record<string, unknown>; error?: { code: string } }> {
    return this.page.evaluate(([name, opts]) => (window as unknown as {
      startClient: (n: string, o: StartOptions) => Promise<{ info?: Record<string, unknown> }>;
    }).startClient(name, opts), [this.name, options] as const);
  }

  call(method: string, ...args: unknown[]): Promise<CallResult> {
    return this.page.evaluate(([name, m, a]) => (window as unknown as {
      callClient: (n: string, m: string, a: unknown[]) => Promise<CallResult>;
    }).callClient(name, m, a), [this.name, method, args] as const);
  }

  /** A property of the client, e.g. `state` or `position`. */
  get<T>(property: string): Promise<T> {
    return this.page.evaluate(([name, p]) => (window as unknown as {
      clients: Record<string, Record<string, unknown>>;
    }).clients[name]?.[p], [this.name, property] as const) as Promise<T>;
  }

  log(): Promise<LogEntry[]> {
    return this.page.evaluate((name) => (window as unknown as {
      logs: Record<string, LogEntry[]>;
    }).logs[name] ?? [], this.name);
  }

  async events(type: string): Promise<LogEntry[]> {
    return (await this.log()).filter((entry) => entry.type === type);
  }

  /** Waits until `count` entries of `type` (matching `where`) were logged, and returns them. */
  async waitFor(type: string, count = 1, where: (entry: LogEntry) => boolean = () => true,
                timeout = 10000): Promise<LogEntry[]> {
    let found: LogEntry[] = [];
    await eventually(async () => {
      found = (await this.events(type)).filter(where);
      return found.length >= count;
    }, `${count} × ${type} on ${this.name}`, timeout).catch(async (err: Error) => {
      throw new Error(`${err.message}; log: ${JSON.stringify(await this.log())}`);
    });
    return found;
  }
}
