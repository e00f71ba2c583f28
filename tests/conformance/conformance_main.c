/* conformance_main.c - the standalone `okv-conformance` executable (the same CLI as
 * `oscarkv conformance`). */
#include "okv_conformance.h"

int main(int argc, char **argv) { return okv_conformance_main(argc, argv); }
