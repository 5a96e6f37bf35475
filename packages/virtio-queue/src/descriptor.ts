// rust-vmm virtio-queue descriptor.rs: one split-ring descriptor as the device sees it (virtio 1.2 2.7.5).
import { VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE } from "./defs.js";

export class Descriptor {
  /** Guest physical address of the buffer. */
  readonly addr: bigint;
  readonly len: number;
  readonly flags: number;
  readonly next: number;

  constructor(addr: bigint, len: number, flags: number, next: number) {
    this.addr = addr;
    this.len = len;
    this.flags = flags;
    this.next = next;
  }

  /** VIRTQ_DESC_F_WRITE: the device may write the buffer (and must not read it). */
  get isWriteOnly(): boolean {
    return (this.flags & VIRTQ_DESC_F_WRITE) !== 0;
  }

  /** VIRTQ_DESC_F_NEXT. */
  get hasNext(): boolean {
    return (this.flags & VIRTQ_DESC_F_NEXT) !== 0;
  }

  /** VIRTQ_DESC_F_INDIRECT. */
  get isIndirect(): boolean {
    return (this.flags & VIRTQ_DESC_F_INDIRECT) !== 0;
  }
}
