// One error class for the i2c daemon: a bad adapter list, a missing adapter node, and transfer failures,
// which the virtio-i2c device turns into VIRTIO_I2C_MSG_ERR for the guest.

/**
 * - `InvalidSpec`: the -l adapter list is malformed (bad bus, address, device type, duplicate address).
 * - `AdapterMissing`: /dev/i2c-N does not exist or cannot be opened.
 * - `Unsupported`: the adapter cannot do this transfer (no I2C_FUNC_I2C and no matching SMBus function).
 * - `NoDevice`: nothing answers at the address (NACK).
 * - `TransferFailed`: the adapter reported an error (errno in the cause).
 */
export type I2cErrorKind = "InvalidSpec" | "AdapterMissing" | "Unsupported" | "NoDevice" | "TransferFailed";

export class I2cError extends Error {
  override readonly name = "I2cError";
  readonly kind: I2cErrorKind;
  constructor(kind: I2cErrorKind, message: string, options?: ErrorOptions) {
    super(message, options);
    this.kind = kind;
  }
}
