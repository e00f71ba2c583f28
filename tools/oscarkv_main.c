/* oscarkv_main.c - the `oscarkv` command line: devices, calibrate, demo, conformance. */
#include "cli.h"
#include "oscarkv/oscarkv.h"

#include <stdio.h>
#include <string.h>

static void usage(FILE *f)
{
    fprintf(f, "usage: oscarkv <command> [options]\n"
               "  devices                      backends, devices, and why a backend is unavailable\n"
               "  calibrate IN_DIR OUT.safetensors [options]\n"
               "                               rotations from layer_{i}/q.npy,k.npy,v.npy dumps\n"
               "  demo [--backend NAME] [--data DIR] [--synthetic]\n"
               "                               calibrate + INT2 cache + decode attention on a sample\n"
               "  conformance [--backend NAME] [--filter S] [--list] [--quick]\n"
               "                               run the conformance case table\n"
               "  version                      print the library version\n"
               "Run `oscarkv <command> --help` for a command's options.\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "devices") == 0) return cmd_devices(argc - 1, argv + 1);
    if (strcmp(cmd, "calibrate") == 0) return cmd_calibrate(argc - 1, argv + 1);
    if (strcmp(cmd, "demo") == 0) return cmd_demo(argc - 1, argv + 1);
    if (strcmp(cmd, "conformance") == 0) return cmd_conformance(argc - 1, argv + 1);
    if (strcmp(cmd, "version") == 0) {
        int32_t a, b, c;
        okv_get_version(&a, &b, &c);
        printf("oscarkv %d.%d.%d\n", a, b, c);
        return 0;
    }
    if (strcmp(cmd, "-h") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "help") == 0) {
        usage(stdout);
        return 0;
    }
    fprintf(stderr, "oscarkv: unknown command '%s'\n", cmd);
    usage(stderr);
    return 2;
}
