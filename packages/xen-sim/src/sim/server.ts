// The simulator's socket server: accepts clients on a unix socket (FdWatcher on Node's loop), decodes frames,
// dispatches them to the Hypervisor and answers. Fds a client sends (irqfd eventfds) are owned by the handler.
import { FdWatcher, PollEvents, UnixListener, close as closeFd, type UnixStream, type Logger, noopLogger } from "@xen-vhost/vmm-sys-util";
import { HypervisorError } from "../error.js";
import { FrameReader, MAX_FDS, sendFrame, type Request, type Response } from "../protocol.js";
import type { Hypervisor} from "./hypervisor.js";
import { Client, type Reply } from "./hypervisor.js";

const FD_METHODS = new Set(["irqfd.assign", "ioeventfd.assign"]);

type Handler = (client: Client, params: never, fds: number[]) => Reply | Promise<Reply>;

interface Conn {
  stream: UnixStream;
  watcher: FdWatcher;
  reader: FrameReader;
  client: Client;
}

export interface SimServerExtras {
  xenstore?: { readonly path: string };
  /** Extra methods (control operations of the test harness). */
  methods?: Record<string, Handler>;
  /** Runs after every request and disconnect (xenstored's domain scan hooks in here). */
  afterRequest?: () => void;
}

export class SimServer {
  readonly hv: Hypervisor;
  readonly path: string;
  readonly #listener: UnixListener;
  readonly #acceptWatcher: FdWatcher;
  readonly #conns = new Set<Conn>();
  readonly #methods: Record<string, Handler>;
  readonly #log: Logger;
  readonly #after: () => void;
  #nextClient = 1;
  #closed = false;

