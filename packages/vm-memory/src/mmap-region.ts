// rust-vmm vm-memory mmap.rs `MmapRegion` / `GuestRegionMmap`: guest memory backed by a shared file mapping.
// The usual backing is a memfd (memfd_create(2)): anonymous shared memory whose fd a vhost-user front-end
// sends to the backend, which maps the same pages. MAP_SHARED is required for that; a private mapping
// would give the backend a copy.
import { SysError, addressOf, close as closeFd, ftruncate, memfdCreate, mmap, munmap, pageSize } from "@xen-vhost/vmm-sys-util";
import { GuestMemoryError, hex } from "./error.js";
import { GuestAddress, type GuestAddressLike } from "./guest-address.js";
import { MappedRegion } from "./guest-memory-region.js";
import type { VhostUserRegionDescription } from "./vhost-user.js";

export interface MemfdRegionOptions {
  /** memfd name, visible in /proc/<pid>/fd (default "guest-ram@<base>"). */
  name?: string;
}

export interface FdRegionOptions {
  /** Offset of the region in the file, a multiple of the page size (default 0). */
  fileOffset?: bigint | number;
  /** Close `fd` when the region is closed (default false: the caller keeps ownership). */
  ownsFd?: boolean;
}

function checkSize(size: number): void {
  if (!Number.isSafeInteger(size) || size <= 0) throw new RangeError(`region size ${size} must be a positive integer`);
  if (size % pageSize() !== 0) throw new RangeError(`region size ${size} is not a multiple of the page size`);
}

function mapFailed(what: string, cause: unknown): GuestMemoryError {
  const code = cause instanceof SysError ? cause.code : String(cause);
  return new GuestMemoryError("MapFailed", `${what}: ${code}`, { cause });
}

/** A region backed by a shared mapping of an fd (a memfd by default). */
export class MmapRegion extends MappedRegion {
  /** The backing fd (sent to vhost-user backends). Stays open until close(). */
  readonly fd: number;
  /** Offset of the region in `fd`. */
  readonly fileOffset: bigint;
  /** The mapping's address in this process (vhost-user's `userspace_addr`). */
  readonly userAddr: bigint;

  /** Whether close() closes the fd; a holder object because the close hook is made before `this` exists. */
  readonly #owner: { owns: boolean };

  private constructor(guestBase: GuestAddress, buffer: ArrayBuffer, fd: number, fileOffset: bigint, ownsFd: boolean) {
    const owner = { owns: ownsFd };
    super(guestBase, buffer, () => {
      if (owner.owns) closeFd(fd);
    });
    this.#owner = owner;
    this.fd = fd;
    this.fileOffset = fileOffset;
    this.userAddr = addressOf(new Uint8Array(buffer, 0, 1));
  }

  /**
   * Creates a memfd of `size` bytes (zero-filled) and maps it shared at `guestBase`.
   * @throws RangeError for a size that is not a positive multiple of the page size.
   * @throws GuestMemoryError `MapFailed` (cause: SysError) if memfd_create, ftruncate or mmap fails;
   *   `InvalidRegion` if the region would end above 2^64 - 1. Nothing is left open on failure.
   */
  static memfd(guestBase: GuestAddressLike, size: number, options: MemfdRegionOptions = {}): MmapRegion {
    const base = GuestAddress.from(guestBase);
    checkSize(size);
    let fd: number;
    try {
      fd = memfdCreate(options.name ?? `guest-ram@${hex(base.value)}`);
    } catch (e) {
      throw mapFailed("memfd_create", e);
    }
    try {
      ftruncate(fd, size);
      return MmapRegion.#map(base, size, fd, 0n, true);
    } catch (e) {
      closeFd(fd);
      throw e instanceof GuestMemoryError ? e : mapFailed(`memfd of ${size} bytes`, e);
    }
  }

  /**
   * Maps `size` bytes of `fd` at `fileOffset` shared, as guest memory at `guestBase` (e.g. a memfd received
   * from a peer). The fd stays the caller's unless `ownsFd`.
   * @throws GuestMemoryError `MapFailed` (cause: SysError) if mmap fails.
   */
  static fromFd(fd: number, guestBase: GuestAddressLike, size: number, options: FdRegionOptions = {}): MmapRegion {
    if (!Number.isInteger(fd) || fd < 0) throw new RangeError(`invalid fd ${fd}`);
    checkSize(size);
    const off = BigInt(options.fileOffset ?? 0);
    if (off < 0n || off % BigInt(pageSize()) !== 0n) throw new RangeError(`file offset ${off} is not a non-negative multiple of the page size`);
    return MmapRegion.#map(GuestAddress.from(guestBase), size, fd, off, options.ownsFd ?? false);
  }

  static #map(base: GuestAddress, size: number, fd: number, fileOffset: bigint, ownsFd: boolean): MmapRegion {
    // Checked before mapping so a region that cannot be used never exists.
    if (base.value + BigInt(size) > 1n << 64n)
      throw new GuestMemoryError("InvalidRegion", `region at ${base.toString()} ends above 2^64 - 1`, { address: base.value });
    let buffer: ArrayBuffer;
    try {
      buffer = mmap(size, { fd, offset: fileOffset });
    } catch (e) {
      throw mapFailed(`mmap of ${size} bytes at ${base.toString()}`, e);
    }
    try {
      return new MmapRegion(base, buffer, fd, fileOffset, ownsFd);
    } catch (e) {
      munmap(buffer);
      throw e;
    }
  }

  /** Takes ownership of the fd: close() will close it. */
  adoptFd(): void {
    this.#owner.owns = true;
  }

  override vhostUserDescription(): VhostUserRegionDescription {
    if (this.closed) throw new GuestMemoryError("Closed", `region at ${this.guestBase.toString()} is closed`);
    return {
      guest_phys_addr: this.guestBase.value,
      memory_size: BigInt(this.size),
      userspace_addr: this.userAddr,
      mmap_offset: this.fileOffset,
      fd: this.fd,
    };
  }
}
