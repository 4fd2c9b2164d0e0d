// Command tern is the Tern MQTT broker and its tools.
//
//	tern serve            run the broker (127.0.0.1:1883 by default)
//	tern version          print the version
//	tern passwd           manage a password file (as mosquitto_passwd)
//	tern pub              publish a message (as mosquitto_pub)
//	tern sub              subscribe and print messages (as mosquitto_sub)
//	tern ban              list, add and lift bans (through the admin API)
//	tern healthcheck      exit 0 when the broker is ready (/readyz), 1 otherwise
//	tern cluster status   the cluster as a running node sees it (through the admin API)
package main

import (
	"errors"
	"fmt"
	"os"
	"runtime"

	"github.com/spf13/cobra"
)

func main() {
	// Heap profiling samples allocations and keeps a record for each
	// sample; nothing reads them unless asked (TERN_MEMPROFILE=1).
	if os.Getenv("TERN_MEMPROFILE") == "" {
		runtime.MemProfileRate = 0
	}
	root := rootCmd()
	root.SetArgs(joinPropertyArgs(os.Args[1:]))
	if err := root.Execute(); err != nil {
		os.Exit(exitCode(err))
	}
}

// exitCode is tern's exit status after err: 27 when tern sub's -W passed
// (as mosquitto_sub), 1 otherwise.
func exitCode(err error) int {
	if errors.Is(err, errTimedOut) {
		return exitTimedOut
	}
	return 1
}

func rootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "tern",
		Short:         "Tern is a fast, embeddable MQTT 3.1, 3.1.1 and 5.0 broker",
		SilenceUsage:  true,
		SilenceErrors: false,
	}
	root.AddCommand(serveCmd(), versionCmd(), benchCmd(), passwdCmd(), pubCmd(), subCmd(), banCmd(), healthcheckCmd(), clusterCmd())
	return root
}

func versionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Run: func(cmd *cobra.Command, _ []string) {
			fmt.Fprintln(cmd.OutOrStdout(), "tern", version())
		},
	}
}