  constructor(hv: Hypervisor, path: string, extras: SimServerExtras = {}, logger: Logger = noopLogger) {
    this.hv = hv;
    this.path = path;
    this.#log = logger;
    this.#after = extras.afterRequest ?? (() => undefined);
    this.#listener = new UnixListener(path).setNonblocking(true);
    const h = hv;
    this.#methods = {
      hello: () => ({ result: { arch: h.arch, release: h.release, xenstore: extras.xenstore?.path ?? null } }),
      sysctl: (c, p) => h.sysctl(c, p),
      domctl: (c, p) => h.domctl(c, p),
      consoleIo: (c, p) => h.consoleIo(c, p),
      dmOp: (c, p) => h.dmOp(c, p),
      mmapForeign: (c, p) => h.mmapForeign(c, p),
      mmapResource: (c, p) => h.mmapResource(c, p),
      resourceSize: (c, p) => h.resourceSize(c, p),
      restrict: (c, p) => h.restrict(c, p),
      "irqfd.assign": (c, p, fds) => h.irqfdAssign(c, p, fds),
      "irqfd.deassign": (c, p) => h.irqfdDeassign(c, p),
      "ioeventfd.assign": (c, p, fds) => h.ioeventfdAssign(c, p, fds),
      "ioeventfd.deassign": (c, p) => h.ioeventfdDeassign(c, p),
      "evtchn.open": (c) => h.evtchnOpen(c),
      "evtchn.bindInterdomain": (c, p) => h.evtchnBindInterdomain(c, p),
      "evtchn.bindUnbound": (c, p) => h.evtchnBindUnbound(c, p),
      "evtchn.bindVirq": (c, p) => h.evtchnBindVirq(c, p),
      "evtchn.unbind": (c, p) => h.evtchnUnbind(c, p),
      "evtchn.endpoint": (c, p) => h.evtchnEndpoint(c, p),
      "evtchn.restrict": (c, p) => h.evtchnRestrict(c, p),
      "evtchn.close": (c, p) => h.evtchnClose(c, p),
      "gntdev.open": (c) => h.gntdevOpen(c),
      "gntdev.map": (c, p) => h.gntdevMap(c, p),
      "gntdev.unmap": (c, p) => h.gntdevUnmap(c, p),
      "gntdev.copy": (c, p) => h.gntdevCopy(c, p),
      "gntdev.close": (c, p) => h.gntdevClose(c, p),
      "guest.attach": (c, p) => h.guestAttach(c, p),
      "guest.waitRunnable": (c, p) => h.guestWaitRunnable(c, p),
      "guest.routes": (c, p) => h.guestRoutes(c, p),
      "guest.allocUnbound": (c, p) => h.guestAllocUnbound(c, p),
      "guest.endpoint": (c, p) => h.guestEndpoint(c, p),
      ...extras.methods,
    };
    this.#acceptWatcher = new FdWatcher(this.#listener.fd, () => this.#accept(), {
      onError: (err) => this.#log.error("sim: accept handler threw", { err }),
    }).start(PollEvents.READABLE);
  }

  #accept(): void {
    for (;;) {
      let s: UnixStream | null;
      try {
        s = this.#listener.accept();
      } catch (err) {
        this.#log.warn("sim: accept failed", { err });
        return;
      }
      if (!s) return;
      s.setNonblocking(true);
      const client = new Client(this.#nextClient++);
      this.hv.addClient(client);
      const conn: Conn = {
        stream: s,
        reader: new FrameReader(),
        client,
        watcher: undefined as unknown as FdWatcher,
      };
      conn.watcher = new FdWatcher(s.fd, () => this.#readable(conn), {
        onError: (err) => this.#log.error("sim: connection handler threw", { err }),
      }).start(PollEvents.READABLE);
      this.#conns.add(conn);
    }
  }

  #readable(conn: Conn): void {
    const chunk = new Uint8Array(64 * 1024);
    for (;;) {
      let got;
      try {
        got = conn.stream.recv(chunk, MAX_FDS);
      } catch (err) {
        this.#log.warn("sim: receive failed", { err });
        this.#drop(conn);
        return;
      }
      if (got === null) break;
      if (got.bytes === 0) {
        for (const fd of got.fds) closeFd(fd);
        this.#drop(conn);
        return;
      }
      conn.reader.push(chunk.subarray(0, got.bytes), got.fds);
    }
    for (;;) {
      let f;
      try {
        f = conn.reader.next();
      } catch (err) {
        this.#log.warn("sim: bad frame; dropping the client", { err });
        this.#drop(conn);
        return;
      }
      if (!f) return;
      this.#dispatch(conn, f.message as Request, f.fds);
      this.#afterSafe();
    }
  }

  #dispatch(conn: Conn, req: Request, fds: number[]): void {
    const answer = (r: Response, out: number[] = []): void => {
      if (conn.stream.closed) return;
      try {
        sendFrame(conn.stream, r, out);
      } catch (err) {
        this.#log.warn("sim: reply failed", { err });
        this.#drop(conn);
      }
    };
    const fail = (err: unknown): void => {
      if (err instanceof HypervisorError) {
        answer({ id: req.id, ok: false, code: err.code, message: err.message });
        return;
      }
      const e = err instanceof Error ? err : new Error(String(err));
      // A bug in the simulator (or a malformed request that got past validation): answer EINVAL, keep going.
      this.#log.error("sim: handler failed", { method: req.method, err: e });
      answer({ id: req.id, ok: false, code: /^E[A-Z0-9]+$/.test(e.message) ? e.message : "EINVAL", message: e.message });
    };
    const handler = typeof req?.method === "string" ? this.#methods[req.method] : undefined;
    if (!handler) {
      for (const fd of fds) closeFd(fd);
      fail(new HypervisorError("ENOSYS", `unknown method ${String(req?.method)}`));
      return;
    }
    // Only the eventfd registrations take fds; anything else a client attaches is closed.
    if (!FD_METHODS.has(req.method)) {
      for (const fd of fds.splice(0)) closeFd(fd);
    }
    try {
      const r = handler(conn.client, (req.params ?? {}) as never, fds);
      if (r instanceof Promise) r.then((x) => answer({ id: req.id, ok: true, result: x.result }, x.fds), fail);
      else answer({ id: req.id, ok: true, result: r.result }, r.fds);
    } catch (err) {
      fail(err);
    }
  }

  #drop(conn: Conn): void {
    if (!this.#conns.delete(conn)) return;
    conn.watcher.close();
    conn.reader.dispose();
    conn.stream.close();
    this.hv.disconnect(conn.client);
    this.#afterSafe();
  }

  #afterSafe(): void {
    try {
      this.#after();
    } catch (err) {
      this.#log.error("sim: after-request hook threw", { err });
    }
  }

  get connections(): number {
    return this.#conns.size;
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const c of [...this.#conns]) this.#drop(c);
    this.#acceptWatcher.close();
    this.#listener.close();
  }
}
