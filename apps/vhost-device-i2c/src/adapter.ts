// An I2C adapter as the virtio-i2c device uses it: a bus that runs a transfer of one or more messages
// (repeated START between them, STOP at the end), like the kernel's i2c_transfer(). Passthrough adapters
// (/dev/i2c-N) and simulated ones implement it.

/** One message of a transfer. For reads `data` is filled in by the adapter. */
export interface I2cMessage {
  /** 7-bit address. */
  readonly addr: number;
  readonly read: boolean;
  readonly data: Uint8Array;
}

export interface I2cAdapter extends Disposable {
  /** For logs ("/dev/i2c-1", "sim"). */
  readonly name: string;
  /** The client addresses this adapter serves (requests to others never reach it). */
  readonly addresses: readonly number[];
  /**
   * Runs the messages as one transfer.
   * @throws I2cError NoDevice / TransferFailed / Unsupported: nothing is reported as done.
   */
  transfer(msgs: readonly I2cMessage[]): void;
  close(): void;
}
