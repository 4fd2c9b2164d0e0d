package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/ternmq/tern/admin"
	"github.com/ternmq/tern/hooks/ban"
)

// banOptions are the flags of tern ban.
type banOptions struct {
	adminClient
	offline bool
	file    string
	reason  string
	forTime string
	until   string
	json    bool
}

func banCmd() *cobra.Command {
	var o banOptions
	cmd := &cobra.Command{
		Use:   "ban (list | add KIND WHO | delete KIND WHO)",
		Short: "List, add and lift bans of client ids, user names and addresses",
		Long: `Manage the broker's ban list. KIND is clientid, username or address (an IP
or a CIDR range); a banned client gets CONNACK 0x8A (3.1.1: 5), and banning
a connected client disconnects it.

By default tern ban goes through the running broker's admin API
(/api/v1/bans): its address and credentials come from --url and --token or
--api-key, or else from the broker's configuration (-c, TERN_CONFIG and the
TERN_ADMIN_… variables: admin.listen, admin.token, admin.api_keys).

With --offline it edits the ban list's file (bans.file, or bans/bans.json
in persistence.data_dir) directly, for a broker that is not running; the
broker locks the file while it runs, and tern ban then refuses. The data
directory must be one the broker has used (the store refuses to start in a
directory that holds something else but no store).`,
		Example: `  tern ban list
  tern ban add clientid dev-42 --for 2h --reason "reconnect loop"
  tern ban add address 203.0.113.0/24
  tern ban delete username mallory
  tern ban -c /etc/tern/tern.yaml --offline list`,
	}
	pf := cmd.PersistentFlags()
	o.addFlags(pf)
	o.downHint = "; --offline edits the file of one that is not"
	pf.BoolVar(&o.offline, "offline", false, "edit the ban file of a broker that is not running")
	pf.StringVar(&o.file, "file", "", "with --offline: the ban file (default: from the configuration)")

	list := &cobra.Command{
		Use:   "list",
		Short: "List the bans in force",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			bans, err := o.list(c.Context())
			if err != nil {
				return err
			}
			return printBans(c.OutOrStdout(), bans, o.json)
		},
	}
	list.Flags().BoolVar(&o.json, "json", false, "print JSON")
	add := &cobra.Command{
		Use:   "add KIND WHO",
		Short: "Ban a client id, user name or address",
		Args:  cobra.ExactArgs(2),
		RunE: func(c *cobra.Command, args []string) error {
			b, err := o.add(c.Context(), args[0], args[1])
			if err != nil {
				return err
			}
			return printBans(c.OutOrStdout(), []admin.Ban{b}, false)
		},
	}
	add.Flags().StringVar(&o.forTime, "for", "", "how long: 90m, 12h, 7d (default: for ever)")
	add.Flags().StringVar(&o.until, "until", "", "until when, RFC 3339 (2027-01-31T00:00:00Z)")
	add.Flags().StringVar(&o.reason, "reason", "", "why, kept with the ban")
	del := &cobra.Command{
		Use:     "delete KIND WHO",
		Aliases: []string{"rm", "lift"},
		Short:   "Lift a ban",
		Args:    cobra.ExactArgs(2),
		RunE: func(c *cobra.Command, args []string) error {
			if err := o.delete(c.Context(), args[0], args[1]); err != nil {
				return err
			}
			fmt.Fprintf(c.OutOrStdout(), "ban of %s %s lifted\n", args[0], args[1])
			return nil
		},
	}
	cmd.AddCommand(list, add, del)
	return cmd
}

// openFile opens the ban file for --offline.
func (o *banOptions) openFile() (*ban.List, error) {
	file := o.file
	if file == "" {
		cfg, err := o.loadConfig()
		if err != nil {
			return nil, err
		}
		if file = cfg.BansFile(); file == "" {
			return nil, errors.New("no ban file: persistence.durability is off and bans.file is not set (use --file)")
		}
		if cfg.Bans.File == "" {
			if entries, err := os.ReadDir(cfg.Persistence.DataDir); err != nil || len(entries) == 0 {
				return nil, fmt.Errorf("%s holds no store yet: start the broker once, or set bans.file (--file)", cfg.Persistence.DataDir)
			}
		}
	}
	l, err := ban.New(ban.Options{File: file})
	if errors.Is(err, ban.ErrLocked) {
		return nil, fmt.Errorf("%s is locked by a running broker: drop --offline to go through its admin API", file)
	}
	return l, err
}

func (o *banOptions) list(ctx context.Context) ([]admin.Ban, error) {
	if o.offline {
		l, err := o.openFile()
		if err != nil {
			return nil, err
		}
		defer l.Close()
		return banAdapter{l}.List(), nil
	}
	var out []admin.Ban
	for page := 1; ; page++ {
		var p admin.Page[admin.Ban]
		if err := o.call(ctx, http.MethodGet, fmt.Sprintf("/api/v1/bans?limit=1000&page=%d", page), nil, &p); err != nil {
			return nil, err
		}
		out = append(out, p.Data...)
		if !p.Meta.HasNext {
			return out, nil
		}
	}
}

func (o *banOptions) add(ctx context.Context, kind, who string) (admin.Ban, error) {
	req := admin.BanRequest{As: kind, Who: who, Reason: o.reason, Duration: o.forTime, Until: o.until}
	if req.Duration != "" && req.Until != "" {
		return admin.Ban{}, errors.New("give --for or --until, not both")
	}
	if o.offline {
		l, err := o.openFile()
		if err != nil {
			return admin.Ban{}, err
		}
		defer l.Close()
		b := admin.Ban{As: kind, Who: who, Reason: o.reason, By: "tern ban"}
		switch {
		case req.Duration != "":
			d, err := admin.ParseBanDuration(req.Duration)
			if err != nil {
				return b, err
			}
			t := time.Now().Add(d)
			b.Until = &t
		case req.Until != "":
			t, err := time.Parse(time.RFC3339, req.Until)
			if err != nil {
				return b, fmt.Errorf("--until: %w", err)
			}
			b.Until = &t
		}
		return banAdapter{l}.Add(b)
	}
	body, _ := json.Marshal(req)
	var b admin.Ban
	return b, o.call(ctx, http.MethodPost, "/api/v1/bans", body, &b)
}

func (o *banOptions) delete(ctx context.Context, kind, who string) error {
	if o.offline {
		l, err := o.openFile()
		if err != nil {
			return err
		}
		defer l.Close()
		ok, err := banAdapter{l}.Delete(kind, who)
		if err == nil && !ok {
			err = fmt.Errorf("no ban of %s %s", kind, who)
		}
		return err
	}
	return o.call(ctx, http.MethodDelete, "/api/v1/bans/"+url.PathEscape(kind)+"/"+escapeWho(who), nil, nil)
}

// escapeWho escapes a ban's who for the URL path, keeping the "/" of a
// CIDR range (the route takes the rest of the path).
func escapeWho(who string) string {
	parts := strings.Split(who, "/")
	for i, p := range parts {
		parts[i] = url.PathEscape(p)
	}
	return strings.Join(parts, "/")
}

func printBans(w io.Writer, bans []admin.Ban, asJSON bool) error {
	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		if bans == nil {
			bans = []admin.Ban{}
		}
		return enc.Encode(bans)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "AS\tWHO\tUNTIL\tBY\tREASON")
	for _, b := range bans {
		until := "never"
		if b.Until != nil {
			until = b.Until.Local().Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", b.As, b.Who, until, b.By, b.Reason)
	}
	return tw.Flush()
}
