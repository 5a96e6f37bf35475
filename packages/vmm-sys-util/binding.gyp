{
  "targets": [
    {
      "target_name": "vmm_sys_util",
      "sources": ["native/vmm_sys_util.c"],
      "cflags": ["-std=gnu11", "-Wall", "-Wextra", "-Wno-unused-parameter", "-O2"],
      "defines": ["NAPI_VERSION=8"]
    }
  ]
}
