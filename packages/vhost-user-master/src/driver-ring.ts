// The driver side of one ring on a vhost-user back-end, for a front-end that drives the rings itself (tests,
// benchmarks, a userspace driver such as DPDK's virtio-user PMD): virtio-queue's DriverQueue plus the ring's
// kick and call eventfds, with the two ways of finding completions.
//
//   "interrupt": the back-end signals the call eventfd for every completion it is allowed to (used_event /
//     NO_INTERRUPT as the driver left them); the driver sleeps on it through Node's event loop. Cheap in CPU,
//     but each wait is an eventfd write by the back-end plus a loop wake-up (epoll, a callback) here.
//   "poll": the driver asks the back-end not to signal (VIRTQ_AVAIL_F_NO_INTERRUPT, or used_event kept out of
//     reach with EVENT_IDX) and spins on the used idx (one Atomics load of the mapped ring per check) for a
//     bounded time; only when nothing arrives in that time does it re-enable the call, re-check the ring and
//     sleep on the eventfd, then turn the call off again (the virtio-net NAPI pattern). Against a busy-polling
//     back-end (DPDK) a completion at queue depth 1 then costs no syscall on either side.
//
// Kicks honour the back-end's suppression either way (VRING_USED_F_NO_NOTIFY / avail_event): no eventfd write
// when it said it polls the avail ring. The hot path allocates nothing.
import { FdWatcher, PollEvents, type EventFd } from "@xen-vhost/vmm-sys-util";
import type { DriverQueue } from "@xen-vhost/virtio-queue";

/** How a DriverRing finds completions (see the file comment). */
export type CompletionMode = "interrupt" | "poll";

export interface DriverRingOptions {
  /** "interrupt" (default) or "poll". */
  completion?: CompletionMode;
  /**
   * Poll mode: how long `spin()` polls the used ring before `wait()` falls back to the call eventfd, in
   * microseconds (default 50: longer than a busy-polling back-end's round trip, shorter than a timeslice).
   */
  spinUs?: number;
}

/** What the ring did since it was made (counters, for tests and benchmarks). */
export interface DriverRingStats {
  /** Kick eventfd writes. */
  kicks: number;
  /** `notify()` calls that wrote nothing because the back-end suppressed kicks. */
  kicksSuppressed: number;
  /** Waits that slept on the call eventfd (every wait in interrupt mode; spin fallbacks in poll mode). */
  sleeps: number;
  /** Call eventfd signals read (the eventfd counter values summed). */
  calls: number;
}

/** A ring's driver side on a vhost-user back-end. Close it before the eventfds. */
export class DriverRing<T = unknown> implements Disposable {
  readonly queue: DriverQueue<T>;
  readonly kick: EventFd;
  readonly call: EventFd;
  readonly completion: CompletionMode;
  readonly spinUs: number;
  readonly stats: DriverRingStats = { kicks: 0, kicksSuppressed: 0, sleeps: 0, calls: 0 };
  readonly #watcher: FdWatcher;
  #wake: (() => void) | undefined;
  readonly #sleeper = (resolve: () => void): void => {
    this.#wake = resolve;
  };
  #closed = false;

  /**
   * Takes over `queue` (whose rings the back-end was given with SET_VRING_ADDR) and watches `call` (the fd
   * given with SET_VRING_CALL). Poll mode disables the queue's interrupts now.
   * @throws RangeError for a bad `spinUs`; SysError if the call eventfd cannot be watched.
   */
  constructor(queue: DriverQueue<T>, kick: EventFd, call: EventFd, options: DriverRingOptions = {}) {
    const completion = options.completion ?? "interrupt";
    if (completion !== "interrupt" && completion !== "poll") throw new RangeError(`unknown completion mode ${String(completion)}`);
    const spinUs = options.spinUs ?? 50;
    if (!(spinUs >= 0 && Number.isFinite(spinUs))) throw new RangeError(`spinUs ${spinUs} must be a non-negative number`);
    this.queue = queue;
    this.kick = kick;
    this.call = call;
    this.completion = completion;
    this.spinUs = spinUs;
    this.#watcher = new FdWatcher(call.fd, (events) => {
      if ((events & PollEvents.READABLE) === 0) return;
      const n = this.call.read();
      if (n !== null) this.stats.calls += Number(n);
      this.#resolve();
    }).start(PollEvents.READABLE);
    if (completion === "poll") queue.disableInterrupts();
    else queue.enableInterrupts();
  }

  get closed(): boolean {
    return this.#closed;
  }

  /**
   * Publishes what was added and kicks the back-end if it wants a kick (VRING_USED_F_NO_NOTIFY clear, or
   * avail_event passed with EVENT_IDX). Returns whether it kicked.
   */
  notify(): boolean {
    if (this.queue.needsNotification()) {
      this.kick.write(1);
      this.stats.kicks++;
      return true;
    }
    this.stats.kicksSuppressed++;
    return false;
  }

  /**
   * Whether used entries are pending. In poll mode, polls the used idx for up to `spinUs` first; in interrupt
   * mode, one check. Synchronous: nothing else runs on the event loop meanwhile.
   */
  spin(): boolean {
    const q = this.queue;
    if (q.hasUsed()) return true;
    if (this.completion !== "poll" || this.spinUs === 0) return false;
    // performance.now() costs more than a ring check: read the clock every 64 checks
    const until = performance.now() + this.spinUs / 1000;
    for (;;) {
      for (let i = 0; i < 64; i++) if (q.hasUsed()) return true;
      if (performance.now() >= until) return q.hasUsed();
    }
  }

  /**
   * Resolves once used entries are pending, or `wake()` was called. Interrupt mode sleeps on the call
   * eventfd; poll mode spins (`spin()`), then asks for a call, re-checks the ring (a completion may have
   * landed before the back-end saw the request) and sleeps, and turns the call off again when woken.
   * The eventfd counter persists, so a signal between the check and the sleep is never lost.
   */
  async wait(): Promise<void> {
    if (this.spin()) return;
    await this.sleep();
  }

  /** The sleeping half of `wait()`, without the spin. */
  async sleep(): Promise<void> {
    const q = this.queue;
    const poll = this.completion === "poll";
    if (poll ? q.enableInterrupts() : q.hasUsed()) {
      if (poll) q.disableInterrupts();
      return;
    }
    this.stats.sleeps++;
    try {
      await new Promise<void>(this.#sleeper);
    } finally {
      this.#wake = undefined;
      if (poll && !this.#closed) q.disableInterrupts();
    }
  }

  /** Ends a pending `wait()`/`sleep()` now (a stall timer, shutdown). */
  wake(): void {
    this.#resolve();
  }

  #resolve(): void {
    const w = this.#wake;
    if (w !== undefined) {
      this.#wake = undefined;
      w();
    }
  }

  /** Stops watching the call eventfd and ends a pending wait. The queue and the eventfds stay the caller's. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#watcher.close();
    this.#resolve();
  }

  [Symbol.dispose](): void {
    this.close();
  }
}
