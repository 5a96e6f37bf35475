// The simulator's xenstored: the real wire protocol (xen/include/public/io/xs_wire.h) on a unix socket for
// dom0 clients, plus per-domain connections for guests' xenbus, with the permission model, watches, special
// watches and transactions of C xenstored (tools/xenstore/xenstored_core.c, xenstored_domain.c,
// xenstored_watch.c, xenstored_transaction.c, Xen 4.17: a commit fails with EAGAIN only if a node the
// transaction accessed changed meanwhile). Not modelled: quotas, XS_CONTROL, XS_DIRECTORY_PART,
// XS_SET_TARGET, the transaction limits, the ring-page transport of a real domain connection (a socketpair
// stands in for the shared ring and its event channel: same messages, same identity rules).
import { createServer, Socket, type Server } from "node:net";
import { unlinkSync } from "node:fs";
import { UnixStream, type Logger, noopLogger } from "@xen-vhost/vmm-sys-util";
import {
  XS, XENSTORE_ABS_PATH_MAX, XENSTORE_REL_PATH_MAX, MessageReader, encodeMessage, splitStrings, strings, parsePermission,
  formatPermission, type XsMessage, type XsPermission,
} from "@xen-vhost/xen-sys";

interface Node {
  value: Uint8Array;
  perms: XsPermission[];
  children: Set<string>;
  /** Bumped on every change of the node (value, permissions, children), as xenstored's node generation. */
  gen: number;
}

type Tree = Map<string, Node>;

interface Tx {
  /** The transaction's view: the store at its start plus its own changes. */
  tree: Tree;
  /** Every node's generation when the transaction started. */
  startGens: Map<string, number>;
  /** Nodes the transaction read or wrote (xenstored_transaction.c "accessed" list). */
  accessed: Set<string>;
  /** Its changes, replayed on the store at commit. */
  ops: ((tree: Tree) => void)[];
  changed: { path: string; removed: { path: string; perms: XsPermission[] }[]; perms: XsPermission[] }[];
}

interface Conn {
  socket: Socket;
  /** 0 for dom0's socket clients, the guest's domid for its xenbus connection. */
  domid: number;
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
const dec = new TextDecoder();
const OK = strings("OK");
// xenstored_core.h: XS_PERM_READ 1, XS_PERM_WRITE 2, XS_PERM_OWNER 8.
const PERM_READ = 1;
const PERM_WRITE = 2;
const PERM_OWNER = 8;
const PERM_BITS = { none: 0, read: PERM_READ, write: PERM_WRITE, both: PERM_READ | PERM_WRITE } as const;
const DOM0_ONLY: XsPermission[] = [{ domid: 0, perm: "none" }];

function cloneTree(t: Tree): Tree {
  const out: Tree = new Map();
  for (const [k, n] of t) out.set(k, { value: n.value, perms: n.perms.map((p) => ({ ...p })), children: new Set(n.children), gen: n.gen });
  return out;
}

function parentOf(path: string): string {
  const i = path.lastIndexOf("/");
  return i <= 0 ? "/" : path.slice(0, i);
}

function baseName(path: string): string {
  return path.slice(path.lastIndexOf("/") + 1);
}

function firstString(payload: Uint8Array): string {
  const nul = payload.indexOf(0);
  return dec.decode(nul < 0 ? payload : payload.subarray(0, nul));
}

/** Special watch paths xenstored fires itself (xenstored_watch.c check_special_event). */
export type SpecialWatch = "@introduceDomain" | "@releaseDomain";

export class SimXenStored {
  readonly path: string;
  readonly #server: Server;
  readonly #conns = new Set<Conn>();
  readonly #introduced = new Set<number>([0]);
  readonly #log: Logger;
  #tree: Tree = new Map([["/", { value: new Uint8Array(0), perms: DOM0_ONLY.map((p) => ({ ...p })), children: new Set(), gen: 0 }]]);
  #gen = 0;
  #nextTx = 1;

  private constructor(server: Server, path: string, logger: Logger) {
    this.#server = server;
    this.path = path;
    this.#log = logger;
  }

  /** Listens on `path` for dom0 (privileged) clients. */
  static async listen(path: string, logger: Logger = noopLogger): Promise<SimXenStored> {
    const holder: { self?: SimXenStored } = {};
    const server = createServer((s) => holder.self!.#accept(s, 0));
    const self = new SimXenStored(server, path, logger);
    holder.self = self;
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(path, () => resolve());
    });
    return self;
  }

  get connections(): number {
    return this.#conns.size;
  }

