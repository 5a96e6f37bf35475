// Kernel and virtio ABI of the gpio daemon, each citing its header; test/abi.test.ts compiles a probe
// against the system's <linux/gpio.h> and <linux/virtio_gpio.h> and compares.
import { _IOR, _IOWR, defineStruct, bytes, i32, u8, u16, u32, u64 } from "@xen-vhost/vmm-sys-util";

// ---------------------------------------------------------------- virtio 1.2 section 5.19 (linux/virtio_gpio.h)

/** Device id 41. */
export const VIRTIO_ID_GPIO = 41;
/** Feature bit 0: interrupts through the event queue. */
export const VIRTIO_GPIO_F_IRQ = 0;

export const VIRTIO_GPIO_MSG_GET_NAMES = 0x0001;
export const VIRTIO_GPIO_MSG_GET_DIRECTION = 0x0002;
export const VIRTIO_GPIO_MSG_SET_DIRECTION = 0x0003;
export const VIRTIO_GPIO_MSG_GET_VALUE = 0x0004;
export const VIRTIO_GPIO_MSG_SET_VALUE = 0x0005;
export const VIRTIO_GPIO_MSG_IRQ_TYPE = 0x0006;

export const VIRTIO_GPIO_STATUS_OK = 0x0;
export const VIRTIO_GPIO_STATUS_ERR = 0x1;

export const VIRTIO_GPIO_DIRECTION_NONE = 0x00;
export const VIRTIO_GPIO_DIRECTION_OUT = 0x01;
export const VIRTIO_GPIO_DIRECTION_IN = 0x02;

export const VIRTIO_GPIO_IRQ_TYPE_NONE = 0x00;
export const VIRTIO_GPIO_IRQ_TYPE_EDGE_RISING = 0x01;
export const VIRTIO_GPIO_IRQ_TYPE_EDGE_FALLING = 0x02;
export const VIRTIO_GPIO_IRQ_TYPE_EDGE_BOTH = 0x03;
export const VIRTIO_GPIO_IRQ_TYPE_LEVEL_HIGH = 0x04;
export const VIRTIO_GPIO_IRQ_TYPE_LEVEL_LOW = 0x08;

export const VIRTIO_GPIO_IRQ_STATUS_INVALID = 0x0;
export const VIRTIO_GPIO_IRQ_STATUS_VALID = 0x1;

/** struct virtio_gpio_config {__le16 ngpio; __u8 padding[2]; __le32 gpio_names_size;} */
export const VirtioGpioConfig = defineStruct("virtio_gpio_config", { size: 8, align: 4 }, {
  ngpio: u16(0),
  padding: bytes(2, 2),
  gpio_names_size: u32(4),
});

/** struct virtio_gpio_request {__le16 type; __le16 gpio; __le32 value;} */
export const VirtioGpioRequest = defineStruct("virtio_gpio_request", { size: 8, align: 4 }, {
  type: u16(0),
  gpio: u16(2),
  value: u32(4),
});

/** struct virtio_gpio_response {__u8 status; __u8 value;} (GET_NAMES: status + value[gpio_names_size]) */
export const VirtioGpioResponse = defineStruct("virtio_gpio_response", { size: 2, align: 1 }, {
  status: u8(0),
  value: u8(1),
});

/** struct virtio_gpio_irq_request {__le16 gpio;} */
export const VirtioGpioIrqRequest = defineStruct("virtio_gpio_irq_request", { size: 2, align: 2 }, { gpio: u16(0) });

/** struct virtio_gpio_irq_response {__u8 status;} */
export const VirtioGpioIrqResponse = defineStruct("virtio_gpio_irq_response", { size: 1, align: 1 }, { status: u8(0) });

// ---------------------------------------------------------------- linux/gpio.h (GPIO character device, uAPI v2)

export const GPIO_MAX_NAME_SIZE = 32;
export const GPIO_V2_LINES_MAX = 64;
export const GPIO_V2_LINE_NUM_ATTRS_MAX = 10;

/** enum gpio_v2_line_flag */
export const GPIO_V2_LINE_FLAG_USED = 1n << 0n;
export const GPIO_V2_LINE_FLAG_ACTIVE_LOW = 1n << 1n;
export const GPIO_V2_LINE_FLAG_INPUT = 1n << 2n;
export const GPIO_V2_LINE_FLAG_OUTPUT = 1n << 3n;
export const GPIO_V2_LINE_FLAG_EDGE_RISING = 1n << 4n;
export const GPIO_V2_LINE_FLAG_EDGE_FALLING = 1n << 5n;

/** enum gpio_v2_line_attr_id */
export const GPIO_V2_LINE_ATTR_ID_FLAGS = 1;
export const GPIO_V2_LINE_ATTR_ID_OUTPUT_VALUES = 2;
export const GPIO_V2_LINE_ATTR_ID_DEBOUNCE = 3;

/** enum gpio_v2_line_event_id */
export const GPIO_V2_LINE_EVENT_RISING_EDGE = 1;
export const GPIO_V2_LINE_EVENT_FALLING_EDGE = 2;

