// A GPIO chip as the virtio-gpio device uses it: numbered lines with names, a direction, a value and an
// interrupt type. Host chips (/dev/gpiochipN) and simulated ones implement it. Directions and interrupt
// types use the virtio-gpio numbers (VIRTIO_GPIO_DIRECTION_*, VIRTIO_GPIO_IRQ_TYPE_*).

/** An interrupt condition seen on a line (an edge, or the level of a level-triggered line). */
export type GpioEventListener = (line: number) => void;

export interface GpioChip extends Disposable {
  readonly name: string;
  readonly ngpio: number;
  /** Line names (empty strings for unnamed lines). */
  names(): string[];
  /** @throws GpioError for a line out of range */
  getDirection(line: number): number;
  /** Sets the direction; an output drives the value last given to setValue (virtio-gpio: value first). */
  setDirection(line: number, direction: number): void;
  getValue(line: number): number;
  setValue(line: number, value: number): void;
  /** Enables interrupt detection of `type` (VIRTIO_GPIO_IRQ_TYPE_NONE disables). */
  setIrqType(line: number, type: number): void;
  /** Whether a level-triggered line's level is active now (so a fresh eventq buffer fires at once). */
  levelActive(line: number): boolean;
  /** Called on every interrupt condition of a line with detection enabled. */
  onEvent: GpioEventListener | undefined;
  close(): void;
}
