// Command parley is the Parley chat server: `parley serve` runs it,
// `parley migrate` applies database migrations, `parley version` prints the
// build.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "parley:", err)
		os.Exit(1)
	}
}

const usage = `Parley is a chat backend: accounts, contacts, groups, messaging and calls.

Usage:
  parley serve     run the server (embedded PostgreSQL unless PARLEY_DATABASE_URL is set)
  parley migrate   apply database migrations and exit
  parley bench     drive a running server with a load workload and report
  parley version   print the version
  parley help      show this help

Run "parley <command> -h" for the flags of a command; every flag can also be
set with the PARLEY_* environment variable named in its help.
`

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("no command given")
	}
	switch args[0] {
	case "serve":
		return serve(ctx, args[1:], getenv, stdout, stderr)
	case "migrate":
		return migrate(ctx, args[1:], getenv, stderr)
	case "bench":
		return bench(ctx, args[1:], stdout, stderr)
	case "version":
		fmt.Fprintln(stdout, "parley", version())
		return nil
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("unknown command %q", args[0])
	}
}
