// A compact XenStore server for tests: a real unix socket speaking the real wire format (xs_wire.h), with an
// in-memory tree, permissions, watches (fired once on registration, on change of the node or a descendant,
// and for removed subtrees), transactions (a commit after any other change fails with EAGAIN) and domain
// introduction. Enough to test a client end to end; packages/xen-sim can provide the full server later.
import { createServer, type Server, type Socket } from "node:net";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { XS, XENSTORE_ABS_PATH_MAX } from "../abi/xs-wire.js";
import {
  MessageReader, encodeMessage, firstString, formatPermission, parsePermission, splitStrings, strings,
  type XsMessage, type XsPermission,
} from "../xenstore/wire.js";

interface Node {
  value: Uint8Array;
  perms: XsPermission[];
  children: Set<string>;
}

type Tree = Map<string, Node>;

interface Tx {
  tree: Tree;
  generation: number;
  changed: { path: string; removed: string[] }[];
}

interface Conn {
  socket: Socket;
  reader: MessageReader;
  watches: { path: string; token: string }[];
  txs: Map<number, Tx>;
}

class XsFail extends Error {
  readonly code: string;
  constructor(code: string) {
    super(code);
    this.code = code;
  }
}

const enc = new TextEncoder();
const OK = strings("OK");

function cloneTree(t: Tree): Tree {
  const out: Tree = new Map();
  for (const [k, n] of t) out.set(k, { value: n.value, perms: n.perms.map((p) => ({ ...p })), children: new Set(n.children) });
  return out;
}

function parentOf(path: string): string {
  const i = path.lastIndexOf("/");
  return i <= 0 ? "/" : path.slice(0, i);
}

function baseName(path: string): string {
  return path.slice(path.lastIndexOf("/") + 1);
}

export class XenStoreTestServer {
  readonly path: string;
  /** Every request received, in order (for asserting ids and encodings). */
  readonly requests: XsMessage[] = [];
  readonly #server: Server;
  readonly #dir: string | undefined;
  readonly #conns = new Set<Conn>();
  readonly #introduced = new Set<number>([0]);
  readonly #failNext = new Map<number, string>();
  readonly #ignoreNext = new Set<number>();
  #tree: Tree = new Map([["/", { value: new Uint8Array(0), perms: [{ domid: 0, perm: "none" }], children: new Set() }]]);
  #generation = 0;
  #nextTx = 1;

  private constructor(server: Server, path: string, dir: string | undefined) {
    this.#server = server;
    this.path = path;
    this.#dir = dir;
  }

