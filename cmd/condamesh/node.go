package main

import (
	"fmt"
	"text/tabwriter"

	v1 "github.com/condamesh/condamesh/gen/condamesh/v1"
	"github.com/condamesh/condamesh/gen/condamesh/v1/condameshv1connect"
	"github.com/spf13/cobra"
)

func (c *conn) cluster() (condameshv1connect.ClusterServiceClient, error) {
	b, err := c.base()
	if err != nil {
		return nil, err
	}
	return condameshv1connect.NewClusterServiceClient(c.http(), b), nil
}

// newNode is `condamesh node`: cluster membership, asked of the node at
// --server (server owners only).
func newNode() *cobra.Command {
	var c conn
	cmd := &cobra.Command{Use: "node", Short: "Cluster membership: join, leave, list, status, remove"}
	c.flags(cmd)
	var listOut, statusOut output
	join := &cobra.Command{
		Use:   "join PEER...",
		Short: "Join the node at --server and the cluster of PEER (gossip host:port of a member, or of a node waiting to join)",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := c.cluster()
			if err != nil {
				return err
			}
			res, err := cl.Join(cmd.Context(), &v1.JoinRequest{Peers: args})
			if err != nil {
				return friendly(err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "joined: %d of %d peers answered\n", res.Joined, len(args))
			return nil
		},
	}
	leave := &cobra.Command{
		Use:   "leave",
		Short: "Leave the cluster gracefully (leadership handed over, removed from Raft, gossip leave); the node then stops",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, err := c.cluster()
			if err != nil {
				return err
			}
			if _, err := cl.Leave(cmd.Context(), &v1.LeaveRequest{}); err != nil {
				return friendly(err)
			}
			fmt.Fprintln(cmd.OutOrStdout(), "left the cluster; the node stops")
			return nil
		},
	}
	list := &cobra.Command{
		Use: "list", Short: "List the cluster's nodes", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if listOut.isJSON() {
				return c.printREST(cmd, "/api/cluster/nodes")
			}
			cl, err := c.cluster()
			if err != nil {
				return err
			}
			res, err := cl.ListNodes(cmd.Context(), &v1.ListNodesRequest{})
			if err != nil {
				return friendly(err)
			}
			return writeTable(cmd.OutOrStdout(), func(tw *tabwriter.Writer) {
				fmt.Fprintln(tw, "ID\tSITE\tRAFT\tGOSSIP\tAPPLIED\tCONTACT\tHTTP\tVERSION")
				for _, n := range res.Nodes {
					contact := "-"
					if n.LastContactMs >= 0 {
						contact = fmt.Sprintf("%dms", n.LastContactMs)
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\n", n.Id, dash(n.Site), n.RaftState, n.Status, n.AppliedIndex, contact, dash(n.HttpUrl), dash(n.Version))
				}
			})
		},
	}
	status := &cobra.Command{
		Use: "status", Short: "Show the node at --server in detail", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if statusOut.isJSON() {
				return c.printREST(cmd, "/api/cluster/status")
			}
			cl, err := c.cluster()
			if err != nil {
				return err
			}
			n, err := cl.GetStatus(cmd.Context(), &v1.GetStatusRequest{})
			if err != nil {
				return friendly(err)
			}
			return writeTable(cmd.OutOrStdout(), func(tw *tabwriter.Writer) {
				for _, kv := range [][2]any{
					{"id", n.Id}, {"site", dash(n.Site)}, {"raft state", n.RaftState}, {"voter", n.Voter}, {"leader", dash(n.LeaderId)},
					{"term", n.Term}, {"applied index", n.AppliedIndex}, {"commit index", n.CommitIndex}, {"last contact ms", n.LastContactMs},
					{"ready", n.Ready}, {"halted", dash(n.Halted)}, {"http", n.HttpUrl}, {"raft", n.RaftAddr}, {"gossip", n.GossipAddr}, {"version", dash(n.Version)},
				} {
					fmt.Fprintf(tw, "%v:\t%v\n", kv[0], kv[1])
				}
			})
		},
	}
	remove := &cobra.Command{
		Use: "remove ID", Short: "Remove a dead node from the cluster (refused if it would lose quorum)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := c.cluster()
			if err != nil {
				return err
			}
			if _, err := cl.RemoveNode(cmd.Context(), &v1.RemoveNodeRequest{Id: args[0]}); err != nil {
				return friendly(err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "removed %s\n", args[0])
			return nil
		},
	}
	listOut.addFlag(list)
	statusOut.addFlag(status)
	cmd.AddCommand(join, leave, list, status, remove)
	return cmd
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
