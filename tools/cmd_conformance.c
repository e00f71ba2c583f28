/* cmd_conformance.c - `oscarkv conformance`: the case table of tests/conformance. */
#include "cli.h"
#include "okv_conformance.h"

int cmd_conformance(int argc, char **argv) { return okv_conformance_main(argc, argv); }
