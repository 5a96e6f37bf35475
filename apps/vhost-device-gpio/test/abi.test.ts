// The GPIO v2 uAPI and virtio-gpio layouts against the system's headers (STYLE.md section 4), and what the
// host chip hands the kernel, through a recording stand-in for the syscalls (no GPIO hardware or gpio-sim
// module on the CI machines).
import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import * as abi from "../src/abi.js";
import { HostChip, encodeLineRequest, type GpioDevOps, VIRTIO_GPIO_DIRECTION_IN, VIRTIO_GPIO_DIRECTION_OUT, VIRTIO_GPIO_IRQ_TYPE_EDGE_RISING, VIRTIO_GPIO_IRQ_TYPE_LEVEL_HIGH } from "../src/index.js";

function hasCc(): boolean {
  try {
    execFileSync("cc", ["--version"], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}
const canProbe = hasCc() && existsSync("/usr/include/linux/gpio.h") && existsSync("/usr/include/linux/virtio_gpio.h");

describe("ABI against the C headers", () => {
  it.skipIf(!canProbe)("sizes, offsets, ioctl numbers and constants match linux/gpio.h and linux/virtio_gpio.h (needs cc + linux-libc-dev)", () => {
    const layouts = [
      [abi.VirtioGpioConfig, "struct virtio_gpio_config"], [abi.VirtioGpioRequest, "struct virtio_gpio_request"],
      [abi.VirtioGpioResponse, "struct virtio_gpio_response"], [abi.VirtioGpioIrqRequest, "struct virtio_gpio_irq_request"],
      [abi.VirtioGpioIrqResponse, "struct virtio_gpio_irq_response"], [abi.GpiochipInfo, "struct gpiochip_info"],
      [abi.GpioV2LineConfigAttribute, "struct gpio_v2_line_config_attribute"], [abi.GpioV2LineConfig, "struct gpio_v2_line_config"],
      [abi.GpioV2LineRequest, "struct gpio_v2_line_request"], [abi.GpioV2LineInfo, "struct gpio_v2_line_info"],
      [abi.GpioV2LineValues, "struct gpio_v2_line_values"], [abi.GpioV2LineEvent, "struct gpio_v2_line_event"],
    ] as const;
    // the attribute's union is one field here
    const renamed: Record<string, string> = { "gpio_v2_line_attribute.value": "flags" };
    const lines: string[] = [`printf("gpio_v2_line_attribute size %zu\\n", sizeof(struct gpio_v2_line_attribute));`,
      `printf("gpio_v2_line_attribute.value %zu\\n", offsetof(struct gpio_v2_line_attribute, ${renamed["gpio_v2_line_attribute.value"]}));`];
    const want = [`gpio_v2_line_attribute size ${abi.GpioV2LineAttribute.size}`, `gpio_v2_line_attribute.value ${abi.GpioV2LineAttribute.offsetOf("value")}`];
    for (const [l, c] of layouts) {
      lines.push(`printf("${l.name} size %zu\\n", sizeof(${c}));`);
      want.push(`${l.name} size ${l.size}`);
      for (const [f, spec] of Object.entries(l.fields as Record<string, { offset: number }>)) {
        lines.push(`printf("${l.name}.${f} %zu\\n", offsetof(${c}, ${f}));`);
        want.push(`${l.name}.${f} ${spec.offset}`);
      }
    }
    const consts: Record<string, number | bigint> = {};
    for (const [k, v] of Object.entries(abi)) if ((typeof v === "number" || typeof v === "bigint") && /^(GPIO_|VIRTIO_GPIO_)/.test(k)) consts[k] = v;
    for (const [k, v] of Object.entries(consts)) {
      lines.push(`printf("${k} %llu\\n", (unsigned long long)(${k}));`);
      want.push(`${k} ${v}`);
    }
    const src = `#include <stdio.h>\n#include <stddef.h>\n#include <linux/gpio.h>\n#include <linux/virtio_gpio.h>\n#define VIRTIO_ID_GPIO 41\nint main(void){${lines.join("\n")}return 0;}\n`;
    const d = mkdtempSync(join(tmpdir(), "gpioabi-"));
    try {
      writeFileSync(join(d, "p.c"), src);
      execFileSync("cc", ["-o", join(d, "p"), join(d, "p.c")]);
      expect(execFileSync(join(d, "p")).toString().trim().split("\n")).toEqual(want);
    } finally {
      rmSync(d, { recursive: true, force: true });
    }
  });
});

/** A fake /dev/gpiochip3 with 4 lines: answers the ioctls, records them, hands out line fds 100+. */
function fakeChip(): GpioDevOps & { calls: { fd: number; request: number; arg: Uint8Array }[]; fire: (() => void) | undefined; closed: number[]; events: number } {
  const calls: { fd: number; request: number; arg: Uint8Array }[] = [];
  let nextFd = 100;
  const state = {
    calls, closed: [] as number[], events: 0, fire: undefined as (() => void) | undefined,
    open: (path: string) => {
      if (path !== "/dev/gpiochip3") throw new Error("ENOENT");
      return 50;
    },
    close: (fd: number) => void state.closed.push(fd),
    ioctl(fd: number, request: number, arg: Uint8Array) {
      calls.push({ fd, request, arg: arg.slice() });
      const v = new DataView(arg.buffer, arg.byteOffset);
      if (request === abi.GPIO_GET_CHIPINFO_IOCTL) {
        arg.set(new TextEncoder().encode("gpiochip3"), 0);
        v.setUint32(64, 4, true);
      } else if (request === abi.GPIO_V2_GET_LINEINFO_IOCTL) {
        arg.set(new TextEncoder().encode(`pin${v.getUint32(64, true)}`), 0);
      } else if (request === abi.GPIO_V2_GET_LINE_IOCTL) {
        v.setInt32(588, nextFd++, true);
      } else if (request === abi.GPIO_V2_LINE_GET_VALUES_IOCTL) {
        v.setBigUint64(0, 1n, true);
      }
      return 0;
    },
    watch(_fd: number, onReadable: () => void) {
      state.fire = onReadable;
      return () => (state.fire = undefined);
    },
    read(_fd: number, buf: Uint8Array) {
      if (state.events === 0) return null;
      state.events = 0;
      new DataView(buf.buffer).setUint32(8, abi.GPIO_V2_LINE_EVENT_RISING_EDGE, true);
      return abi.GpioV2LineEvent.size;
    },
  };
  return state;
}

describe("host chip through the GPIO v2 uAPI", () => {
  it("encodes a one-line request with flags, consumer and the output value attribute", () => {
    const req = encodeLineRequest(5, abi.GPIO_V2_LINE_FLAG_OUTPUT, 1);
    const v = new DataView(req.buffer);
    expect(v.getUint32(0, true)).toBe(5);
    expect(abi.cString(req.subarray(256, 288))).toBe("vhost-device-gpio");
    const cfg = abi.GpioV2LineConfig.read(v, 288);
    expect(cfg.flags).toBe(abi.GPIO_V2_LINE_FLAG_OUTPUT);
    expect(cfg.num_attrs).toBe(1);
    expect(abi.GpioV2LineAttribute.read(v, 288 + 32)).toMatchObject({ id: abi.GPIO_V2_LINE_ATTR_ID_OUTPUT_VALUES, value: 1n });
    expect(v.getBigUint64(288 + 32 + 16, true)).toBe(1n);
    expect(abi.GpioV2LineRequest.read(v, 0).num_lines).toBe(1);
  });

  it("reads chip info and names, requests lines on use, turns edge events into interrupts, releases on close", () => {
    const ops = fakeChip();
    const chip = new HostChip(3, ops);
    expect(chip.ngpio).toBe(4);
    expect(chip.names()).toEqual(["pin0", "pin1", "pin2", "pin3"]);
    chip.setValue(1, 1);
    chip.setDirection(1, VIRTIO_GPIO_DIRECTION_OUT);
    const lineReq = ops.calls.filter((c) => c.request === abi.GPIO_V2_GET_LINE_IOCTL).at(-1)!;
    expect(abi.GpioV2LineConfig.read(new DataView(lineReq.arg.buffer), 288).flags).toBe(abi.GPIO_V2_LINE_FLAG_OUTPUT);
    chip.setValue(1, 0);
    const set = ops.calls.at(-1)!;
    expect(set).toMatchObject({ fd: 100, request: abi.GPIO_V2_LINE_SET_VALUES_IOCTL });
    expect(abi.GpioV2LineValues.decode(set.arg)).toEqual({ bits: 0n, mask: 1n });
    expect(chip.getValue(1)).toBe(1);
    expect(() => chip.getValue(2)).toThrow(/direction none/);
    const seen: number[] = [];
    chip.onEvent = (l) => seen.push(l);
    chip.setDirection(2, VIRTIO_GPIO_DIRECTION_IN);
    chip.setIrqType(2, VIRTIO_GPIO_IRQ_TYPE_EDGE_RISING);
    const edgeReq = ops.calls.filter((c) => c.request === abi.GPIO_V2_GET_LINE_IOCTL).at(-1)!;
    expect(abi.GpioV2LineConfig.read(new DataView(edgeReq.arg.buffer), 288).flags).toBe(abi.GPIO_V2_LINE_FLAG_INPUT | abi.GPIO_V2_LINE_FLAG_EDGE_RISING);
    expect(ops.closed).toContain(101); // the plain input request was replaced
    ops.events = 1;
    ops.fire!();
    expect(seen).toEqual([2]);
    expect(() => chip.setIrqType(2, VIRTIO_GPIO_IRQ_TYPE_LEVEL_HIGH)).toThrow(/level interrupts/);
    chip.close();
    expect(ops.closed).toEqual(expect.arrayContaining([100, 102, 50]));
    expect(() => new HostChip(4, ops)).toThrow(/gpiochip4: cannot open/);
  });
});
