package main

import (
	"fmt"

	"github.com/condamesh/condamesh/node"
	"github.com/spf13/cobra"
)

// newAdmin is `condamesh admin`: break-glass commands run on a stopped
// node's data directory.
func newAdmin() *cobra.Command {
	cmd := &cobra.Command{Use: "admin", Short: "Break-glass commands on a stopped node's data directory"}
	cfg := node.DefaultConfig()
	var newKey bool
	var logLevel string
	restore := &cobra.Command{
		Use:   "restore-owner USER",
		Short: "Give USER the server role owner (creating it if needed); run with the node stopped",
		Long: `Gives USER the server role owner through the node's own Raft log, for when no
owner is left or every owner's key is lost. Stop the node first: the command opens
its data directory (which a running node locks), applies the change, and exits. A
new user, or --new-key, gets an API key, printed once.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			logger, err := newLogger(cmd.ErrOrStderr(), logLevel, "text")
			if err != nil {
				return usageError{err}
			}
			cfg.Logger = logger
			key, created, err := node.RestoreOwner(cmd.Context(), cfg, args[0], newKey)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if created {
				fmt.Fprintf(out, "created user %q with the server role owner\n", args[0])
			} else {
				fmt.Fprintf(out, "user %q has the server role owner\n", args[0])
			}
			if key != "" {
				fmt.Fprintf(out, "Its new API key is shown only now:\n\n    %s\n\n", key)
			}
			return nil
		},
	}
	f := restore.Flags()
	f.StringVar(&cfg.DataDir, "data-dir", cfg.DataDir, "data directory of the stopped node")
	f.StringVar(&cfg.KeySecretFile, "api-key-secret-file", "", "as for serve (default <data-dir>/api-key-secret)")
	f.BoolVar(&newKey, "new-key", false, "also issue a new API key for an existing user")
	f.StringVar(&logLevel, "log-level", "warn", "log level: debug, info, warn, error")
	cmd.AddCommand(restore)
	return cmd
}
