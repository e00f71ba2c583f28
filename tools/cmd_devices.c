/* cmd_devices.c - `oscarkv devices`: every backend, whether it can run, and why not. */
#include "cli.h"
#include "oscarkv/oscarkv.h"

#include <stdio.h>

int cmd_devices(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    int32_t n = 0;
    if (okv_backend_count(&n) != OKV_SUCCESS) return 1;
    int any = 0;
    for (int32_t i = 0; i < n; ++i) {
        okv_backend_info_t bi;
        okv_backend_info_init(&bi);
        if (okv_backend_get_info(i, &bi) != OKV_SUCCESS) continue;
        printf("%-7s %s\n", bi.name, bi.available ? "available" : bi.reason);
        for (int32_t dev = 0; bi.available && dev < bi.device_count; ++dev) {
            okv_device_info_t di;
            okv_device_info_init(&di);
            okv_status_t st = okv_device_get_info(bi.name, dev, &di);
            if (st != OKV_SUCCESS) {
                printf("        [%d] %s\n", dev, okv_status_string(st));
                continue;
            }
            printf("        [%d] %s (%s%s%s) %.1f GiB, %d CUs, simd %d, fp64 %s, fp16 %s, subgroups %s\n", dev, di.name,
                   di.vendor, di.driver[0] ? ", " : "", di.driver, di.global_mem_bytes / 1073741824.0, di.compute_units,
                   di.warp_size, di.has_fp64 ? "yes" : "no", di.has_fp16 ? "yes" : "no",
                   di.has_subgroups ? "yes" : "no");
        }
        any |= bi.available;
    }
    return any ? 0 : 1;
}