  /** Listens on `path` (default: a fresh temporary directory). */
  static async listen(path?: string): Promise<XenStoreTestServer> {
    const dir = path ? undefined : mkdtempSync(join(tmpdir(), "xenstored-test-"));
    const p = path ?? join(dir!, "socket");
    const holder: { self?: XenStoreTestServer } = {};
    const server = createServer((s) => holder.self!.#accept(s));
    const self = new XenStoreTestServer(server, p, dir);
    holder.self = self;
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(p, () => resolve());
    });
    return self;
  }

  /** Connections currently open. */
  get connections(): number {
    return this.#conns.size;
  }

  /** Writes a node as dom0 would (fires watches). */
  seed(path: string, value: string): void {
    this.#write(this.#tree, path, enc.encode(value));
    this.#commitChange(path, []);
  }

  /** Removes a node and its subtree (fires watches). */
  remove(path: string): void {
    const removed = this.#rm(this.#tree, path);
    this.#commitChange(path, removed);
  }

  /** A node's value, or undefined. */
  get(path: string): string | undefined {
    const n = this.#tree.get(path);
    return n ? new TextDecoder().decode(n.value) : undefined;
  }

  /** Makes the next request of `type` fail with XS_ERROR `code`. */
  failNext(type: number, code: string): void {
    this.#failNext.set(type, code);
  }

  /** Leaves the next request of `type` unanswered (for requests in flight when something breaks). */
  ignoreNext(type: number): void {
    this.#ignoreNext.add(type);
  }

  /** Sends raw bytes to every connection (malformed-input tests). */
  sendRaw(bytes: Uint8Array): void {
    for (const c of this.#conns) c.socket.write(bytes);
  }

  /** Drops every connection (reconnect tests). */
  dropConnections(): void {
    for (const c of this.#conns) c.socket.destroy();
    this.#conns.clear();
  }

  async close(): Promise<void> {
    this.dropConnections();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
    if (this.#dir) rmSync(this.#dir, { recursive: true, force: true });
  }

  #accept(socket: Socket): void {
    const conn: Conn = { socket, reader: new MessageReader(), watches: [], txs: new Map() };
    this.#conns.add(conn);
    socket.on("data", (d: Buffer) => {
      let msgs: XsMessage[];
      try {
        msgs = conn.reader.push(new Uint8Array(d.buffer, d.byteOffset, d.byteLength));
      } catch {
        socket.destroy();
        return;
      }
      for (const m of msgs) this.#handle(conn, m);
    });
    socket.on("close", () => this.#conns.delete(conn));
    socket.on("error", () => this.#conns.delete(conn));
  }

  #reply(conn: Conn, m: XsMessage, type: number, payload: Uint8Array): void {
    if (!conn.socket.destroyed) conn.socket.write(encodeMessage({ type, reqId: m.reqId, txId: m.txId, payload }));
  }

  #handle(conn: Conn, m: XsMessage): void {
    this.requests.push(m);
    if (this.#ignoreNext.delete(m.type)) return;
    try {
      const injected = this.#failNext.get(m.type);
      if (injected) {
        this.#failNext.delete(m.type);
        throw new XsFail(injected);
      }
      const after = this.#op(conn, m);
      after?.();
    } catch (err) {
      if (!(err instanceof XsFail)) throw err;
      this.#reply(conn, m, XS.ERROR, strings(err.code));
    }
  }

  #resolve(path: string | undefined): string {
    if (path === undefined || path.length === 0) throw new XsFail("EINVAL");
    if (path.startsWith("@")) return path;
    const abs = path.startsWith("/") ? path : `/local/domain/0/${path}`;
    if (abs.length > XENSTORE_ABS_PATH_MAX || !/^\/([A-Za-z0-9_@-]+(\/[A-Za-z0-9_@-]+)*)?$/.test(abs)) throw new XsFail("EINVAL");
    return abs;
  }

  /** Runs one request; returns work to do after the reply (watch events must follow the WATCH reply). */
  #op(conn: Conn, m: XsMessage): (() => void) | undefined {
    const args = splitStrings(m.payload);
    let tx: Tx | undefined;
    if (m.txId !== 0 && m.type !== XS.TRANSACTION_END) {
      tx = conn.txs.get(m.txId);
      if (!tx) throw new XsFail("ENOENT");
    }
    const tree = tx?.tree ?? this.#tree;
    const changed = (path: string, removed: string[]): void => {
      if (tx) tx.changed.push({ path, removed });
      else this.#commitChange(path, removed);
    };
    switch (m.type) {
      case XS.READ: {
        const n = tree.get(this.#resolve(args[0]));
        if (!n) throw new XsFail("ENOENT");
        this.#reply(conn, m, XS.READ, n.value);
        return undefined;
      }
      case XS.WRITE: {
        const nul = m.payload.indexOf(0);
        if (nul < 0) throw new XsFail("EINVAL");
        const path = this.#resolve(firstString(m.payload));
        this.#write(tree, path, m.payload.slice(nul + 1));
        this.#reply(conn, m, XS.WRITE, OK);
        changed(path, []);
        return undefined;
      }
      case XS.MKDIR: {
        const path = this.#resolve(args[0]);
        const created = !tree.has(path);
        if (created) this.#write(tree, path, new Uint8Array(0));
        this.#reply(conn, m, XS.MKDIR, OK);
        if (created) changed(path, []);
        return undefined;
      }
      case XS.RM: {
        const path = this.#resolve(args[0]);
        if (path === "/") throw new XsFail("EINVAL");
        if (!tree.has(path)) {
          if (!tree.has(parentOf(path))) throw new XsFail("ENOENT");
          this.#reply(conn, m, XS.RM, OK);
          return undefined;
        }
        const removed = this.#rm(tree, path);
        this.#reply(conn, m, XS.RM, OK);
        changed(path, removed);
        return undefined;
      }
      case XS.DIRECTORY: {
        const n = tree.get(this.#resolve(args[0]));
        if (!n) throw new XsFail("ENOENT");
        this.#reply(conn, m, XS.DIRECTORY, strings(...n.children));
        return undefined;
      }
      case XS.GET_PERMS: {
        const n = tree.get(this.#resolve(args[0]));
        if (!n) throw new XsFail("ENOENT");
        this.#reply(conn, m, XS.GET_PERMS, strings(...n.perms.map(formatPermission)));
        return undefined;
      }
      case XS.SET_PERMS: {
        const path = this.#resolve(args[0]);
        const n = tree.get(path);
        if (!n) throw new XsFail("ENOENT");
        let perms: XsPermission[];
        try {
          perms = args.slice(1).map(parsePermission);
        } catch {
          throw new XsFail("EINVAL");
        }
        if (perms.length === 0) throw new XsFail("EINVAL");
        n.perms = perms;
        this.#reply(conn, m, XS.SET_PERMS, OK);
        changed(path, []);
        return undefined;
      }
      case XS.WATCH: {
        const [path, token] = args;
        this.#resolve(path);
        if (token === undefined) throw new XsFail("EINVAL");
        if (conn.watches.some((w) => w.path === path && w.token === token)) throw new XsFail("EEXIST");
        conn.watches.push({ path: path!, token });
        this.#reply(conn, m, XS.WATCH, OK);
        return () => this.#event(conn, path!, token);
      }
      case XS.UNWATCH: {
        const i = conn.watches.findIndex((w) => w.path === args[0] && w.token === args[1]);
        if (i < 0) throw new XsFail("ENOENT");
        conn.watches.splice(i, 1);
        this.#reply(conn, m, XS.UNWATCH, OK);
        return undefined;
      }
      case XS.RESET_WATCHES:
        conn.watches = [];
        this.#reply(conn, m, XS.RESET_WATCHES, OK);
        return undefined;
      case XS.TRANSACTION_START: {
        const id = this.#nextTx++;
        conn.txs.set(id, { tree: cloneTree(this.#tree), generation: this.#generation, changed: [] });
        this.#reply(conn, m, XS.TRANSACTION_START, strings(String(id)));
        return undefined;
      }
      case XS.TRANSACTION_END: {
        const t = conn.txs.get(m.txId);
        if (!t) throw new XsFail("ENOENT");
        conn.txs.delete(m.txId);
        if (args[0] === "T") {
          if (t.generation !== this.#generation) throw new XsFail("EAGAIN");
          this.#tree = t.tree;
          for (const c of t.changed) this.#commitChange(c.path, c.removed);
        } else if (args[0] !== "F") {
          throw new XsFail("EINVAL");
        }
        this.#reply(conn, m, XS.TRANSACTION_END, OK);
        return undefined;
      }
      case XS.GET_DOMAIN_PATH: {
        const d = Number(args[0]);
        if (!/^\d+$/.test(args[0] ?? "")) throw new XsFail("EINVAL");
        this.#reply(conn, m, XS.GET_DOMAIN_PATH, strings(`/local/domain/${d}`));
        return undefined;
      }
      case XS.IS_DOMAIN_INTRODUCED:
        if (!/^\d+$/.test(args[0] ?? "")) throw new XsFail("EINVAL");
        this.#reply(conn, m, XS.IS_DOMAIN_INTRODUCED, strings(this.#introduced.has(Number(args[0])) ? "T" : "F"));
        return undefined;
      case XS.INTRODUCE: {
        if (args.length < 3 || !/^\d+$/.test(args[0] ?? "")) throw new XsFail("EINVAL");
        this.#introduced.add(Number(args[0]));
        this.#reply(conn, m, XS.INTRODUCE, OK);
        return () => this.#special("@introduceDomain");
      }
      case XS.RELEASE: {
        const d = Number(args[0]);
        if (!this.#introduced.delete(d)) throw new XsFail("ENOENT");
        this.#reply(conn, m, XS.RELEASE, OK);
        return () => this.#special("@releaseDomain");
      }
      default:
        throw new XsFail("EINVAL");
    }
  }

  #write(tree: Tree, path: string, value: Uint8Array): void {
    const existing = tree.get(path);
    if (existing) {
      existing.value = value;
      return;
    }
    const parent = parentOf(path);
    if (!tree.has(parent)) this.#write(tree, parent, new Uint8Array(0));
    const p = tree.get(parent)!;
    p.children.add(baseName(path));
    tree.set(path, { value, perms: p.perms.map((x) => ({ ...x })), children: new Set() });
  }

  #rm(tree: Tree, path: string): string[] {
    const n = tree.get(path);
    if (!n) return [];
    const removed = [path];
    for (const c of n.children) removed.push(...this.#rm(tree, `${path === "/" ? "" : path}/${c}`));
    tree.delete(path);
    tree.get(parentOf(path))?.children.delete(baseName(path));
    return removed;
  }

  #commitChange(path: string, removed: string[]): void {
    this.#generation++;
    for (const c of this.#conns) {
      for (const w of c.watches) {
        if (w.path.startsWith("@")) continue;
        const wp = this.#resolve(w.path);
        if (path === wp || path.startsWith(wp === "/" ? "/" : `${wp}/`)) this.#event(c, relative(w.path, path), w.token);
        else if (removed.includes(wp)) this.#event(c, w.path, w.token);
      }
    }
  }

  #special(name: string): void {
    for (const c of this.#conns) for (const w of c.watches) if (w.path === name) this.#event(c, name, w.token);
  }

  #event(conn: Conn, path: string, token: string): void {
    if (!conn.socket.destroyed) conn.socket.write(encodeMessage({ type: XS.WATCH_EVENT, reqId: 0, txId: 0, payload: strings(path, token) }));
  }
}

/** Events for a relative watch report relative paths, as xenstored does. */
function relative(watchPath: string, eventPath: string): string {
  const prefix = "/local/domain/0/";
  return !watchPath.startsWith("/") && eventPath.startsWith(prefix) ? eventPath.slice(prefix.length) : eventPath;
}
