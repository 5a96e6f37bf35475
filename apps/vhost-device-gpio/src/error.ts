// One error class for the gpio daemon: a bad chip list, a missing /dev/gpiochipN, and line operations the
// chip refuses (which the virtio-gpio device turns into VIRTIO_GPIO_STATUS_ERR).

/**
 * - `InvalidSpec`: the -l list is malformed, or its length does not match -c.
 * - `ChipMissing`: /dev/gpiochipN does not exist or is not a GPIO character device.
 * - `InvalidLine`: a line number outside the chip.
 * - `InvalidArgument`: a direction, value or interrupt type the line cannot take.
 * - `LineBusy`: the host line is used by someone else (EBUSY).
 * - `IoFailed`: a GPIO ioctl failed (errno in the cause).
 */
export type GpioErrorKind = "InvalidSpec" | "ChipMissing" | "InvalidLine" | "InvalidArgument" | "LineBusy" | "IoFailed";

export class GpioError extends Error {
  override readonly name = "GpioError";
  readonly kind: GpioErrorKind;
  constructor(kind: GpioErrorKind, message: string, options?: ErrorOptions) {
    super(message, options);
    this.kind = kind;
  }
}
