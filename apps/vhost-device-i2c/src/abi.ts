// Kernel and virtio ABI of the i2c daemon. Each layout cites its header; test/abi.test.ts compiles a probe
// against the system's headers and compares sizes, offsets and constants.
import { defineStruct, u8, u16, u32, u64 } from "@xen-vhost/vmm-sys-util";

// ---------------------------------------------------------------- linux/i2c-dev.h, linux/i2c.h

/** linux/i2c-dev.h: `#define I2C_FUNCS 0x0705` (arg: unsigned long *). Old-style numbers, not _IOC-encoded. */
export const I2C_FUNCS = 0x0705;
/** `#define I2C_RDWR 0x0707` (arg: struct i2c_rdwr_ioctl_data *). */
export const I2C_RDWR = 0x0707;
/** `#define I2C_SLAVE 0x0703` (arg: the 7-bit address). */
export const I2C_SLAVE = 0x0703;
/** `#define I2C_SMBUS 0x0720` (arg: struct i2c_smbus_ioctl_data *). */
export const I2C_SMBUS = 0x0720;
/** `#define I2C_RDWR_IOCTL_MAX_MSGS 42`. */
export const I2C_RDWR_IOCTL_MAX_MSGS = 42;

/** linux/i2c.h i2c_msg flags. */
export const I2C_M_RD = 0x0001;

/** linux/i2c.h I2C_FUNC_* (functionality bits). */
export const I2C_FUNC_I2C = 0x00000001;
export const I2C_FUNC_SMBUS_QUICK = 0x00010000;
export const I2C_FUNC_SMBUS_READ_BYTE = 0x00020000;
export const I2C_FUNC_SMBUS_WRITE_BYTE = 0x00040000;
export const I2C_FUNC_SMBUS_READ_BYTE_DATA = 0x00080000;
export const I2C_FUNC_SMBUS_WRITE_BYTE_DATA = 0x00100000;
export const I2C_FUNC_SMBUS_READ_WORD_DATA = 0x00200000;
export const I2C_FUNC_SMBUS_WRITE_WORD_DATA = 0x00400000;
export const I2C_FUNC_SMBUS_READ_I2C_BLOCK = 0x04000000;
export const I2C_FUNC_SMBUS_WRITE_I2C_BLOCK = 0x08000000;

/** linux/i2c.h SMBus read_write and transaction sizes. */
export const I2C_SMBUS_READ = 1;
export const I2C_SMBUS_WRITE = 0;
export const I2C_SMBUS_QUICK = 0;
export const I2C_SMBUS_BYTE = 1;
export const I2C_SMBUS_BYTE_DATA = 2;
export const I2C_SMBUS_WORD_DATA = 3;
export const I2C_SMBUS_I2C_BLOCK_DATA = 8;
/** `#define I2C_SMBUS_BLOCK_MAX 32`. */
export const I2C_SMBUS_BLOCK_MAX = 32;

/** linux/i2c.h: struct i2c_msg {__u16 addr; __u16 flags; __u16 len; __u8 *buf;} (LP64: buf at 8, size 16). */
export const I2cMsg = defineStruct("i2c_msg", { size: 16, align: 8 }, {
  addr: u16(0),
  flags: u16(2),
  len: u16(4),
  buf: u64(8),
});

/** linux/i2c-dev.h: struct i2c_rdwr_ioctl_data {struct i2c_msg *msgs; __u32 nmsgs;} (LP64: 16). */
export const I2cRdwrIoctlData = defineStruct("i2c_rdwr_ioctl_data", { size: 16, align: 8 }, {
  msgs: u64(0),
  nmsgs: u32(8),
});

/** linux/i2c-dev.h: struct i2c_smbus_ioctl_data {__u8 read_write; __u8 command; __u32 size; union i2c_smbus_data *data;}. */
export const I2cSmbusIoctlData = defineStruct("i2c_smbus_ioctl_data", { size: 16, align: 8 }, {
  read_write: u8(0),
  command: u8(1),
  size: u32(4),
  data: u64(8),
});

/** linux/i2c.h: union i2c_smbus_data {__u8 byte; __u16 word; __u8 block[I2C_SMBUS_BLOCK_MAX + 2];} = 34 bytes. */
export const I2C_SMBUS_DATA_SIZE = I2C_SMBUS_BLOCK_MAX + 2;

// ---------------------------------------------------------------- virtio 1.2 section 5.18 (linux/virtio_i2c.h)

/** Device id 34. */
export const VIRTIO_ID_I2C_ADAPTER = 34;
/** VIRTIO_I2C_F_ZERO_LENGTH_REQUEST (feature bit 0): requests may have no buffer. */
export const VIRTIO_I2C_F_ZERO_LENGTH_REQUEST = 0;
/** out_hdr flags: the request is part of a group; fail the following ones if it fails. */
export const VIRTIO_I2C_FLAGS_FAIL_NEXT = 1 << 0;
/** out_hdr flags: a read (the buffer is device-writable). */
export const VIRTIO_I2C_FLAGS_M_RD = 1 << 1;
/** in_hdr status. */
export const VIRTIO_I2C_MSG_OK = 0;
export const VIRTIO_I2C_MSG_ERR = 1;

/** struct virtio_i2c_out_hdr {le16 addr; le16 padding; le32 flags;}: addr is the 7-bit address << 1. */
export const VirtioI2cOutHdr = defineStruct("virtio_i2c_out_hdr", { size: 8, align: 4 }, {
  addr: u16(0),
  padding: u16(2),
  flags: u32(4),
});

/** struct virtio_i2c_in_hdr {u8 status;}. */
export const VIRTIO_I2C_IN_HDR_SIZE = 1;

// ---------------------------------------------------------------- helpers
