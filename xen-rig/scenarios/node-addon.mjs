// Run by node.sh inside dom0. Prints "RIG: ok <check>" per passed check, "RIG: FAIL <check> <why>" otherwise,
// and "RIG: ok node-addon" only when everything passed.
import {
  open, close, read, write, constants, EventFd, FdWatcher, PollEvents, SysError, ioctl, _IOC, _IOC_NONE,
} from "@xen-vhost/vmm-sys-util";

let failures = 0;
const ok = (check, detail = "") => console.log(`RIG: ok ${check}${detail ? ` ${detail}` : ""}`);
const fail = (check, why) => {
  failures++;
  console.log(`RIG: FAIL ${check} ${why instanceof Error ? `${why.name}: ${why.message}` : why}`);
};
const withTimeout = (p, ms, what) =>
  Promise.race([p, new Promise((_, rej) => setTimeout(() => rej(new Error(`${what}: no progress after ${ms} ms`)), ms).unref())]);

console.log(`RIG: node ${process.version} ${process.arch} ${process.platform}`);

// 1. Device nodes through the addon's open() (O_CLOEXEC, SysError on failure).
for (const dev of ["/dev/xen/privcmd", "/dev/xen/evtchn", "/dev/xen/gntdev"]) {
  try {
    const fd = open(dev, constants.O_RDWR);
    ok(`open ${dev}`, `fd=${fd}`);
    close(fd);
  } catch (e) {
    fail(`open ${dev}`, e);
  }
}
try {
  const fd = open("/dev/xen/no-such-node", constants.O_RDWR);
  close(fd);
  fail("open-missing", "opening a missing node succeeded");
} catch (e) {
  if (e instanceof SysError && e.code === "ENOENT") ok("open-missing ENOENT", `(${e.message})`);
  else fail("open-missing", e);
}

// 2. EventFd ping-pong: each watcher answers on the other eventfd, so every round is two loop wake-ups.
async function eventfdPingPong(rounds) {
  const a = new EventFd(), b = new EventFd();
  let n = 0;
  const t0 = process.hrtime.bigint();
  try {
    await withTimeout(new Promise((resolve) => {
      const wa = new FdWatcher(a.fd, () => { a.read(); b.write(); }).start(PollEvents.READABLE);
      const wb = new FdWatcher(b.fd, () => {
        b.read();
        if (++n === rounds) { wa.close(); wb.close(); resolve(); } else a.write();
      }).start(PollEvents.READABLE);
      a.write();
    }), 20000, "eventfd ping-pong");
    const ms = Number(process.hrtime.bigint() - t0) / 1e6;
    ok("eventfd-pingpong", `${rounds} rounds in ${ms.toFixed(0)} ms (${((ms * 1000) / rounds).toFixed(0)} us/round)`);
  } catch (e) {
    fail("eventfd-pingpong", `${e.message} after ${n} rounds`);
  } finally {
    a.close(); b.close();
  }
}

// 3. Event channels: include/uapi/xen/evtchn.h. Two handles, one port bound unbound-for-dom0 and the other
// bound interdomain to it (dom0 to itself), then notify back and forth. A read returns pending ports
// (u32 each); writing a port back unmasks it.
const IOCTL_EVTCHN_BIND_INTERDOMAIN = _IOC(_IOC_NONE, "E", 1, 8); // { u32 remote_domain, remote_port }
const IOCTL_EVTCHN_BIND_UNBOUND_PORT = _IOC(_IOC_NONE, "E", 2, 4); // { u32 remote_domain }
const IOCTL_EVTCHN_NOTIFY = _IOC(_IOC_NONE, "E", 4, 4); // { u32 port }

async function evtchnLoopback(rounds) {
  const fa = open("/dev/xen/evtchn", constants.O_RDWR | constants.O_NONBLOCK);
  const fb = open("/dev/xen/evtchn", constants.O_RDWR | constants.O_NONBLOCK);
  const watchers = [];
  let n = 0;
  try {
    const pa = ioctl(fa, IOCTL_EVTCHN_BIND_UNBOUND_PORT, new Uint32Array([0]));
    const pb = ioctl(fb, IOCTL_EVTCHN_BIND_INTERDOMAIN, new Uint32Array([0, pa]));
    const notify = (fd, port) => ioctl(fd, IOCTL_EVTCHN_NOTIFY, new Uint32Array([port]));
    const drain = (fd, expected) => {
      const ports = new Uint32Array(16);
      const got = read(fd, ports);
      if (got === null) return 0; // spurious wake-up
      for (let i = 0; i < got / 4; i++) {
        if (ports[i] !== expected) throw new Error(`event on port ${ports[i]}, expected ${expected}`);
        write(fd, ports.subarray(i, i + 1)); // unmask
      }
      return got / 4;
    };
    const t0 = process.hrtime.bigint();
    await withTimeout(new Promise((resolve, reject) => {
      const onError = (e) => reject(e);
      watchers.push(new FdWatcher(fa, () => { if (drain(fa, pa)) notify(fa, pa); }, { onError }).start());
      watchers.push(new FdWatcher(fb, () => {
        if (!drain(fb, pb)) return;
        if (++n === rounds) resolve(); else notify(fb, pb);
      }, { onError }).start());
      notify(fb, pb);
    }), 20000, "evtchn loopback");
    const ms = Number(process.hrtime.bigint() - t0) / 1e6;
    ok("evtchn-loopback", `ports ${pa}<->${pb}, ${rounds} round trips in ${ms.toFixed(0)} ms`);
  } catch (e) {
    fail("evtchn-loopback", `${e.message} after ${n} rounds`);
  } finally {
    for (const w of watchers) w.close();
    close(fa); close(fb); // closing unbinds the ports
  }
}

await eventfdPingPong(1000);
await evtchnLoopback(200);
if (failures === 0) ok("node-addon");
process.exitCode = failures ? 1 : 0;
