// The two XenStore transports: xenstored's unix socket (node:net) and the kernel's /dev/xen/xenbus (read/write
// on the fd, readiness from the native FdWatcher). Both carry the same framing; the client sees a byte stream.
import { createConnection } from "node:net";
import { FdWatcher, PollEvents, read, write } from "@xen-vhost/vmm-sys-util";
import { XENBUS_DEVICE, XENSTORED_SOCKET } from "../abi/xs-wire.js";
import { XenStoreError, type XenError } from "../error.js";
import { closeQuietly, openDevice } from "../device.js";

/** What a transport tells the client. */
export interface XsStreamHandlers {
  onData(chunk: Uint8Array): void;
  /** The stream ended (peer closed, or an error). Called at most once. */
  onClose(cause?: Error): void;
}

/** An open XenStore byte stream. */
export interface XsStream {
  /** A description for errors and logs ("socket /var/run/xenstored/socket"). */
  readonly description: string;
  write(data: Uint8Array): void;
  /** Closes without calling onClose. Idempotent. */
  close(): void;
}

/** Opens a stream; the client calls it again to reconnect. */
export type XsConnector = (handlers: XsStreamHandlers) => Promise<XsStream>;

function once(h: XsStreamHandlers): XsStreamHandlers {
  let closed = false;
  return {
    onData: (c) => { if (!closed) h.onData(c); },
    onClose: (e) => {
      if (closed) return;
      closed = true;
      h.onClose(e);
    },
  };
}

/** xenstored's unix socket (default /var/run/xenstored/socket). */
export function socketConnector(path: string = XENSTORED_SOCKET): XsConnector {
  return (handlers) =>
    new Promise<XsStream>((resolve, reject) => {
      const h = once(handlers);
      const sock = createConnection(path);
      let userClosed = false;
      const onConnectError = (err: NodeJS.ErrnoException): void => {
        sock.destroy();
        const code = err.code ?? "EIO";
        const kind = code === "ENOENT" || code === "ECONNREFUSED" ? "DeviceMissing" : code === "EACCES" ? "PermissionDenied" : "Disconnected";
        reject(new XenStoreError(kind, { op: "connect", code, path }, { cause: err }));
      };
      sock.once("error", onConnectError);
      sock.once("connect", () => {
        sock.off("error", onConnectError);
        sock.on("error", (err) => { if (!userClosed) h.onClose(err); });
        sock.on("close", () => { if (!userClosed) h.onClose(); });
        sock.on("data", (d: Buffer) => h.onData(new Uint8Array(d.buffer, d.byteOffset, d.byteLength)));
        resolve({
          description: `socket ${path}`,
          write: (data) => { sock.write(data); },
          close: () => {
            userClosed = true;
            sock.destroy();
          },
        });
      });
    });
}

/** The kernel's xenbus device (default /dev/xen/xenbus): works in driver domains and with a xenstore stubdom. */
export function xenbusConnector(path: string = XENBUS_DEVICE): XsConnector {
  return (handlers) => {
    const h = once(handlers);
    let fd: number;
    try {
      fd = openDevice(path, { nonblocking: true });
    } catch (err) {
      const e = err as XenError;
      return Promise.reject(new XenStoreError(e.kind, { op: "connect", code: e.code ?? "EIO", path }, { cause: err }));
    }
    const buf = new Uint8Array(4096 + 16);
    let watcher: FdWatcher | undefined;
    const shut = (): void => {
      watcher?.close();
      watcher = undefined;
      if (fd >= 0) closeQuietly(fd);
      fd = -1;
    };
    watcher = new FdWatcher(fd, (_events, errno) => {
      if (errno !== 0) {
        shut();
        h.onClose(new XenStoreError("Disconnected", { op: "poll", code: `E${errno}`, path }));
        return;
      }
      for (;;) {
        let n: number | null;
        try {
          n = read(fd, buf);
        } catch (err) {
          shut();
          h.onClose(err as Error);
          return;
        }
        if (n === null) return;
        if (n === 0) {
          shut();
          h.onClose();
          return;
        }
        h.onData(buf.slice(0, n));
      }
    }).start(PollEvents.READABLE);
    return Promise.resolve({
      description: `xenbus ${path}`,
      write: (data: Uint8Array) => {
        // The driver takes a whole message per write (it buffers partial ones), so a short write is a fault.
        const n = write(fd, data);
        if (n !== data.byteLength) {
          throw new XenStoreError("Protocol", { op: "write", code: "EIO", path });
        }
      },
      close: shut,
    });
  };
}
