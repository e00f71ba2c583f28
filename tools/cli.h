/* cli.h - the subcommands of the `oscarkv` command line. Each returns the exit code. */
#ifndef OKV_CLI_H
#define OKV_CLI_H

int cmd_devices(int argc, char **argv);
int cmd_calibrate(int argc, char **argv);
int cmd_demo(int argc, char **argv);
int cmd_conformance(int argc, char **argv);

#endif
