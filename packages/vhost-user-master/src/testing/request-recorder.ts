// A Logger that records what a Frontend did: each front-end request it completed (with how the back-end
// answered: a reply body, a REPLY_ACK, or nothing expected) and the protocol features it acked. Tests against
// real back-ends use it to state, and check, which parts of the protocol each back-end exercised.
import type { Logger } from "@xen-vhost/vhost-user-protocol";

export class RequestRecorder implements Logger {
  /** Request name -> answers seen ("reply", "ack", "none"). */
  readonly requests = new Map<string, Set<string>>();
  readonly protocolFeatures = new Set<string>();

  debug(msg: string, fields?: Record<string, unknown>): void {
    if (msg === "request" && typeof fields?.["request"] === "string") {
      const name = fields["request"];
      let set = this.requests.get(name);
      if (!set) this.requests.set(name, (set = new Set()));
      set.add(String(fields["answer"]));
    } else if (msg === "protocol features" && Array.isArray(fields?.["acked"])) {
      for (const f of fields["acked"] as unknown[]) this.protocolFeatures.add(String(f));
    }
  }
  info(): void {}
  warn(): void {}
  error(): void {}

  /** Requests the back-end answered (a reply body or a REPLY_ACK), sorted by name. */
  get answered(): string[] {
    return [...this.requests].filter(([, a]) => a.has("reply") || a.has("ack")).map(([n]) => n).sort();
  }
}