  /**
   * A connection for domain `domid`'s xenbus: returns the guest's end (a socket fd the caller hands over and
   * then closes). Every request on it is checked as coming from `domid`, whatever it claims, as xenstored
   * does for a domain's ring. XS_INTRODUCE for the domain is implied (libxl introduces it at creation).
   */
  connectDomain(domid: number): number {
    if (!Number.isInteger(domid) || domid < 1 || domid >= 0x7ff0) throw new RangeError(`domid ${domid}`);
    const [mine, theirs] = UnixStream.pair();
    const socket = new Socket({ fd: mine.intoFd(), readable: true, writable: true });
    this.#accept(socket, domid);
    return theirs.intoFd();
  }

  /** Fires a special watch (the simulator calls this on domain creation and death). */
  fireSpecial(name: SpecialWatch): void {
    // xenstored_watch.c: special events go to privileged connections (and to domains granted access to the
    // special node, which this simulator never does: their default permissions are dom0-only).
    for (const c of this.#conns) if (c.domid === 0) for (const w of c.watches) if (w.path === name) this.#event(c, name, w.token);
  }

  /** A domain came into being: XS_INTRODUCE's effect (and its @introduceDomain). */
  introduceDomain(domid: number): void {
    this.#introduced.add(domid);
    this.fireSpecial("@introduceDomain");
  }

  /**
   * A domain died or shut down: its connections go (domain_cleanup talloc_frees the connection, dropping its
   * watches and transactions) and @releaseDomain fires.
   */
  releaseDomain(domid: number, options: { dropConnections?: boolean } = {}): void {
    if (options.dropConnections ?? true) {
      this.#introduced.delete(domid);
      for (const c of [...this.#conns]) if (c.domid === domid) this.#drop(c);
    }
    this.fireSpecial("@releaseDomain");
  }

  /** Writes a node as dom0 would (fires watches), optionally setting its permissions. */
  seed(path: string, value: string, perms?: XsPermission[]): void {
    const abs = this.#resolve(path, 0);
    this.#write(this.#tree, abs, enc.encode(value), 0);
    if (perms) {
      const n = this.#tree.get(abs)!;
      n.perms = perms.map((p) => ({ ...p }));
      n.gen = ++this.#gen;
    }
    this.#commitChange(abs, [], this.#tree.get(abs)!.perms);
  }

  /** Sets a node's permissions as dom0 (fires watches). */
  setPerms(path: string, perms: XsPermission[]): void {
    const n = this.#tree.get(path);
    if (!n) throw new RangeError(`no node ${path}`);
    n.perms = perms.map((p) => ({ ...p }));
    n.gen = ++this.#gen;
    this.#commitChange(path, [], n.perms);
  }

  /** Removes a node and its subtree (fires watches). */
  remove(path: string): void {
    const removed = this.#rm(this.#tree, path);
    if (removed.length > 0) this.#commitChange(path, removed, removed[0]!.perms);
  }

  get(path: string): string | undefined {
    const n = this.#tree.get(path);
    return n ? dec.decode(n.value) : undefined;
  }

  getPerms(path: string): XsPermission[] | undefined {
    return this.#tree.get(path)?.perms.map((p) => ({ ...p }));
  }

  async close(): Promise<void> {
    for (const c of [...this.#conns]) this.#drop(c);
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
    try {
      unlinkSync(this.path);
    } catch {
      // already gone
    }
  }

  #accept(socket: Socket, domid: number): void {
    const conn: Conn = { socket, domid, reader: new MessageReader(), watches: [], txs: new Map() };
    this.#conns.add(conn);
    socket.on("data", (d: Buffer) => {
      let msgs: XsMessage[];
      try {
        msgs = conn.reader.push(new Uint8Array(d.buffer, d.byteOffset, d.byteLength));
      } catch (err) {
        // An oversized header: C xenstored drops such a connection.
        this.#log.warn("xenstored: malformed message; dropping the connection", { domid, err });
        this.#drop(conn);
        return;
      }
      for (const m of msgs) this.#handle(conn, m);
    });
    socket.on("close", () => this.#conns.delete(conn));
    socket.on("error", () => this.#conns.delete(conn));
  }

  #drop(conn: Conn): void {
    this.#conns.delete(conn);
    conn.socket.destroy();
  }

  #reply(conn: Conn, m: XsMessage, type: number, payload: Uint8Array): void {
    if (!conn.socket.destroyed) conn.socket.write(encodeMessage({ type, reqId: m.reqId, txId: m.txId, payload }));
  }

  #handle(conn: Conn, m: XsMessage): void {
    try {
      const after = this.#op(conn, m);
      after?.();
    } catch (err) {
      if (!(err instanceof XsFail)) {
        this.#log.error("xenstored: request failed", { type: m.type, err });
        this.#reply(conn, m, XS.ERROR, strings("EINVAL"));
        return;
      }
      this.#reply(conn, m, XS.ERROR, strings(err.code));
    }
  }

  /**
   * Absolute path; relative ones are under the connection's home (xenstored_core.c canonicalize). Node
   * names use xenstored's valid_chars: letters, digits, "-", "/", "_", "@".
   */
  #resolve(path: string | undefined, domid: number): string {
    if (path === undefined || path.length === 0) throw new XsFail("EINVAL");
    if (path.startsWith("@")) {
      if (path !== "@introduceDomain" && path !== "@releaseDomain") throw new XsFail("EINVAL");
      return path;
    }
    const abs = path.startsWith("/") ? path : `/local/domain/${domid}/${path}`;
    if (!path.startsWith("/") && path.length > XENSTORE_REL_PATH_MAX) throw new XsFail("EINVAL");
    if (abs.length > XENSTORE_ABS_PATH_MAX || !/^\/([A-Za-z0-9_@-]+(\/[A-Za-z0-9_@-]+)*)?$/.test(abs)) throw new XsFail("EINVAL");
    return abs;
  }

  /** xenstored_core.c perm_for_conn: dom0 and the owner get everything, else the domain's entry or the default. */
  #permFor(domid: number, perms: readonly XsPermission[]): number {
    const owner = perms[0];
    if (domid === 0 || !owner || owner.domid === domid) return PERM_READ | PERM_WRITE | PERM_OWNER;
    for (let i = 1; i < perms.length; i++) if (perms[i]!.domid === domid) return PERM_BITS[perms[i]!.perm];
    return PERM_BITS[owner.perm];
  }

  /** get_node: ENOENT if missing, EACCES if present but not allowed. */
  #node(tree: Tree, conn: Conn, path: string, need: number): Node {
    const n = tree.get(path);
    if (!n) throw new XsFail("ENOENT");
    if ((this.#permFor(conn.domid, n.perms) & need) !== need) throw new XsFail("EACCES");
    return n;
  }

  /** Creating `path`: the nearest existing ancestor must be writable (create_node / construct_node). */
  #checkCreate(tree: Tree, conn: Conn, path: string): void {
    let p = parentOf(path);
    while (!tree.has(p)) p = parentOf(p);
    if ((this.#permFor(conn.domid, tree.get(p)!.perms) & PERM_WRITE) === 0) throw new XsFail("EACCES");
  }

  /** Runs one request; returns work to do after the reply (watch events follow the WATCH reply). */
  #op(conn: Conn, m: XsMessage): (() => void) | undefined {
    const args = splitStrings(m.payload);
    const resolve = (p: string | undefined): string => {
      const abs = this.#resolve(p, conn.domid);
      if (abs.startsWith("@")) throw new XsFail("EINVAL");
      return abs;
    };
    let tx: Tx | undefined;
    if (m.txId !== 0 && m.type !== XS.TRANSACTION_END) {
      tx = conn.txs.get(m.txId);
      if (!tx) throw new XsFail("ENOENT");
    }
    const tree = tx?.tree ?? this.#tree;
    const changed = (path: string, removed: { path: string; perms: XsPermission[] }[], perms: XsPermission[]): void => {
      if (tx) tx.changed.push({ path, removed, perms });
      else this.#commitChange(path, removed, perms);
    };
    /** Marks nodes the request touches as accessed by the transaction (their parent too for creations and removals). */
    const access = (...paths: string[]): void => {
      if (tx) for (const p of paths) tx.accessed.add(p);
    };
    /** Applies a change to the current view, and remembers it for the commit. */
    const apply = (op: (t: Tree) => void): void => {
      op(tree);
      tx?.ops.push(op);
    };
    switch (m.type) {
      case XS.READ: {
        const path = resolve(args[0]);
        access(path);
        this.#reply(conn, m, XS.READ, this.#node(tree, conn, path, PERM_READ).value);
        return undefined;
      }
      case XS.WRITE: {
        const nul = m.payload.indexOf(0);
        if (nul < 0) throw new XsFail("EINVAL");
        const path = resolve(firstString(m.payload));
        access(path, parentOf(path));
        if (tree.has(path)) this.#node(tree, conn, path, PERM_WRITE);
        else this.#checkCreate(tree, conn, path);
        const value = m.payload.slice(nul + 1);
        apply((t) => this.#write(t, path, value, conn.domid));
        this.#reply(conn, m, XS.WRITE, OK);
        changed(path, [], tree.get(path)!.perms);
        return undefined;
      }
      case XS.MKDIR: {
        const path = resolve(args[0]);
        access(path, parentOf(path));
        if (tree.has(path)) {
          this.#node(tree, conn, path, PERM_WRITE);
          this.#reply(conn, m, XS.MKDIR, OK);
          return undefined;
        }
        this.#checkCreate(tree, conn, path);
        apply((t) => {
          if (!t.has(path)) this.#write(t, path, new Uint8Array(0), conn.domid);
        });
        this.#reply(conn, m, XS.MKDIR, OK);
        changed(path, [], tree.get(path)!.perms);
        return undefined;
      }
      case XS.RM: {
        const path = resolve(args[0]);
        if (path === "/") throw new XsFail("EINVAL");
        access(path, parentOf(path));
        if (!tree.has(path)) {
          if (!tree.has(parentOf(path))) throw new XsFail("ENOENT");
          this.#reply(conn, m, XS.RM, OK);
          return undefined;
        }
        const perms = this.#node(tree, conn, path, PERM_WRITE).perms;
        const removed = this.#rm(tree, path);
        tx?.ops.push((t) => void this.#rm(t, path));
        this.#reply(conn, m, XS.RM, OK);
        changed(path, removed, perms);
        return undefined;
      }
      case XS.DIRECTORY: {
        const path = resolve(args[0]);
        access(path);
        this.#reply(conn, m, XS.DIRECTORY, strings(...this.#node(tree, conn, path, PERM_READ).children));
        return undefined;
      }
      case XS.GET_PERMS: {
        const path = resolve(args[0]);
        access(path);
        this.#reply(conn, m, XS.GET_PERMS, strings(...this.#node(tree, conn, path, PERM_READ).perms.map(formatPermission)));
        return undefined;
      }
      case XS.SET_PERMS: {
        const path = resolve(args[0]);
        access(path);
        const n = this.#node(tree, conn, path, PERM_WRITE | PERM_OWNER);
        let perms: XsPermission[];
        try {
          perms = args.slice(1).map(parsePermission);
        } catch {
          throw new XsFail("EINVAL");
        }
        if (perms.length === 0) throw new XsFail("EINVAL");
        // do_set_perms: an unprivileged domain may not give its node away.
        if (conn.domid !== 0 && perms[0]!.domid !== n.perms[0]!.domid) throw new XsFail("EPERM");
        apply((t) => {
          const x = t.get(path);
          if (!x) return;
          x.perms = perms.map((p) => ({ ...p }));
          x.gen = ++this.#gen;
        });
        this.#reply(conn, m, XS.SET_PERMS, OK);
        changed(path, [], perms);
        return undefined;
      }
      case XS.WATCH: {
        const [path, token] = args;
        this.#resolve(path, conn.domid);
        if (token === undefined) throw new XsFail("EINVAL");
        if (conn.watches.some((w) => w.path === path && w.token === token)) throw new XsFail("EEXIST");
        conn.watches.push({ path: path!, token });
        this.#reply(conn, m, XS.WATCH, OK);
        // xenstored fires every new watch once, whether the node exists or not.
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
        if (m.txId !== 0) throw new XsFail("EBUSY");
        const id = this.#nextTx++;
        const startGens = new Map<string, number>();
        for (const [k, n] of this.#tree) startGens.set(k, n.gen);
        conn.txs.set(id, { tree: cloneTree(this.#tree), startGens, accessed: new Set(), ops: [], changed: [] });
        this.#reply(conn, m, XS.TRANSACTION_START, strings(String(id)));
        return undefined;
      }
      case XS.TRANSACTION_END: {
        const t = conn.txs.get(m.txId);
        if (!t) throw new XsFail("ENOENT");
        conn.txs.delete(m.txId);
        if (args[0] === "T") {
          // finalize_transaction: EAGAIN if a node the transaction accessed changed (or appeared or went)
          // since it started; otherwise its changes go in, on top of whatever else changed meanwhile.
          for (const p of t.accessed) if ((t.startGens.get(p) ?? -1) !== (this.#tree.get(p)?.gen ?? -1)) throw new XsFail("EAGAIN");
          for (const op of t.ops) op(this.#tree);
          for (const c of t.changed) this.#commitChange(c.path, c.removed, c.perms);
        } else if (args[0] !== "F") {
          throw new XsFail("EINVAL");
        }
        this.#reply(conn, m, XS.TRANSACTION_END, OK);
        return undefined;
      }
      case XS.GET_DOMAIN_PATH: {
        if (!/^\d+$/.test(args[0] ?? "")) throw new XsFail("EINVAL");
        this.#reply(conn, m, XS.GET_DOMAIN_PATH, strings(`/local/domain/${Number(args[0])}`));
        return undefined;
      }
      case XS.IS_DOMAIN_INTRODUCED:
        if (conn.domid !== 0) throw new XsFail("EACCES");
        if (!/^\d+$/.test(args[0] ?? "")) throw new XsFail("EINVAL");
        this.#reply(conn, m, XS.IS_DOMAIN_INTRODUCED, strings(this.#introduced.has(Number(args[0])) ? "T" : "F"));
        return undefined;
      case XS.INTRODUCE: {
        if (conn.domid !== 0) throw new XsFail("EACCES");
        if (args.length < 3 || !/^\d+$/.test(args[0] ?? "")) throw new XsFail("EINVAL");
        this.#introduced.add(Number(args[0]));
        this.#reply(conn, m, XS.INTRODUCE, OK);
        return () => this.fireSpecial("@introduceDomain");
      }
      case XS.RELEASE: {
        if (conn.domid !== 0) throw new XsFail("EACCES");
        const d = Number(args[0]);
        if (!this.#introduced.delete(d)) throw new XsFail("ENOENT");
        this.#reply(conn, m, XS.RELEASE, OK);
        return () => this.fireSpecial("@releaseDomain");
      }
      default:
        // process_message: an unknown type is EINVAL.
        throw new XsFail("EINVAL");
    }
  }

  /**
   * Creates or updates a node. A new node inherits its parent's permissions; one an unprivileged domain
   * creates is owned by that domain (construct_node).
   */
  #write(tree: Tree, path: string, value: Uint8Array, domid: number): void {
    const existing = tree.get(path);
    if (existing) {
      existing.value = value;
      existing.gen = ++this.#gen;
      return;
    }
    const parent = parentOf(path);
    if (!tree.has(parent)) this.#write(tree, parent, new Uint8Array(0), domid);
    const p = tree.get(parent)!;
    p.children.add(baseName(path));
    p.gen = ++this.#gen;
    const perms = p.perms.map((x) => ({ ...x }));
    if (domid !== 0) perms[0] = { domid, perm: perms[0]!.perm };
    tree.set(path, { value, perms, children: new Set(), gen: ++this.#gen });
  }

  #rm(tree: Tree, path: string): { path: string; perms: XsPermission[] }[] {
    const n = tree.get(path);
    if (!n) return [];
    const removed = [{ path, perms: n.perms }];
    for (const c of n.children) removed.push(...this.#rm(tree, `${path === "/" ? "" : path}/${c}`));
    tree.delete(path);
    const parent = tree.get(parentOf(path));
    if (parent) {
      parent.children.delete(baseName(path));
      parent.gen = ++this.#gen;
    }
    return removed;
  }

  /**
   * Fires watches for a change at `path` (and removed descendants). An unprivileged connection only hears
   * about nodes it may read (xenstored_watch.c fire_watches checks perm_for_conn against the node's perms).
   */
  #commitChange(path: string, removed: { path: string; perms: XsPermission[] }[], perms: readonly XsPermission[]): void {
    for (const c of this.#conns) {
      for (const w of c.watches) {
        if (w.path.startsWith("@")) continue;
        const wp = this.#resolve(w.path, c.domid);
        let hit: { at: string; perms: readonly XsPermission[] } | undefined;
        if (path === wp || path.startsWith(wp === "/" ? "/" : `${wp}/`)) hit = { at: path, perms };
        else {
          const r = removed.find((x) => x.path === wp);
          if (r) hit = { at: wp, perms: r.perms };
        }
        if (!hit) continue;
        if (c.domid !== 0 && (this.#permFor(c.domid, hit.perms) & PERM_READ) === 0) continue;
        this.#event(c, relative(w.path, hit.at, c.domid), w.token);
      }
    }
  }

  #event(conn: Conn, path: string, token: string): void {
    if (!conn.socket.destroyed) conn.socket.write(encodeMessage({ type: XS.WATCH_EVENT, reqId: 0, txId: 0, payload: strings(path, token) }));
  }
}

/** Events for a relative watch report relative paths, as xenstored does. */
function relative(watchPath: string, eventPath: string, domid: number): string {
  const prefix = `/local/domain/${domid}/`;
  return !watchPath.startsWith("/") && eventPath.startsWith(prefix) ? eventPath.slice(prefix.length) : eventPath;
}
