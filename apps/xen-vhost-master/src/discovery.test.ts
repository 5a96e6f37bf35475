import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { XenStore } from "@xen-vhost/xen-sys";
import { XenStoreTestServer } from "@xen-vhost/xen-sys/testing";
import { XenbusDiscovery, XenbusState, parseXsNumber, type DiscoveredDevice } from "./discovery.js";

let server: XenStoreTestServer;
let xs: XenStore;
let disc: XenbusDiscovery;

beforeEach(async () => {
  server = await XenStoreTestServer.listen();
  xs = await XenStore.open({ socketPath: server.path });
  disc = new XenbusDiscovery(xs);
});

afterEach(async () => {
  await disc.close();
  xs.close();
  await server.close();
});

function next<K extends "added" | "removed">(event: K): Promise<K extends "added" ? DiscoveredDevice : string> {
  return new Promise((r) => disc.once(event, ((a: never) => r(a)) as never));
}

const B = "/local/domain/0/backend";

describe("XenbusDiscovery", () => {
  it("announces an xl >= 4.18 virtio device only once type, base and irq are all written", async () => {
    await disc.start();
    const added = next("added");
    let announced = false;
    void added.then(() => (announced = true));
    await xs.write(`${B}/virtio/3/0/type`, "virtio,device22");
    await xs.write(`${B}/virtio/3/0/base`, "0x2000200");
    await new Promise((r) => setTimeout(r, 30));
    expect(announced).toBe(false); // irq is still missing
    await xs.write(`${B}/virtio/3/0/irq`, "34");
    await xs.write(`${B}/virtio/3/0/grant_usage`, "1");
    const d = await added;
    expect(d).toMatchObject({ key: "virtio/3/0", layout: "virtio", domid: 3, devid: "0", deviceId: 34, base: 0x2000200n, irq: 34 });
    expect(disc.devices).toHaveLength(1);
  });

  it("announces a 4.17 virtio_disk at libxl's MMIO slot and answers InitWait", async () => {
    await xs.transaction(async (tx) => {
      await tx.write(`${B}/virtio_disk/5/51712/frontend`, "/local/domain/5/device/virtio_disk/51712");
      await tx.write(`${B}/virtio_disk/5/51712/params`, "/dev/loop0");
      await tx.write(`${B}/virtio_disk/5/51712/state`, "1");
    });
    const added = next("added");
    await disc.start();
    const d = await added;
    expect(d).toMatchObject({ layout: "virtio_disk", domid: 5, deviceId: undefined, base: 0x2000000n, irq: 33 });
    expect(d.nodes["params"]).toBe("/dev/loop0");
    await disc.setState(d, XenbusState.InitWait);
    expect(server.get(`${B}/virtio_disk/5/51712/state`)).toBe("2");
  });

  it("keeps a 4.17 virtio_disk through InitWait and Connected, and drops it at Closing", async () => {
    await xs.write(`${B}/virtio_disk/2/51712/frontend`, "/local/domain/2/device/virtio_disk/51712");
    await xs.write(`${B}/virtio_disk/2/51712/state`, "1");
    const added = next("added");
    await disc.start();
    const d = await added;
    let removedKey: string | undefined;
    disc.on("removed", (k) => (removedKey = k));
    await disc.setState(d, XenbusState.InitWait);
    await disc.setState(d, XenbusState.Connected);
    await new Promise((r) => setTimeout(r, 50)); // the watch events of both writes are handled by now
    expect(removedKey).toBeUndefined();
    expect(disc.devices.map((x) => x.key)).toEqual(["virtio_disk/2/51712"]);
    const removed = next("removed");
    await xs.write(`${B}/virtio_disk/2/51712/state`, String(XenbusState.Closing));
    expect(await removed).toBe("virtio_disk/2/51712");
  });

  it("reports removal when the toolstack closes or deletes the device", async () => {
    await xs.write(`${B}/virtio/4/0/type`, "virtio,device4");
    await xs.write(`${B}/virtio/4/0/base`, "33554432");
    await xs.write(`${B}/virtio/4/0/irq`, "33");
    await xs.write(`${B}/virtio/4/1/type`, "virtio,device22");
    await xs.write(`${B}/virtio/4/1/base`, "0x2000200");
    await xs.write(`${B}/virtio/4/1/irq`, "34");
    const first = next("added");
    await disc.start();
    await first;
    await new Promise((r) => setTimeout(r, 30));
    expect(disc.devices.map((d) => d.key).sort()).toEqual(["virtio/4/0", "virtio/4/1"]);
    let removed = next("removed");
    await xs.write(`${B}/virtio/4/0/state`, String(XenbusState.Closing));
    expect(await removed).toBe("virtio/4/0");
    removed = next("removed");
    await xs.rm(`${B}/virtio/4`);
    expect(await removed).toBe("virtio/4/1");
    expect(disc.devices).toEqual([]);
  });

  it("ignores malformed entries without stopping", async () => {
    await xs.write(`${B}/virtio/6/0/type`, "virtio,deviceZZ");
    await xs.write(`${B}/virtio/6/0/base`, "nope");
    await xs.write(`${B}/virtio/6/0/irq`, "33");
    await xs.write(`${B}/virtio/7/0/type`, "virtio,device29");
    await xs.write(`${B}/virtio/7/0/base`, "0x2000000");
    await xs.write(`${B}/virtio/7/0/irq`, "33");
    await xs.write(`${B}/virtio/notadomid/0/type`, "virtio,device4");
    const added = next("added");
    await disc.start();
    expect((await added).key).toBe("virtio/7/0");
  });

  it("parses xl's numbers", () => {
    expect(parseXsNumber("0x2000000")).toBe(0x2000000n);
    expect(parseXsNumber("33")).toBe(33n);
    expect(parseXsNumber(" 12 ")).toBe(12n);
    expect(parseXsNumber("-1")).toBeUndefined();
    expect(parseXsNumber("0x")).toBeUndefined();
    expect(parseXsNumber(undefined)).toBeUndefined();
  });
});
