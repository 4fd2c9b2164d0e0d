package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/ternmq/tern/cluster"
)

// clusterStatus is GET /api/v1/cluster as tern cluster status reads it:
// the admin package's view, with the cluster package's Status as detail.
type clusterStatus struct {
	Clustered bool `json:"clustered"`
	Nodes     []struct {
		ID      string `json:"id"`
		State   string `json:"state"`
		Version string `json:"version"`
	} `json:"nodes"`
	Detail *cluster.Status `json:"detail"`
}

func clusterCmd() *cobra.Command {
	var o adminClient
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "cluster status",
		Short: "Show the cluster as a running node sees it (through the admin API)",
		Long: `Ask a running broker's admin API for its view of the cluster
(GET /api/v1/cluster): this node's state (joining, refused, catching_up, ready,
fenced, draining) and why, and each node it knows with its state, versions and
when it was last heard. The address and credentials come from --url and
--token or --api-key, or else from the broker's configuration (-c,
TERN_CONFIG and the TERN_ADMIN_… variables), as for tern ban.`,
		Example: `  tern cluster status
  tern cluster status --url http://10.0.0.2:18083 --token s3cret --json`,
	}
	o.addFlags(cmd.PersistentFlags())
	status := &cobra.Command{
		Use:   "status",
		Short: "Show this node's state and the nodes it knows",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			var raw json.RawMessage
			if err := o.call(c.Context(), http.MethodGet, "/api/v1/cluster", nil, &raw); err != nil {
				return err
			}
			if asJSON {
				_, err := fmt.Fprintf(c.OutOrStdout(), "%s\n", raw)
				return err
			}
			var st clusterStatus
			if err := json.Unmarshal(raw, &st); err != nil {
				return fmt.Errorf("admin API: %w", err)
			}
			return printClusterStatus(c.OutOrStdout(), st)
		},
	}
	status.Flags().BoolVar(&asJSON, "json", false, "print the admin API's JSON")
	cmd.AddCommand(status)
	return cmd
}

// printClusterStatus writes st for a reader: a line about this node, then
// a table of the nodes it knows.
func printClusterStatus(w io.Writer, st clusterStatus) error {
	d := st.Detail
	if !st.Clustered || d == nil {
		id := ""
		if len(st.Nodes) > 0 {
			id = st.Nodes[0].ID
		}
		_, err := fmt.Fprintf(w, "not clustered (cluster.listen is empty): one node, %s\n", id)
		return err
	}
	fmt.Fprintf(w, "cluster %s, node %s: %s\n", d.Cluster, d.Node, d.State)
	if d.Reason != "" {
		fmt.Fprintf(w, "reason: %s\n", d.Reason)
	}
	routes := d.Routes
	if routes == "" {
		routes = "none (a cluster of one)"
	}
	fmt.Fprintf(w, "route listener: %s; replicas: %d; remote routes: %d\n\n", routes, d.Replicas, d.RemoteRoutes)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tSTATE\tVERSION\tWIRE\tMQTT\tLAST HEARD")
	for _, n := range d.Nodes {
		state, heard := "gone", "-"
		switch {
		case n.Self:
			state, heard = d.State+" (this node)", "-"
		case n.Incompatible:
			state = "incompatible"
		case n.Alive:
			state = "alive"
		}
		if !n.Self && !n.Renewed.IsZero() {
			heard = time.Since(n.Renewed).Round(100*time.Millisecond).String() + " ago"
		}
		mqtt := n.MQTT
		if mqtt == "" {
			mqtt = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\n", n.Name, state, n.Version, n.Wire, mqtt, heard)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if js := d.JetStream; js != nil {
		return printStreams(w, js)
	}
	return nil
}

// printStreams writes the JetStream streams' state: a stream whose
// replicas are not current cannot lose its leader without stopping.
func printStreams(w io.Writer, js *cluster.JetStreamStatus) error {
	meta := js.MetaLeader
	if meta == "" {
		meta = "none (an election?)"
	}
	fmt.Fprintf(w, "\nJetStream meta leader: %s\n", meta)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "STREAM\tLEADER\tMESSAGES\tREPLICAS")
	for _, s := range js.Streams {
		leader := s.Leader
		if leader == "" {
			leader = "none"
		}
		var reps []string
		for _, r := range s.Replicas {
			state := "current"
			switch {
			case r.Offline:
				state = "offline"
			case !r.Current:
				state = fmt.Sprintf("behind %d, heard %.1fs ago", r.Lag, r.Active)
			}
			reps = append(reps, r.Node+" "+state)
		}
		if s.Error != "" {
			reps = append(reps, "error: "+s.Error)
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\n", s.Name, leader, s.Messages, strings.Join(reps, "; "))
	}
	return tw.Flush()
}