/** struct gpiochip_info {char name[32]; char label[32]; __u32 lines;} */
export const GpiochipInfo = defineStruct("gpiochip_info", { size: 68, align: 4 }, {
  name: bytes(0, 32),
  label: bytes(32, 32),
  lines: u32(64),
});

/** struct gpio_v2_line_attribute {__u32 id; __u32 padding; union {__aligned_u64 flags, values; __u32 debounce_period_us;};} */
export const GpioV2LineAttribute = defineStruct("gpio_v2_line_attribute", { size: 16, align: 8 }, {
  id: u32(0),
  padding: u32(4),
  value: u64(8),
});

/** struct gpio_v2_line_config_attribute {struct gpio_v2_line_attribute attr; __aligned_u64 mask;} */
export const GpioV2LineConfigAttribute = defineStruct("gpio_v2_line_config_attribute", { size: 24, align: 8 }, {
  attr: bytes(0, 16),
  mask: u64(16),
});

/** struct gpio_v2_line_config {__aligned_u64 flags; __u32 num_attrs; __u32 padding[5]; struct gpio_v2_line_config_attribute attrs[10];} */
export const GpioV2LineConfig = defineStruct("gpio_v2_line_config", { size: 272, align: 8 }, {
  flags: u64(0),
  num_attrs: u32(8),
  padding: bytes(12, 20),
  attrs: bytes(32, 240),
});

/**
 * struct gpio_v2_line_request {__u32 offsets[64]; char consumer[32]; struct gpio_v2_line_config config;
 * __u32 num_lines; __u32 event_buffer_size; __u32 padding[5]; __s32 fd;}
 */
export const GpioV2LineRequest = defineStruct("gpio_v2_line_request", { size: 592, align: 8 }, {
  offsets: bytes(0, 256),
  consumer: bytes(256, 32),
  config: bytes(288, 272),
  num_lines: u32(560),
  event_buffer_size: u32(564),
  padding: bytes(568, 20),
  fd: i32(588),
});

/**
 * struct gpio_v2_line_info {char name[32]; char consumer[32]; __u32 offset; __u32 num_attrs;
 * __aligned_u64 flags; struct gpio_v2_line_attribute attrs[10]; __u32 padding[4];}
 */
export const GpioV2LineInfo = defineStruct("gpio_v2_line_info", { size: 256, align: 8 }, {
  name: bytes(0, 32),
  consumer: bytes(32, 32),
  offset: u32(64),
  num_attrs: u32(68),
  flags: u64(72),
  attrs: bytes(80, 160),
  padding: bytes(240, 16),
});

/** struct gpio_v2_line_values {__aligned_u64 bits; __aligned_u64 mask;} */
export const GpioV2LineValues = defineStruct("gpio_v2_line_values", { size: 16, align: 8 }, {
  bits: u64(0),
  mask: u64(8),
});

/** struct gpio_v2_line_event {__aligned_u64 timestamp_ns; __u32 id; __u32 offset; __u32 seqno; __u32 line_seqno; __u32 padding[6];} */
export const GpioV2LineEvent = defineStruct("gpio_v2_line_event", { size: 48, align: 8 }, {
  timestamp_ns: u64(0),
  id: u32(8),
  offset: u32(12),
  seqno: u32(16),
  line_seqno: u32(20),
  padding: bytes(24, 24),
});

/** #define GPIO_GET_CHIPINFO_IOCTL _IOR(0xB4, 0x01, struct gpiochip_info) */
export const GPIO_GET_CHIPINFO_IOCTL = _IOR(0xb4, 0x01, GpiochipInfo.size);
/** #define GPIO_V2_GET_LINEINFO_IOCTL _IOWR(0xB4, 0x05, struct gpio_v2_line_info) */
export const GPIO_V2_GET_LINEINFO_IOCTL = _IOWR(0xb4, 0x05, GpioV2LineInfo.size);
/** #define GPIO_V2_GET_LINE_IOCTL _IOWR(0xB4, 0x07, struct gpio_v2_line_request) */
export const GPIO_V2_GET_LINE_IOCTL = _IOWR(0xb4, 0x07, GpioV2LineRequest.size);
/** #define GPIO_V2_LINE_SET_CONFIG_IOCTL _IOWR(0xB4, 0x0D, struct gpio_v2_line_config) */
export const GPIO_V2_LINE_SET_CONFIG_IOCTL = _IOWR(0xb4, 0x0d, GpioV2LineConfig.size);
/** #define GPIO_V2_LINE_GET_VALUES_IOCTL _IOWR(0xB4, 0x0E, struct gpio_v2_line_values) */
export const GPIO_V2_LINE_GET_VALUES_IOCTL = _IOWR(0xb4, 0x0e, GpioV2LineValues.size);
/** #define GPIO_V2_LINE_SET_VALUES_IOCTL _IOWR(0xB4, 0x0F, struct gpio_v2_line_values) */
export const GPIO_V2_LINE_SET_VALUES_IOCTL = _IOWR(0xb4, 0x0f, GpioV2LineValues.size);

/** A NUL-terminated C string out of a char array. */
export function cString(b: Uint8Array): string {
  const end = b.indexOf(0);
  return new TextDecoder().decode(end < 0 ? b : b.subarray(0, end));
}
