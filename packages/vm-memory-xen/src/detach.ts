// After a mapping is released every view of it must read as length 0 (no use-after-unmap). vmm-sys-util's
// munmap detaches the ArrayBuffer itself; a transport that hands out ordinary ArrayBuffers (a simulator)
// may not, so a buffer still attached after the transport released it is detached here by transferring it.

/** Detaches `buffer` if it is still attached. Never throws. */
export function ensureDetached(buffer: ArrayBuffer): void {
  if (buffer.byteLength === 0 || (buffer as { detached?: boolean }).detached === true) return;
  try {
    structuredClone(buffer, { transfer: [buffer] });
  } catch {
    // Not transferable (e.g. an external buffer the transport still owns): nothing more we can do here.
  }
}
