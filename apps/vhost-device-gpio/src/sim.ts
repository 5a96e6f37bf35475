// A simulated GPIO chip for machines without GPIO hardware: named lines with a direction, a value and
// interrupt detection. Outputs hold what the guest drives; inputs read a level the simulation sets with
// `drive(line, level)` (tests, demos), which also raises the edge or level interrupts the guest asked for.
import type { GpioChip, GpioEventListener } from "./chip.js";
import {
  VIRTIO_GPIO_DIRECTION_IN, VIRTIO_GPIO_DIRECTION_NONE, VIRTIO_GPIO_DIRECTION_OUT, VIRTIO_GPIO_IRQ_TYPE_EDGE_BOTH,
  VIRTIO_GPIO_IRQ_TYPE_EDGE_FALLING, VIRTIO_GPIO_IRQ_TYPE_EDGE_RISING, VIRTIO_GPIO_IRQ_TYPE_LEVEL_HIGH, VIRTIO_GPIO_IRQ_TYPE_LEVEL_LOW,
  VIRTIO_GPIO_IRQ_TYPE_NONE,
} from "./abi.js";
import { GpioError } from "./error.js";

const IRQ_TYPES = new Set([
  VIRTIO_GPIO_IRQ_TYPE_NONE, VIRTIO_GPIO_IRQ_TYPE_EDGE_RISING, VIRTIO_GPIO_IRQ_TYPE_EDGE_FALLING, VIRTIO_GPIO_IRQ_TYPE_EDGE_BOTH,
  VIRTIO_GPIO_IRQ_TYPE_LEVEL_HIGH, VIRTIO_GPIO_IRQ_TYPE_LEVEL_LOW,
]);

interface Line {
  name: string;
  direction: number;
  /** What the guest set (drives the line when it is an output). */
  outValue: number;
  /** The level applied from outside (read when the line is an input). */
  inLevel: number;
  irqType: number;
}

export class SimChip implements GpioChip {
  readonly name: string;
  readonly #lines: Line[];
  onEvent: GpioEventListener | undefined;

  /** `lines`: a count (names "dummy0".."dummyN-1", as rust-vmm's mock chip) or the line names. */
  constructor(lines: number | readonly string[], name = "sim") {
    const names = typeof lines === "number" ? Array.from({ length: lines }, (_, i) => `dummy${i}`) : [...lines];
    if (names.length < 1 || names.length > 0xffff) throw new GpioError("InvalidSpec", `a chip has 1..65535 lines, not ${names.length}`);
    this.name = name;
    this.#lines = names.map((n) => ({ name: n, direction: VIRTIO_GPIO_DIRECTION_NONE, outValue: 0, inLevel: 0, irqType: VIRTIO_GPIO_IRQ_TYPE_NONE }));
  }

  get ngpio(): number {
    return this.#lines.length;
  }

  #line(i: number): Line {
    const l = this.#lines[i];
    if (!l) throw new GpioError("InvalidLine", `${this.name}: line ${i} out of range (${this.#lines.length} lines)`);
    return l;
  }

  names(): string[] {
    return this.#lines.map((l) => l.name);
  }

  getDirection(line: number): number {
    return this.#line(line).direction;
  }

  setDirection(line: number, direction: number): void {
    const l = this.#line(line);
    if (direction !== VIRTIO_GPIO_DIRECTION_NONE && direction !== VIRTIO_GPIO_DIRECTION_OUT && direction !== VIRTIO_GPIO_DIRECTION_IN)
      throw new GpioError("InvalidArgument", `${this.name}: direction ${direction} is not none/out/in`);
    const before = this.#level(l);
    l.direction = direction;
    this.#changed(line, l, before);
  }

  #level(l: Line): number {
    return l.direction === VIRTIO_GPIO_DIRECTION_OUT ? l.outValue : l.inLevel;
  }

  getValue(line: number): number {
    return this.#level(this.#line(line));
  }

  setValue(line: number, value: number): void {
    const l = this.#line(line);
    if (value !== 0 && value !== 1) throw new GpioError("InvalidArgument", `${this.name}: value ${value} is not 0 or 1`);
    const before = this.#level(l);
    l.outValue = value;
    this.#changed(line, l, before);
  }

  setIrqType(line: number, type: number): void {
    const l = this.#line(line);
    if (!IRQ_TYPES.has(type)) throw new GpioError("InvalidArgument", `${this.name}: interrupt type ${type} is not a virtio-gpio IRQ type`);
    l.irqType = type;
  }

  levelActive(line: number): boolean {
    const l = this.#line(line);
    const v = this.#level(l);
    return (l.irqType === VIRTIO_GPIO_IRQ_TYPE_LEVEL_HIGH && v === 1) || (l.irqType === VIRTIO_GPIO_IRQ_TYPE_LEVEL_LOW && v === 0);
  }

  /** Applies a level to an input line from outside (a button, a sensor); raises the interrupts enabled on it. */
  drive(line: number, level: 0 | 1): void {
    const l = this.#line(line);
    const before = this.#level(l);
    l.inLevel = level;
    this.#changed(line, l, before);
  }

  #changed(index: number, l: Line, before: number): void {
    const now = this.#level(l);
    const t = l.irqType;
    const rising = before === 0 && now === 1;
    const falling = before === 1 && now === 0;
    if ((rising && t & VIRTIO_GPIO_IRQ_TYPE_EDGE_RISING) || (falling && t & VIRTIO_GPIO_IRQ_TYPE_EDGE_FALLING) || this.levelActive(index))
      this.onEvent?.(index);
  }

  close(): void {
    this.onEvent = undefined;
  }

  [Symbol.dispose](): void {
    this.close();
  }
}
